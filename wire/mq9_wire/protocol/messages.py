"""Messages: the headers a SEND carries, the payload's bytes, and ``Message`` as FETCH and
QUERY hand it out."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as _field
from typing import Any, TypeGuard

from .error_texts import err_delay_too_long
from .errors import InvalidArgument, MalformedReply, WireError
from .limits import MAX_DELAY_SECONDS, MAX_IDEMPOTENCY_KEY, MAX_SECONDS, MAX_U64
from .quoting import quoted
from .serde import encode, repeated_names, utf8
from .shapes import MSG_ITEM
from .values import Priority, check_int, parse_priority

# Header names match case-sensitively on RobustMQ: always send them in lower case.
HEADER_PRIORITY = "mq9-priority"
HEADER_KEY = "mq9-key"
HEADER_DELAY = "mq9-delay"
HEADER_TTL = "mq9-ttl"
HEADER_TAGS = "mq9-tags"
# Who sent a stored message, as the broker authenticated it: set by a --credentials broker
# on every SEND it stores, replacing any a client wrote (docs/security.md). Absent on an open
# broker and on RobustMQ, where nothing vouches for a sender.
HEADER_SENDER = "mq9-sender"
# A SEND's idempotency key (docs/protocol.md "Exactly once"): the bundled broker
# stores a keyed SEND once per mailbox and key within its window, and answers every SEND again
# with the first one's msg_id. It is the broker's, never stored with the message; RobustMQ has
# no such header, so the client does not send it there.
HEADER_IDEMPOTENCY_KEY = "mq9-idempotency-key"
# A keyed SEND of a carrier (the A2A gateway, mq9-mcp: one identity for many callers)
# names the caller whose key it is and that caller's share of the identity's keys: a broker
# vouching for the sender counts the key against both, in the step that keeps it, so every
# replica and every start of the carrier spends one share. The broker's, never stored.
HEADER_KEY_CALLER = "mq9-key-caller"
HEADER_KEY_SHARE = "mq9-key-share"


def header_block(headers: Mapping[str, str] | None) -> bytes | None:
    """The NATS header block a SEND carried, as the broker stores it and hands it back in a
    message's ``header`` field (None when the SEND had no headers)."""
    if not headers:
        return None
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return utf8("header", f"NATS/1.0\r\n{lines}\r\n").encode()


def parse_header_block(block: bytes) -> dict[str, str]:
    """The ``name: value`` pairs of a stored header block, the way RobustMQ's SEND reads them:
    the status line skipped, each line split at its first colon, both sides trimmed."""
    found: dict[str, str] = {}
    text = bytes(block).decode("utf-8", errors="replace")
    # Only CRLF ends a line, as NATS writes the block: str.splitlines() also splits at U+2028,
    # U+0085, \x0b ..., which a raw client may put inside a value to forge a second header.
    for line in text.split("\r\n")[1:]:
        line = line.strip()
        if not line:
            break
        name, colon, value = line.partition(":")
        if colon:
            found[name.strip()] = value.strip()
    return found


def payload_text(payload: bytes) -> str:
    """A payload as RobustMQ hands it out: its bytes read as UTF-8, invalid bytes as U+FFFD."""
    return bytes(payload).decode("utf-8", errors="replace")


