"""The mq9 wire contract in one place: subjects, headers, address rules, bodies, error texts.

Everything here follows RobustMQ, the reference mq9 broker (robustmq/robustmq at 8bd49dc; see
``docs/protocol.md`` for the rule behind each line and the RobustMQ file it comes from). The
client encodes with it and the bundled broker decodes with it, so the two cannot drift apart.
Nothing here does I/O.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as _field
from enum import Enum
from typing import Any

from .errors import (
    LISTING_TOO_LARGE,
    SEARCH_NOT_BUILT,
    InvalidAddress,
    InvalidArgument,
    MalformedReply,
    Mq9Error,
    WireError,
)
from .errors import SEARCH_TABLE_MISSING as SEARCH_TABLE_MISSING

PREFIX = "$mq9.AI"
SUBJECT_WILDCARD = f"{PREFIX}.>"
TENANT = "default"  # RobustMQ's tenant for mq9 requests; it shows in some of its error texts

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

# Header names match case-sensitively on RobustMQ: always send them in lower case.
HEADER_PRIORITY = "mq9-priority"
HEADER_KEY = "mq9-key"
HEADER_DELAY = "mq9-delay"
HEADER_TTL = "mq9-ttl"
HEADER_TAGS = "mq9-tags"

DELIVER_POLICIES = ("earliest", "latest", "from_time", "from_id")
DEFAULT_NUM_MSGS = 100
DEFAULT_MAX_WAIT_MS = 500
DEFAULT_DISCOVER_LIMIT = 20
DEFAULT_MAILBOX_TTL = 86_400  # RobustMQ's mq9_mailbox_default_ttl: a CREATE without ttl
QUERY_CAP = 100  # a QUERY answers at most this many messages, whatever its limit
DEFAULT_MAX_PAYLOAD = 1024 * 1024  # NATS' own default max_payload
# RobustMQ reads each priority lane of a FETCH (each read of a QUERY) with max_size 30 MiB
# (mq9/fetch.rs, query.rs); rocksdb read.rs read_by_tag/read_by_offset stop before a record whose
# payload would take the read's total above it, but always take the first record.
LANE_READ_BYTES = 30 * 1024 * 1024
MAX_U32 = 2**32 - 1
MAX_U64 = 2**64 - 1
MAX_NUM_MSGS = 10_000  # the client's sanity bound; RobustMQ takes any u32
MAX_WAIT_MS = 600_000  # ten minutes: a longer wait should be a loop
MAX_DISCOVER_LIMIT = 10_000
MAX_GROUP_NAME = 256
# nats-server's default max_control_line: a longer PUB/HPUB line closes the connection. The
# longest line with an address is a DELETE's "HPUB $mq9.AI.MSG.DELETE.<address>.<msg_id> <reply>
# <sizes>"; 3,800 leaves room for the rest (RobustMQ sets no length, docs/protocol.md §5.1).
MAX_CONTROL_LINE = 4096
MAX_ADDRESS_LENGTH = 3800
# How much of a value an error quotes: model input can be megabytes, and errors go to the model.
QUOTE_CHARS = 60
MAX_SECONDS = 2**31 - 1  # the client's bound for ttl and delay: about 68 years

_DIGITS = re.compile(r"\+?[0-9]{1,20}")


class Priority(str, Enum):
    """Message priority. Handed out critical first, then urgent, then normal; FIFO inside one."""

    NORMAL = "normal"
    URGENT = "urgent"
    CRITICAL = "critical"

    def __str__(self) -> str:
        return self.value


# Highest first: the order in which a FETCH reads its priority lanes.
PRIORITY_ORDER = (Priority.CRITICAL, Priority.URGENT, Priority.NORMAL)


# -- error texts (exact, as RobustMQ words them) ---------------------------------------------


def quoted(value: object, limit: int = QUOTE_CHARS) -> str:
    """``repr(value)`` for an error message, cut after about ``limit`` characters."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f" ({len(value)} characters)" if isinstance(value, (str, list, dict)) else ""
    return f"{text[:limit]}…{size}"


