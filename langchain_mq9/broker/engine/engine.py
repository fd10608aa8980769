"""The bundled mq9 broker: RobustMQ's mq9 behaviour as pure logic behind one ``handle`` call.

``BrokerEngine.handle(subject, headers, body)`` takes a request as it arrives on the wire and
returns the reply bytes; the in-process transport and ``serve_on_nats`` both call it. Every rule
follows RobustMQ at the pinned commit (``docs/protocol.md`` names the RobustMQ file behind
each); where we differ is marked "(our choice)" there and here. Time comes from an injectable
clock. Safe to share between event loops and threads: state changes happen under one lock and
never await; what costs CPU time runs on the broker's worker thread, so no request holds the
loop that serves it. Answers stay within ``answer_limit`` (answers.py); a request body is
refused unread above its command's bound (``BrokerLimits.max_request``). docs/broker.md
("Inside the engine") tells consumer groups, u64 sums and the worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
import logging
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from ... import protocol as p
from ...protocol import PRIORITY_ORDER
from ...protocol.errors import Mq9Error, WireError
from ...semantic.ranking import AgentEntry, word_pieces
from ..state.clock import Clock, system_clock
from ..state.mailbox import Mailbox, StoredMessage
from ..state.registry import AgentRegistry
from ..storage import MemoryStorage, Storage, StorageError
from . import owned as owning
from .answers import EMPTY_ANSWER, capped, cut_answer, empty_wait, whole_answer
from .limits import BrokerLimits
from .owned import Keep, Named, Owned, Requester
from .sending import read_send

# Imported from here by the broker's other parts and the tests
__all__ = [
    "COMMANDS",
    "LARGE_BODY",
    "QUERY_PAUSE",
    "QUERY_TAGS_AT_ONCE",
    "RETENTION_PIECE_BYTES",
    "RETENTION_SCAN_SECONDS",
    "RETENTION_SECONDS",
    "TEXT_PAUSE",
    "UNKNOWN",
    "WORKER_NICENESS",
    "BrokerEngine",
    "BrokerLimits",
    "Command",
    "Headers",
    "Requester",
    "Vouched",
    "command_for",
]

log = logging.getLogger("langchain_mq9.broker")

Headers = Mapping[str, str] | None  # a request's NATS headers, as nats-py reads them


class Vouched(dict[str, str]):
    """A SEND's headers with the sender the broker authenticated (#70): what an enforcing
    broker hands the engine (identities/ownership.py), the client's own ``mq9-sender``, in
    any case or spacing, replaced by ``sender``. Built only in this process: a request off
    the wire is a plain mapping, whose ``mq9-sender`` the engine removes (``_stored_headers``)."""

    def __init__(self, headers: Headers, sender: str) -> None:
        super().__init__(_without_sender(headers) or {})
        self[p.HEADER_SENDER] = sender
        self.sender = sender


def _is_sender(name: str) -> bool:
    # stripped as parse_header_block strips a name, and in any case: no reader may take a
    # client's "MQ9-Sender " for the broker's
    return name.strip().lower() == p.HEADER_SENDER


def _without_sender(headers: Headers) -> Headers:
    if headers and any(_is_sender(name) for name in headers):
        return {name: value for name, value in headers.items() if not _is_sender(name)}
    return headers


def _stored_headers(headers: Headers) -> Headers:
    """The headers a SEND's message is stored with: ``Vouched`` ones as they are, any other
    without a ``mq9-sender`` (our choice: on this broker the header always means vouched;
    RobustMQ stores what the client wrote)."""
    return headers if isinstance(headers, Vouched) else _without_sender(headers)


T = TypeVar("T")  # what a piece of work run under the lock or off the loop gives
A = TypeVar("A")  # what such a piece of work is given

# RobustMQ keeps a mailbox's messages 7 days by create_time, whatever the mailbox TTL, and
# removes older ones in a scan every 10 minutes (metadata-struct storage/shard.rs
# DEFAULT_RETENTION_SEC; storage-engine commitlog/rocksdb/expire.rs).
RETENTION_SECONDS = 7 * 86_400
RETENTION_SCAN_SECONDS = 600
# A mailbox's retention is stored in pieces removing this many bytes of names at most (an
# address, at most MAX_ADDRESS_LENGTH, and a msg_id a removal): a piece is one small change,
# far below any record a store writes (a JetStream record: the server's max_payload)
RETENTION_PIECE_BYTES = 64 * 1024
_REMOVAL_ROOM = 32  # a removal's bytes in a record beyond its address: a msg_id, brackets

_LANES = tuple(priority.value for priority in PRIORITY_ORDER)
_ESCAPED = len("\\u0000")  # the most bytes a card's byte takes in JSON text


class BrokerEngine:
    def __init__(
        self,
        *,
        clock: Clock = system_clock,
        limits: BrokerLimits | None = None,
        storage: Storage | None = None,
        search: bool = True,
    ):
        self.clock = clock
        self.limits = limits or BrokerLimits()
        # False: DISCOVER searches are refused as by RobustMQ's build without vector-search
        self.search = search
        # Told of every change, under the lock (storage/base.py); the default keeps nothing.
        self.storage = storage if storage is not None else MemoryStorage()
        # Each agent's latest REPORT, for the operator (RobustMQ's topic of them is never read)
        self.reports: dict[str, tuple[str, int]] = {}
        # Told the address of each message stored (#62: serve.py announces it, a waker in this
        # process listens): called under the lock, so each only notes it and returns
        self.arrivals: list[Callable[[str], None]] = []
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self._clear()
        # Set when the data file could not be read back after a failed write: every request
        # is then refused (serving a partial broker would lose data silently)
        self._broken: str | None = None
        # The first request scans: a restarted engine must not serve, for up to a scan's
        # interval, logs and messages past their retention that it would have removed
        self._next_retention_scan = self.clock()
        # Each serving transport's largest reply (replaced whole: read without the lock)
        self._carriers: dict[object, int] = {}
        # The last listing answered, for the registry and answer limit it was made for
        self._listed: tuple[AgentRegistry, int, int | None, bytes] | None = None
        self.storage.restore(self)

    def _clear(self) -> None:
        """Forget every durable thing (at the start, and before a restore after a failed write)."""
        # Live mailboxes (what SEND and CREATE see) and every log (what FETCH, QUERY, DELETE
        # and ACK read): RobustMQ's GC removes an expired mailbox's metadata, not its messages.
        self.mailboxes: dict[str, Mailbox] = {}
        self.topics: dict[str, Mailbox] = {}
        self.registry = AgentRegistry()
        # Committed offsets: lane group ("{group}-{priority}") -> shard -> next msg_id to read.
        self.offsets: dict[str, dict[str, int]] = {}
        # Min-heaps checked before every request: (when, seq, mailbox) and delayed messages.
        self._mailbox_expiry: list[tuple[int, int, Mailbox]] = []
        self._delayed: list[tuple[int, int, str, StoredMessage]] = []

    def _transact(self, work: Callable[[], T]) -> T:
        """``work()`` under the lock, after housekeeping, as one storage transaction.

        Housekeeping is stored first, in transactions of its own that each hold one small
        change (``_housekeep``): however much falls due at once, no change outgrows what a
        store writes in one record (a JetStream record: the server's max_payload), and the
        store writes them in order, before the request's own. The file is the truth: when a
        transaction rolled back, the memory, ahead of it, is restored from the file, so a
        failed request changes nothing the store does not hold."""
        with self._lock:
            self._check_usable()
            self._housekeep()
            return self._stored(work)

    def _stored(self, work: Callable[[], T]) -> T:
        """(under the lock) ``work()`` as one storage transaction."""
        try:
            with self.storage.transaction():
                return work()
        except StorageError as failure:
            self._restore_after(failure)
            raise

    def _check_usable(self) -> None:
        """(under the lock) Refuse once broken (the data file could not be read back)."""
        if self._broken is not None:
            raise StorageError(self._broken)

    def _restore_after(self, failure: StorageError) -> None:
        """(under the lock) Rebuild the memory from the store after ``failure``; when that
        fails too, the broker is broken: it answers nothing until restarted."""
        self._clear()
        try:
            self.storage.restore(self)
        except StorageError as exc:
            self._broken = (
                f"{failure}; reading the data file back then failed, so the broker "
                f"answers nothing until it is restarted: {exc}"
            )
            log.critical("%s", self._broken)
            raise StorageError(self._broken) from None

    def now_second(self) -> int:
        return int(self.clock())

    # -- answer sizes ----------------------------------------------------------------------

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
        """The smallest of ``limits.max_answer`` and every transport's largest reply; None:
        no limit."""
        bounds = list(self._carriers.values())
        if self.limits.max_answer is not None:
            bounds.append(self.limits.max_answer)
        return min(bounds, default=None)

    def _message_limit(self) -> int:
        """The most room a message, a registry entry or a DISCOVER search answer may take."""
        limit = self.answer_limit
        return self.limits.max_payload if limit is None else min(self.limits.max_payload, limit)

    # -- entry point -----------------------------------------------------------------------

    async def handle(
        self, subject: str, headers: Headers, body: bytes, requester: Requester | None = None
    ) -> bytes:
        """Answer one mq9 request; never raises, every failure is an ``error`` reply.

        A store writes each request's changes before ``transaction()`` returns: what an
        answer promises, and whatever state it shows, is stored when it is given. With
        ``requester`` (an enforcing broker's), its command's ownership check and record
        (``Command.owned``) are made as part of it (``_owned_reply``)."""
        try:
            try:
                if requester is not None:
                    return await self._owned_reply(subject, headers, body, requester)
                return await self._reply(subject, headers, body)
            except Mq9Error as exc:  # an Mq9Error's str is its message
                return p.encode(p.ERROR_REPLY.write(error=str(exc)))
        except Exception as exc:
            return self.failure_answer(subject, exc)

    def answer(self, subject: str, headers: Headers, body: bytes) -> bytes:
        """``handle``'s answer to a command that does not wait (``Command.wait`` None), with
        no coroutine; refuses one that waits. Never raises."""
        try:
            try:
                command, target = self._command(subject, body)
                if command.wait is not None:
                    raise TypeError(f"{subject} waits: BrokerEngine.handle answers it")
                return self._at_once(command, target, headers, body)
            except Mq9Error as exc:
                return p.encode(p.ERROR_REPLY.write(error=str(exc)))
        except Exception as exc:
            return self.failure_answer(subject, exc)

    def failure_answer(self, subject: str, exc: Exception) -> bytes:
        """The answer to a request that failed other than by the rules: the store's error as
        it says it, a bug reported (the broker keeps serving)."""
        if isinstance(exc, StorageError):
            return p.encode(p.ERROR_REPLY.write(error=str(exc)))
        log.exception("internal error on %r", subject, exc_info=exc)
        return p.encode(
            p.ERROR_REPLY.write(error=f"internal broker error: {type(exc).__name__}: {exc}")
        )

    def _command(self, subject: str, body: bytes) -> tuple[Command, str]:
        """The command ``subject`` names and its target, its body's size checked."""
        command, target = command_for(subject)
        self._check_body_size(command, subject, body)
        if command.addressed and not target:  # a command's prefix with no mailbox after it
            command, target = UNKNOWN, subject
        return command, target

    async def _reply(self, subject: str, headers: Headers, body: bytes) -> bytes:
        command, target = self._command(subject, body)
        if command.wait is not None:
            return await command.wait(self, target, headers, body)
        return self._at_once(command, target, headers, body)

    async def _owned_reply(
        self, subject: str, headers: Headers, body: bytes, requester: Requester
    ) -> bytes:
        """``_reply`` for ``requester``: a command answered at once is checked, done and its
        record claimed in one transaction, so no other request comes between the check and
        what it allowed; one that waits is checked, and claims, under the lock right before
        it starts and once it is answered. The record is kept before the answer goes."""
        command, target = self._command(subject, body)
        owned = command.owned
        named = await owned.names(target, body, LARGE_BODY)
        given = Vouched(headers, requester.principal) if owned.vouched else headers
        if command.wait is None:
            answer = command.answer

            def work() -> tuple[bytes, Keep | None]:
                refusal = owned.check(requester.policy, requester.principal, named, headers)
                if refusal is not None:
                    return refusal, None
                made = answer(self, target, given, body)
                return made, owned.recorded(requester, named, headers, body, made)

            return await owning.kept(*self._transact(work))
        with self._lock:
            refusal = owned.check(requester.policy, requester.principal, named, headers)
        if refusal is not None:
            return refusal
        made = await command.wait(self, target, given, body)
        with self._lock:
            keep = owned.recorded(requester, named, headers, body, made)
        return await owning.kept(made, keep)

    async def look_up(self, _named: Named) -> None:
        """(what exists is this process's own state, which the checks read under the lock:
        nothing to read first; ``ClusterServing.look_up`` reads it from the cluster)"""

    def _at_once(self, command: Command, target: str, headers: Headers, body: bytes) -> bytes:
        """A command that does not wait, answered under the lock as one transaction."""
        answer = command.answer
        return self._transact(lambda: answer(self, target, headers, body))

    def _check_body_size(self, command: Command, subject: str, body: bytes) -> None:
        """(our choice; RobustMQ reads any body NATS carries) refuse, unread, a body larger
        than its command needs (``Command.body_limit``)."""
        limit = command.body_limit(self.limits)
        if limit is not None and len(body) > limit:
            raise Mq9Error(
                f"request body of {len(body)} bytes refused unread: this broker takes at most "
                f"{limit} bytes for {subject}"
            )

    async def _off_loop(self, work: Callable[[A], T], argument: A) -> T:
        """``work(argument)`` on the broker's worker thread, the loop serving others meanwhile."""
        return await asyncio.get_running_loop().run_in_executor(_WORKER, work, argument)

    def load_model_soon(self) -> Future[None]:
        """Start loading the embedding model on the worker thread now (at a broker's start),
        so the first REGISTER or search waits less for it, and never on the loop. A model
        that cannot be loaded is the error of the requests that need it. Done when loaded."""
        return _WORKER.submit(self._quietly_load_model)

    def _quietly_load_model(self) -> None:
        try:
            self.registry.ranking  # noqa: B018 (the property loads the model)
        except Exception as exc:  # answered to each request that needs the model
            log.error("the embedding model could not be loaded: %s", exc)

    # -- time ------------------------------------------------------------------------------

    def _housekeep(self) -> None:
        """Expire mailboxes, write delayed messages that are due, apply the retention: each
        mailbox expired, each delayed message written and each piece of a mailbox's retention
        stored as a transaction of its own, in this order (a store groups small ones into one
        record, and replays them in order after a restart). One that fails fails the request
        and leaves the rest due: the next request takes them up from the stored state."""
        now = self.clock()
        while self._mailbox_expiry and self._mailbox_expiry[0][0] <= now:
            self._stored(functools.partial(self._expire_next, now))
        while self._delayed and self._delayed[0][0] <= now:
            self._stored(self._release_next)
        if now >= self._next_retention_scan:
            cutoff = int(now) - RETENTION_SECONDS
            for mailbox in list(self.topics.values()):
                self._retain(mailbox, cutoff)
            # (only once every mailbox's retention is stored: a failed one runs again)
            self._next_retention_scan = now + RETENTION_SCAN_SECONDS

    def _expire_next(self, now: float) -> None:
        _, _, mailbox = heapq.heappop(self._mailbox_expiry)
        live = self.mailboxes.get(mailbox.address) is mailbox
        if live and (mailbox.expires_at or now) <= now:  # not a stale entry of a re-create
            # RobustMQ's GC (every 60 s; here at the exact second, our choice) removes only
            # the metadata: SEND and CREATE no longer see it, its log stays readable until
            # the retention, and a CREATE of the name takes the log up again, offsets too
            del self.mailboxes[mailbox.address]
            self.storage.mailbox_expired(mailbox)

    def _release_next(self) -> None:
        due, seq, address, message = heapq.heappop(self._delayed)
        self.storage.delayed_released(seq)
        topic = self.topics.get(address)  # written to the log, expired mailbox or not
        # delay-message pop.rs reads the queued copy back first: one whose TTL ended
        # before it was due is not found, so never delivered
        if topic is None or message.expired(int(due)):
            return
        # written when due (a due wrapped round to the past: at once), as a new record
        # without expire_at (pop.rs build_new_record)
        message.create_time = max(int(due), message.create_time)
        message.expire_at = 0
        refused = self.storage.message_refused(address, message)
        if refused is not None:
            # Taken when the store's records were larger (an older max_payload): written
            # now, it would fail every request after it for good
            log.error("a delayed message for %r is dropped: %s", address, refused)
            return
        self._write(topic, message)

    def _retain(self, mailbox: Mailbox, cutoff: int) -> None:
        """RobustMQ's retention on one mailbox: its messages older than ``cutoff`` removed,
        stored in pieces of at most ``RETENTION_PIECE_BYTES`` of names; then its start moved,
        and an expired mailbox's emptied log forgotten. The memory drops them all at once,
        ahead of the store until the last piece: a piece that fails restores it."""
        dropped = mailbox.drop_before(cutoff)
        per_id = len(mailbox.address.encode()) + _REMOVAL_ROOM
        step = max(RETENTION_PIECE_BYTES // per_id, 1)
        for start in range(0, len(dropped), step):
            self._stored(functools.partial(self._removed, mailbox, dropped[start : start + step]))
        if dropped or (not mailbox.messages and mailbox.address not in self.mailboxes):
            self._stored(functools.partial(self._retained, mailbox, bool(dropped)))

    def _removed(self, mailbox: Mailbox, msg_ids: list[int]) -> None:
        for msg_id in msg_ids:
            self.storage.message_removed(mailbox, msg_id)

    def _retained(self, mailbox: Mailbox, moved: bool) -> None:
        if moved:
            self.storage.mailbox_start_moved(mailbox)
        if not mailbox.messages and mailbox.address not in self.mailboxes:
            # (our choice) an expired mailbox's empty log is forgotten: a later CREATE
            # starts a new log (RobustMQ would go on numbering)
            del self.topics[mailbox.address]
            self.storage.mailbox_removed(mailbox)
            self._drop_offsets(None, mailbox.shard)  # its groups go with it

    # -- mailboxes -------------------------------------------------------------------------

    def _create(self, body: bytes) -> bytes:
        request = _read(p.CREATE_REQUEST, body, "invalid MAILBOX.CREATE payload: ", empty_ok=True)
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
        if address in self.mailboxes:
            raise Mq9Error(p.err_mailbox_exists(address))
        limit = self.limits.max_mailboxes
        if limit is not None and len(self.mailboxes) >= limit:
            raise Mq9Error(p.err_mailbox_limit(limit))
        ttl = p.DEFAULT_MAILBOX_TTL if request["ttl"] is None else request["ttl"]
        mailbox = self.topics.get(address)
        if mailbox is None:
            mailbox = Mailbox(address, create_time=self.now_second(), ttl=ttl)
        else:  # an expired mailbox's log, taken up again with everything it holds
            mailbox.create_time, mailbox.ttl = self.now_second(), ttl
        mailbox.desc = request["desc"] or ""
        self.add_mailbox(mailbox)
        self.storage.mailbox_created(mailbox)
        return p.encode(p.CREATE_REPLY.write(error="", mail_address=address))

    def add_mailbox(self, mailbox: Mailbox, *, live: bool = True) -> None:
        """Hold ``mailbox``, new or restored (``live=False``: the log of an expired one)."""
        self.topics[mailbox.address] = mailbox
        if not live:
            return
        self.mailboxes[mailbox.address] = mailbox
        if mailbox.expires_at is not None:
            heapq.heappush(self._mailbox_expiry, (mailbox.expires_at, next(self._seq), mailbox))

    def _topic(self, address: str) -> Mailbox:
        """The log FETCH, QUERY and DELETE read, missing in the storage layer's words."""
        mailbox = self.topics.get(address)
        if mailbox is None:
            raise Mq9Error(p.err_topic_missing(address))
        return mailbox

    # -- SEND ------------------------------------------------------------------------------

    def _send(self, address: str, body: bytes, headers: Headers) -> bytes:
        mailbox = self.mailboxes.get(address)
        if mailbox is None:
            raise Mq9Error(p.err_mailbox_missing(address))
        sent = read_send(_stored_headers(headers), body, self.now_second())
        message = sent.message
        self._check_fits(message)
        self._check_room(mailbox)
        refused = self.storage.message_refused(address, message)
        if refused is not None:
            raise Mq9Error(refused)
        if sent.due is not None:  # even a delay of 0 answers -1 and is written by the queue
            seq = self.hold_delayed(sent.due, address, message)
            self.storage.delayed_added(seq, sent.due, address, message)
            return p.encode(p.SEND_REPLY.write(error="", msg_id=-1))
        return _SENT % self._write(mailbox, message).msg_id

    def hold_delayed(self, due: int, address: str, message: StoredMessage) -> int:
        """Queue a delayed message until ``due``; returns its place, which storage keys by."""
        seq = next(self._seq)
        heapq.heappush(self._delayed, (due, seq, address, message))
        return seq

    def _check_fits(self, message: StoredMessage) -> None:
        # (our choice; RobustMQ takes any payload) refuse a message whose FETCH answer NATS
        # could not carry or above max_payload, with room for the widest msg_id (not known yet)
        limit = self._message_limit()
        if EMPTY_ANSWER + message.wire_size_bound() + _MSG_ID_ROOM <= limit:
            return
        size = EMPTY_ANSWER + message.wire_size() + _MSG_ID_ROOM
        if size > limit:
            raise Mq9Error(p.err_message_too_large(size, limit))

    def _check_room(self, mailbox: Mailbox) -> None:
        limit = self.limits.max_messages_per_mailbox
        if limit is not None and len(mailbox.messages) >= limit:
            raise Mq9Error(p.err_mailbox_full(mailbox.address, limit))

    def _write(self, mailbox: Mailbox, message: StoredMessage) -> StoredMessage:
        replaced = mailbox.keys.get(message.key) if message.key is not None else None
        mailbox.append(message)
        if replaced is not None:
            self.storage.message_removed(mailbox, replaced)
        self.storage.message_stored(mailbox, message)
        for told in self.arrivals:
            told(mailbox.address)
        return message

    # -- FETCH and ACK ---------------------------------------------------------------------

    async def _fetch(self, address: str, body: bytes) -> bytes:
        request = _read(p.FETCH_REQUEST, body)
        config = request["config"] or {}
        num_msgs = config.get("num_msgs")
        num_msgs = p.DEFAULT_NUM_MSGS if num_msgs is None else num_msgs
        max_wait_ms = config.get("max_wait_ms")
        max_wait_ms = p.DEFAULT_MAX_WAIT_MS if max_wait_ms is None else max_wait_ms
        # force_deliver commits offsets here: the same transaction rule as every request
        lanes = self._transact(lambda: self._read_group(self._topic(address), request, num_msgs))
        if not lanes and max_wait_ms > 0:
            # RobustMQ sleeps the whole wait and answers empty, without looking again
            await asyncio.sleep(empty_wait(max_wait_ms))
        if request["group_name"] is not None:
            return whole_answer(lanes, num_msgs, self.answer_limit)
        return cut_answer([m for lane in lanes for m in lane], self.answer_limit)

    def _read_group(
        self, mailbox: Mailbox, request: dict[str, Any], num_msgs: int
    ) -> list[list[StoredMessage]]:
        """The lanes read, critical first, each as RobustMQ reads it; [] when all are empty."""
        group = request["group_name"]
        if group is None:  # a throwaway group: the deliver policy decides every time
            starts: dict[str, int | None] = dict.fromkeys(_LANES, self._initial(mailbox, request))
        elif request["force_deliver"] and self.offsets.get(f"{group}-normal"):
            # RobustMQ commits the reset position + 1 yet reads this answer from the position
            target = self._reset_target(mailbox, request)
            for lane in _LANES:
                self.commit(f"{group}-{lane}", mailbox.shard, target + 1)
            starts = dict.fromkeys(_LANES, target)
        else:
            starts = {
                lane: self._lane_start(f"{group}-{lane}", mailbox, request) for lane in _LANES
            }
        now = self.now_second()
        lanes: list[list[StoredMessage]] = []
        held = 0
        for priority in PRIORITY_ORDER:  # each lane reads up to num_msgs: an answer may hold more
            read = capped(mailbox.read_lane(priority, starts[priority.value], num_msgs, now))
            lanes.append(read)
            held += len(read)
            if held >= num_msgs:
                break
        return lanes if held else []

    def _lane_start(self, lane_group: str, mailbox: Mailbox, request: dict[str, Any]) -> int | None:
        committed = self.offsets.get(lane_group)
        if committed:
            # Committed anywhere: this mailbox's offset, or (none here) the lane's beginning
            return committed.get(mailbox.shard)
        return self._initial(mailbox, request)

    def _initial(self, mailbox: Mailbox, request: dict[str, Any]) -> int:
        """Where a group with no committed offset starts (RobustMQ's start strategies)."""
        deliver = request["deliver"]
        if deliver == "earliest":
            return mailbox.start_offset
        if deliver == "from_id":
            return mailbox.clamp(request["from_id"] or 0)
        if deliver == "from_time":
            return mailbox.offset_at_time(request["from_time"] or 0)
        return mailbox.end_offset  # latest: the newest message written is still handed out

    def _reset_target(self, mailbox: Mailbox, request: dict[str, Any]) -> int:
        """Where ``force_deliver`` puts a group: like ``_initial``, but a time is clamped too."""
        if request["deliver"] == "from_time":
            return mailbox.clamp(mailbox.offset_at_time(request["from_time"] or 0))
        return self._initial(mailbox, request)

    def commit(self, lane_group: str, shard: str, offset: int) -> None:
        committed = self.offsets.setdefault(lane_group, {})
        if committed.get(shard) == offset:
            # Nothing to write: a group's readers all ack the message they were all handed,
            # and on disk each ack would cost a transaction
            return
        committed[shard] = offset
        self.storage.offset_committed(lane_group, shard, offset)

    def _ack(self, body: bytes) -> bytes:
        request = _read(p.ACK_REQUEST, body)
        address = request["mail_address"]  # the body's, not the subject's (RobustMQ)
        mailbox = self.topics.get(address)  # the log, even of an expired mailbox
        if mailbox is None:
            raise Mq9Error(p.err_ack_mailbox_missing(address))
        # Every lane moves past msg_id, whatever its priority; msg_id 2**64-1 commits 0 (u64)
        offset = _wrap_u64(request["msg_id"] + 1)
        self._check_group_room(request["group_name"], mailbox)
        for lane in _LANES:
            self.commit(f"{request['group_name']}-{lane}", mailbox.shard, offset)
        return _OK

    # -- QUERY and DELETE ------------------------------------------------------------------

    async def _query(self, address: str, body: bytes) -> bytes:
        # A small body is read and answered here (the worker thread's hops, and a second
        # look under the lock, cost a QUERY more than its own work: bench 9a), a large one
        # on the worker; a broken broker refuses before a large body is read, and says it is
        # broken before what is wrong with a small one (_transact looks too)
        if len(body) > LARGE_BODY:
            self._locked(_nothing)
            request = await self._off_loop(_read_query, body)
        else:
            try:
                request = _read_query(body)
            except Mq9Error:
                self._locked(_nothing)
                raise
        limit = p.QUERY_CAP if request["limit"] is None else min(request["limit"], p.QUERY_CAP)
        # One filter only, in this order of precedence (RobustMQ)
        if request["key"] is not None or not request["tags"]:
            return self._transact(lambda: self._query_now(address, request["key"], limit))
        # Any tag matches; each reads up to limit (a tag given again adds nothing). Many tags
        # are read some at a time, other requests answered between (our choice: the loop is
        # never held long; like RobustMQ's reads, one per tag, it is no snapshot)
        tags = list(dict.fromkeys(request["tags"]))
        by_id: dict[int, StoredMessage] = {}
        for start in range(0, len(tags), QUERY_TAGS_AT_ONCE):
            some = tags[start : start + QUERY_TAGS_AT_ONCE]
            self._transact(functools.partial(self._read_tags, address, some, limit, by_id))
            if start + QUERY_TAGS_AT_ONCE < len(tags):
                await asyncio.sleep(QUERY_PAUSE)
        found = list(by_id.values())
        if len(found) > p.QUERY_CAP:
            cut = functools.partial(cut_answer, limit=self.answer_limit)
            return await self._off_loop(cut, found)
        return cut_answer(found, self.answer_limit)

    def _read_tags(
        self, address: str, tags: list[str], limit: int, into: dict[int, StoredMessage]
    ) -> None:
        mailbox, now = self._topic(address), self.now_second()
        for tag in tags:
            for message in capped(mailbox.read_tag(tag, limit, now)):
                into.setdefault(message.msg_id, message)

    def _query_now(self, address: str, key: str | None, limit: int) -> bytes:
        mailbox, now = self._topic(address), self.now_second()
        if key is not None:
            message = mailbox.by_key(key, now)
            found = [message][:limit] if message is not None else []
        else:
            # ``since`` (and an empty ``tags``, which RobustMQ makes since 0) is no filter:
            # query.rs ``query_by_since`` files the offset under the mail address, and the
            # storage driver looks offsets up by shard name ("{topic_id}-0"), so reads from 0
            found = capped(mailbox.read(None, limit, now))
        return cut_answer(found, self.answer_limit)

    def _delete(self, target: str) -> bytes:
        address, dot, msg_id_text = target.rpartition(".")
        if not dot:  # no msg_id after the address: no command has this subject
            raise Mq9Error(p.err_unknown_subject(p.MSG_DELETE + target))
        msg_id = p.header_u64(msg_id_text) if msg_id_text == msg_id_text.strip() else None
        if msg_id is None:
            raise Mq9Error(f"invalid msg_id: {msg_id_text}")
        mailbox = self._topic(address)
        if mailbox.remove(msg_id):  # a msg_id that is not there is "deleted" all the same
            self.storage.message_removed(mailbox, msg_id)
        return p.encode(p.DELETE_REPLY.write(error="", deleted=True))

    # -- agent registry --------------------------------------------------------------------

    async def _register(self, body: bytes) -> bytes:
        """Read and embed the card on the worker thread, then keep it (under the lock)."""
        entry = await self._off_loop(self._registration, body)
        return self._transact(lambda: self._admit(entry))

    def _registration(self, body: bytes) -> AgentEntry:
        """The entry a REGISTER body makes, with its vector (the CPU-heavy part); its
        create_time is set when it is kept."""
        if not body:
            raise Mq9Error(p.ERR_REGISTER_EMPTY)
        # An A2A card if the body reads as one; else the body read afresh as {name, payload},
        # whose error is the one answered (agent.rs)
        try:
            card = p.a2a_card(p.loads(body))
        except WireError:
            card = None
        if card is not None:  # stored as RobustMQ re-serializes it
            name, agent_info = card.get("name", ""), p.encode(card).decode()
        else:
            request = _read(p.REGISTER_REQUEST, body, "invalid AGENT.REGISTER payload: ")
            name, agent_info = request["name"], request["payload"]
        if not agent_info:
            raise Mq9Error(p.ERR_AGENT_INFO_EMPTY)
        size, limit = len(agent_info.encode()), self.limits.max_card_bytes
        if limit is not None and size > limit:
            raise Mq9Error(p.err_card_too_large(size, limit))
        entry = AgentEntry.make(name, agent_info, 0)
        if name not in self.registry.entries:  # a taken name keeps its entry: no vector
            self._check_entry_fits(entry)
            self.registry.embed(entry)
        return entry

    def _admit(self, entry: AgentEntry) -> bytes:
        if entry.name in self.registry.entries:
            return _OK  # a name already taken keeps its first entry (RobustMQ)
        limit = self.limits.max_agents
        if limit is not None and len(self.registry) >= limit:
            raise Mq9Error(p.err_agent_limit(limit))
        refused = self.storage.entry_refused(entry)  # before anything changes
        if refused is not None:
            raise Mq9Error(refused)
        entry.create_time = self.now_second()
        self.registry.register(entry)
        self.storage.agent_saved(entry)
        if entry.card is not None:
            self.storage.index_saved(entry)
        return _OK

    def _named(self, body: bytes, shape: p.Shape, command: str) -> dict[str, Any]:
        request = _read(shape, body, f"invalid {command} payload: ")
        if not request["name"]:
            raise Mq9Error(p.ERR_AGENT_NAME_EMPTY)
        return request

    def _unregister(self, body: bytes) -> bytes:
        request = self._named(body, p.UNREGISTER_REQUEST, "AGENT.UNREGISTER")
        entry = self.registry.unregister(request["name"])
        if entry is not None:  # an unknown name succeeds all the same
            self.storage.agent_removed(entry)
            self.storage.index_removed(request["name"])
        return _OK

    def _report(self, body: bytes) -> bytes:
        request = self._named(body, p.REPORT_REQUEST, "AGENT.REPORT")
        # No check that the agent exists, and nothing DISCOVER shows (RobustMQ)
        self.reports[request["name"]] = (request["report_info"] or "", self.now_second())
        return _OK

    async def _discover(self, body: bytes) -> bytes:
        return await self._off_loop(self._discover_now, body)

    def _discover_now(self, body: bytes) -> bytes:
        """A DISCOVER answered on the worker thread: the registry is taken as it is (a moment
        under the lock), then ranked and encoded while the loop serves other requests."""
        request = _read(p.DISCOVER_REQUEST, body, "invalid AGENT.DISCOVER payload: ", empty_ok=True)
        if not (request["semantic"] or request["text"]):
            return self._listing()  # every agent, not paginated
        if not self.search:
            raise Mq9Error(p.ERR_SEARCH_NOT_BUILT)
        return self._search(request, self._locked(self.registry.indexed))

    def _locked(self, read: Callable[[], T]) -> T:
        """``read()`` of the state under the lock (refused, as every request, once the data
        file could not be read back)."""
        with self._lock:
            self._check_usable()
            return read()

    def _search(self, request: dict[str, Any], indexed: tuple[AgentEntry, ...]) -> bytes:
        limit = p.DEFAULT_DISCOVER_LIMIT if request["limit"] is None else request["limit"]
        # u32 arithmetic without overflow checks, as RobustMQ computes it
        first = ((max(request["page"] or 1, 1) - 1) * limit) & p.MAX_U32
        # meta-service searches 10 when asked for 0 (services/mq9/agent.rs)
        size = limit or _SEARCH_LIMIT_FOR_ZERO
        if request["semantic"]:
            hits = self.registry.search_semantic(request["semantic"], indexed)
        else:
            hits = self.registry.search_words(_paced_words(request["text"]), indexed)
        # (our choice) a search answer keeps within max_payload with the best-ranked agents
        # that fit, so one large card cannot make DISCOVER fail for everyone
        room = self._message_limit() - len(_DISCOVER_HEAD) - 2
        kept: list[bytes] = []
        for entry in hits[first : first + size]:
            item = p.encode(entry.found())
            room -= len(item) + (1 if kept else 0)
            if room < 0:
                break
            kept.append(item)
        return _DISCOVER_HEAD + b",".join(kept) + b"]}"

    def _listing(self) -> bytes:
        """Every agent in one answer by name, as RobustMQ answers; never cut (a cut list would
        hide agents, and let a taken name look free), but refused when too large for an answer
        (our choice: RobustMQ sends it whatever its size). Kept until the registry changes: a
        client listing 1,000 agents back to back had the worker join 2 MB each time."""
        registry, changes, entries = self._locked(
            lambda: (self.registry, self.registry.changes, list(self.registry.entries.values()))
        )
        limit, kept = self.answer_limit, self._listed
        if kept is not None and kept[:3] == (registry, changes, limit):
            return kept[3]
        answer = self._encode_listing(entries, limit)
        self._listed = (registry, changes, limit, answer)
        return answer

    def _encode_listing(self, entries: list[AgentEntry], limit: int | None) -> bytes:
        """``entries`` as a listing answers them, refused as soon as the agents encoded so far
        show it above ``limit``."""
        items: list[bytes] = []
        size = len(_DISCOVER_HEAD) + 2
        for entry in sorted(entries, key=lambda e: e.name):
            items.append(self.registry.listed(entry))
            size += len(items[-1]) + (len(items) > 1)
            if limit is not None and size > limit:
                raise Mq9Error(p.err_listing_too_large(len(entries), size, limit))
        return _DISCOVER_HEAD + b",".join(items) + b"]}"

    def _check_group_room(self, group: str, mailbox: Mailbox) -> None:
        """(our choice) a new consumer group needs a name of at most MAX_GROUP_NAME characters
        and room under ``max_groups`` on this mailbox; an existing one is always taken."""
        shard = mailbox.shard
        if shard in self.offsets.get(f"{group}-normal", ()):
            return
        if len(group) > p.MAX_GROUP_NAME:
            raise Mq9Error(p.err_group_name_too_long(len(group)))
        limit = self.limits.max_groups
        if limit is not None:
            held = (s for lane, s in self.offsets.items() if lane.endswith("-normal"))
            if sum(shard in shards for shards in held) >= limit:
                raise Mq9Error(p.err_group_limit(limit, mailbox.address))

    def drop_group(self, group: str, mail_address: str | None = None) -> bool:
        """Forget a consumer group's positions: on one mailbox, or on every one. Its next
        FETCH starts where its deliver policy says, as for a new group. RobustMQ has no such
        command; this is for code that embeds the bundled broker. True if there was one.
        Stored before it returns."""
        mailbox = self.topics.get(mail_address) if mail_address is not None else None
        if mail_address is not None and mailbox is None:
            return False
        shard = mailbox.shard if mailbox is not None else None
        return self._transact(lambda: self._drop_offsets(group, shard))

    def _drop_offsets(self, group: str | None, shard: str | None) -> bool:
        """Drop the offsets of ``group`` (None: every group) on ``shard`` (None: every one)."""
        lanes = [f"{group}-{lane}" for lane in _LANES] if group is not None else list(self.offsets)
        dropped = False
        for lane_group in lanes:
            committed = self.offsets.get(lane_group, {})
            for known in [s for s in committed if shard in (None, s)]:
                del committed[known]
                self.storage.offset_dropped(lane_group, known)
                dropped = True
            if not committed:
                self.offsets.pop(lane_group, None)
        return dropped

    def _check_entry_fits(self, entry: AgentEntry) -> None:
        # (our choice) an entry that alone overflows a DISCOVER answer is refused
        size = len(p.encode(p.DISCOVER_REPLY.write(error="", agents=[entry.listed()])))
        limit = self._message_limit()
        if size > limit:
            raise Mq9Error(p.err_entry_too_large(size, limit))


# -- the commands ----------------------------------------------------------------------------
#
# Each mq9 command once: what its subject holds, the largest body read for it, and how it is
# answered. Every handler is reached through the engine (``engine._send``...), so a subclass
# overriding one (tests do) is what answers.

Answer = Callable[[BrokerEngine, str, Headers, bytes], bytes]
Waiting = Callable[[BrokerEngine, str, Headers, bytes], Awaitable[bytes]]


def _parsed_body(limits: BrokerLimits) -> int | None:
    return limits.max_request


def _card_body(limits: BrokerLimits) -> int | None:
    """A REGISTER's: room for a card of ``max_card_bytes`` with every byte escaped; no card
    limit, none (what NATS carries)."""
    card = limits.max_card_bytes
    return None if card is None else limits.max_request + _ESCAPED * card


def _own_rule(_limits: BrokerLimits) -> int | None:
    """None here: SEND keeps its own rule (``_check_fits``); DELETE's body is never read."""
    return None


def _never_costly(_body: bytes) -> bool:
    return False


def _always_costly(_body: bytes) -> bool:
    return True


def _large_body(body: bytes) -> bool:
    return len(body) > LARGE_BODY


def _unknown(_engine: BrokerEngine, subject: str, _headers: Headers, _body: bytes) -> bytes:
    # RobustMQ answers a NATS -ERR; a service can only reply (our choice: same words)
    raise Mq9Error(p.err_unknown_subject(subject))


@dataclass(frozen=True)
class Command:
    """How the engine takes one mq9 command.

    ``subject``: the command's subject, or, ending in ".", the prefix a mailbox address (and
    for DELETE ``.msg_id``) follows, handed to the handler as its target. ``body_limit``: the
    largest body read, for the broker's limits (None: not bounded here). Exactly one of
    ``answer``: answered at once under the lock, as one storage transaction; or ``wait``: a
    coroutine that may wait (an empty FETCH, the worker thread) and takes the lock itself for
    each step. ``costly``: whether a request with this body costs the broker work while it
    waits, so that a serving transport makes its requester take turns (serve.py). ``owned``:
    what an enforcing broker's ownership checks before it and records after it (owned.py),
    made as part of answering it (``BrokerEngine._owned_reply``, ``ClusterEngine``)."""

    subject: str
    body_limit: Callable[[BrokerLimits], int | None]
    answer: Answer = _unknown
    wait: Waiting | None = None
    costly: Callable[[bytes], bool] = _never_costly
    owned: Owned = owning.NOTHING

    @property
    def addressed(self) -> bool:
        return self.subject.endswith(".")


COMMANDS = {
    command.subject: command
    for command in (
        Command(
            p.MAILBOX_CREATE,
            _parsed_body,
            lambda e, _t, _h, body: e._create(body),
            owned=owning.CREATE,
        ),
        Command(
            p.MSG_SEND,
            _own_rule,
            lambda e, address, h, body: e._send(address, body, h),
            owned=owning.SEND,
        ),
        Command(
            p.MSG_FETCH,
            _parsed_body,
            wait=lambda e, address, _h, body: e._fetch(address, body),
            owned=owning.FETCH,
        ),
        Command(
            p.MSG_ACK, _parsed_body, lambda e, _address, _h, body: e._ack(body), owned=owning.ACK
        ),
        Command(
            p.MSG_QUERY,
            _parsed_body,
            wait=lambda e, address, _h, body: e._query(address, body),
            costly=_large_body,  # a group reader's claim lookup by key costs nothing
            owned=owning.QUERY,
        ),
        Command(
            p.MSG_DELETE,
            _own_rule,
            lambda e, target, _h, _body: e._delete(target),
            owned=owning.DELETE,
        ),
        Command(
            p.AGENT_REGISTER,
            _card_body,
            wait=lambda e, _t, _h, body: e._register(body),
            costly=_always_costly,
            owned=owning.REGISTER,
        ),
        Command(
            p.AGENT_UNREGISTER,
            _parsed_body,
            lambda e, _t, _h, body: e._unregister(body),
            owned=owning.UNREGISTER,
        ),
        Command(
            p.AGENT_REPORT,
            _parsed_body,
            lambda e, _t, _h, body: e._report(body),
            owned=owning.REPORT,
        ),
        Command(
            p.AGENT_DISCOVER,
            _parsed_body,
            wait=lambda e, _t, _h, body: e._discover(body),
            costly=_always_costly,
        ),
    )
}
# What a subject no command has is: answered as unknown, its body bounded as a parsed one's
UNKNOWN = Command("", _parsed_body)
# Addressed subjects are $mq9.AI.MSG.<COMMAND>.<target>: a prefix is the first tokens
_PREFIX_TOKENS = p.MSG_SEND.count(".")


def command_for(subject: str) -> tuple[Command, str]:
    """The command ``subject`` names and its target (the address after an addressed
    command's prefix, possibly empty); ``(UNKNOWN, subject)`` when no command has it."""
    command = COMMANDS.get(subject)
    if command is not None:
        return command, ""  # an exact subject, or an addressed prefix with nothing after it
    tokens = subject.split(".", _PREFIX_TOKENS)
    if len(tokens) > _PREFIX_TOKENS:
        target = tokens[_PREFIX_TOKENS]
        command = COMMANDS.get(subject[: len(subject) - len(target)])
        if command is not None and command.addressed:
            return command, target
    return UNKNOWN, subject


_OK = p.encode(p.ERROR_REPLY.write(error=""))
# A body above this is parsed off the loop (a large QUERY's parsing would hold every other
# request: bench/HOTPATH.md); a QUERY's above it takes its requester's turns (serve.py)
LARGE_BODY = 4096
_SEARCH_LIMIT_FOR_ZERO = 10
# Tags a QUERY reads before the loop answers other requests (each reads up to 100 messages):
# a QUERY of up to this many is read at once, as the leases' QUERYs (24 tags) need no more
QUERY_TAGS_AT_ONCE = 32
# Between two such reads the loop is left to other requests this long (seconds): with no pause
# the next read came before the other requests' next steps, and a SEND (a few turns of the
# loop) paid a read at each turn; now at most the one under way when it came
QUERY_PAUSE = 0.0005
# Between two pieces of a text query's words (4 KiB each) the worker thread sleeps this long
# (seconds): Python's lock goes to the loop at once, not when the loop has waited the switch
# interval for it, and a client sending large queries back to back no longer keeps the loop
# busy with its requests' bytes (bench 9d text). A query of one piece never waits.
TEXT_PAUSE = QUERY_PAUSE
# The replies written around items encoded once each (MSG_ITEM, agents), not re-encoded
_DISCOVER_HEAD = p.encode(p.DISCOVER_REPLY.write(error="", agents=[]))[:-2]
# A SEND's answer, written without the encoder (as much as the rest of a SEND's own work);
# tests/broker/engine/test_engine_properties.py holds it to p.SEND_REPLY's encoding
_SENT = b'{"error":"","msg_id":%d}'
_MSG_ID_ROOM = len(str(p.MAX_U64)) - len("-1")  # a msg_id's widest digits, beyond the -1 sent


def _nothing() -> None:
    """What ``_locked`` reads for a request that only needs to know the broker is usable."""


def _paced_words(text: str) -> set[str]:
    """The ``words`` of a text search's query, a piece at a time, sleeping ``TEXT_PAUSE``
    between pieces (on the worker thread)."""
    found: set[str] = set()
    for i, some in enumerate(word_pieces(text)):
        if i:
            time.sleep(TEXT_PAUSE)
        found |= some
    return found


def _read_query(body: bytes) -> dict[str, Any]:
    return _read(p.QUERY_REQUEST, body, "invalid query request: ", empty_ok=True)


def _read(
    shape: p.Shape, body: bytes, prefix: str = "", *, empty_ok: bool = False
) -> dict[str, Any]:
    """A request body as RobustMQ's handler parses it: serde's error behind the handler's own
    prefix; an empty body is every field absent where the handler allows it."""
    if empty_ok and not body:
        return {**dict.fromkeys(shape.fields), **shape.defaults}
    try:
        return shape.read(body)
    except WireError as exc:
        raise Mq9Error(prefix + exc.message) from None


def _wrap_u64(number: int) -> int:
    """``number`` as a Rust u64 sum without overflow checks holds it."""
    return number & p.MAX_U64


def _yield_to_the_loop() -> None:
    """Run this thread below the event loop's priority (Linux: a thread's own nice value), so
    that the scheduler lets the loop answer at once whenever both want a core."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICENESS)


# The one thread the process's brokers hand CPU-heavy work to (started on first use): one, as
# onnxruntime runs an embedding on one thread and the loop needs the other core.
WORKER_NICENESS = 10
_WORKER = ThreadPoolExecutor(
    1, thread_name_prefix="mq9-broker-work", initializer=_yield_to_the_loop
)
