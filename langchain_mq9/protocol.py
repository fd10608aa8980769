"""The mq9 wire contract in one place: subjects, headers, address rules, bodies, error texts.

The client encodes with it and the bundled broker decodes with it, so the two cannot drift
apart. Nothing here does I/O.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from enum import Enum
from typing import Any

PREFIX = "$mq9.AI"
SUBJECT_WILDCARD = f"{PREFIX}.>"

MAILBOX_CREATE = f"{PREFIX}.MAILBOX.CREATE"
MSG_SEND = f"{PREFIX}.MSG.SEND."
MSG_FETCH = f"{PREFIX}.MSG.FETCH."
MSG_ACK = f"{PREFIX}.MSG.ACK."
MSG_QUERY = f"{PREFIX}.MSG.QUERY."
MSG_DELETE = f"{PREFIX}.MSG.DELETE."
AGENT_REGISTER = f"{PREFIX}.AGENT.REGISTER"
AGENT_UNREGISTER = f"{PREFIX}.AGENT.UNREGISTER"
AGENT_REPORT = f"{PREFIX}.AGENT.REPORT"
AGENT_DISCOVER = f"{PREFIX}.AGENT.DISCOVER"

HEADER_PRIORITY = "mq9-priority"
HEADER_KEY = "mq9-key"
HEADER_DELAY = "mq9-delay"
HEADER_TTL = "mq9-ttl"
HEADER_TAGS = "mq9-tags"

DELIVER_POLICIES = ("latest", "earliest", "from_time", "from_id")
DEFAULT_NUM_MSGS = 100
DEFAULT_MAX_WAIT_MS = 500
DEFAULT_DISCOVER_LIMIT = 20
DEFAULT_MAX_PAYLOAD = 1024 * 1024  # NATS' own default max_payload
MAX_NUM_MSGS = 10_000
MAX_WAIT_MS = 600_000  # ten minutes: a long poll longer than that should be a loop
MAX_DISCOVER_LIMIT = 10_000
MAX_GROUP_NAME = 256

MAX_ADDRESS_LENGTH = 128
_ADDRESS = re.compile(r"[a-z0-9]+(?:\.[a-z0-9]+)*")
_DIGITS = re.compile(r"[0-9]{1,19}")
MAX_SECONDS = 2**31 - 1  # ttl and delay: about 68 years; larger numbers are refused


class Priority(str, Enum):
    """Message priority. Handed out critical first, then urgent, then normal; FIFO inside one."""

    NORMAL = "normal"
    URGENT = "urgent"
    CRITICAL = "critical"

    def __str__(self) -> str:
        return self.value


# Highest first: the order in which a FETCH hands messages out.
PRIORITY_ORDER = (Priority.CRITICAL, Priority.URGENT, Priority.NORMAL)


class Mq9Error(Exception):
    """A failed mq9 command: the broker's error text, or the client's own refusal.

    ``retryable`` is true when the same call may succeed later unchanged (the broker was
    unreachable or did not answer in time); false when the request itself must change.
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable


# -- error texts (exact, shared by client and broker) ----------------------------------------


def err_invalid_address(value: object) -> str:
    return f"invalid mail_address: {value}"


def err_mailbox_exists(address: str) -> str:
    return f"mailbox {address} already exists"


def err_mailbox_missing(address: str) -> str:
    return f"mailbox {address} does not exist"


ERR_MESSAGE_NOT_FOUND = "message not found"
ERR_AGENT_NOT_FOUND = "agent not found"
ERR_CARD_WITHOUT_MAILBOX = "agent card must contain a mailbox field"


def err_invalid_priority(value: object) -> str:
    return f"invalid priority {value!r}: use normal, urgent or critical"


def err_invalid_deliver(value: object) -> str:
    return f"invalid deliver {value!r}: use latest, earliest, from_time or from_id"


# -- validation --------------------------------------------------------------------------------


def is_valid_address(value: object) -> bool:
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_ADDRESS_LENGTH
        and _ADDRESS.fullmatch(value) is not None
    )


def check_address(value: object) -> str:
    """Return ``value`` if it is a valid mail_address, else raise ``Mq9Error``."""
    if not is_valid_address(value):
        raise Mq9Error(err_invalid_address(value))
    return value  # type: ignore[return-value]


