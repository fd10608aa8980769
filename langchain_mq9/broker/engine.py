"""The bundled mq9 broker: every rule of PROTOCOL.md as pure logic behind one ``handle`` call.

``BrokerEngine.handle(subject, headers, body)`` takes a request exactly as it arrives on the
wire and returns the reply bytes. The in-process transport calls it directly; ``serve_on_nats``
calls it for every request on a real NATS server. Time comes from an injectable clock, so TTLs,
delays and leases are tested by moving a ``ManualClock`` instead of sleeping.

The engine is safe to share between event loops and threads: state changes happen under one
lock and never await, and a long-poll FETCH waits outside the lock on a future of its own loop.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .. import protocol as p
from ..protocol import Mq9Error, Priority
from .clock import Clock, system_clock
from .mailbox import Group, Mailbox, StoredMessage
from .registry import AgentRegistry
from .storage import Storage

log = logging.getLogger("langchain_mq9.broker")


_FETCH_FIELDS = {"group_name", "deliver", "from_time", "from_id", "force_deliver", "config"}
_CONFIG_FIELDS = {"num_msgs", "max_wait_ms"}
_CREATE_FIELDS = {"name", "ttl"}
_ACK_FIELDS = {"group_name", "mail_address", "msg_id"}
_QUERY_FIELDS = {"key", "limit", "since", "tags"}
_DISCOVER_FIELDS = {"text", "semantic", "limit", "page"}


@dataclass(frozen=True)
class BrokerLimits:
    """What one broker will hold. ``None`` means no limit beyond memory."""

    ack_wait: float = 30.0
    max_payload: int = p.DEFAULT_MAX_PAYLOAD
    max_mailboxes: int | None = None
    max_messages_per_mailbox: int | None = None


@dataclass(slots=True)
class _Delayed:
    payload: bytes
    priority: Priority
    key: str | None
    tags: tuple[str, ...]
    ttl: int | None


class BrokerEngine:
    def __init__(
        self,
        *,
        clock: Clock = system_clock,
        limits: BrokerLimits | None = None,
        storage: Storage | None = None,
    ):
        self.clock = clock
        self.limits = limits or BrokerLimits()
        # Told of every change, under the lock; ``transaction()`` makes a request's changes
        # durable before its reply leaves (see storage.py). The default keeps nothing.
        self.storage = storage if storage is not None else Storage()
        self.mailboxes: dict[str, Mailbox] = {}
        self.registry = AgentRegistry()
        self._lock = threading.Lock()
        self._seq = itertools.count()
        # Min-heaps of (when, seq, mailbox, detail), checked before every request.
        self._mailbox_expiry: list[tuple[float, int, Mailbox]] = []
        self._message_expiry: list[tuple[float, int, Mailbox, int]] = []
        self._delayed: list[tuple[float, int, Mailbox, _Delayed]] = []
        self._waiters: dict[Mailbox, list[tuple[asyncio.AbstractEventLoop, asyncio.Future]]] = {}
        self.storage.restore(self)

    # -- entry point -----------------------------------------------------------------------

    async def handle(self, subject: str, headers: Mapping[str, str] | None, body: bytes) -> bytes:
        """Answer one mq9 request; never raises, every failure is an ``error`` reply."""
        try:
            reply = await self._dispatch(subject, headers or {}, body)
        except Mq9Error as exc:
            reply = {"error": exc.message}
        except Exception as exc:  # a bug must not take the broker down: report it, keep serving
            log.exception("internal error on %s", subject)
            reply = {"error": f"internal broker error: {type(exc).__name__}: {exc}"}
        else:
            reply = {"error": "", **reply}
        return p.encode(reply)

    async def _dispatch(self, subject: str, headers: Mapping[str, str], body: bytes) -> dict:
        if subject.startswith(p.MSG_FETCH):
            return await self._fetch(_address_of(subject, p.MSG_FETCH), body)
        with self._lock, self.storage.transaction():
            self._housekeep()
            if subject.startswith(p.MSG_SEND):
                return self._send(_address_of(subject, p.MSG_SEND), headers, body)
            if subject.startswith(p.MSG_ACK):
                return self._ack(_address_of(subject, p.MSG_ACK), body)
            if subject.startswith(p.MSG_QUERY):
                return self._query(_address_of(subject, p.MSG_QUERY), body)
            if subject.startswith(p.MSG_DELETE):
                return self._delete(subject[len(p.MSG_DELETE) :])
            handler = {
                p.MAILBOX_CREATE: self._create,
                p.AGENT_REGISTER: self._register,
                p.AGENT_UNREGISTER: self._unregister,
                p.AGENT_REPORT: self._report,
                p.AGENT_DISCOVER: self._discover,
            }.get(subject)
            if handler is None:
                raise Mq9Error(f"unknown mq9 command: {subject}")
            return handler(body)

    # -- time ------------------------------------------------------------------------------

    def _housekeep(self) -> None:
        """Expire mailboxes and messages and release delayed messages that are due."""
        now = self.clock()
        while self._mailbox_expiry and self._mailbox_expiry[0][0] <= now:
            _, _, mailbox = heapq.heappop(self._mailbox_expiry)
            if self.mailboxes.get(mailbox.address) is mailbox:
                del self.mailboxes[mailbox.address]
                self.storage.mailbox_removed(mailbox)
                self._wake(mailbox)
        while self._delayed and self._delayed[0][0] <= now:
            due, seq, mailbox, delayed = heapq.heappop(self._delayed)
            self.storage.delayed_released(seq)
            if self.mailboxes.get(mailbox.address) is mailbox:
                self._store(mailbox, delayed, due)
        while self._message_expiry and self._message_expiry[0][0] <= now:
            _, _, mailbox, msg_id = heapq.heappop(self._message_expiry)
            if mailbox.remove(msg_id) and self.mailboxes.get(mailbox.address) is mailbox:
                self.storage.message_removed(mailbox, msg_id)

    def _next_due(self) -> float | None:
        return self._delayed[0][0] if self._delayed else None

    # -- mailboxes -------------------------------------------------------------------------

    def _create(self, body: bytes) -> dict:
        request = _fields(p.decode_object(body), _CREATE_FIELDS, "MAILBOX.CREATE")
        ttl = request.get("ttl")  # null means not given, as does a missing field
        ttl = 0 if ttl is None else p.check_int("ttl", ttl, 0, p.MAX_SECONDS)
        name = request.get("name")
        if name in (None, ""):
            address = p.new_address()
        else:
            address = p.check_address(name)
            if address in self.mailboxes:
                raise Mq9Error(p.err_mailbox_exists(address))
        limit = self.limits.max_mailboxes
        if limit is not None and len(self.mailboxes) >= limit:
            raise Mq9Error(f"mailbox limit reached: this broker holds at most {limit} mailboxes")
        mailbox = Mailbox(address, created_at=self.clock(), ttl=ttl)
        self.mailboxes[address] = mailbox
        if mailbox.expires_at is not None:
            heapq.heappush(self._mailbox_expiry, (mailbox.expires_at, next(self._seq), mailbox))
        self.storage.mailbox_created(mailbox)
        return {"mail_address": address}

    def _mailbox(self, address: str) -> Mailbox:
        mailbox = self.mailboxes.get(p.check_address(address))
        if mailbox is None:
            raise Mq9Error(p.err_mailbox_missing(address))
        return mailbox

    # -- SEND ------------------------------------------------------------------------------

    def _send(self, address: str, headers: Mapping[str, str], body: bytes) -> dict:
        mailbox = self._mailbox(address)
        if len(body) > self.limits.max_payload:
            raise Mq9Error(
                f"payload is {len(body)} bytes: this broker accepts at most "
                f"{self.limits.max_payload} bytes per message"
            )
        options = {name.lower(): value for name, value in headers.items()}
        for name, value in options.items():
            # nats-py decodes header bytes with errors="replace": U+FFFD means the sender's
            # bytes were not UTF-8, and a key or tag silently changed would never match again
            if name.startswith("mq9-") and "\ufffd" in value:
                raise Mq9Error(f"invalid {name} header: its value is not valid UTF-8 text")
        priority_text = options.get(p.HEADER_PRIORITY)
        priority = Priority.NORMAL if priority_text is None else p.parse_priority(priority_text)
        key = options.get(p.HEADER_KEY)
        if key is not None:
            p.check_key(key)
        delay = _header_seconds(options, p.HEADER_DELAY)
        ttl = _header_seconds(options, p.HEADER_TTL)
        tags_text = options.get(p.HEADER_TAGS)
        tags = tuple(t.strip() for t in tags_text.split(",") if t.strip()) if tags_text else ()
        allowed = _largest_payload(self.limits.max_payload, priority, key, tags)
        if len(body) > allowed:
            raise Mq9Error(
                f"payload is {len(body)} bytes: FETCH hands messages out base64-encoded in "
                f"answers of at most {self.limits.max_payload} bytes, so this broker accepts at "
                f"most {allowed} bytes per message (with these headers)"
            )
        self._check_room(mailbox)
        delayed = _Delayed(body, priority, key, tags, ttl or None)
        if delay:
            due, seq = self.clock() + delay, next(self._seq)
            heapq.heappush(self._delayed, (due, seq, mailbox, delayed))
            self.storage.delayed_added(seq, due, mailbox, delayed)
            return {"msg_id": -1}
        return {"msg_id": self._store(mailbox, delayed, self.clock()).msg_id}

    def _check_room(self, mailbox: Mailbox) -> None:
        limit = self.limits.max_messages_per_mailbox
        if limit is not None and len(mailbox.messages) >= limit:
            raise Mq9Error(
                f"mailbox {mailbox.address} is full: it holds at most {limit} messages; "
                "fetch and delete some, or wait for message TTLs to expire"
            )

    def _store(self, mailbox: Mailbox, delayed: _Delayed, visible_at: float) -> StoredMessage:
        message = mailbox.append(
            delayed.payload, delayed.priority, int(visible_at), delayed.key, delayed.tags
        )
        # From the exact time, not the whole-second create_time: a ttl of 1 s lasts 1 s.
        expires = visible_at + delayed.ttl if delayed.ttl else None
        if expires is not None:
            heapq.heappush(
                self._message_expiry, (expires, next(self._seq), mailbox, message.msg_id)
            )
        self.storage.message_stored(mailbox, message, expires)
        self._wake(mailbox)
        return message

    # -- FETCH and ACK ---------------------------------------------------------------------

    async def _fetch(self, address: str, body: bytes) -> dict:
        request = _fields(p.decode_object(body), _FETCH_FIELDS, "FETCH")
        config = request.get("config")
        config = _fields({} if config is None else config, _CONFIG_FIELDS, "FETCH config")
        group_name = request.get("group_name")
        if group_name is not None:
            p.check_group_name(group_name)
        deliver = request.get("deliver")
        deliver = "latest" if deliver is None else deliver
        if deliver not in p.DELIVER_POLICIES:
            raise Mq9Error(p.err_invalid_deliver(deliver))
        point = None
        if deliver in ("from_time", "from_id"):
            if request.get(deliver) is None:
                raise Mq9Error(f"deliver {deliver!r} needs the field {deliver}")
            point = p.check_int(deliver, request[deliver])
        force = request.get("force_deliver", False)
        if not isinstance(force, bool):
            raise Mq9Error(f"invalid force_deliver {force!r}: must be true or false")
        num_msgs = p.check_int(
            "num_msgs", config.get("num_msgs", p.DEFAULT_NUM_MSGS), 1, p.MAX_NUM_MSGS
        )
        max_wait_ms = p.check_int(
            "max_wait_ms", config.get("max_wait_ms", p.DEFAULT_MAX_WAIT_MS), 0, p.MAX_WAIT_MS
        )

        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_wait_ms / 1000
        start: int | None = None
        while True:
            with self._lock, self.storage.transaction():
                self._housekeep()
                mailbox = self._mailbox(address)
                if start is None:  # the start point is fixed when the request arrives
                    start = self._start_of(mailbox, deliver, point)
                    if group_name is not None and (force or group_name not in mailbox.groups):
                        mailbox.groups[group_name] = Group.starting_at(start)
                answer = _Answer(self.limits.max_payload)
                admit = answer.admit
                if group_name is None:
                    found = mailbox.peek(start, num_msgs, admit)
                    if answer.full:  # a stateless reader infers from the count that it has
                        raise Mq9Error(  # seen everything: refuse rather than cut
                            f"the answer would be larger than the {self.limits.max_payload}-"
                            f"byte max_payload: ask for at most {len(found)} messages "
                            "(num_msgs), or fetch with a group_name (its answers are cut to fit)"
                        )
                else:
                    now = self.clock()
                    found = mailbox.lease(
                        mailbox.groups.setdefault(group_name, Group.starting_at(start)),
                        num_msgs,
                        now,
                        now + self.limits.ack_wait,
                        admit,
                    )
                    self.storage.group_changed(mailbox, group_name)
                remaining = deadline - loop.time()
                if found or remaining <= 0:
                    return {"messages": [m.to_wire(p.encode_payload) for m in found]}
                waiter = loop.create_future()
                self._waiters.setdefault(mailbox, []).append((loop, waiter))
                due = self._next_due()
            if due is not None:  # wake up when a delayed message may become visible
                remaining = min(remaining, max(due - self.clock(), 0.0) + 0.001)
            try:
                await asyncio.wait_for(waiter, remaining)
            except asyncio.TimeoutError:
                pass
            finally:
                with self._lock:
                    waiting = self._waiters.get(mailbox, [])
                    if (loop, waiter) in waiting:
                        waiting.remove((loop, waiter))

    def _start_of(self, mailbox: Mailbox, deliver: str, point: int | None) -> int:
        if deliver == "earliest":
            return 0
        if deliver == "from_id":
            return point  # type: ignore[return-value]
        if deliver == "from_time":
            return mailbox.first_id_at_or_after(point)  # type: ignore[arg-type]
        return mailbox.next_id

    def _wake(self, mailbox: Mailbox) -> None:
        for loop, waiter in self._waiters.pop(mailbox, ()):
            loop.call_soon_threadsafe(_resolve, waiter)

    def _ack(self, address: str, body: bytes) -> dict:
        request = _fields(p.decode_object(body), _ACK_FIELDS, "ACK")
        mailbox = self._mailbox(address)
        named = request.get("mail_address")
        if named not in (None, "", address):
            raise Mq9Error(
                f"ACK body names mailbox {named} but was sent to {address}: they must agree"
            )
        group_name = p.check_group_name(request.get("group_name"))
        if request.get("msg_id") is None:
            raise Mq9Error("ACK needs a msg_id: the last message of the batch to confirm")
        msg_id = p.check_int("msg_id", request["msg_id"])
        if msg_id >= mailbox.next_id:
            raise Mq9Error(p.ERR_MESSAGE_NOT_FOUND)
        group = mailbox.groups.get(group_name)
        if group is None:  # nothing was ever handed to this group: nothing to confirm, and
            return {}  # its first FETCH must still set its start from the deliver policy
        mailbox.ack(group, msg_id)
        self.storage.group_changed(mailbox, group_name)
        return {}

    # -- QUERY and DELETE ------------------------------------------------------------------

    def _query(self, address: str, body: bytes) -> dict:
        request = _fields(p.decode_object(body), _QUERY_FIELDS, "QUERY")
        mailbox = self._mailbox(address)
        key = request.get("key")
        if key is not None and not isinstance(key, str):
            raise Mq9Error(f"invalid key {key!r}: must be a string")
        tags = request.get("tags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise Mq9Error(f"invalid tags {tags!r}: must be a list of strings")
        since = request.get("since")
        limit = request.get("limit")
        found = mailbox.query(
            key=key or None,
            tags=tuple(tags),
            since=None if since is None else p.check_int("since", since),
            limit=None if limit is None else p.check_int("limit", limit, 1),
            admit=_Answer(self.limits.max_payload).admit,
        )
        return {"messages": [m.to_wire(p.encode_payload) for m in found]}

    def _delete(self, rest: str) -> dict:
        address, dot, msg_id_text = rest.rpartition(".")
        if not dot:
            raise Mq9Error(
                f"DELETE subject needs a msg_id: {p.MSG_DELETE}{{mail_address}}.{{msg_id}}"
            )
        mailbox = self._mailbox(address)
        msg_id = p.parse_int("msg_id in DELETE subject", msg_id_text)
        if not mailbox.remove(msg_id):
            raise Mq9Error(p.ERR_MESSAGE_NOT_FOUND)
        self.storage.message_removed(mailbox, msg_id)
        return {"deleted": True}

    # -- agent registry --------------------------------------------------------------------

    def _register(self, body: bytes) -> dict:
        card = p.decode_object(body, "agent card")
        mailbox = card.get("mailbox")
        if not isinstance(mailbox, str) or not mailbox.strip():
            raise Mq9Error(p.ERR_CARD_WITHOUT_MAILBOX)
        self._check_agent_fits(card)
        self.registry.register(card)
        self.storage.agent_saved(self.registry.find(mailbox, None))
        return {}

    def _identify(self, body: bytes, what: str) -> tuple[dict, str | None, str | None]:
        request = p.decode_object(body, what)
        mailbox, name = request.get("mailbox"), request.get("name")
        if not (isinstance(mailbox, str) and mailbox) and not (isinstance(name, str) and name):
            raise Mq9Error(f"{what} must contain a mailbox (or name) field naming the agent")
        return request, mailbox or None, name or None

    def _unregister(self, body: bytes) -> dict:
        _, mailbox, name = self._identify(body, "AGENT.UNREGISTER body")
        entry = self.registry.find(mailbox, name)
        if entry is None or not self.registry.unregister(mailbox, name):
            raise Mq9Error(p.ERR_AGENT_NOT_FOUND)
        self.storage.agent_removed(entry)
        return {}

    def _report(self, body: bytes) -> dict:
        report, mailbox, name = self._identify(body, "agent report")
        entry = self.registry.find(mailbox, name)
        if entry is None:
            raise Mq9Error(p.ERR_AGENT_NOT_FOUND)
        status = {k: v for k, v in report.items() if k not in ("mailbox", "name")}
        self._check_agent_fits(
            {
                **entry.card,
                "report": {**(entry.report or {}), **status},
                "report_time": int(self.clock()),
            }
        )
        entry.report = {**(entry.report or {}), **status}
        entry.report_time = int(self.clock())
        self.storage.agent_saved(entry)
        return {}

    def _discover(self, body: bytes) -> dict:
        request = _fields(p.decode_object(body), _DISCOVER_FIELDS, "DISCOVER")
        text, semantic = request.get("text"), request.get("semantic")
        for name, value in (("text", text), ("semantic", semantic)):
            if value is not None and not isinstance(value, str):
                raise Mq9Error(f"invalid {name} {value!r}: must be a string")
        limit = p.check_int(
            "limit", request.get("limit", p.DEFAULT_DISCOVER_LIMIT), 1, p.MAX_DISCOVER_LIMIT
        )
        page = p.check_int("page", request.get("page", 1), 1, 2**31)
        if semantic and semantic.strip():
            found = self.registry.search_semantic(semantic)
        elif text and text.strip():
            found = self.registry.search_text(text)
        else:
            found = list(self.registry.entries.values())
        first = (page - 1) * limit
        agents = [entry.view() for entry in found[first : first + limit]]
        size = len(p.encode({"error": "", "agents": agents}))
        if size > self.limits.max_payload:
            raise Mq9Error(
                f"the answer would be {size} bytes, above the {self.limits.max_payload}-byte "
                f"max_payload: ask for fewer agents per page (limit {limit} now)"
            )
        return {"agents": agents}

    def _check_agent_fits(self, view: dict) -> None:
        size = len(p.encode({"error": "", "agents": [view]}))
        if size > self.limits.max_payload:
            raise Mq9Error(
                f"agent entry is {size} bytes with its report: DISCOVER answers carry at most "
                f"{self.limits.max_payload} bytes; keep large data out of the card"
            )


# -- request parsing helpers ---------------------------------------------------------------


_EMPTY_ANSWER = len(p.encode({"error": "", "messages": []}))


# ``{"msg_id":N,"payload":"…","priority":"P","create_time":T}`` without N, P, T and the payload.
_WIRE_FRAME = len(p.encode({"msg_id": 0, "payload": "", "priority": "", "create_time": 0})) - 2


def _wire_size(message: StoredMessage) -> int:
    """Bytes of ``message`` in an answer: its JSON, the payload as base64 (never escaped).

    Counted, not encoded: this runs for every message a FETCH or QUERY hands out (and once per
    SEND), and encoding each message twice was half of those requests' cost. The count is
    exactly the length of ``p.encode(message.to_wire(p.encode_payload))``.
    """
    msg_id, create_time = message.msg_id, message.create_time
    if type(msg_id) is not int or type(create_time) is not int:  # not from this engine: encode
        return len(p.encode(message.to_wire(lambda _: ""))) + _base64_size(message.payload)
    size = (
        _WIRE_FRAME
        + len(str(msg_id))
        + len(message.priority.value)
        + len(str(create_time))
        + _base64_size(message.payload)
    )
    if message.key is not None:
        size += len(',"key":') + _json_string_size(message.key)
    if message.tags:
        size += len(',"tags":[]') + len(message.tags) - 1
        size += sum(_json_string_size(tag) for tag in message.tags)
    return size


def _base64_size(payload: bytes) -> int:
    return 4 * ((len(payload) + 2) // 3)


def _json_string_size(text: str) -> int:
    """Bytes of ``text`` as a JSON string in ``p.encode``'s output, quotes included."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return len(text) + 2  # nothing in it is escaped
    return len(p.encode(text))  # type: ignore[arg-type]


