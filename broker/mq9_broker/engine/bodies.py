"""Each mq9 request body read as RobustMQ's handler reads it (``read``, and one reader per
command: the ``read`` of its entry in the engine's table, rules.py), and the checks that decide
before any state is read: a reserved agent name, a group name's length, a message or a registry
entry no answer could carry. Each refusal is an ``Mq9Error`` with its one line; nothing here
reads or writes state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mq9_wire import protocol as p
from mq9_wire.protocol import names
from mq9_wire.protocol.errors import Mq9Error, WireError
from mq9_wire.semantic.ranking import AgentEntry

from ..state.mailbox import StoredMessage
from . import owned as owning
from .answers import EMPTY_ANSWER, MSG_ID_ROOM
from .limits import BrokerLimits
from .rules import unknown

# meta-service searches 10 when asked for 0 (services/mq9/agent.rs)
SEARCH_LIMIT_FOR_ZERO = 10


def check_unreserved(verb: str, name: object) -> None:
    """Refuse ``verb`` of an agent name the broker reserves, on every store, with or
    without credentials (names.reserved_agent_refusal)."""
    refusal = names.reserved_agent_refusal(verb, name)
    if refusal is not None:
        raise Mq9Error(refusal)


# -- request bodies, read as RobustMQ's handlers read them -----------------------------------


def read(
    shape: p.Shape, body: bytes, prefix: str = "", *, empty_ok: bool = False
) -> dict[str, Any]:
    """A request body as RobustMQ's handler parses it: serde's error behind the handler's own
    prefix; an empty body is every field absent where the handler allows it."""
    if empty_ok and not body:
        return {**dict.fromkeys(shape.fields), **shape.defaults}
    try:
        return owning.fields(shape, body)
    except WireError as exc:
        raise Mq9Error(prefix + exc.message) from None


def read_query(body: bytes, limits: BrokerLimits) -> dict[str, Any]:
    return read(p.QUERY_REQUEST, body, "invalid query request: ", empty_ok=True)


def query_limit(request: dict[str, Any]) -> int:
    return p.QUERY_CAP if request["limit"] is None else min(request["limit"], p.QUERY_CAP)


@dataclass(frozen=True, slots=True)
class Creation:
    """A CREATE's request: the address (made up when none is named), TTL and description."""

    address: str
    ttl: int
    desc: str


def read_create(body: bytes, limits: BrokerLimits) -> Creation:
    request = read(p.CREATE_REQUEST, body, "invalid MAILBOX.CREATE payload: ", empty_ok=True)
    name = request["name"]
    if name is None:
        address = p.new_address()
    else:
        problem = p.name_error(name)
        if problem:
            raise Mq9Error(problem)
        if len(name) > p.MAX_ADDRESS_LENGTH:
            # (our choice; RobustMQ takes any length) no SEND could reach such a mailbox
            raise Mq9Error(p.err_address_too_long(name))
        address = name
    ttl = p.DEFAULT_MAILBOX_TTL if request["ttl"] is None else request["ttl"]
    return Creation(address, ttl, request["desc"] or "")


# A FETCH's request, its num_msgs and its max_wait_ms
Fetch = tuple[dict[str, Any], int, int]


def read_fetch(body: bytes, limits: BrokerLimits) -> Fetch:
    """A FETCH's request, its ``num_msgs`` and ``max_wait_ms`` (RobustMQ's defaults)."""
    request = read(p.FETCH_REQUEST, body)
    config = request["config"] or {}
    num_msgs = config.get("num_msgs")
    max_wait_ms = config.get("max_wait_ms")
    return (
        request,
        p.DEFAULT_NUM_MSGS if num_msgs is None else num_msgs,
        p.DEFAULT_MAX_WAIT_MS if max_wait_ms is None else max_wait_ms,
    )


def lane_skips(request: dict[str, Any]) -> list[int | None] | None:
    """A group FETCH's ``skip_through`` (our extension; RobustMQ ignores it) by lane,
    critical first: each lane is read after its msg_id. None: every lane from the position."""
    skip = request.get("skip_through")
    if not skip or all(skip.get(lane.value) is None for lane in p.PRIORITY_ORDER):
        return None
    return [skip.get(lane.value) for lane in p.PRIORITY_ORDER]


def read_ack(body: bytes, limits: BrokerLimits) -> dict[str, Any]:
    return read(p.ACK_REQUEST, body)


def check_group_name(group: str) -> None:
    """(our choice) a new consumer group's name is at most MAX_GROUP_NAME characters."""
    if len(group) > p.MAX_GROUP_NAME:
        raise Mq9Error(p.err_group_name_too_long(len(group)))


