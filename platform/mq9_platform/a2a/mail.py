"""A2A over mq9: the wire, in one place (its contract: docs/a2a.md, "The wire").

A request is an A2A request in a2a-sdk 1.x's JSON (the protobuf JSON mapping) left in the
agent's mailbox with the headers below; the CALLER picks a new task's id, so a call to an
offline agent (or a caller that dies right after sending) still knows it. Each state of a task
is the whole A2A ``Task`` under key ``task.{id}``, in the agent's task store and in the
caller's reply mailbox, both under the reserved root ``mq9`` that no tool may touch
(docs/security.md, "Agent calls"). Only plain dicts here: the core needs no a2a-sdk (an
optional extra).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeGuard, cast

from mq9_wire.protocol import HEADER_SENDER, MQ9_URL_SCHEME, is_valid_address, names, nests_deeper

# The task store's and reply mailboxes' names, computed where the broker (which tells whose
# they are) computes them
from mq9_wire.protocol.names import CALLS_ROOT as CALLS_ROOT
from mq9_wire.protocol.names import TASKS_ROOT as TASKS_ROOT
from mq9_wire.protocol.names import caller_address as caller_address
from mq9_wire.protocol.names import digest as digest
from mq9_wire.protocol.names import is_reserved

from .shapes import (
    ArtifactJson,
    CardJson,
    HttpInterface,
    JsonObject,
    JsonValue,
    MessageJson,
    PartJson,
    SendRequestJson,
    StatusJson,
    TaskJson,
)

HEADER_REPLY_TO = "mq9-reply-to"
HEADER_METHOD = "mq9-a2a-method"
HEADER_TYPE = "mq9-a2a-type"
HEADER_TASK_ID = "mq9-a2a-task-id"
HEADER_LAST = "mq9-a2a-last"

# What an agent's Error answer is, read by its code: A2A's error codes, JSON-RPC's
# invalid params for the rest, marked ``data.coded`` (an agent of 0.5.0 or before wrote -32001
# for every error: its answers read as invalid params, their words never read)
TASK_NOT_FOUND = -32001
PUSH_NOT_SUPPORTED = -32003
UNSUPPORTED_OPERATION = -32004
INVALID_PARAMS = -32602


def error_reply(task_id: str, text: str, code: int) -> JsonObject:
    """An Error answer's body: ``text`` said under ``code`` (one of the codes above)."""
    return {"error": {"code": code, "message": text, "data": {"coded": True}}, "taskId": task_id}

SEND = "SendMessage"
GET_TASK = "GetTask"
LIST_TASKS = "ListTasks"
CANCEL_TASK = "CancelTask"
# Push notifications: task updates POSTed to the caller's URL, where the agent's operator
# allows it (server.py, push_destinations)
CREATE_PUSH = "CreateTaskPushNotificationConfig"
GET_PUSH = "GetTaskPushNotificationConfig"
LIST_PUSH = "ListTaskPushNotificationConfigs"
DELETE_PUSH = "DeleteTaskPushNotificationConfig"
PUSH_METHODS = (CREATE_PUSH, GET_PUSH, LIST_PUSH, DELETE_PUSH)
METHODS = (SEND, GET_TASK, LIST_TASKS, CANCEL_TASK, *PUSH_METHODS)

# A2A task states as A2A 1.x writes them in JSON, and the short names the tools show.
SUBMITTED = "TASK_STATE_SUBMITTED"
WORKING = "TASK_STATE_WORKING"
INPUT_REQUIRED = "TASK_STATE_INPUT_REQUIRED"
COMPLETED = "TASK_STATE_COMPLETED"
FAILED = "TASK_STATE_FAILED"
CANCELED = "TASK_STATE_CANCELED"
REJECTED = "TASK_STATE_REJECTED"
FINAL = frozenset({COMPLETED, FAILED, CANCELED, REJECTED})
STOPPED = FINAL | {INPUT_REQUIRED}  # the caller's turn, or nobody's: the stream ends here
# ``metadata.mq9.answer`` of a task the agent answered with a Message (A2A lets an agent answer
# a SendMessage with a Message instead of a Task): the Message is the completed status message
MESSAGE_ANSWER = "message"


def short_state(state: str) -> str:
    """``TASK_STATE_INPUT_REQUIRED`` -> ``input-required`` (A2A's words in its docs)."""
    return state.removeprefix("TASK_STATE_").lower().replace("_", "-")


# Where the records live: under the reserved root, which every tool refuses whatever its
# allow-list, so a co-agent holding the tools can neither read them nor write a forged one.
# (names.TASKS_ROOT + a digest of the agent's mailbox: its task store; names.CALLS_ROOT + a
# digest of the caller's name: its reply mailbox)
TASK_KEY = "task."
CANCEL_KEY = "cancel."
CALL_KEY = "call."
CALL_TAG = "mq9.call"
TASK_TAG = "mq9.task"