@dataclass(frozen=True, slots=True)
class Message:
    """A message as FETCH or QUERY hands it out.

    mq9 brokers hand payloads out as UTF-8 text: ``payload`` holds that text's UTF-8 bytes,
    which are the bytes sent (``send`` refuses bytes that are not UTF-8). ``header`` holds the
    NATS headers the SEND carried ({} when none); ``key`` and ``tags`` are read from them.
    """

    msg_id: int
    payload: bytes
    priority: Priority
    create_time: int
    key: str | None = None
    tags: list[str] = _field(default_factory=list)
    header: dict[str, str] = _field(default_factory=dict)

    def text(self) -> str:
        """The payload as text."""
        return self.payload.decode()

    def json(self) -> Any:
        """The payload parsed as JSON (raises ``ValueError`` if it is not JSON)."""
        return json.loads(self.payload)

    @classmethod
    def from_wire(cls, item: Any) -> Message:
        """A message from a FETCH or QUERY item (``MSG_ITEM``: unknown fields are ignored,
        ``header`` may be absent or null). Raises ``Mq9Error`` on an item of the wrong shape."""
        return _plain_message(item) or cls.from_item(item)

    @classmethod
    def from_item(cls, item: Any) -> Message:
        """``from_wire`` of any item, read field by field as serde reads ``MSG_ITEM`` (the
        errors in its words)."""
        try:
            wire = MSG_ITEM.convert(item)
            header = {} if wire["header"] is None else parse_header_block(wire["header"])
            tags = header.get(HEADER_TAGS, "")
            return cls(
                msg_id=wire["msg_id"],
                payload=wire["payload"].encode(),
                priority=Priority(wire["priority"] or "normal"),  # RobustMQ sends "" for none
                create_time=wire["create_time"],
                key=header.get(HEADER_KEY),
                tags=[tag.strip() for tag in tags.split(",") if tag.strip()],
                header=header,
            )
        except (WireError, ValueError) as exc:
            raise MalformedReply(f"malformed message in the broker's reply: {exc}") from None


_PRIORITIES = {"": Priority.NORMAL} | {p.value: p for p in Priority}  # RobustMQ: "" for none
_PLAIN_ITEM = frozenset(MSG_ITEM.fields)
_HEADERLESS_ITEM = _PLAIN_ITEM - {"header"}  # an Option serde reads as None when absent


def _plain_message(item: Any) -> Message | None:
    """The message of an item as brokers write it, read in one step: exactly MSG_ITEM's
    fields (no name twice; ``header`` null or left out), plain types and a known priority (a
    reply of 100 messages read each field by field costs that per message). None for any other
    item, which ``Message.from_item`` reads (and words the errors of)."""
    if not isinstance(item, dict) or item.get("header") is not None:
        return None
    if not (item.keys() == _PLAIN_ITEM or item.keys() == _HEADERLESS_ITEM):
        return None
    if repeated_names(item):
        return None
    msg_id, create_time, payload = item["msg_id"], item["create_time"], item["payload"]
    priority = _PRIORITIES.get(item["priority"]) if type(item["priority"]) is str else None
    if (
        priority is None
        or type(payload) is not str
        or type(msg_id) is not int
        or type(create_time) is not int
        or not (0 <= msg_id <= MAX_U64 and 0 <= create_time <= MAX_U64)
    ):
        return None
    try:
        data = payload.encode()
    except UnicodeEncodeError:  # text that was not UTF-8: from_item says so in serde's words
        return None
    return Message(msg_id=msg_id, payload=data, priority=priority, create_time=create_time)


def payload_bytes(payload: object) -> bytes:
    """The bytes to send for a payload: ``bytes`` as is (only UTF-8: RobustMQ hands payloads
    back as text, so other bytes would come back changed), ``str`` as UTF-8, ``dict`` as JSON."""
    if isinstance(payload, (bytes, bytearray, memoryview)):
        data = bytes(payload)
        try:
            if not data.isascii():  # (ASCII is UTF-8: most payloads need no decoding)
                data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(
                f"payload bytes are not UTF-8 text (byte {exc.start}): mq9 brokers hand "
                "payloads back as UTF-8 text, so these bytes would arrive changed; send binary "
                "data as text, e.g. base64.b64encode(data).decode(), and decode it on receipt"
            ) from None
        return data
    if isinstance(payload, str):
        return utf8("payload", payload).encode()
    if isinstance(payload, dict):
        try:
            return encode(payload)
        except (TypeError, ValueError, RecursionError) as exc:
            raise ValueError(f"a dict payload must be JSON-serializable: {exc}") from None
    raise ValueError(f"payload must be bytes, str or dict, not {type(payload).__name__}")