def parse_priority(value: object) -> Priority:
    """The priority named by ``value`` (a ``Priority`` or its name, any case); no fallback."""
    if isinstance(value, Priority):
        return value
    if isinstance(value, str):
        try:
            return Priority(value.strip().lower())
        except ValueError:
            pass
    raise Mq9Error(err_invalid_priority(value))


def check_int(name: str, value: object, low: int = 0, high: int = 2**63 - 1) -> int:
    """An integer option (ttl, delay, limit, msg_id, ...) that must lie in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise Mq9Error(f"invalid {name} {value!r}: must be an integer from {low} to {high}")
    return value


def check_group_name(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_GROUP_NAME:
        raise Mq9Error(
            f"invalid group_name {value!r}: a non-empty string of at most {MAX_GROUP_NAME} chars"
        )
    return value


def parse_int(name: str, text: str, low: int = 0, high: int = 2**63 - 1) -> int:
    """An integer carried as text (a header, a subject token)."""
    text = text.strip()
    if not _DIGITS.fullmatch(text):
        raise Mq9Error(f"invalid {name} {text!r}: must be an integer from {low} to {high}")
    return check_int(name, int(text), low, high)


def new_address() -> str:
    """An unguessable broker-generated address: 128 random bits, still a valid address."""
    return "mb." + secrets.token_hex(16)


# -- subjects ------------------------------------------------------------------------------------


def send_subject(address: str) -> str:
    return MSG_SEND + address


def fetch_subject(address: str) -> str:
    return MSG_FETCH + address


def ack_subject(address: str) -> str:
    return MSG_ACK + address


def query_subject(address: str) -> str:
    return MSG_QUERY + address


def delete_subject(address: str, msg_id: int) -> str:
    return f"{MSG_DELETE}{address}.{msg_id}"


# -- bodies ------------------------------------------------------------------------------------


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def decode_object(data: bytes, what: str = "request body") -> dict[str, Any]:
    """Parse a JSON object; an empty body is an empty object. Raises ``Mq9Error``."""
    if not data or not data.strip():
        return {}
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise Mq9Error(f"malformed {what}: not JSON ({exc})") from None
    except RecursionError:
        raise Mq9Error(f"malformed {what}: JSON nested too deeply") from None
    if not isinstance(value, dict):
        raise Mq9Error(f"malformed {what}: expected a JSON object, got {type(value).__name__}")
    return value


def encode_payload(payload: bytes) -> str:
    return base64.b64encode(payload).decode("ascii")


def decode_payload(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def payload_bytes(payload: object) -> bytes:
    """The bytes to send for a payload: ``bytes`` as is, ``str`` as UTF-8, ``dict`` as JSON."""
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode()
    if isinstance(payload, dict):
        try:
            return encode(payload)
        except (TypeError, ValueError, RecursionError) as exc:
            raise ValueError(f"a dict payload must be JSON-serializable: {exc}") from None
    raise ValueError(f"payload must be bytes, str or dict, not {type(payload).__name__}")


def send_headers(
    priority: Priority,
    key: str | None,
    delay: int | None,
    ttl: int | None,
    tags: list[str] | None,
) -> dict[str, str]:
    headers: dict[str, str] = {}
    if priority is not Priority.NORMAL:
        headers[HEADER_PRIORITY] = priority.value
    if key is not None:
        headers[HEADER_KEY] = key
    if delay:
        headers[HEADER_DELAY] = str(delay)
    if ttl:
        headers[HEADER_TTL] = str(ttl)
    if tags:
        headers[HEADER_TAGS] = ",".join(tags)
    return headers


def check_key(key: object) -> str:
    # NATS strips a header value's surrounding whitespace, so such a key could not arrive as sent
    if (
        not isinstance(key, str)
        or not key
        or key != key.strip()
        or any(c in key for c in "\r\n")
    ):
        raise Mq9Error(
            f"invalid key {key!r}: must be a non-empty single-line string "
            "without leading or trailing whitespace"
        )
    return key


def check_tags(tags: object) -> list[str]:
    if isinstance(tags, str) or not isinstance(tags, (list, tuple)):
        raise Mq9Error(f"invalid tags {tags!r}: must be a list of strings")
    for tag in tags:
        if not isinstance(tag, str) or not tag.strip() or any(c in tag for c in ",\r\n"):
            raise Mq9Error(
                f"invalid tag {tag!r}: tags are non-empty strings without commas or newlines"
            )
    return [tag.strip() for tag in tags]
