"""The mq9 commands' rules and texts, written once: what a command's entry in the
engine's table holds (``Command``: its subject, the largest body read for it, how the body is
read, whether it waits or costs, its part in ownership, its handler), each request body read
as RobustMQ's handler reads it, the checks that decide before any state is read, and the
answers' fixed bytes.

The engine (engine.py) holds the table, one entry a command beside its handler, and
adds what its store decides: where a message goes, what a group has read, which names are
taken. Nothing here reads or writes state.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from mq9_wire import protocol as p
from mq9_wire.nats_floor.fits import MAX_PENDING, PENDING_SHARE
from mq9_wire.protocol import names
from mq9_wire.protocol.errors import Mq9Error, WireError
from mq9_wire.semantic.ranking import AgentEntry

from ..state.mailbox import StoredMessage
from ..storage.mailbox_store import StorageError
from . import owned as owning
from .answers import EMPTY_ANSWER, cut_answer, empty_wait, whole_answer
from .limits import BrokerLimits
from .owned import Owned

log = logging.getLogger("mq9_broker")

Headers = Mapping[str, str] | None  # a request's NATS headers, as nats-py reads them

OK = p.encode(p.ERROR_REPLY.write(error=""))
DELETED = p.encode(p.DELETE_REPLY.write(error="", deleted=True))
# A body above this is parsed off the loop (a large QUERY's parsing would hold every other
# request: bench/HOTPATH.md); a QUERY's above it takes its requester's turns (serve.py)
LARGE_BODY = 4096
# meta-service searches 10 when asked for 0 (services/mq9/agent.rs)
SEARCH_LIMIT_FOR_ZERO = 10
# The replies written around items encoded once each (MSG_ITEM, agents), not re-encoded
DISCOVER_HEAD = p.encode(p.DISCOVER_REPLY.write(error="", agents=[]))[:-2]
# A SEND's answer, written without the encoder (as much as the rest of a SEND's own work);
# tests/broker/engine/test_engine_properties.py holds it to p.SEND_REPLY's encoding
SENT = b'{"error":"","msg_id":%d}'
# A keyed SEND's answer: "duplicate" (JetStream's word in a PubAck) says this broker
# recognises keys, and whether the key's first SEND was answered before (nothing stored now)
SENT_ONCE = b'{"error":"","msg_id":%d,"duplicate":%s}'
# SENT_ONCE's two answers, written with the msg_id alone (a keyed SEND's bytes: bench)
_SENT_NEW = SENT_ONCE.replace(b"%s", b"false")
_SENT_AGAIN = SENT_ONCE.replace(b"%s", b"true")
DELAYED = p.encode(p.SEND_REPLY.write(error="", msg_id=-1))
MSG_ID_ROOM = len(str(p.MAX_U64)) - len("-1")  # a msg_id's widest digits, beyond the -1 sent
_ESCAPED = len("\\u0000")  # the most bytes a card's byte takes in JSON text


# -- the senders a broker vouches for --------------------------------------------------------


class Vouched(dict[str, str]):
    """A SEND's headers with the sender the broker authenticated: what an enforcing
    broker hands the engine (identities/ownership.py), the client's own ``mq9-sender``, in
    any case or spacing, replaced by ``sender``. Built only in this process: a request off
    the wire is a plain mapping, whose ``mq9-sender`` the engine removes (``stored_headers``)."""

    def __init__(self, headers: Headers, sender: str) -> None:
        super().__init__(_without_sender(headers) or {})
        self[p.HEADER_SENDER] = sender
        self.sender = sender


class FromClient(dict[str, str]):
    """A keyed SEND's headers on an open broker, with the client its serving told
    apart (``client``: the address nats-server vouches for, else the reply inbox, serve.py):
    whose bound its new key counts against, so that one client filling its keys leaves room
    to the others. Built only in this process, as ``Vouched``."""

    def __init__(self, headers: Headers, client: str) -> None:
        super().__init__(headers or {})
        self.client = client


def _is_sender(name: str) -> bool:
    # stripped as parse_header_block strips a name, and in any case: no reader may take a
    # client's "MQ9-Sender " for the broker's
    return name.strip().lower() == p.HEADER_SENDER


def _without_sender(headers: Headers) -> Headers:
    if headers and any(_is_sender(name) for name in headers):
        return {name: value for name, value in headers.items() if not _is_sender(name)}
    return headers


def check_unreserved(verb: str, name: object) -> None:
    """Refuse ``verb`` of an agent name the broker reserves, on every store, with or
    without credentials (names.reserved_agent_refusal)."""
    refusal = names.reserved_agent_refusal(verb, name)
    if refusal is not None:
        raise Mq9Error(refusal)


def idempotency_key(headers: Headers) -> tuple[str | None, Headers]:
    """A SEND's idempotency key (None: none), and its headers without it: the key is the
    broker's, never stored with the message nor shown to its readers."""
    if not headers or p.HEADER_IDEMPOTENCY_KEY not in headers:
        return None, headers
    key = headers[p.HEADER_IDEMPOTENCY_KEY].strip()
    size = len(key) if key.isascii() else len(key.encode(errors="surrogatepass"))
    if not 0 < size <= p.MAX_IDEMPOTENCY_KEY:
        raise Mq9Error(p.err_idempotency_key_size(size))
    if isinstance(headers, Vouched):
        rest = {name: value for name, value in headers.items() if name != p.HEADER_IDEMPOTENCY_KEY}
        return key, Vouched(rest, headers.sender)
    if len(headers) == 1:  # the key alone (most keyed SENDs): no headers to store
        return key, None
    return key, {name: value for name, value in headers.items() if name != p.HEADER_IDEMPOTENCY_KEY}