# An id goes into keys, tags and headers: keep it to characters all of them carry.
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
MAX_ID_CHARS = 128
# The deepest JSON a request may nest: a task's state holds the request, and a state nested
# near Python's recursion limit could be read but not written back (RecursionError).
MAX_REQUEST_DEPTH = 32
# The card of a served agent says it takes A2A tasks with this capability extension (A2A's
# AgentCapabilities.extensions): an agent registered only for its mailbox has an mq9 interface
# too, but takes plain messages, so a task sent to it would never be answered.
TASKS_EXTENSION = "urn:langchain-mq9:a2a-tasks"

# Resume with replay: each state of a task an agent keeps is an event, numbered per task
# (``metadata.mq9.seq``: 1, 2, ...; the caller's own ``submitted`` is 0), and left with the
# caller twice: under ``task.{id}`` (the newest state: compacted) and under
# ``event.{id}.{seq}`` (each event: kept, tag ``mq9.event``), so a stream cut anywhere is
# replayed from the reply mailbox by any gateway, after any restart.
EVENT_KEY = "event."
EVENT_TAG = "mq9.event"
SEQ = "seq"
# The card extension saying so (ours until A2A names one: a2aproject/A2A#1986), and the
# metadata key under which each streamed Task carries its place (docs/a2a-gateway.md, "Resume").
RESUME_EXTENSION = "urn:langchain-mq9:a2a-resume:v1"


def new_id() -> str:
    return secrets.token_hex(12)


def is_valid_id(value: object) -> TypeGuard[str]:
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_ID_CHARS
        and all(c in _ID_CHARS for c in value)
    )


def once_id(what: str, *named: str) -> str:
    """An id (as ``new_id`` makes them: 24 hex digits) that is the same each time for the same
    ``what`` and names: a request sent again, keyed, makes the same task, the same
    context, the same message, so the broker sees the same SEND and stores it once."""
    text = "\n".join((what, *named)).encode("utf-8", "backslashreplace")
    return hashlib.sha256(text).hexdigest()[:24]


# The task store of the agent served at ``agent_mailbox`` (all its replicas share it)
store_address = names.task_store_address


def thread_id(owner: str | None, context_id: str) -> str:
    """The LangGraph thread of a conversation: its context id AND the caller that started it,
    so a context id someone else read never continues that caller's conversation."""
    return "mq9-" + digest(f"{owner or ''}\n{context_id}")


def answerable(reply_to: object) -> TypeGuard[str]:
    """Whether an agent may leave answers at ``reply_to``: a mailbox address, and under the
    reserved root only a reply mailbox (leases and task stores are nobody's reply mailbox)."""
    return (
        isinstance(reply_to, str)
        and is_valid_address(reply_to)
        and (not is_reserved(reply_to) or reply_to.startswith(CALLS_ROOT))
    )


def serves_tasks(card: CardJson) -> bool:
    """Whether a registered agent's card says it takes A2A tasks at an mq9 mailbox."""
    capabilities = card.get("capabilities")
    extensions = capabilities.get("extensions") if isinstance(capabilities, dict) else None
    marked = any(
        isinstance(e, dict) and e.get("uri") == TASKS_EXTENSION
        for e in (extensions if isinstance(extensions, list) else ())
    )
    mailbox = card.get("mailbox")
    return marked and isinstance(mailbox, str) and bool(mailbox)


# The A2A protocol bindings an HTTP agent may name for its interface that a2a-sdk's client
# speaks over HTTP (gRPC needs grpcio: not an extra of ours).
HTTP_BINDINGS = ("JSONRPC", "HTTP+JSON")
# The card of an HTTP agent imported into the registry carries this extension, its
# description the URL the card was read from (http/cards.py).
IMPORTED_EXTENSION = "urn:langchain-mq9:a2a-imported-card"


def http_interface(card: CardJson) -> HttpInterface | None:
    """The first interface of a card that a2a-sdk's client reaches over HTTP (url, binding,
    version), or None: an agent that takes A2A tasks over HTTP rather than mq9."""
    interfaces = card.get("supportedInterfaces")
    for item in interfaces if isinstance(interfaces, list) else ():
        if not isinstance(item, dict):
            continue
        url, binding = item.get("url"), item.get("protocolBinding") or "JSONRPC"
        if (
            isinstance(url, str)
            and url.startswith(("http://", "https://"))
            and (binding in HTTP_BINDINGS)
        ):
            version = item.get("protocolVersion")
            return {
                "url": url,
                "protocolBinding": binding,
                "protocolVersion": version if isinstance(version, str) and version else "1.0",
            }
    return None


