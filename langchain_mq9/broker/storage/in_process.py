"""``ProcessStore``: the ``MailboxStore`` (mailbox_store.py) over the state held in this
process (state/mailbox.py, state/registry.py), so that the one engine over the store protocol
(engine/over_store.py) answers over it as over the JetStream store (issue #80).

Each call is one step under the store's lock, as each call of the JetStream store is one
request the servers decide: what two requests could decide differently (a name created once,
a bounded write refused with ``Full``) is decided with the change, never between two calls.
Time is the injected clock's: before each call, under the lock, the housekeeping that fell due
is done at its exact second (mailboxes expired, delayed messages written, RobustMQ's
retention), as ``BrokerEngine`` does before each request.

The ``Storage`` it is given (base.py: memory or SQLite) is told of every change inside the
call that makes it, in a transaction per call and per piece of housekeeping; it restores the
store when built, and again after a write that failed (the file is the truth). A stored
message's mark is its msg_id twice (``Mark(msg_id, msg_id)``): the state here has no stream
sequences, and a read bounded by ``upto`` is bounded by msg_id.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import TypeVar

from ... import protocol as p
from ...protocol import PRIORITY_ORDER
from ...protocol.errors import Mq9Error
from ...semantic.ranking import AgentEntry
from ..state.clock import Clock, system_clock
from ..state.mailbox import Mailbox, StoredMessage
from ..state.registry import AgentRegistry
from .base import Storage, StorageError
from .mailbox_store import AgentRow, Full, MailboxRecord, MailboxStore, Mark, Position
from .memory import MemoryStorage

log = logging.getLogger("langchain_mq9.broker")

T = TypeVar("T")

# RobustMQ's retention and its scan (the same figures as engine.py's, which names them)
RETENTION_SECONDS = 7 * 86_400
RETENTION_SCAN_SECONDS = 600
RETENTION_PIECE_BYTES = 64 * 1024  # names a stored piece of a mailbox's retention removes
_REMOVAL_ROOM = 32  # a removal's bytes in a record beyond its address
_LANES = tuple(priority.value for priority in PRIORITY_ORDER)


class _Rows(AgentRegistry):
    """The registrations and the search index as rows: the engine embeds the cards it ranks
    (on its worker, once each), so the store never runs the model under its lock."""

    def embed(self, entry: AgentEntry) -> None:
        """(no vector here: the engine's copy of the index holds them)"""


def _row(entry: AgentEntry) -> AgentRow:
    return entry.name, entry.agent_info, entry.create_time


def _record(topic: Mailbox) -> MailboxRecord:
    return MailboxRecord(
        topic.address, topic.create_time, topic.ttl, topic.desc, topic.shard, 0, topic.next_id
    )


def _upto(messages: Iterable[StoredMessage], upto: int | None) -> list[StoredMessage]:
    """``messages`` written by the read's mark (a msg_id), none written since."""
    return [m for m in messages if upto is None or m.msg_id <= upto]


class ProcessStore:
    """The state of one broker process, kept by ``storage`` (None: memory, kept nowhere)."""

    def __init__(self, *, clock: Clock = system_clock, storage: Storage | None = None) -> None:
        self.clock = clock
        self.storage = storage if storage is not None else MemoryStorage()
        # Each agent's latest REPORT, for the operator (RobustMQ's topic of them is never read)
        self.reports: dict[str, tuple[str, int]] = {}
        # Told the address of each message written (serve.py announces it): under the lock,
        # so each only notes it and returns
        self.arrivals: list[Callable[[str], None]] = []
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self._bound: int | None = None  # the mailboxes held at most (bound_mailboxes)
        self._broken: str | None = None  # why every call is refused, once the file is unread
        self._next_retention_scan = self.clock()  # the first call scans
        self._clear()
        self.storage.restore(self)

    def _clear(self) -> None:
        """Forget every durable thing (at the start, and before a restore after a failure)."""
        self.mailboxes: dict[str, Mailbox] = {}  # live: what SEND and CREATE see
        self.topics: dict[str, Mailbox] = {}  # every log, an expired mailbox's too
        self.registry: AgentRegistry = _Rows()
        self.offsets: dict[str, dict[str, int]] = {}  # lane group -> shard -> next msg_id
        self._mailbox_expiry: list[tuple[int, int, Mailbox]] = []
        self._delayed: list[tuple[int, int, str, StoredMessage]] = []

    # -- what ``Storage.restore`` fills (base.Restorable) ---------------------------------

    def add_mailbox(self, mailbox: Mailbox, *, live: bool = True) -> None:
        """Hold ``mailbox``, new or restored (``live=False``: the log of an expired one)."""
        self.topics[mailbox.address] = mailbox
        if not live:
            return
        self.mailboxes[mailbox.address] = mailbox
        if mailbox.expires_at is not None:
            heapq.heappush(self._mailbox_expiry, (mailbox.expires_at, next(self._seq), mailbox))

    def hold_delayed(self, due: int, address: str, message: StoredMessage) -> int:
        """Queue a delayed message until ``due``; its place, which a storage keys it by."""
        seq = next(self._seq)
        heapq.heappush(self._delayed, (due, seq, address, message))
        return seq

    # -- one step under the lock ----------------------------------------------------------

    def _look(self, work: Callable[[], T]) -> T:
        """``work()`` under the lock, after the housekeeping due: a read."""
        with self._lock:
            self._ready()
            return work()

    def _change(self, work: Callable[[], T]) -> T:
        """``work()`` under the lock, after the housekeeping due, as one transaction."""
        with self._lock:
            self._ready()
            return self._stored(work)

    def _ready(self) -> None:
        if self._broken is not None:
            raise StorageError(self._broken)
        self._housekeep()

    def _stored(self, work: Callable[[], T]) -> T:
        """(under the lock) ``work()`` as one transaction; a failed one restores the state
        from the store, which is the truth (and, when that fails, leaves it broken)."""
        try:
            with self.storage.transaction():
                return work()
        except Full:
            raise  # a refusal, decided before anything changed: nothing to restore
        except StorageError as failure:
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
            raise

    # -- housekeeping, at the second it falls due -----------------------------------------

    def _housekeep(self) -> None:
        """(under the lock) Each mailbox expired, delayed message written and piece of a
        mailbox's retention stored as a transaction of its own, in this order."""
        now = self.clock()
        while self._mailbox_expiry and self._mailbox_expiry[0][0] <= now:
            self._stored(functools.partial(self._expire_next, now))
        while self._delayed and self._delayed[0][0] <= now:
            self._stored(self._release_next)
        if now >= self._next_retention_scan:
            cutoff = int(now) - RETENTION_SECONDS
            for mailbox in list(self.topics.values()):
                self._retain(mailbox, cutoff)
            self._next_retention_scan = now + RETENTION_SCAN_SECONDS

    def _expire_next(self, now: float) -> None:
        _, _, mailbox = heapq.heappop(self._mailbox_expiry)
        live = self.mailboxes.get(mailbox.address) is mailbox
        if live and (mailbox.expires_at or now) <= now:  # not a stale entry of a re-create
            # the metadata only: the log stays readable until the retention (RobustMQ's GC)
            del self.mailboxes[mailbox.address]
            self.storage.mailbox_expired(mailbox)

    def _release_next(self) -> None:
        due, seq, address, message = heapq.heappop(self._delayed)
        self.storage.delayed_released(seq)
        topic = self.topics.get(address)  # written to the log, expired mailbox or not
        # RobustMQ reads the queued copy back first: one whose TTL ended is never delivered
        if topic is None or message.expired(int(due)):
            return
        message.create_time = max(int(due), message.create_time)
        message.expire_at = 0  # a new record without expire_at (pop.rs build_new_record)
        refused = self.storage.message_refused(address, message)
        if refused is not None:  # taken when the store's records were larger
            log.error("a delayed message for %r is dropped: %s", address, refused)
            return
        self._write(topic, message)

    def _retain(self, mailbox: Mailbox, cutoff: int) -> None:
        """RobustMQ's retention on one mailbox, stored in pieces of at most
        ``RETENTION_PIECE_BYTES`` of names; an expired mailbox's emptied log forgotten."""
        dropped = mailbox.drop_before(cutoff)
        step = max(RETENTION_PIECE_BYTES // (len(mailbox.address.encode()) + _REMOVAL_ROOM), 1)
        for start in range(0, len(dropped), step):
            piece = dropped[start : start + step]
            self._stored(functools.partial(self._removed, mailbox, piece))
        if dropped or (not mailbox.messages and mailbox.address not in self.mailboxes):
            self._stored(functools.partial(self._retained, mailbox, bool(dropped)))

    def _removed(self, mailbox: Mailbox, msg_ids: list[int]) -> None:
        for msg_id in msg_ids:
            self.storage.message_removed(mailbox, msg_id)

    def _retained(self, mailbox: Mailbox, moved: bool) -> None:
        if moved:
            self.storage.mailbox_start_moved(mailbox)
        if not mailbox.messages and mailbox.address not in self.mailboxes:
            # (our choice) an expired mailbox's empty log is forgotten, its groups with it
            del self.topics[mailbox.address]
            self.storage.mailbox_removed(mailbox)
            self._drop_offsets(None, mailbox.shard)

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

    def _write(self, mailbox: Mailbox, message: StoredMessage) -> int:
        replaced = mailbox.keys.get(message.key) if message.key is not None else None
        mailbox.append(message)
        if replaced is not None:
            self.storage.message_removed(mailbox, replaced)
        self.storage.message_stored(mailbox, message)
        for told in self.arrivals:
            told(mailbox.address)
        return message.msg_id

    # -- mailboxes ------------------------------------------------------------------------

    async def create_mailbox(
        self, name: str, *, ttl: int, desc: str, now: int
    ) -> MailboxRecord | None:
        return self._change(functools.partial(self._create, name, ttl, desc, now))

    def _create(self, name: str, ttl: int, desc: str, now: int) -> MailboxRecord | None:
        if name in self.mailboxes:
            return None
        if self._bound is not None and len(self.mailboxes) >= self._bound:
            raise Full(self._bound)
        mailbox = self.topics.get(name)
        if mailbox is None:
            mailbox = Mailbox(name, create_time=now, ttl=ttl)
        else:  # an expired mailbox's log, taken up again with everything it holds
            mailbox.create_time, mailbox.ttl = now, ttl
        mailbox.desc = desc
        self.add_mailbox(mailbox)
        self.storage.mailbox_created(mailbox)
        return _record(mailbox)

    async def bound_mailboxes(self, limit: int | None) -> None:
        self._bound = limit

    async def mailbox(self, name: str, *, now: int) -> MailboxRecord | None:
        return self._look(lambda: None if (t := self.topics.get(name)) is None else _record(t))

    # -- a mailbox's log ------------------------------------------------------------------

    async def append(
        self, mailbox: str, message: StoredMessage, *, now: int, room: int | None = None
    ) -> int:
        return self._change(lambda: self._write(self._room(mailbox, message, room), message))

    async def hold(self, mailbox: str, message: StoredMessage, *, due: int, now: int) -> None:
        def work() -> None:
            self._room(mailbox, message, None)
            seq = self.hold_delayed(due, mailbox, message)
            self.storage.delayed_added(seq, due, mailbox, message)

        self._change(work)

    def _room(self, address: str, message: StoredMessage, room: int | None) -> Mailbox:
        """(under the lock) The live mailbox ``message`` is written to: ``Full`` when it
        holds ``room``, refused when the storage could not keep ``message``."""
        mailbox = self.mailboxes.get(address)
        if mailbox is None:  # expired since the engine looked
            raise Mq9Error(p.err_mailbox_missing(address))
        if room is not None and len(mailbox.messages) >= room:
            raise Full(room)
        refused = self.storage.message_refused(address, message)
        if refused is not None:
            raise Mq9Error(refused)
        return mailbox

    async def last(self, mailbox: str) -> Mark | None:
        """RobustMQ's end offset while the log holds a message (the newest msg_id written,
        a deleted one's too: a ``latest`` group starts there)."""

        def work() -> Mark | None:
            topic = self.topics.get(mailbox)
            if topic is None or not topic.messages:
                return None
            return Mark(topic.end_offset, topic.end_offset)

        return self._look(work)

    async def last_id(self, mailbox: str) -> int | None:
        topic = self._look(lambda: self.topics.get(mailbox))
        return topic.end_offset if topic is not None and topic.next_id else None

    async def seq_for(self, mailbox: str, msg_id: int) -> int:
        return msg_id

    async def first(self, mailbox: str, *, at_time: int | None = None) -> Mark | None:
        def work() -> Mark | None:
            topic = self.topics.get(mailbox)
            if topic is None:
                return None
            index = 0 if at_time is None else bisect_left(topic.times, at_time)
            for msg_id in topic.order[index:]:  # a removed message is no longer written
                if msg_id in topic.messages:
                    return Mark(msg_id, msg_id)
            return None

        return self._look(work)

    async def count(self, mailbox: str) -> int:
        return self._look(lambda: len(t.messages) if (t := self.topics.get(mailbox)) else 0)

    async def read_lanes(
        self, mailbox: str, start: Mark, limit: int, *, upto: int, now: int
    ) -> list[list[StoredMessage]]:
        def work() -> list[list[StoredMessage]]:
            topic = self.topics.get(mailbox)
            if topic is None:
                return []
            return [
                _upto(topic.read_lane(priority, start.msg_id, limit, now), upto)
                for priority in PRIORITY_ORDER
            ]

        return self._look(work)

    async def read(
        self, mailbox: str, start: Mark, limit: int, *, upto: int | None, now: int
    ) -> list[StoredMessage]:
        def work() -> list[StoredMessage]:
            topic = self.topics.get(mailbox)
            return [] if topic is None else _upto(topic.read(start.msg_id, limit, now), upto)

        return self._look(work)

    async def by_tags(
        self, mailbox: str, tags: list[str], limit: int, *, upto: int, now: int
    ) -> list[list[StoredMessage]]:
        def work() -> list[list[StoredMessage]]:
            topic = self.topics.get(mailbox)
            if topic is None:
                return []
            return [_upto(topic.read_tag(tag, limit, now), upto) for tag in tags]

        return self._look(work)

    async def by_key(self, mailbox: str, key: str, *, now: int) -> StoredMessage | None:
        return self._look(
            lambda: None if (t := self.topics.get(mailbox)) is None else t.by_key(key, now)
        )

    async def delete(self, mailbox: str, msg_id: int) -> bool:
        def work() -> bool:
            topic = self.topics.get(mailbox)
            if topic is None or not topic.remove(msg_id):
                return False
            self.storage.message_removed(topic, msg_id)
            return True

        return self._change(work)

    # -- consumer groups ------------------------------------------------------------------

    async def position(self, group: str, record: MailboxRecord) -> Position:
        def work() -> Position:
            committed = self.offsets.get(f"{group}-normal")
            offset = committed.get(record.log) if committed else None
            return Position(offset, bool(committed), offset or 0)

        return self._look(work)

    async def commit(
        self, group: str, record: MailboxRecord, offset: int, seq: int = 0, room: int | None = None
    ) -> None:
        self._change(functools.partial(self._commit, group, record.log, offset, room))

    def _commit(self, group: str, shard: str, offset: int, room: int | None) -> None:
        """(under the lock) Every lane of ``group`` moved to ``offset`` on ``shard``; a group
        new on it refused at ``room`` groups there. A lane already there writes nothing: a
        group's readers all ack the message they were all handed."""
        if room is not None and shard not in self.offsets.get(f"{group}-normal", ()):
            held = (s for lane, s in self.offsets.items() if lane.endswith("-normal"))
            if sum(shard in shards for shards in held) >= room:
                raise Full(room)
        for lane in _LANES:
            committed = self.offsets.setdefault(f"{group}-{lane}", {})
            if committed.get(shard) != offset:
                committed[shard] = offset
                self.storage.offset_committed(f"{group}-{lane}", shard, offset)

    def drop_group(self, group: str, mail_address: str | None = None) -> bool:
        """Forget a consumer group's positions: on one mailbox, or on every one (for code
        that embeds the bundled broker; RobustMQ has no such command). True if there was one."""

        def work() -> bool:
            mailbox = self.topics.get(mail_address) if mail_address is not None else None
            if mail_address is not None and mailbox is None:
                return False
            return self._drop_offsets(group, mailbox.shard if mailbox is not None else None)

        return self._change(work)

    # -- the agent registry ---------------------------------------------------------------

    async def register(
        self, name: str, agent_info: str, create_time: int, *, room: int | None = None
    ) -> bool:
        def work() -> bool:
            entries = self.registry.entries
            if name in entries:
                return False  # a name already taken keeps its first entry (RobustMQ)
            if room is not None and len(entries) >= room:
                raise Full(room)
            entry = AgentEntry.make(name, agent_info, create_time)
            refused = self.storage.entry_refused(entry)
            if refused is not None:
                raise Mq9Error(refused)
            entries[name] = entry
            self.registry.changes += 1
            self.storage.agent_saved(entry)
            return True

        return self._change(work)

    async def unregister(self, name: str) -> bool:
        def work() -> bool:
            entry = self.registry.entries.pop(name, None)
            if entry is not None:
                self.registry.changes += 1
                self.storage.agent_removed(entry)
            return entry is not None

        return self._change(work)

    async def agents(self) -> list[AgentRow]:
        return self._look(lambda: [_row(e) for e in self.registry.entries.values()])

    async def report(self, name: str, report_info: str, at: int) -> None:
        with self._lock:  # not stored (RobustMQ's topic of them is never read)
            self.reports[name] = (report_info, at)

    async def index_put(self, card_name: str, row: AgentRow) -> None:
        def work() -> None:
            entry = self.registry.entries.get(row[0])
            if entry is None or _row(entry) != row:
                entry = AgentEntry.make(*row)
            self.registry.put_index(entry)
            self.storage.index_saved(entry)

        self._change(work)

    async def index_drop(self, card_name: str) -> None:
        def work() -> None:
            if card_name in self.registry.index:
                self.registry.drop_index(card_name)
                self.storage.index_removed(card_name)

        self._change(work)

    async def index_rows(self) -> list[AgentRow]:
        return self._look(lambda: [_row(e) for e in self.registry.index.values()])

    async def close(self) -> None:
        with self._lock:
            self.storage.close()


def _checked(store: ProcessStore) -> MailboxStore:
    """(never called) mypy holds ``ProcessStore`` to the protocol here, whoever builds one."""
    return store