def fingerprint(message: StoredMessage, mq9_key: str | None, delay: int, body: bytes) -> bytes:
    """What makes two keyed SENDs "the same SEND": the payload, priority, mq9-key, tags,
    delay and TTL (seconds from the SEND; -1: none), not the other headers (a trace context
    differs from one try to the next). 16 bytes of BLAKE2b."""
    ttl = message.expire_at - message.create_time if message.expire_at else -1
    if mq9_key is None and not message.tags and delay == ttl == -1:  # (most: one lane's mark)
        head = _PLAIN_HEADS[message.priority]
    else:
        text = f"{message.priority.value}\n{mq9_key}\n{','.join(message.tags)}\n{delay}\n{ttl}\n"
        head = text.encode(errors="surrogatepass")
    digest = _FINGERPRINT.copy()
    digest.update(head)
    digest.update(body)
    return digest.digest()


# fingerprint's hash, copied for each: blake2b's own keyword arguments, read on each
# call, cost it more than its hashing
_FINGERPRINT = hashlib.blake2b(digest_size=16)


# fingerprint's head of a SEND with a priority and nothing else
_PLAIN_HEADS = {lane: f"{lane.value}\nNone\n\n-1\n-1\n".encode() for lane in p.Priority}


def sent_once(msg_id: int, duplicate: bool) -> bytes:
    return (_SENT_AGAIN if duplicate else _SENT_NEW) % msg_id


def stored_headers(headers: Headers) -> Headers:
    """The headers a SEND's message is stored with: ``Vouched`` ones as they are, any other
    without a ``mq9-sender`` (our choice: on this broker the header always means vouched;
    RobustMQ stores what the client wrote)."""
    return headers if isinstance(headers, Vouched) else _without_sender(headers)


# -- a command's entry (the table of them: engine.py, beside the handlers) -------------------

E = TypeVar("E")  # the engine whose handler answers a command
R = TypeVar("R")  # what a command's body reads as, handed to its handler


def parsed_body(limits: BrokerLimits) -> int | None:
    return limits.max_request


def card_body(limits: BrokerLimits) -> int | None:
    """A REGISTER's: room for a card of ``max_card_bytes`` with every byte escaped; no card
    limit, none (what NATS carries)."""
    card = limits.max_card_bytes
    return None if card is None else limits.max_request + _ESCAPED * card