def transport_of(card: CardJson) -> str:
    """How an agent takes work: ``mq9`` (A2A tasks in its mailbox), ``http`` (an HTTP A2A
    agent: call_agent reaches it), ``mailbox`` (plain messages only)."""
    if serves_tasks(card):
        return "mq9"
    return "http" if http_interface(card) is not None else "mailbox"


def tasks_capability() -> dict[str, str]:
    """The capability extension a served agent's card carries (``serves_tasks``)."""
    return {
        "uri": TASKS_EXTENSION,
        "description": "takes A2A tasks in its mq9 mailbox (" + MQ9_URL_SCHEME + "<mailbox>)",
    }


# -- building the JSON ---------------------------------------------------------------------------


def message(
    text: str,
    *,
    role: str = "ROLE_USER",
    context_id: str = "",
    task_id: str = "",
    message_id: str = "",
) -> MessageJson:
    """An A2A Message with one text part (a new ``messageId`` unless given)."""
    msg: MessageJson = {
        "messageId": message_id or new_id(),
        "role": role,
        "parts": [{"text": text}],
    }
    if context_id:
        msg["contextId"] = context_id
    if task_id:
        msg["taskId"] = task_id
    return msg


def send_request(msg: MessageJson) -> SendRequestJson:
    return {"message": msg}


def task(
    task_id: str,
    context_id: str,
    state: str,
    *,
    status_text: str | None = None,
    status_message: MessageJson | None = None,
    artifacts: list[ArtifactJson] | None = None,
    history: list[MessageJson] | None = None,
    metadata: JsonObject | None = None,
) -> TaskJson:
    """An A2A Task snapshot. ``status_text`` becomes the status message (the agent's words:
    the question of input-required, the error of failed, the reason of rejected), unless
    ``status_message`` gives the agent's whole A2A Message."""
    timestamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    status: StatusJson = {"state": state, "timestamp": timestamp}
    if status_message is not None:
        status["message"] = {**status_message, "contextId": context_id, "taskId": task_id}
    elif status_text is not None:
        status["message"] = message(
            status_text, role="ROLE_AGENT", context_id=context_id, task_id=task_id
        )
    snapshot: TaskJson = {"id": task_id, "contextId": context_id, "status": status}
    if artifacts:
        snapshot["artifacts"] = artifacts
    if history:
        snapshot["history"] = history
    if metadata:
        snapshot["metadata"] = metadata
    return snapshot


def artifact(result: JsonValue) -> ArtifactJson:
    """The result as an A2A Artifact: text as a text part, anything else as a data part."""
    part: PartJson = {"text": result} if isinstance(result, str) else {"data": result}
    return {"artifactId": new_id(), "name": "result", "parts": [part]}


def seq_of(snapshot: Mapping[str, object] | None) -> int:
    """A task state's event number (``metadata.mq9.seq``; 0 for a state without one: the
    caller's ``submitted``, or a state kept before events were numbered)."""
    meta = (snapshot or {}).get("metadata")
    mq9 = meta.get("mq9") if isinstance(meta, dict) else None
    seq = mq9.get(SEQ) if isinstance(mq9, dict) else None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) and seq > 0 else 0


def with_seq(snapshot: TaskJson, seq: int) -> TaskJson:
    """``snapshot`` numbered ``seq`` (a copy: its ``metadata.mq9.seq``)."""
    meta = dict(snapshot.get("metadata") or {})
    mq9 = meta.get("mq9")
    meta["mq9"] = {**(mq9 if isinstance(mq9, dict) else {}), SEQ: seq}
    return cast(TaskJson, {**snapshot, "metadata": meta})


def event_key(task_id: str, seq: int) -> str:
    return f"{EVENT_KEY}{task_id}.{seq}"


def event_headers(task_id: str, state: str) -> dict[str, str]:
    headers = {HEADER_TYPE: "Task", HEADER_TASK_ID: task_id}
    if state in STOPPED:
        headers[HEADER_LAST] = "true"
    return headers


# -- reading the JSON ----------------------------------------------------------------------------


def parts_text(parts: object) -> str:
    """The text of a list of A2A parts: text parts as they are, data parts as JSON, a file's
    URL, and a file given as bytes named (its bytes are no text)."""
    chunks = []
    for part in parts if isinstance(parts, list) else ():
        if not isinstance(part, dict):
            continue
        if isinstance(part.get("text"), str):
            chunks.append(part["text"])
        elif "data" in part:
            chunks.append(json.dumps(part["data"], ensure_ascii=False))
        elif isinstance(part.get("url"), str):
            chunks.append(part["url"])
        elif isinstance(part.get("raw"), str):
            name = part.get("filename") or "a file"
            chunks.append(f"[{name}, {part.get('mediaType') or 'bytes'}]")
    return "\n".join(chunks)


# The readers below take any JSON object (a snapshot read back from a mailbox or an HTTP agent
# may hold anything): they check each part they read.


