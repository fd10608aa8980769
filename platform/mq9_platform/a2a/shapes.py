"""The JSON this package's A2A side writes and reads, each shape declared once.

A2A's JSON (a Task, a Message, their parts; protojson names, as a2a-sdk's ``MessageToDict``
writes them) and the caller's own records are ``TypedDict``s: dicts at run time, so what is
sent and kept is the same JSON byte for byte, and a key misspelt in our code is a type error.
What others wrote is read as it came: the keys are declared, yet a snapshot read back from a
mailbox or an HTTP agent may lack any of them or hold another type, so readers keep checking
with ``isinstance`` (``mail.task_state``...). What no one here shapes (a user's payload, a
part's data, metadata, an agent card's fields past the ones read) is ``JsonValue``.
"""

from __future__ import annotations

from typing import Any, Literal, Required, TypeAlias, TypedDict

# A JSON value whose shape its writer chose (a payload, a data part, an agent's card fields):
# read with ``isinstance``, never assumed. ``Any`` by necessity: mypy has no JSON type that
# both a ``dict[str, str]`` and a parsed ``json.loads`` fit without a cast at every use.
JsonValue: TypeAlias = Any
JsonObject: TypeAlias = dict[str, JsonValue]
# An agent's card as the registry keeps it (the agent wrote it: A2A's AgentCard fields, and
# mq9's ``mailbox``; nothing in it is checked by the broker).
CardJson: TypeAlias = JsonObject


class PartJson(TypedDict, total=False):
    """An A2A Part: exactly one of ``text``, ``data``, ``url``, ``raw`` (bytes as base64)."""

    text: str
    data: JsonValue
    url: str
    raw: str
    filename: str
    mediaType: str
    metadata: JsonObject


class MessageJson(TypedDict, total=False):
    messageId: Required[str]
    role: Required[str]  # ROLE_USER, ROLE_AGENT
    parts: Required[list[PartJson]]
    contextId: str
    taskId: str
    metadata: JsonObject
    extensions: list[str]
    referenceTaskIds: list[str]


class SendRequestJson(TypedDict, total=False):
    """A2A's SendMessageRequest: what a call leaves in an agent's mailbox."""

    message: Required[MessageJson]
    configuration: JsonObject
    metadata: JsonObject


class StatusJson(TypedDict, total=False):
    state: Required[str]  # TASK_STATE_WORKING, ...
    timestamp: str
    message: MessageJson


class ArtifactJson(TypedDict, total=False):
    artifactId: Required[str]
    name: str
    description: str
    parts: Required[list[PartJson]]
    metadata: JsonObject


class TaskJson(TypedDict, total=False):
    """A2A's Task, as each state of it is kept and answered (``mail.task``)."""

    id: Required[str]
    contextId: Required[str]
    status: Required[StatusJson]
    artifacts: list[ArtifactJson]
    history: list[MessageJson]
    metadata: JsonObject


class HttpInterface(TypedDict):
    """The interface of an agent's card that a2a-sdk's client reaches over HTTP."""

    url: str
    protocolBinding: str  # JSONRPC, HTTP+JSON
    protocolVersion: str


class ErrorJson(TypedDict, total=False):
    """A JSON-RPC error object (A2A's errors: TaskNotFoundError's -32001, ...)."""

    code: Required[int]
    message: Required[str]
    data: JsonValue


class ErrorReply(TypedDict):
    """What an agent leaves (``error.{id}``) when it refuses a request about a task."""

    error: ErrorJson
    taskId: str


class CallRecord(TypedDict, total=False):
    """A call's record, ``call.{id}`` in the caller's reply mailbox (``caller.py``): who was
    called and how, kept before the request goes out; an HTTP agent's adds where it is."""

    taskId: Required[str]
    agent: str
    mailbox: str  # "" for an HTTP agent
    contextId: str
    request: str  # the head of the task's text
    sent: str  # a call sent once: the digest of its request
    answered: int  # the answers sent so far
    cancel: bool
    transport: Literal["http"]  # absent for an agent over mq9
    url: str
    binding: str
    protocolVersion: str
    streaming: bool
    remoteTaskId: str  # the HTTP agent's own id of the task


class CallView(TypedDict, total=False):
    """What a tool shows of a call (``CallState.view``): short state names, and the result,
    the question or the reason once there is one."""

    task_id: Required[str]
    agent: Required[str]
    state: Required[str]  # completed, input-required, ...
    context_id: Required[str]
    result: str
    question: str
    reason: str
    answer_pending: bool
    cancel_pending: bool


class OwnerJson(TypedDict, total=False):
    """A task's ``metadata.mq9`` (``store.Asker.metadata``): who owns it, who runs it."""

    replyTo: Required[str | None]
    agent: Required[str]
    sender: str  # where a --credentials broker vouched for the sender