def _largest_payload(max_payload: int, priority: Priority, key: str | None, tags: tuple) -> int:
    """The largest payload whose message, alone in an answer, fits in ``max_payload``."""
    top = 2**63 - 1  # the widest msg_id and create_time there can be
    bare = StoredMessage(top, b"", priority, top, key, tags)
    room = max_payload - _EMPTY_ANSWER - _wire_size(bare)
    return max(room // 4 * 3, 0)


class _Answer:
    """Keeps a FETCH or QUERY answer within max_payload, the most one NATS reply may carry:
    messages join in hand-out order until the next would not fit. The first always joins (SEND
    refuses a message that could not travel alone). A group's FETCH and a QUERY are cut there
    (the rest wait for the next request; QUERY keeps the newest); a stateless FETCH is refused
    instead, saying how many would fit, since its caller cannot tell a cut answer from the end."""

    def __init__(self, max_payload: int) -> None:
        self.room = max_payload - _EMPTY_ANSWER
        self.count = 0
        self.full = False  # a message was turned away

    def admit(self, message: StoredMessage) -> bool:
        size = _wire_size(message) + (1 if self.count else 0)  # a comma after the first
        if self.count and size > self.room:
            self.full = True
            return False
        self.room -= size
        self.count += 1
        return True


def _resolve(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _address_of(subject: str, prefix: str) -> str:
    return p.check_address(subject[len(prefix) :])


def _fields(request: Any, allowed: set[str], what: str) -> dict:
    if not isinstance(request, dict):
        raise Mq9Error(f"malformed {what}: expected a JSON object")
    unknown = sorted(set(request) - allowed)
    if unknown:
        raise Mq9Error(
            f"unknown field {unknown[0]!r} in {what}: allowed are {', '.join(sorted(allowed))}"
        )
    return request


def _header_seconds(headers: Mapping[str, str], name: str) -> int:
    text = headers.get(name)
    if text is None or not text.strip():
        return 0
    return p.parse_int(f"{name} header", text, 0, p.MAX_SECONDS)