def send_headers(
    priority: Priority | str,
    key: str | None,
    delay: int | None,
    ttl: int | None,
    tags: list[str] | None,
) -> dict[str, str]:
    """mq9's headers for a SEND, each value checked (``Mq9Error`` on a bad one)."""
    headers: dict[str, str] = {}
    plain = key is None and delay is None and ttl is None and tags is None
    if plain and priority is Priority.NORMAL:
        return headers  # most SENDs: nothing to check
    priority = parse_priority(priority)
    if priority is not Priority.NORMAL:
        headers[HEADER_PRIORITY] = priority.value
    if key is not None:
        headers[HEADER_KEY] = check_key(key)
    if delay is not None:  # RobustMQ delays even with 0 (the reply's msg_id is then -1)
        headers[HEADER_DELAY] = str(check_delay(delay))
    if ttl is not None:
        headers[HEADER_TTL] = str(check_int("ttl", ttl, 0, MAX_SECONDS))
    tags = [] if tags is None else check_tags(tags)
    if tags:
        headers[HEADER_TAGS] = ",".join(tags)
    return headers


def extra_headers(headers: object) -> dict[str, str]:
    """Headers beside mq9's own, checked: single-line UTF-8 names and values that survive a
    NATS header block as sent (names are tokens; values carry no surrounding whitespace)."""
    if headers is None:
        return {}
    if not isinstance(headers, dict):
        raise InvalidArgument(f"invalid headers {quoted(headers)}: must be a dict of strings")
    for name, value in headers.items():
        if (
            not isinstance(name, str)
            or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name)
            or not _header_value(value)
        ):
            raise InvalidArgument(
                f"invalid header {quoted(name)}: {quoted(value)}: names are letters, digits, "
                "'-', '_' and '.'; values single-line strings without surrounding whitespace or "
                "control characters"
            )
        utf8("header", value)
    return dict(headers)


# What may not be inside a header value: every character a reader of header blocks may take
# for a line break (all that str.splitlines() splits at: \n \r \x0b \x0c \x1c-\x1e \x85
# U+2028 U+2029), and the other C0 controls and DEL, which no header value needs.
_LINE_BREAKING = frozenset([*map(chr, range(0x20)), "\x7f", "\x85", "\u2028", "\u2029"])


def _header_value(value: object) -> TypeGuard[str]:
    # NATS strips a header value's surrounding whitespace: such a value could not arrive as sent
    return isinstance(value, str) and value == value.strip() and _LINE_BREAKING.isdisjoint(value)


def check_key(key: object) -> str:
    if not key or not _header_value(key):
        raise InvalidArgument(
            f"invalid key {quoted(key)}: must be a non-empty single-line string without "
            "leading or trailing whitespace, line breaks (U+2028 and the like too) or control "
            "characters"
        )
    return utf8("key", key)  # headers travel as UTF-8


def check_idempotency_key(key: object) -> str:
    """A SEND's idempotency key: a single-line string of at most ``MAX_IDEMPOTENCY_KEY`` bytes."""
    if not key or not _header_value(key) or len(key.encode("utf-8", "surrogatepass")) > (
        MAX_IDEMPOTENCY_KEY
    ):
        raise InvalidArgument(
            f"invalid idempotency_key {quoted(key)}: must be a non-empty single-line string of "
            f"at most {MAX_IDEMPOTENCY_KEY} UTF-8 bytes, without leading or trailing whitespace "
            "or control characters"
        )
    return utf8("idempotency_key", key)


def check_tags(tags: object) -> list[str]:
    if isinstance(tags, str) or not isinstance(tags, (list, tuple)):
        raise InvalidArgument(f"invalid tags {quoted(tags)}: must be a list of strings")
    for tag in tags:
        bare = tag.strip() if isinstance(tag, str) else None
        if not bare or "," in bare or not _header_value(bare):
            raise InvalidArgument(
                f"invalid tag {quoted(tag)}: tags are non-empty strings without commas, line "
                "breaks (U+2028 and the like too) or control characters"
            )
    return [utf8("tag", tag.strip()) for tag in tags]


def check_delay(delay: object) -> int:
    """A SEND's delay, in seconds: from 0 to ``MAX_DELAY_SECONDS`` (a year), the most
    RobustMQ's delay queue is sure to hold; a longer one is refused before it is sent (one
    RobustMQ cannot hold panics its delay task, and every later delayed message of its shard
    is lost)."""
    if isinstance(delay, int) and not isinstance(delay, bool) and delay > MAX_DELAY_SECONDS:
        raise InvalidArgument(err_delay_too_long(delay))
    return check_int("delay", delay, 0, MAX_DELAY_SECONDS)