def task_state(snapshot: Mapping[str, object]) -> str:
    status = snapshot.get("status")
    state = status.get("state") if isinstance(status, dict) else None
    return state if isinstance(state, str) else "TASK_STATE_UNSPECIFIED"


def status_text(snapshot: Mapping[str, object]) -> str:
    status = snapshot.get("status")
    msg = status.get("message") if isinstance(status, dict) else None
    return parts_text(msg.get("parts")) if isinstance(msg, dict) else ""


def result_text(snapshot: Mapping[str, object]) -> str:
    """The result of a task: its artifacts' text, else its status message's (an agent may
    complete a task with a message and no artifact)."""
    artifacts = snapshot.get("artifacts")
    text = "\n".join(
        parts_text(a.get("parts"))
        for a in (artifacts if isinstance(artifacts, list) else ())
        if isinstance(a, dict)
    )
    return text or (status_text(snapshot) if task_state(snapshot) == COMPLETED else "")


@dataclass(frozen=True)
class Request:
    """One request read from an agent's mailbox."""

    method: str
    reply_to: str | None
    task_id: str | None
    body: JsonObject  # the request's JSON object, as sent: its shape checked per method
    # Who sent it, as a --credentials broker authenticated it (``mq9-sender``, which such a
    # broker writes on every stored message); None where nothing vouches (docs/security.md)
    sender: str | None = None

    def named_task(self) -> str:
        """The task a GetTask or CancelTask names: its body's ``id``, else the header's
        (``Rejection`` when that is no valid id: ``read_request`` checks it so)."""
        named = self.body.get("id", self.task_id)
        if not is_valid_id(named):
            raise Rejection(f"an A2A {self.method}Request needs the task's id", self.task_id)
        return named


class Rejection(Exception):
    """A request the agent cannot take, with the words the caller gets back."""

    def __init__(self, reason: str, task_id: str | None = None) -> None:
        super().__init__(reason)
        self.task_id = task_id


def read_request(header: dict[str, str], payload: bytes) -> Request:
    """The request a message carries, or ``Rejection`` saying what is wrong with it."""
    method = header.get(HEADER_METHOD) or SEND
    reply_to = header.get(HEADER_REPLY_TO) or None
    task_id = header.get(HEADER_TASK_ID) or None
    if task_id is not None and not is_valid_id(task_id):
        raise Rejection(
            f"invalid {HEADER_TASK_ID} {task_id[:80]!r}: up to {MAX_ID_CHARS} letters, digits, "
            "'-', '_' and '.'"
        )
    if reply_to is not None and not is_valid_address(reply_to):
        # No answer can be sent: the caller learns nothing, but the loop goes on.
        raise Rejection(f"invalid {HEADER_REPLY_TO} {reply_to[:80]!r}: not a mailbox address")
    if reply_to is not None and not answerable(reply_to):
        raise Rejection(f"invalid {HEADER_REPLY_TO} {reply_to[:80]!r}: a reserved address")
    if method not in METHODS:
        raise Rejection(
            f"unknown {HEADER_METHOD} {method[:80]!r}: this agent takes {', '.join(METHODS)}",
            task_id,
        )
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise Rejection(
            f"the payload is not A2A JSON: this agent takes an A2A {method}Request "
            '(e.g. {"message": {"role": "ROLE_USER", "parts": [{"text": "..."}], '
            '"messageId": "1"}})',
            task_id,
        ) from None
    if not isinstance(body, dict):
        raise Rejection(f"an A2A {method}Request is a JSON object", task_id)
    if nests_deeper(body, MAX_REQUEST_DEPTH):
        raise Rejection(
            f"the request nests deeper than {MAX_REQUEST_DEPTH} levels: send flatter JSON",
            task_id,
        )
    request = Request(method, reply_to, task_id, body, header.get(HEADER_SENDER) or None)
    if method == SEND:
        _check_message(body.get("message"), task_id)
    elif method in (GET_TASK, CANCEL_TASK):
        request.named_task()  # it has one
    return request


def _check_message(msg: object, task_id: str | None) -> None:
    if not isinstance(msg, dict):
        raise Rejection("an A2A SendMessageRequest needs a message object", task_id)
    parts = msg.get("parts")
    if not isinstance(parts, list) or not parts or not all(isinstance(p, dict) for p in parts):
        raise Rejection('the message needs parts: a list like [{"text": "..."}]', task_id)
    # These two become keys and LangGraph thread ids; a messageId may be any string.
    for key in ("contextId", "taskId"):
        if key in msg and not (msg[key] == "" or is_valid_id(msg[key])):
            raise Rejection(f"the message's {key} is not a valid id", task_id)
    if not parts_text(parts).strip():
        raise Rejection("the message holds no text, data, url or file part", task_id)


def json_text(value: JsonValue) -> str:
    """Compact JSON text, as every payload of this wire is sent."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
