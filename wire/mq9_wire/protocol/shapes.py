"""Request and reply bodies as serde reads and writes them: ``Shape`` (one Rust struct of
RobustMQ's mq9-core/src/protocol.rs), and each body mq9 sends."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .errors import WireError
from .limits import DELIVER_POLICIES, MAX_U32, MAX_U64
from .serde import encode, loads, repeated_names, text


def _describe(value: object) -> str:
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
_PYTHON_TYPES: dict[str, type[Any]] = {
    STR: str,
    BOOL: bool,
    STR_LIST: list,
    BYTES: list,
    ITEMS: list,
}
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
        # What a body leaves out becomes, in field order (copied for each body read); the
        # fields it may not leave out
        self._absent = {field: self.defaults.get(field) for field in fields}
        self._required = [
            field
            for field, spec in fields.items()
            if not isinstance(spec, Shape) and spec[1] and field not in self.defaults
        ]

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
        out = self._absent.copy()  # what the object leaves out, in field order
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
        repeated = [name for name in repeated_names(value) if name in self.fields]
        if repeated:
            raise WireError(f"duplicate field `{repeated[0]}`")
        for field in self._required:
            if field not in value:
                raise WireError(f"missing field `{field}`")
        return out

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
        if more or repeated_names(value):
            raise WireError("expected value")  # a second key where `}` must come
        return str(variant)
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
        return _str_list(value)
    return bytes(value) if kind == BYTES else value


def _str_list(items: list[Any]) -> list[str]:
    """A sequence of strings; the first item that is not one is the error. All at once when
    every item is text (a QUERY may name thousands of tags: a call per tag is the broker's
    worker's time, bench/HOTPATH.md), else item by item for the first one's error. Joined, lone
    surrogates stay apart (a str never pairs them), so the join encodes iff every item does."""
    if all(type(item) is str for item in items):
        try:
            "".join(items).encode("utf-8")
        except UnicodeEncodeError:
            pass
        else:
            return list(items)
    return [_convert(STR, item) for item in items]


# -- the request bodies (mq9-core/src/protocol.rs, and agent.rs for UNREGISTER) ----------------

CREATE_REQUEST = Shape(
    "MailboxCreateReq", {"name": (STR, False), "ttl": (U64, False), "desc": (STR, False)}
)
FETCH_CONFIG = Shape("MsgFetchConfig", {"num_msgs": (U32, False), "max_wait_ms": (U64, False)})
FETCH_SKIP = Shape(
    "MsgFetchSkip", {"critical": (U64, False), "urgent": (U64, False), "normal": (U64, False)}
)
FETCH_REQUEST = Shape(
    "MsgFetchReq",
    {
        "group_name": (STR, False),
        "deliver": (DELIVER, False),
        "from_time": (U64, False),
        "from_id": (U64, False),
        "force_deliver": (BOOL, False),
        "config": FETCH_CONFIG,
        # (the bundled broker's; RobustMQ ignores it, as any unknown field) for each lane,
        # the last msg_id of it a group's reader has done: that lane is read after it
        "skip_through": FETCH_SKIP,
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
