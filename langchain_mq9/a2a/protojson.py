"""a2a-sdk's protobuf messages to and from the A2A JSON this package keeps (the protobuf JSON
mapping: camelCase keys, enum names). Needs the ``a2a`` extra."""

from __future__ import annotations

from typing import Any, TypeVar

# (the ignore: protobuf ships no type hints; types-protobuf would be one more dependency)
from google.protobuf import json_format  # type: ignore[import-untyped]

Proto = TypeVar("Proto")  # an a2a-sdk protobuf message class


def to_proto(value: dict[str, Any], kind: type[Proto]) -> Proto:
    parsed: Proto = json_format.ParseDict(value, kind(), ignore_unknown_fields=True)
    return parsed


def to_json(value: object) -> dict[str, Any]:
    found: dict[str, Any] = json_format.MessageToDict(value)
    return found
