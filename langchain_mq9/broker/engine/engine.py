"""The bundled mq9 broker: RobustMQ's mq9 behaviour as pure logic behind one ``handle`` call.

``BrokerEngine.handle(subject, headers, body)`` takes a request as it arrives on the wire and
returns the reply bytes; the in-process transport and ``serve_on_nats`` both call it. Every rule
follows RobustMQ at the pinned commit (``docs/protocol.md`` names the RobustMQ file behind
each); where we differ is marked "(our choice)" there and here. Time comes from an injectable
clock. Safe to share between event loops and threads: state changes happen under one lock and
never await; what costs CPU time runs on the broker's worker thread, so no request holds the
loop that serves it. Answers stay within ``answer_limit`` (answers.py); a request body is
refused unread above its command's bound (``BrokerLimits.max_request``). The commands' table,
the bodies' reading, the checks and the answers' texts are ``rules.py``'s, shared with
``ClusterEngine``: this file holds what the state in this process decides. docs/broker.md
("Inside the engine") tells consumer groups, u64 sums and the worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from ... import protocol as p
from ...protocol import PRIORITY_ORDER
from ...protocol.errors import Mq9Error
from ...semantic.ranking import AgentEntry, word_pieces
from ..state.clock import Clock, system_clock
from ..state.mailbox import Mailbox, StoredMessage
from ..state.registry import AgentRegistry
from ..storage import MemoryStorage, Storage, StorageError
from ..storage.housekeeping import (
    LANES,
    RETENTION_PIECE_BYTES,
    RETENTION_SCAN_SECONDS,
    RETENTION_SECONDS,
    Housekeeping,
)
from . import owned as owning
from . import rules
from .answers import capped, cut_answer
from .limits import BrokerLimits
from .owned import Keep, Named, Requester
from .rules import (
    COMMANDS,
    LARGE_BODY,
    OK,
    UNKNOWN,
    Carried,
    Command,
    Headers,
    Vouched,
    command_for,
    read,
    stored_headers,
    wrap_u64,
)
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

T = TypeVar("T")  # what a piece of work run under the lock or off the loop gives
A = TypeVar("A")  # what such a piece of work is given


class BrokerEngine(Carried, Housekeeping):
    """The mq9 commands answered over the state held in this process (``storage`` told of
    every change): the rules and texts are ``rules.py``'s, as ``ClusterEngine``'s are."""

    # Commands answered at once may be answered in the connection's read loop (serve.py):
    # nothing of theirs waits
    answers_in_read_loop = True

    def __init__(
        self,
        *,
        clock: Clock = system_clock,
        limits: BrokerLimits | None = None,
        storage: Storage | None = None,
        search: bool = True,
    ):
        super().__init__()
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

    def now_second(self) -> int:
        return int(self.clock())

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
        """``handle``'s answer to a command that does not wait (``Command.waits`` false), with
        no coroutine; refuses one that waits. Never raises."""
        try:
            try:
                command, target = rules.checked_command(subject, self.limits, body)
                if command.waits:
                    raise TypeError(f"{subject} waits: BrokerEngine.handle answers it")
                return self._at_once(command, target, headers, body)
            except Mq9Error as exc:
                return p.encode(p.ERROR_REPLY.write(error=str(exc)))
        except Exception as exc:
            return self.failure_answer(subject, exc)

    def failure_answer(self, subject: str, exc: Exception) -> bytes:
        """The answer to a request that failed other than by the rules (``rules``)."""
        return rules.failure_answer(subject, exc)

    async def _reply(self, subject: str, headers: Headers, body: bytes) -> bytes:
        command, target = rules.checked_command(subject, self.limits, body)
        if command.waits:
            return await _WAITS[command.subject](self, target, headers, body)
        return self._at_once(command, target, headers, body)

    async def _owned_reply(
        self, subject: str, headers: Headers, body: bytes, requester: Requester
    ) -> bytes:
        """``_reply`` for ``requester``: a command answered at once is checked, done and its
        record claimed in one transaction, so no other request comes between the check and
        what it allowed; one that waits is checked, and claims, under the lock right before
        it starts and once it is answered. The record is kept before the answer goes."""
        command, target = rules.checked_command(subject, self.limits, body)
        owned = command.owned
        named = await owned.names(target, body, LARGE_BODY)
        given = Vouched(headers, requester.principal) if owned.vouched else headers
        if not command.waits:
            answer = _ANSWERS.get(command.subject, _unknown)

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
        made = await _WAITS[command.subject](self, target, given, body)
        with self._lock:
            keep = owned.recorded(requester, named, headers, body, made)
        return await owning.kept(made, keep)

    async def look_up(self, _named: Named) -> None:
        """(what exists is this process's own state, which the checks read under the lock:
        nothing to read first; ``ClusterEngine.look_up`` reads it from its store)"""

    def _at_once(self, command: Command, target: str, headers: Headers, body: bytes) -> bytes:
        """A command that does not wait, answered under the lock as one transaction."""
        answer = _ANSWERS.get(command.subject, _unknown)
        return self._transact(lambda: answer(self, target, headers, body))

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

    # -- mailboxes -------------------------------------------------------------------------

    def _create(self, body: bytes) -> bytes:
        creation = rules.read_create(body)
        address, ttl = creation.address, creation.ttl
        if address in self.mailboxes:
            raise Mq9Error(p.err_mailbox_exists(address))
        limit = self.limits.max_mailboxes
        if limit is not None and len(self.mailboxes) >= limit:
            raise Mq9Error(p.err_mailbox_limit(limit))
        mailbox = self.topics.get(address)
        if mailbox is None:
            mailbox = Mailbox(address, create_time=self.now_second(), ttl=ttl)
        else:  # an expired mailbox's log, taken up again with everything it holds
            mailbox.create_time, mailbox.ttl = self.now_second(), ttl
        mailbox.desc = creation.desc
        self.add_mailbox(mailbox)
        self.storage.mailbox_created(mailbox)
        return rules.created(address)

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
        sent = read_send(stored_headers(headers), body, self.now_second())
        message = sent.message
        rules.check_fits(message, self._message_limit())
        self._check_room(mailbox)
        refused = self.storage.message_refused(address, message)
        if refused is not None:
            raise Mq9Error(refused)
        if sent.due is not None:  # even a delay of 0 answers -1 and is written by the queue
            seq = self.hold_delayed(sent.due, address, message)
            self.storage.delayed_added(seq, sent.due, address, message)
            return rules.DELAYED
        return rules.SENT % self._write(mailbox, message).msg_id

    def _check_room(self, mailbox: Mailbox) -> None:
        limit = self.limits.max_messages_per_mailbox
        if limit is not None and len(mailbox.messages) >= limit:
            raise Mq9Error(p.err_mailbox_full(mailbox.address, limit))

    # -- FETCH and ACK ---------------------------------------------------------------------

    async def _fetch(self, address: str, body: bytes) -> bytes:
        request, num_msgs, max_wait_ms = rules.read_fetch(body)
        # force_deliver commits offsets here: the same transaction rule as every request
        lanes = self._transact(lambda: self._read_group(self._topic(address), request, num_msgs))
        return await rules.fetch_answer(self, lanes, request, num_msgs, max_wait_ms)

    def _read_group(
        self, mailbox: Mailbox, request: dict[str, Any], num_msgs: int
    ) -> list[list[StoredMessage]]:
        """The lanes read, critical first, each as RobustMQ reads it; [] when all are empty."""
        group = request["group_name"]
        if group is None:  # a throwaway group: the deliver policy decides every time
            starts: dict[str, int | None] = dict.fromkeys(LANES, self._initial(mailbox, request))
        elif request["force_deliver"] and self.offsets.get(f"{group}-normal"):
            # RobustMQ commits the reset position + 1 yet reads this answer from the position
            target = self._reset_target(mailbox, request)
            for lane in LANES:
                self.commit(f"{group}-{lane}", mailbox.shard, target + 1)
            starts = dict.fromkeys(LANES, target)
        else:
            starts = {lane: self._lane_start(f"{group}-{lane}", mailbox, request) for lane in LANES}
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
        request = read(p.ACK_REQUEST, body)
        address = request["mail_address"]  # the body's, not the subject's (RobustMQ)
        mailbox = self.topics.get(address)  # the log, even of an expired mailbox
        if mailbox is None:
            raise Mq9Error(p.err_ack_mailbox_missing(address))
        # Every lane moves past msg_id, whatever its priority; msg_id 2**64-1 commits 0 (u64)
        offset = wrap_u64(request["msg_id"] + 1)
        self._check_group_room(request["group_name"], mailbox)
        for lane in LANES:
            self.commit(f"{request['group_name']}-{lane}", mailbox.shard, offset)
        return OK

    # -- QUERY and DELETE ------------------------------------------------------------------

    async def _query(self, address: str, body: bytes) -> bytes:
        # A small body is read and answered here (the worker thread's hops, and a second
        # look under the lock, cost a QUERY more than its own work: bench 9a), a large one
        # on the worker; a broken broker refuses before a large body is read, and says it is
        # broken before what is wrong with a small one (_transact looks too)
        if len(body) > LARGE_BODY:
            self._locked(_nothing)
            request = await self._off_loop(rules.read_query, body)
        else:
            try:
                request = rules.read_query(body)
            except Mq9Error:
                self._locked(_nothing)
                raise
        limit = rules.query_limit(request)
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
        address, msg_id = rules.delete_target(target)
        mailbox = self._topic(address)
        if mailbox.remove(msg_id):  # a msg_id that is not there is "deleted" all the same
            self.storage.message_removed(mailbox, msg_id)
        return rules.DELETED

    # -- agent registry --------------------------------------------------------------------

    async def _register(self, body: bytes) -> bytes:
        """Read and embed the card on the worker thread, then keep it (under the lock)."""
        entry = await self._off_loop(self._registration, body)
        return self._transact(lambda: self._admit(entry))

    def _registration(self, body: bytes) -> AgentEntry:
        """The entry a REGISTER body makes, with its vector (the CPU-heavy part); its
        create_time is set when it is kept."""
        entry = rules.read_registration(body, self.limits)
        if entry.name not in self.registry.entries:  # a taken name keeps its entry: no vector
            rules.check_entry_fits(entry, self._message_limit())
            self.registry.embed(entry)
        return entry

    def _admit(self, entry: AgentEntry) -> bytes:
        if entry.name in self.registry.entries:
            return OK  # a name already taken keeps its first entry (RobustMQ)
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
        return OK

    def _unregister(self, body: bytes) -> bytes:
        request = rules.read_named(body, p.UNREGISTER_REQUEST, "AGENT.UNREGISTER")
        entry = self.registry.unregister(request["name"])
        if entry is not None:  # an unknown name succeeds all the same
            self.storage.agent_removed(entry)
            self.storage.index_removed(request["name"])
        return OK

    def _report(self, body: bytes) -> bytes:
        request = rules.read_named(body, p.REPORT_REQUEST, "AGENT.REPORT")
        # No check that the agent exists, and nothing DISCOVER shows (RobustMQ)
        self.reports[request["name"]] = (request["report_info"] or "", self.now_second())
        return OK

    async def _discover(self, body: bytes) -> bytes:
        return await self._off_loop(self._discover_now, body)

    def _discover_now(self, body: bytes) -> bytes:
        """A DISCOVER answered on the worker thread: the registry is taken as it is (a moment
        under the lock), then ranked and encoded while the loop serves other requests."""
        request = rules.read_discover(body)
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
        if request["semantic"]:
            hits = self.registry.search_semantic(request["semantic"], indexed)
        else:
            hits = self.registry.search_words(_paced_words(request["text"]), indexed)
        return rules.search_answer(hits[rules.search_page(request)], self._message_limit())

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
        entries.sort(key=lambda e: e.name)
        answer = rules.listing_answer(entries, self.registry.listed, limit)
        self._listed = (registry, changes, limit, answer)
        return answer

    def _check_group_room(self, group: str, mailbox: Mailbox) -> None:
        """(our choice) a new consumer group needs a name of at most MAX_GROUP_NAME characters
        and room under ``max_groups`` on this mailbox; an existing one is always taken."""
        shard = mailbox.shard
        if shard in self.offsets.get(f"{group}-normal", ()):
            return
        rules.check_group_name(group)
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


# -- the commands ----------------------------------------------------------------------------
#
# How this engine answers each command of the table (rules.COMMANDS): at once, under the lock
# as one transaction, or (``Command.waits``) by a coroutine that takes the lock itself for each
# step. Every handler is reached through the engine (``engine._send``...), so a subclass
# overriding one (tests do) is what answers.

Answer = Callable[[BrokerEngine, str, Headers, bytes], bytes]
Waiting = Callable[[BrokerEngine, str, Headers, bytes], Awaitable[bytes]]


def _unknown(_engine: BrokerEngine, subject: str, _headers: Headers, _body: bytes) -> bytes:
    raise rules.unknown(subject)


_ANSWERS: dict[str, Answer] = {
    p.MAILBOX_CREATE: lambda e, _t, _h, body: e._create(body),
    p.MSG_SEND: lambda e, address, h, body: e._send(address, body, h),
    p.MSG_ACK: lambda e, _address, _h, body: e._ack(body),
    p.MSG_DELETE: lambda e, target, _h, _body: e._delete(target),
    p.AGENT_UNREGISTER: lambda e, _t, _h, body: e._unregister(body),
    p.AGENT_REPORT: lambda e, _t, _h, body: e._report(body),
}
_WAITS: dict[str, Waiting] = {
    p.MSG_FETCH: lambda e, address, _h, body: e._fetch(address, body),
    p.MSG_QUERY: lambda e, address, _h, body: e._query(address, body),
    p.AGENT_REGISTER: lambda e, _t, _h, body: e._register(body),
    p.AGENT_DISCOVER: lambda e, _t, _h, body: e._discover(body),
}

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