def own_rule(_limits: BrokerLimits) -> int | None:
    """None here: SEND keeps its own rule (``check_fits``); DELETE's body is never read."""
    return None


def never_costly(_body: bytes) -> bool:
    return False


def always_costly(_body: bytes) -> bool:
    return True


def large_body(body: bytes) -> bool:
    return len(body) > LARGE_BODY


def as_is(body: bytes, limits: BrokerLimits) -> bytes:
    """A body its handler reads itself: SEND's, with its headers, once its mailbox is found
    live (RobustMQ's order: a SEND to no mailbox is told so, whatever its headers); DELETE's,
    never read (its target is in the subject)."""
    return body


@dataclass(frozen=True)
class Command(Generic[E, R]):
    """One mq9 command whole, as an engine takes it (as the MCP SDK's request handler
    entries hold a handler with its params type).

    ``subject``: the command's subject, or, ending in ".", the prefix a mailbox address (and
    for DELETE ``.msg_id``) follows, handed to the handler as its target. ``handler``:
    ``handler(engine, target, headers, request)``, the answer to a request whose body
    ``read(body, limits)`` made ``request`` (refusing it with ``Mq9Error``). ``body_limit``:
    the largest body read, for the broker's limits (None: not bounded here). ``waits``:
    whether its answer may wait (an empty FETCH, the worker thread, the tag reads of a
    QUERY): the in-process engine answers the others at once under its lock, as one storage
    transaction; a body of a command that waits is read on the worker thread when above
    ``LARGE_BODY``. ``costly``: whether a request with this body costs the broker work while
    it waits, so that a serving transport makes its requester take turns (serve.py).
    ``owned``: what an enforcing broker's ownership checks before it and records after it
    (owned.py), made as part of answering it."""

    subject: str
    handler: Callable[[E, str, Headers, R], Awaitable[bytes]]
    read: Callable[[bytes, BrokerLimits], R]
    body_limit: Callable[[BrokerLimits], int | None] = parsed_body
    waits: bool = False
    costly: Callable[[bytes], bool] = never_costly
    owned: Owned = owning.NOTHING

    @property
    def addressed(self) -> bool:
        return self.subject.endswith(".")

    def check_body(self, limits: BrokerLimits, subject: str, body: bytes) -> None:
        """(our choice; RobustMQ reads any body NATS carries) refuse, unread, a body larger
        than this command needs (``body_limit``)."""
        limit = self.body_limit(limits)
        if limit is not None and len(body) > limit:
            raise Mq9Error(
                f"request body of {len(body)} bytes refused unread: this broker takes at most "
                f"{limit} bytes for {subject}"
            )


def unknown(subject: str) -> Mq9Error:
    # RobustMQ answers a NATS -ERR; a service can only reply (our choice: same words)
    return Mq9Error(p.err_unknown_subject(subject))


def error_answer(text: str) -> bytes:
    return p.encode(p.ERROR_REPLY.write(error=text))


def failure_answer(subject: str, exc: Exception) -> bytes:
    """The answer to a request that failed other than by the rules: the store's error as
    it says it, a bug reported (the broker keeps serving)."""
    if isinstance(exc, StorageError):
        return error_answer(str(exc))
    log.exception("internal error on %r", subject, exc_info=exc)
    return error_answer(f"internal broker error: {type(exc).__name__}: {exc}")


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


def created(address: str) -> bytes:
    return p.encode(p.CREATE_REPLY.write(error="", mail_address=address))


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


async def fetch_answer(
    engine: Carried,
    lanes: list[list[StoredMessage]],
    request: dict[str, Any],
    num_msgs: int,
    max_wait_ms: int,
) -> bytes:
    """A FETCH's answer of the ``lanes`` read: after an empty read, RobustMQ sleeps the whole
    wait and answers empty, without looking again; a group's answer whole or refused, any
    other cut (answers.py), within the engine's answer limit once the wait is over."""
    if not lanes and max_wait_ms > 0:
        await asyncio.sleep(empty_wait(max_wait_ms))
    if request["group_name"] is not None:
        return whole_answer(lanes, num_msgs, engine.answer_limit)
    return cut_answer([m for lane in lanes for m in lane], engine.answer_limit)


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