def wrap_u64(number: int) -> int:
    """``number`` as a Rust u64 sum without overflow checks holds it."""
    return number & p.MAX_U64


def delete_target(target: str) -> tuple[str, int]:
    """A DELETE's mailbox and msg_id, read from what follows its subject's prefix."""
    address, dot, msg_id_text = target.rpartition(".")
    if not dot:  # no msg_id after the address: no command has this subject
        raise unknown(p.MSG_DELETE + target)
    msg_id = p.header_u64(msg_id_text) if msg_id_text == msg_id_text.strip() else None
    if msg_id is None:
        raise Mq9Error(f"invalid msg_id: {msg_id_text}")
    return address, msg_id


def check_fits(message: StoredMessage, limit: int, bound: str) -> None:
    """(our choice; RobustMQ takes any payload) refuse a message whose FETCH answer NATS
    could not carry or above max_payload (``limit``, set by what ``bound`` names), with room
    for the widest msg_id (not known yet); a bound from lengths first: a message far below is
    not encoded to know. The refusal says the largest payload of plain text taken beside this
    message's headers, computed the same way (docs/protocol.md, "How large a message")."""
    if EMPTY_ANSWER + message.wire_size_bound() + MSG_ID_ROOM <= limit:
        return
    size = EMPTY_ANSWER + message.wire_size() + MSG_ID_ROOM
    if size > limit:
        bare = StoredMessage(-1, b"", message.priority, message.create_time, header=message.header)
        largest = max(limit - (EMPTY_ANSWER + bare.wire_size() + MSG_ID_ROOM), 0)
        raise Mq9Error(p.err_message_too_large(size, limit, largest, bound))


# -- the agent registry ----------------------------------------------------------------------


def read_registration(body: bytes, limits: BrokerLimits) -> AgentEntry:
    """The entry a REGISTER body makes, without its vector; its create_time is set when it
    is kept. An A2A card if the body reads as one; else the body read afresh as {name,
    payload}, whose error is the one answered (agent.rs)."""
    if not body:
        raise Mq9Error(p.ERR_REGISTER_EMPTY)
    try:
        card = p.a2a_card(p.loads(body))
    except WireError:
        card = None
    if card is not None:  # stored as RobustMQ re-serializes it
        name, agent_info = card.get("name", ""), p.encode(card).decode()
    else:
        request = read(p.REGISTER_REQUEST, body, "invalid AGENT.REGISTER payload: ")
        name, agent_info = request["name"], request["payload"]
    if not agent_info:
        raise Mq9Error(p.ERR_AGENT_INFO_EMPTY)
    size, limit = len(agent_info.encode()), limits.max_card_bytes
    if limit is not None and size > limit:
        raise Mq9Error(p.err_card_too_large(size, limit))
    return AgentEntry.make(name, agent_info, 0)


def check_entry_fits(entry: AgentEntry, limit: int) -> None:
    # (our choice) an entry that alone overflows a DISCOVER answer is refused
    size = len(p.encode(p.DISCOVER_REPLY.write(error="", agents=[entry.listed()])))
    if size > limit:
        raise Mq9Error(p.err_entry_too_large(size, limit))


def read_named(body: bytes, shape: p.Shape, command: str) -> dict[str, Any]:
    """An UNREGISTER's or REPORT's request, which must name an agent."""
    request = read(shape, body, f"invalid {command} payload: ")
    if not request["name"]:
        raise Mq9Error(p.ERR_AGENT_NAME_EMPTY)
    return request


def read_unregister(body: bytes, limits: BrokerLimits) -> dict[str, Any]:
    return read_named(body, p.UNREGISTER_REQUEST, "AGENT.UNREGISTER")


def read_report(body: bytes, limits: BrokerLimits) -> dict[str, Any]:
    return read_named(body, p.REPORT_REQUEST, "AGENT.REPORT")


def read_discover(body: bytes, limits: BrokerLimits) -> dict[str, Any]:
    return read(p.DISCOVER_REQUEST, body, "invalid AGENT.DISCOVER payload: ", empty_ok=True)


def search_page(request: dict[str, Any]) -> slice:
    """Which of a search's ranked hits its page holds."""
    limit = p.DEFAULT_DISCOVER_LIMIT if request["limit"] is None else request["limit"]
    # u32 arithmetic without overflow checks, as RobustMQ computes it
    first = ((max(request["page"] or 1, 1) - 1) * limit) & p.MAX_U32
    return slice(first, first + (limit or SEARCH_LIMIT_FOR_ZERO))