def clipped(text: str, limit: int) -> str:
    """``text`` cut to at most about ``limit`` characters, keeping its start and its end
    (where the hints are)."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]} …[{len(text) - 2 * half} characters cut]… {text[-half:]}"


def err_invalid_address(value: object) -> str:
    """The client's own refusal of an address no mailbox can have (RobustMQ's CREATE rule)."""
    return (
        f"invalid mail_address: {quoted(value)} (lowercase letters, digits and dots, starting and "
        "ending with a letter or digit)"
    )


def err_address_too_long(address: str) -> str:
    return (
        f"invalid mail_address: {quoted(address)} is longer than {MAX_ADDRESS_LENGTH} "
        f"characters: no NATS subject could carry it (nats-server takes control lines of at "
        f"most {MAX_CONTROL_LINE} bytes)"
    )


def err_mailbox_exists(address: str) -> str:
    return f"mailbox {address} already exists"


def err_mailbox_missing(address: str) -> str:
    """SEND to a mailbox that does not exist (or has expired)."""
    return f"mailbox {address} does not exist"


def err_topic_missing(address: str) -> str:
    """FETCH, QUERY and DELETE on a mailbox that does not exist: RobustMQ's storage layer
    answers for them, in its own words."""
    return f"Tenant {TENANT} topic '{address}' not found in broker cache"


def err_ack_mailbox_missing(address: str) -> str:
    return f"mailbox not found: {address}"


ERR_NAME_EMPTY = "prefix must not be empty"
ERR_NAME_CHARS = "name may only contain lowercase letters, digits, and dots"
ERR_NAME_EDGES = "prefix must start and end with a lowercase letter or digit"
ERR_REGISTER_EMPTY = "payload must not be empty"
ERR_AGENT_INFO_EMPTY = "agent_info must not be empty"
ERR_AGENT_NAME_EMPTY = "agent name must not be empty"


def warn_log_went_back(address: str, msg_id: int, highest: int) -> str:
    return (
        f"mailbox {address}: a SEND got msg_id {msg_id}, but an earlier one got {highest}: the "
        "broker's log of this mailbox went back, so messages it acknowledged may be lost (a "
        "RobustMQ node lost with the shard's replicas, or the mailbox made again under its "
        "name). Check what the mailbox still holds (query); see docs/deploy.md"
    )


def warn_receipt_missing(address: str, msg_id: int, newest: int) -> str:
    where = f"the newest it holds is {newest}" if newest >= 0 else "it holds none"
    return (
        f"mailbox {address}: a receipt names msg_id {msg_id}, but the mailbox no longer holds "
        f"that message ({where}): the broker's log went back and lost what it acknowledged, "
        "or the message was deleted or expired. See docs/deploy.md"
    )


def warn_partitions(address: str, msg_id: int) -> str:
    return (
        f"mailbox {address}: one answer held msg_id {msg_id} twice: the mailbox has several "
        "partitions (RobustMQ's [runtime] default_topic_partition_num above 1), so msg_ids "
        "repeat and an ACK may skip messages. Set default_topic_partition_num = 1 on the broker "
        "and use a new mailbox; see docs/deploy.md"
    )


# DISCOVER with text or semantic on RobustMQ's default build (see errors.SEARCH_NOT_BUILT)
ERR_SEARCH_NOT_BUILT = (
    "Grpc call of the node failed,Grpc status was code: 'Internal error', "
    f'message: "{SEARCH_NOT_BUILT}"'
)


def err_answer_too_large(size: int, limit: int, fit: int) -> str:
    """A group FETCH whose answer would be larger than the broker sends (our broker's rule);
    ``fit``: the largest num_msgs whose whole answer fits."""
    return (
        f"the answer would be {size} bytes, above the {limit} bytes this broker's answers "
        f"carry: ask for at most {fit} messages (num_msgs)"
    )


def err_listing_too_large(count: int, size: int, limit: int) -> str:
    return (
        f"the registry's {count} agents are {LISTING_TOO_LARGE} ({size} bytes, above the "
        f"{limit} bytes this broker's answers carry): search with text or semantic instead"
    )


def err_card_too_large(size: int, limit: int) -> str:
    return (
        f"agent card is {size} bytes, above the {limit} bytes this broker keeps per agent: "
        "keep large data out of the card (link to it instead)"
    )


def err_agent_limit(limit: int) -> str:
    return (
        f"agent limit reached: this broker holds at most {limit} agents; unregister agents "
        "that are gone"
    )


def err_group_limit(limit: int, address: str) -> str:
    return (
        f"consumer group limit reached: this broker holds at most {limit} groups per mailbox, "
        f"and {address} has them all; read with a group name already in use"
    )


def err_group_name_too_long(length: int) -> str:
    return f"group_name is {length} characters: this broker takes at most {MAX_GROUP_NAME}"


def err_unknown_subject(subject: str) -> str:
    return f"unrecognized mq9 subject: {subject}"


# -- validation --------------------------------------------------------------------------------


def name_error(name: str) -> str | None:
    """Why RobustMQ's CREATE refuses ``name`` as a mailbox name, or None if it takes it."""
    if not name:
        return ERR_NAME_EMPTY
    if not all(c in _NAME_CHARS for c in name):
        return ERR_NAME_CHARS
    if name[0] == "." or name[-1] == ".":
        return ERR_NAME_EDGES
    return None


_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.")


def is_valid_address(value: object) -> bool:
    return isinstance(value, str) and name_error(value) is None


def check_address(value: object) -> str:
    """Return ``value`` if a mailbox can have it as its address and a NATS subject can carry
    it, else raise ``Mq9Error`` (the client's check before any request)."""
    if not is_valid_address(value):
        raise InvalidAddress(err_invalid_address(value))
    if len(value) > MAX_ADDRESS_LENGTH:  # type: ignore[arg-type]
        raise InvalidAddress(err_address_too_long(value))  # type: ignore[arg-type]
    if ".." in value:  # type: ignore[operator]
        raise InvalidAddress(
            f"invalid mail_address: {quoted(value)} has an empty segment: RobustMQ creates such a "
            "mailbox, but no NATS subject can reach it"
        )
    return value  # type: ignore[return-value]


def parse_priority(value: object) -> Priority:
    """The priority named by ``value`` (a ``Priority`` or its name, any case); no fallback.
    The client is strict on purpose: RobustMQ silently turns an unknown name into normal."""
    if isinstance(value, Priority):
        return value
    if isinstance(value, str):
        try:
            return Priority(value.strip().lower())
        except ValueError:
            pass
    raise InvalidArgument(f"invalid priority {quoted(value)}: use normal, urgent or critical")


def check_int(name: str, value: object, low: int = 0, high: int = 2**63 - 1) -> int:
    """An integer option (ttl, delay, limit, msg_id, ...) that must lie in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidArgument(
            f"invalid {name} {quoted(value)}: must be an integer from {low} to {high}"
        )
    return value


def check_group_name(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_GROUP_NAME:
        raise InvalidArgument(
            f"invalid group_name {quoted(value)}: a non-empty string of at most "
            f"{MAX_GROUP_NAME} chars"
        )
    return utf8("group_name", value)


def header_u64(text: str) -> int | None:
    """A header number as RobustMQ reads it (Rust's ``u64::from_str``), or None if it is not
    one: RobustMQ then ignores the header."""
    text = text.strip()
    if not _DIGITS.fullmatch(text):
        return None
    number = int(text)
    return number if number <= MAX_U64 else None


def new_address() -> str:
    """A broker-generated address, shaped like RobustMQ's (20 characters of base32hex, as an
    xid) but drawn at random: 100 bits, so a private mailbox's address cannot be guessed."""
    alphabet = "0123456789abcdefghijklmnopqrstuv"
    return "".join(secrets.choice(alphabet) for _ in range(20))


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


# -- JSON as serde_json reads it -----------------------------------------------------------------


def encode(body: Any) -> bytes:
    """``body`` as compact JSON in UTF-8. Raises ``WireError`` on text that has no UTF-8
    form (a lone surrogate), which serde_json would refuse."""
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode()
    except UnicodeEncodeError as exc:
        raise WireError(err_not_utf8(text[exc.start])) from None


def err_not_utf8(char: str) -> str:
    return f"text holds a lone surrogate ({char!a}): it is not valid UTF-8, so mq9 cannot carry it"


def utf8(name: str, value: str) -> str:
    """``value`` if it has a UTF-8 form, else ``Mq9Error`` naming ``name``."""
    try:
        value.encode()
    except UnicodeEncodeError as exc:
        raise InvalidArgument(f"invalid {name}: {err_not_utf8(value[exc.start])}") from None
    return value


class _Object(dict):
    """A JSON object as parsed, with the names it gave more than once (in ``repeated``):
    serde refuses a repeated field of the struct it reads and ignores repeated unknown ones."""

    repeated: tuple[str, ...] = ()


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = _Object(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        repeated = []
        for name, _ in pairs:
            if name in seen:
                repeated.append(name)
            seen.add(name)
        obj.repeated = tuple(repeated)
    return obj


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = _pairs(pairs)
    if obj.repeated:
        raise WireError(f"duplicate field `{obj.repeated[0]}`")
    return obj


def _int(literal: str) -> int | float:
    # serde_json reads as a float -0, and an integer that fits neither u64 nor i64: no integer
    # field takes them (``floating point `1.8446744073709552e+19` ``, as RobustMQ answers)
    if literal == "-0":
        return -0.0
    if len(literal) > 21:  # beyond any u64 or i64 (and Python's int conversion limit)
        return _float(literal)
    number = int(literal)
    return float(number) if not -(2**63) <= number <= MAX_U64 else number


def _float(literal: str) -> float:
    number = float(literal)
    if math.isinf(number):  # serde_json's f64 overflows
        raise WireError("number out of range")
    return number


def _no_constant(name: str) -> Any:
    raise WireError("expected value")  # NaN, Infinity: JSON has none


def loads(data: bytes, *, as_struct: bool = False) -> Any:
    """Parse JSON as strictly as serde_json: UTF-8 only, no NaN, no lone surrogates, no key
    given twice in an object. Raises ``WireError`` in serde's words.

    ``as_struct``: parse it as serde reads a struct (``Shape``), which skips what it does not
    read: a key given twice is judged by ``Shape`` (an error only for a field of the struct),
    and text that is not UTF-8 or holds a lone surrogate is an error only where a field's
    string is read (``text``); elsewhere it is kept, as U+DC80-U+DCFF for each bad byte."""
    if not data or not data.strip():
        raise WireError("EOF while parsing a value")
    try:
        text = bytes(data).decode("utf-8", "surrogateescape" if as_struct else "strict")
        value = json.loads(
            text,
            object_pairs_hook=_pairs if as_struct else _unique_pairs,
            parse_constant=_no_constant,
            parse_int=_int,
            parse_float=_float,
        )
    except WireError:
        raise
    except UnicodeDecodeError:
        raise WireError(ERR_NOT_UNICODE) from None
    except RecursionError:
        raise WireError("recursion limit exceeded") from None
    except json.JSONDecodeError as exc:
        raise WireError(_serde_syntax(exc)) from None
    except ValueError:  # no JSON reader of ours should raise anything else; never a crash
        raise WireError("expected value") from None
    if not as_struct and "\\u" in text:  # an escaped lone surrogate parses in Python only
        _check_surrogates(value)
    return value


def _serde_syntax(exc: json.JSONDecodeError) -> str:
    """serde_json's words for the JSON syntax error Python's json found."""
    if exc.msg.startswith("Expecting ',' delimiter"):
        closing = "}" if _innermost(exc.doc[: exc.pos]) == "{" else "]"
        return f"expected `,` or `{closing}`"
    for python, serde in _SYNTAX:
        if exc.msg.startswith(python):
            return serde
    return "expected value"


def _innermost(doc: str) -> str | None:
    """The bracket of the object or array open at the end of ``doc`` (None at top level)."""
    opened: list[str] = []
    quoted = escaped = False
    for char in doc:
        if quoted:
            escaped, quoted = (False, True) if escaped else (char == "\\", char != '"')
        elif char == '"':
            quoted = True
        elif char in "{[":
            opened.append(char)
        elif char in "}]" and opened:
            opened.pop()
    return opened[-1] if opened else None


_SYNTAX = (
    ("Expecting property name", "key must be a string"),
    ("Expecting ':' delimiter", "expected `:`"),
    ("Extra data", "trailing characters"),
    ("Unterminated string", "EOF while parsing a string"),
    ("Invalid control character",
     "control character (\\u0000-\\u001F) found while parsing a string"),
    ("Invalid \\escape", "invalid escape"),
)


# serde_json's words for text that is not Unicode: bytes that are not UTF-8, a leading
# surrogate escape not followed by its trailing one, a trailing one alone.
ERR_NOT_UNICODE = "invalid unicode code point"
ERR_LEAD_SURROGATE = "unexpected end of hex escape"
ERR_TRAIL_SURROGATE = "lone leading surrogate in hex escape"


def text(value: str) -> str:
    """``value`` if it is Unicode text (see ``loads``), else ``WireError`` in serde's words."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        char = ord(value[exc.start])
        if 0xDC80 <= char <= 0xDCFF:  # a byte that is not UTF-8 (surrogateescape)
            raise WireError(ERR_NOT_UNICODE) from None
        raise WireError(ERR_LEAD_SURROGATE if char < 0xDC00 else ERR_TRAIL_SURROGATE) from None
    return value


def _check_surrogates(value: Any) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            text(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{str(value).lower()}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{value}`"
    if isinstance(value, str):
        return f"string {json.dumps(value, ensure_ascii=False)}"
    if isinstance(value, list):
        return "sequence"
    return "map"


# Field kinds: what serde's derived Deserialize accepts for each Rust type used by mq9, named
# by the words its errors use. ITEMS: each item is read by its own shape, by whoever reads it.
STR, U32, U64, BOOL, STR_LIST, DELIVER = "a string", "u32", "u64", "a boolean", "a sequence", "enum"
I64, BYTES, ITEMS = "i64", "a sequence of bytes", "a sequence of items"  # reply fields
_PYTHON_TYPES = {STR: str, BOOL: bool, STR_LIST: list, BYTES: list, ITEMS: list}
_PYTHON_TYPES |= dict.fromkeys((U32, U64, I64), int)


class Shape:
    """One request or reply body (a Rust struct in ``mq9-core/src/protocol.rs``), read the way
    serde reads it: unknown fields are ignored, ``null`` in an optional field means absent, a
    missing required field is an error. ``fields`` maps a name to ``(kind, required)``, or to
    a nested ``Shape``; ``defaults`` fills absent fields serde gives a default."""

    def __init__(
        self,
        name: str,
        fields: dict[str, tuple[str, bool] | Shape],
        defaults: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.fields = fields
        self.defaults = dict(defaults or {})

    def read(self, data: bytes) -> dict[str, Any]:
        """The fields of a JSON body; absent optional fields are None. Raises ``WireError``."""
        return self.convert(loads(data, as_struct=True))

    def convert(self, value: Any) -> dict[str, Any]:
        """``value`` read as serde reads the struct: from an object, or from an array of its
        fields in order; the first bad field in JSON order is the error."""
        short = None
        if isinstance(value, list):
            value, short = self._from_sequence(value)
        if not isinstance(value, dict):
            raise WireError(f"invalid type: {_describe(value)}, expected struct {self.name}")
        out: dict[str, Any] = {}
        for field, item in value.items():  # JSON order
            spec = self.fields.get(field)
            if spec is None:
                continue  # unknown fields are ignored
            if isinstance(spec, Shape):
                out[field] = None if item is None else spec.convert(item)
            elif item is None and not (spec[1] or field in self.defaults):
                out[field] = None
            else:
                out[field] = _convert(spec[0], item)
        if short is not None:  # after the elements it has: serde reads them first
            raise WireError(short)
        repeated = [name for name in getattr(value, "repeated", ()) if name in self.fields]
        if repeated:
            raise WireError(f"duplicate field `{repeated[0]}`")
        for field, spec in self.fields.items():  # what the object left out
            if field in out:
                continue
            if field in self.defaults:
                out[field] = self.defaults[field]
            elif isinstance(spec, Shape) or not spec[1]:
                out[field] = None
            else:
                raise WireError(f"missing field `{field}`")
        return {field: out[field] for field in self.fields}

    def _from_sequence(self, items: list[Any]) -> tuple[dict[str, Any], str | None]:
        """serde's derived visit_seq: the fields in order; one left out takes its default
        if it has one, else the array is too short (the error text, second)."""
        names = list(self.fields)
        if len(items) > len(names):
            raise WireError("trailing characters")
        short = None
        if any(missing not in self.defaults for missing in names[len(items) :]):
            short = (
                f"invalid length {len(items)}, expected struct {self.name} with "
                f"{len(names)} elements"
            )
        return dict(zip(names, items, strict=False)), short

    def body(self, **values: Any) -> bytes:
        """The JSON body for a request; None values are left out (serde reads them as absent)."""
        self.write(**values)  # refuses a name that is no field
        return encode({k: v for k, v in values.items() if v is not None})

    def write(self, **values: Any) -> dict[str, Any]:
        """The body as serde writes it (the broker's replies): every field, in order, a None
        as null. A name that is no field is a programming error."""
        unknown = set(values) - set(self.fields)
        if unknown:
            raise TypeError(f"{self.name} has no field {sorted(unknown)[0]!r}")
        return {field: values.get(field, self.defaults.get(field)) for field in self.fields}


def _deliver(value: Any) -> str:
    """A ``DeliverPolicy`` as serde_json reads an enum (de.rs ``deserialize_enum``): a string,
    or an object whose first key is the variant (read first) and its value ``null`` (a unit
    variant), closed after it; anything else is ``expected value``."""
    if isinstance(value, dict) and value:  # {"earliest": null}
        (variant, unit), *more = value.items()
        _deliver(variant)
        if unit is not None:
            raise WireError(f"invalid type: {_describe(unit)}, expected unit")
        if more or getattr(value, "repeated", ()):
            raise WireError("expected value")  # a second key where `}` must come
        return variant
    if not isinstance(value, str):
        raise WireError("expected value")
    if text(value) not in DELIVER_POLICIES:
        variants = ", ".join(f"`{v}`" for v in DELIVER_POLICIES)
        raise WireError(f"unknown variant `{value}`, expected one of {variants}")
    return value


def _convert(kind: str, value: Any) -> Any:
    if kind == DELIVER:
        return _deliver(value)
    wanted = _PYTHON_TYPES[kind]
    # Exact types first: this runs for every field of every message read (bool is an int).
    if (
        type(value) is not wanted and (isinstance(value, bool) or not isinstance(value, wanted))
    ) or (kind == BYTES and not all(type(b) is int and 0 <= b <= 255 for b in value)):
        expected = "a sequence" if kind == ITEMS else kind
        raise WireError(f"invalid type: {_describe(value)}, expected {expected}")
    if kind in (U64, U32) and not 0 <= value <= (MAX_U64 if kind == U64 else MAX_U32):
        raise WireError(f"invalid value: integer `{value}`, expected {kind}")
    if kind == STR:
        return text(value)
    if kind == STR_LIST:
        return [_convert(STR, item) for item in value]
    return bytes(value) if kind == BYTES else value


# -- the request bodies (mq9-core/src/protocol.rs, and agent.rs for UNREGISTER) ----------------

CREATE_REQUEST = Shape(
    "MailboxCreateReq", {"name": (STR, False), "ttl": (U64, False), "desc": (STR, False)}
)
FETCH_CONFIG = Shape("MsgFetchConfig", {"num_msgs": (U32, False), "max_wait_ms": (U64, False)})
FETCH_REQUEST = Shape(
    "MsgFetchReq",
    {
        "group_name": (STR, False),
        "deliver": (DELIVER, False),
        "from_time": (U64, False),
        "from_id": (U64, False),
        "force_deliver": (BOOL, False),
        "config": FETCH_CONFIG,
    },
    defaults={"deliver": "latest"},  # #[serde(default)]: absent is latest, null is an error
)
ACK_REQUEST = Shape(
    "MsgAckReq",
    {"group_name": (STR, True), "mail_address": (STR, True), "msg_id": (U64, True)},
)
QUERY_REQUEST = Shape(
    "MsgQueryReq",
    {"key": (STR, False), "tags": (STR_LIST, False), "since": (U64, False), "limit": (U64, False)},
)
REGISTER_REQUEST = Shape("AgentRegisterReq", {"name": (STR, True), "payload": (STR, True)})
UNREGISTER_REQUEST = Shape("AgentUnregisterReq", {"name": (STR, True)})
REPORT_REQUEST = Shape("AgentReportReq", {"name": (STR, True), "report_info": (STR, False)})
DISCOVER_REQUEST = Shape(
    "AgentDiscoverReq",
    {"text": (STR, False), "semantic": (STR, False), "limit": (U32, False), "page": (U32, False)},
)

# -- the reply bodies (mq9-core/src/protocol.rs): the broker writes them, the client reads them

# Every reply carries ``error`` ("" = success); on an error the other fields are absent, and
# serde's #[serde(default)] gives them their defaults.
MSG_ITEM = Shape(
    "MsgItem",
    {
        "msg_id": (U64, True),
        "payload": (STR, True),  # the payload bytes as UTF-8 text (invalid bytes as U+FFFD)
        "priority": (STR, True),
        "header": (BYTES, False),  # the SEND's NATS header block, or null
        "create_time": (U64, True),
    },
)
ERROR_REPLY = Shape("ErrorReply", {"error": (STR, True)})
CREATE_REPLY = Shape(
    "MailboxCreateReply",
    {"error": (STR, True), "mail_address": (STR, False)},
    defaults={"mail_address": ""},
)
SEND_REPLY = Shape("MsgSendReply", {"error": (STR, True), "msg_id": (I64, False)}, {"msg_id": 0})
MESSAGES_REPLY = Shape(  # FETCH and QUERY
    "MsgFetchReply", {"error": (STR, True), "messages": (ITEMS, False)}, {"messages": []}
)
DELETE_REPLY = Shape(
    "MsgDeleteReply", {"error": (STR, True), "deleted": (BOOL, False)}, {"deleted": False}
)
DISCOVER_REPLY = Shape(
    "AgentDiscoverReply", {"error": (STR, True), "agents": (ITEMS, False)}, {"agents": []}
)

# -- A2A agent cards ---------------------------------------------------------------------------

# An A2A AgentCard as RobustMQ reads it (a2a-types 0.2.0: prost types with pbjson's proto3
# JSON mapping; docs/protocol.md §7.1): no field is required, a field may be named in camelCase
# or snake_case, an unknown key means "not a card", and null is refused for strings, lists and
# maps. RobustMQ's REGISTER accepts such a card bare and stores it re-serialized (camelCase,
# fields in proto order, empty ones left out); only cards are indexed for search. A field maps
# to the type its value must have; ``object`` (a message, or an optional string) takes null too.
A2A_CARD_FIELDS = {
    "name": str,
    "description": str,
    "supportedInterfaces": list,
    "provider": object,
    "version": str,
    "documentationUrl": object,  # optional string: null allowed
    "capabilities": object,
    "securitySchemes": dict,
    "securityRequirements": list,
    "defaultInputModes": list,
    "defaultOutputModes": list,
    "skills": list,
    "signatures": list,
    "iconUrl": object,
}
A2A_SKILL_FIELDS = dict.fromkeys(("id", "name", "description"), str) | dict.fromkeys(
    ("tags", "examples", "inputModes", "outputModes", "securityRequirements"), list
)
A2A_INTERFACE_FIELDS = dict.fromkeys(("url", "protocolBinding", "tenant", "protocolVersion"), str)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _proto_message(value: Any, fields: dict[str, type]) -> dict[str, Any] | None:
    """``value`` read as one proto message and written back as pbjson writes it, or None
    when pbjson would refuse it."""
    if not isinstance(value, dict):
        return None
    read: dict[str, Any] = {}
    for key, item in value.items():
        name = key if key in fields else _camel(key)
        kind = fields.get(name)
        if kind is None or name in read:  # an unknown key, or a field named twice
            return None
        if item is None:
            if kind is not object:
                return None
            continue
        if not isinstance(item, kind):
            return None
        read[name] = item
    nested = {"skills": A2A_SKILL_FIELDS, "supportedInterfaces": A2A_INTERFACE_FIELDS}
    for name, item_fields in nested.items():
        if name in read and name in fields:
            items = [_proto_message(item, item_fields) for item in read[name]]
            if any(item is None for item in items):
                return None
            read[name] = items
    # pbjson leaves out what holds its default: empty strings and lists
    return {name: read[name] for name in fields if name in read and read[name] not in ("", [])}


def a2a_card(value: Any) -> dict[str, Any] | None:
    """``value`` as RobustMQ stores it if it reads as an A2A AgentCard, else None."""
    return _proto_message(value, A2A_CARD_FIELDS)


# -- messages ----------------------------------------------------------------------------------


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


def payload_bytes(payload: object) -> bytes:
    """The bytes to send for a payload: ``bytes`` as is (only UTF-8: RobustMQ hands payloads
    back as text, so other bytes would come back changed), ``str`` as UTF-8, ``dict`` as JSON."""
    if isinstance(payload, (bytes, bytearray, memoryview)):
        data = bytes(payload)
        try:
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
    priority = parse_priority(priority)
    if priority is not Priority.NORMAL:
        headers[HEADER_PRIORITY] = priority.value
    if key is not None:
        headers[HEADER_KEY] = check_key(key)
    if delay is not None:  # RobustMQ delays even with 0 (the reply's msg_id is then -1)
        headers[HEADER_DELAY] = str(check_int("delay", delay, 0, MAX_SECONDS))
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


def _header_value(value: object) -> bool:
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


# -- agent cards as the client builds and reads them -------------------------------------------

MQ9_URL_SCHEME = "mq9://"
A2A_CARD_VERSION = "1.0.0"
A2A_MODES = ["text/plain"]


def mq9_interface(mailbox: str) -> dict[str, str]:
    """The A2A ``supportedInterfaces`` entry that says "reach me at this mq9 mailbox". It is a
    field of the A2A AgentCard itself, so it survives RobustMQ re-serializing the card (a
    top-level ``mailbox`` field is no card field at all, and makes RobustMQ refuse the card)."""
    return {"url": MQ9_URL_SCHEME + mailbox, "protocolBinding": "mq9", "protocolVersion": "1.0"}


def agent_card(
    name: str,
    *,
    mailbox: str | None = None,
    description: str | None = None,
    skills: list[str] | list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """An A2A AgentCard RobustMQ indexes for search. ``skills`` are strings or dicts with
    ``name`` (and optional ``id``, ``description``, ``tags``, ``examples``); ``mailbox`` goes
    into ``supportedInterfaces`` as ``mq9://<mailbox>``. Raises ``ValueError`` on bad input."""
    if not isinstance(name, str) or not name:
        raise ValueError("an agent card needs a non-empty string name")
    if description is not None and not isinstance(description, str):
        raise ValueError("an agent card's description must be a string")
    if mailbox is not None:
        try:
            check_address(mailbox)
        except Mq9Error:
            raise ValueError(
                f"an agent card's mailbox must be a mailbox address, not {quoted(mailbox)}"
            ) from None
    card = {
        "name": name,
        "description": description or "",
        "version": A2A_CARD_VERSION,
        "supportedInterfaces": [] if mailbox is None else [mq9_interface(mailbox)],
        "defaultInputModes": list(A2A_MODES),
        "defaultOutputModes": list(A2A_MODES),
        "skills": card_skills(skills or []),
    }
    return a2a_card(card) or card  # as RobustMQ stores it, so what is sent is what is kept


def card_skills(skills: object) -> list[dict[str, Any]]:
    """A2A skills from ``skills`` as ``agent_card`` takes them; ``ValueError`` on anything else."""
    if not isinstance(skills, (list, tuple)):
        raise ValueError("an agent card's skills must be a list of strings or dicts")
    return [_skill(skill) for skill in skills]


def _skill(skill: object) -> dict[str, Any]:
    if isinstance(skill, str) and skill.strip():
        skill = {"name": skill, "tags": [skill]}
    if not isinstance(skill, dict) or not isinstance(skill.get("name"), str) or not skill["name"]:
        raise ValueError(f"a skill is a non-empty string or a dict with a name, not {skill!r}")
    skill = {key: value for key, value in skill.items() if value is not None}
    rest = card_skill_fields(skill)
    name = skill["name"]
    description = skill.get("description", name)
    tags = skill.get("tags", [])
    examples = skill.get("examples", [])
    skill_id = skill.get("id")
    if not isinstance(description, str) or not isinstance(skill_id, (str, type(None))):
        raise ValueError(f"a skill's description and id must be strings: {skill!r}")
    if not _strings(tags) or not _strings(examples):
        raise ValueError(f"a skill's tags and examples must be lists of strings: {skill!r}")
    return {
        "id": skill_id or re.sub(r"\s+", "-", name.strip().lower()),
        "name": name,
        "description": description,
        "tags": list(tags),
        "examples": list(examples),
        **rest,
    }


_SKILL_BASICS = {"id", "name", "description", "tags", "examples"}


def card_skill_fields(skill: dict[str, Any]) -> dict[str, Any]:
    """A skill's other A2A fields (inputModes, ...), camelCased; a key that is no A2A skill
    field is refused by name (RobustMQ would not read the card, and the field would be lost)."""
    rest = {}
    for key, value in skill.items():
        name = _camel(key)
        if name not in A2A_SKILL_FIELDS:
            raise ValueError(
                f"skill field {key!r} is no A2A AgentSkill field: RobustMQ would not read the "
                f"card, so it would be lost (a skill has {', '.join(A2A_SKILL_FIELDS)})"
            )
        if name not in _SKILL_BASICS:
            rest[name] = value
    return rest


def _strings(value: object) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)


def card_mailbox(card: Mapping[str, Any]) -> str | None:
    """The mailbox a card names: its ``mailbox`` field, else the first ``mq9://`` interface."""
    mailbox = card.get("mailbox")
    if isinstance(mailbox, str) and mailbox:
        return mailbox
    interfaces = card.get("supportedInterfaces")
    for interface in interfaces if isinstance(interfaces, list) else ():
        url = interface.get("url") if isinstance(interface, dict) else None
        if isinstance(url, str) and url.startswith(MQ9_URL_SCHEME) and len(url) > 6:
            return url[len(MQ9_URL_SCHEME) :]
    return None


def normalize_agent(item: Any) -> dict[str, Any]:
    """One DISCOVER item (a listing's ``{name, agent_info}`` or a search's ``{agent_id, name,
    description, agent_info}``) as the card's fields plus ``name`` and ``mailbox`` (None when
    the card names none); when ``agent_info`` is no JSON object, ``name``, ``mailbox`` None and
    the raw ``agent_info``. Raises ``Mq9Error`` on an item that is not an agent."""
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise MalformedReply(f"malformed agent in the broker's reply: {item!r:.200}")
    info = item.get("agent_info")
    card: Any = None
    if isinstance(info, str):
        with contextlib.suppress(ValueError, RecursionError):
            card = json.loads(info)
    if isinstance(card, dict):
        return {**card, "name": item["name"], "mailbox": card_mailbox(card)}
    return {"name": item["name"], "mailbox": None, "agent_info": info}