def search_answer(hits: list[AgentEntry], limit: int) -> bytes:
    """(our choice) a search answer keeps within ``limit`` with the best-ranked agents that
    fit, so one large card cannot make DISCOVER fail for everyone."""
    room = limit - len(DISCOVER_HEAD) - 2
    kept: list[bytes] = []
    for entry in hits:
        item = p.encode(entry.found())
        room -= len(item) + (1 if kept else 0)
        if room < 0:
            break
        kept.append(item)
    return DISCOVER_HEAD + b",".join(kept) + b"]}"


def listing_answer(
    entries: list[AgentEntry], listed: Callable[[AgentEntry], bytes], limit: int | None
) -> bytes:
    """``entries`` (in name order) as a listing answers them, each as ``listed`` encodes it;
    refused as soon as the agents encoded so far show it above ``limit`` (our choice:
    RobustMQ sends it whatever its size; a cut list would hide agents)."""
    items: list[bytes] = []
    size = len(DISCOVER_HEAD) + 2
    for entry in entries:
        items.append(listed(entry))
        size += len(items[-1]) + (len(items) > 1)
        if limit is not None and size > limit:
            raise Mq9Error(p.err_listing_too_large(len(entries), size, limit))
    return DISCOVER_HEAD + b",".join(items) + b"]}"


# -- what a transport carries ---------------------------------------------------------------


class Carried:
    """The answer limit of an engine served by transports: the smallest of
    ``limits.max_answer`` and every serving transport's largest reply (``carry``)."""

    limits: BrokerLimits

    def __init__(self) -> None:
        # Each serving transport's largest reply (replaced whole: read without a lock)
        self._carriers: dict[object, int] = {}

    def carry(self, carrier: object, max_bytes: int | None) -> None:
        """``carrier``, a transport serving the engine, carries replies of at most
        ``max_bytes``; None: it serves no more."""
        carriers = dict(self._carriers)
        if max_bytes is None:
            carriers.pop(carrier, None)
        else:
            carriers[carrier] = max_bytes
        self._carriers = carriers

    @property
    def answer_limit(self) -> int | None:
        """The smallest of ``limits.max_answer`` and every transport's largest reply, which is
        at most ``PENDING_SHARE`` (half of what nats-server queues for a connection
        before it closes it as a slow consumer); None: no limit."""
        bounds = [min(carried, PENDING_SHARE) for carried in self._carriers.values()]
        if self.limits.max_answer is not None:
            bounds.append(self.limits.max_answer)
        return min(bounds, default=None)

    def message_bound(self, room: int = 0) -> tuple[int, str]:
        """The most bytes one message may take in a FETCH answer, and what sets it (as a
        refusal names it). ``room``: what a store writes beside a message's answer bytes
        within the servers' limits (``SendLimits.entry_room``)."""
        bounds = [(self.limits.max_payload, "this broker's --max-payload")]
        if self.limits.max_answer is not None:
            bounds.append((self.limits.max_answer, "this broker's largest answer (max_answer)"))
        beside = f", less {room} for the subject and headers its store adds" if room else ""
        for carried in self._carriers.values():
            if carried > PENDING_SHARE:
                why = (
                    f"half the {MAX_PENDING} bytes nats-server queues for a connection by "
                    f"default, its max_pending{beside}"
                )
                bounds.append((PENDING_SHARE - room, why))
            else:
                bounds.append((carried - room, f"the servers' max_payload of {carried}{beside}"))
        return min(bounds, key=lambda bound: bound[0])

    def _message_limit(self) -> int:
        """The most room a message, a registry entry or a DISCOVER search answer may take."""
        limit = self.answer_limit
        return self.limits.max_payload if limit is None else min(self.limits.max_payload, limit)
