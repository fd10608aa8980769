"""a2a-sdk's protobuf messages to and from the A2A JSON this package keeps (the protobuf JSON
mapping: camelCase keys, enum names). Needs the ``a2a`` extra."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar, cast

from a2a.types.a2a_pb2 import Artifact, Message, SendMessageRequest, Task, TaskStatus

# (the ignore: protobuf ships no type hints; types-protobuf would be one more dependency)
from google.protobuf import json_format  # type: ignore[import-untyped]

from ..shapes import ArtifactJson, JsonObject, MessageJson, SendRequestJson, StatusJson, TaskJson

Proto = TypeVar("Proto")  # an a2a-sdk protobuf message class


def to_proto(value: Mapping[str, object], kind: type[Proto]) -> Proto:
    parsed: Proto = json_format.ParseDict(value, kind(), ignore_unknown_fields=True)
    return parsed


# The JSON of the messages whose shape this package reads is typed (``shapes.py``); any other
# message's (a request, a push config, a card) is its JSON object.


def json_object(value: object) -> JsonObject:
    """Any a2a-sdk message as its JSON object."""
    return cast(JsonObject, json_format.MessageToDict(value))


def task_json(task: Task) -> TaskJson:
    return cast(TaskJson, json_object(task))


def message_json(message: Message) -> MessageJson:
    return cast(MessageJson, json_object(message))


def status_json(status: TaskStatus) -> StatusJson:
    return cast(StatusJson, json_object(status))


def artifact_json(artifact: Artifact) -> ArtifactJson:
    return cast(ArtifactJson, json_object(artifact))


def request_json(request: SendMessageRequest) -> SendRequestJson:
    return cast(SendRequestJson, json_object(request))
