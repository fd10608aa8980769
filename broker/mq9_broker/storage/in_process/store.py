"""``ProcessStore``: the ``MailboxStore`` (mailbox_store.py) over the state held in this
process (state/mailbox.py, state/registry.py), so that the one engine over the store protocol
(engine/engine.py) answers over it as over the JetStream store.

Each call is one step under the store's lock, as each call of the JetStream store is one
request the servers decide: what two requests could decide differently (a name created once,
a bounded write refused with ``Full``) is decided with the change, never between two calls.
Time is the injected clock's: before each call, under the lock, the housekeeping that fell due
is done at its exact second (mailboxes expired, delayed messages written, RobustMQ's
retention), as ``BrokerEngine`` does before each request.

The state, its lock, its housekeeping and its ``Storage`` are process_state.py's
(``ProcessState``): the ``Storage`` it is given (persistence.py: memory or SQLite) is told of every
change inside the call that makes it, in a transaction per call and per piece of
housekeeping; it restores the store when built, and again after a write that failed (the file
is the truth). A stored
message's mark is its msg_id twice (``Mark(msg_id, msg_id)``): the state here has no stream
sequences, and a read bounded by ``upto`` is bounded by msg_id.
"""

from __future__ import annotations

import functools
import weakref
from bisect import bisect_left
from collections.abc import Iterable, Sequence

from mq9_wire import protocol as p
from mq9_wire.protocol import PRIORITY_ORDER
from mq9_wire.protocol.errors import Mq9Error
from mq9_wire.semantic.ranking import AgentEntry

from ...state.mailbox import Mailbox, StoredMessage
from ..mailbox_store import (
    OPEN,
    AgentRow,
    Counted,
    Full,
    KeyTableFull,
    MailboxRecord,
    MailboxStore,
    Mark,
    Once,
    Position,
    answered,
)
from .housekeeping import LANES
from .process_state import ProcessState


def _record(topic: Mailbox) -> MailboxRecord:
    """``topic``'s record, made again only when what it says changed (a SEND reads it first,
    and a frozen dataclass costs a SEND a tenth of its time to make)."""
    said = (topic.create_time, topic.ttl, topic.desc, topic.start_offset)
    made = _RECORDS.get(topic)
    if made is not None and made[0] == said:
        return made[1]
    record = MailboxRecord(topic.address, *said[:3], topic.shard, 0, 0, said[3])
    _RECORDS[topic] = (said, record)
    return record


# Each live Mailbox's last record (weakly held: a mailbox dropped takes its record with it)
_RECORDS: weakref.WeakKeyDictionary[Mailbox, tuple[tuple[int, int, str, int], MailboxRecord]] = (
    weakref.WeakKeyDictionary()
)


def _upto(messages: Iterable[StoredMessage], upto: int | None) -> list[StoredMessage]:
    """``messages`` (in msg_id order) written by the read's mark (a msg_id), none since."""
    read = list(messages)
    if upto is None or not read or read[-1].msg_id <= upto:
        return read  # (the usual read: nothing written since the mark)
    return [m for m in read if m.msg_id <= upto]


def _tags_upto(messages: Iterable[StoredMessage], upto: int) -> list[StoredMessage]:
    """``_upto`` of a tag's read (in tag order, then msg_id order)."""
    return [m for m in messages if m.msg_id <= upto]


class ProcessStore(ProcessState):
    """The ``MailboxStore`` calls over a ``ProcessState``: each one step under its lock."""

    answers_at_once = True  # no call waits: each is one step under the lock
    send_limits = OPEN  # a tag or a key kept as data: nothing to bound but the message's size

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
        self,
        mailbox: str,
        message: StoredMessage,
        *,
        now: int,
        room: int | None = None,
        once: Once | None = None,
    ) -> int:
        if once is None:
            return self._change(
                lambda: self._write(self._room(mailbox, message, room), message).msg_id
            )

        def work() -> int:
            kept = self.sent_keys.get(mailbox, once.key, once.at_ms)  # (_seen's, sooner)
            if kept is not None:
                return answered(once, *kept)
            self._key_room(once)
            msg_id = self._write(self._room(mailbox, message, room), message).msg_id
            self._keep(mailbox, once, msg_id)
            return msg_id

        return self._change(work)

    async def hold(
        self, mailbox: str, message: StoredMessage, *, due: int, now: int, once: Once | None = None
    ) -> None:
        def work() -> None:
            if once is not None:
                if self._seen(mailbox, once) is not None:
                    return
                self._key_room(once)
            self._room(mailbox, message, None)
            seq = self.hold_delayed(due, mailbox, message)
            self.storage.delayed_added(seq, due, mailbox, message)
            if once is not None:
                self._keep(mailbox, once, -1)

        self._change(work)

    def _seen(self, mailbox: str, once: Once) -> int | None:
        """(under the lock) The first msg_id of ``once``'s key within its window (``once``
        then a duplicate; ``KeyReused`` for another SEND's key); None: the key is new."""
        kept = self.sent_keys.get(mailbox, once.key, once.at_ms)
        return None if kept is None else answered(once, *kept)

    def _key_room(self, once: Once) -> None:
        """(under the lock) ``KeyTableFull`` when a new key of ``once``'s sender is past the
        store's bounds, the keys whose windows ended dropped first: decided with the
        write, in its one step."""
        keys = self.sent_keys
        if once.most is not None and len(keys) < once.most and once.most_each is None:
            return  # (most SENDs: room in all, no sender's bound asked)
        if keys.expire(once.at_ms):
            self.storage.keys_expired(once.at_ms)
        full = keys.room(once.key, once.most, once.most_each, once.party)
        if full is not None:
            raise KeyTableFull(full)

    def _keep(self, mailbox: str, once: Once, msg_id: int) -> None:
        """(under the lock) ``once``'s key answered ``msg_id`` until its window ends; the
        keys whose windows ended dropped."""
        if self.sent_keys.expire(once.at_ms):
            self.storage.keys_expired(once.at_ms)
        until = once.at_ms + once.window * 1000
        party = self.sent_keys.put(mailbox, once.key, msg_id, once.fingerprint, until, once.party)
        self.storage.key_sent(mailbox, once.key, msg_id, once.fingerprint, until, party)

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

    async def lane_counts(self, mailbox: str, *, now: int) -> dict[str, int]:
        """How many live messages each priority's lane holds (what a read finds): the
        console's count, which no read of the protocol can finish under many urgent ones.
        Kept as the log is written (``Mailbox.live_counts``): no walk of the mailbox."""

        def work() -> dict[str, int]:
            topic = self.topics.get(mailbox)
            if topic is None:
                return {priority.value: 0 for priority in PRIORITY_ORDER}
            return {lane.value: n for lane, n in topic.live_counts(now).items()}

        return self._look(work)

    async def scheduled(self, mailbox: str, *, now: int) -> tuple[int, int | None]:
        """How many delayed messages for ``mailbox`` are held and not yet due, and the
        second the soonest is due (None: none), as the queue keeps them (no walk)."""
        return self._look(lambda: self.delayed_held(mailbox))

    async def counted(self, mailbox: str, *, now: int) -> Counted:
        """What a COUNT answers, in one step: each lane's live messages, the newest
        mark, the delayed messages held and the soonest due (counting.py)."""

        def work() -> Counted:
            topic = self.topics.get(mailbox)
            if topic is None:
                lanes = {priority.value: 0 for priority in PRIORITY_ORDER}
            else:
                lanes = {lane.value: n for lane, n in topic.live_counts(now).items()}
            last = Mark(topic.end_offset, topic.end_offset) if topic and topic.messages else None
            return lanes, last, self.delayed_held(mailbox)

        return self._look(work)

    async def read_lanes(
        self,
        mailbox: str,
        start: Mark,
        limit: int,
        *,
        upto: Mark,
        now: int,
        lane_starts: Sequence[Mark] | None = None,
    ) -> list[list[StoredMessage]]:
        starts = lane_starts or [start] * len(PRIORITY_ORDER)

        def work() -> list[list[StoredMessage]]:
            topic = self.topics.get(mailbox)
            if topic is None:
                return []
            lanes, held = [], 0
            for priority, begin in zip(PRIORITY_ORDER, starts, strict=True):
                lane = topic.read_lane(priority, begin.msg_id, limit, now)
                lanes.append(_upto(lane, upto.msg_id))
                held += len(lanes[-1])
                if held >= limit and lane_starts is None:
                    break  # critical first; no lane read once enough are
            return lanes

        return self._look(work)

    async def read(
        self, mailbox: str, start: Mark, limit: int, *, upto: Mark | None, now: int
    ) -> list[StoredMessage]:
        newest = None if upto is None else upto.msg_id

        def work() -> list[StoredMessage]:
            topic = self.topics.get(mailbox)
            return [] if topic is None else _upto(topic.read(start.msg_id, limit, now), newest)

        return self._look(work)

    async def by_tags(
        self, mailbox: str, tags: list[str], limit: int, *, upto: int, now: int
    ) -> list[list[StoredMessage]]:
        def work() -> list[list[StoredMessage]]:
            topic = self.topics.get(mailbox)
            if topic is None:
                return []
            return [_tags_upto(topic.read_tag(tag, limit, now), upto) for tag in tags]

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
        for lane in LANES:
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
            self.reports.pop(name, None)  # kept only while it is registered
            if entry is not None:
                self.registry.changes += 1
                self.storage.agent_removed(entry)
            return entry is not None

        return self._change(work)

    async def agents(self) -> list[AgentRow]:
        return self._look(lambda: [e.row for e in self.registry.entries.values()])

    async def report(self, name: str, report_info: str, at: int) -> bool:
        with self._lock:  # not stored (RobustMQ's topic of them is never read)
            if name not in self.registry.entries:  # only a registered agent's
                return False
            self.reports[name] = (report_info, at)
            return True

    async def index_put(self, card_name: str, row: AgentRow) -> None:
        def work() -> None:
            entry = self.registry.entries.get(row[0])
            if entry is None or entry.row != row:
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
        return self._look(lambda: [e.row for e in self.registry.index.values()])

    async def close(self) -> None:
        with self._lock:
            self.storage.close()


def _checked(store: ProcessStore) -> MailboxStore:
    """(never called) mypy holds ``ProcessStore`` to the protocol here, whoever builds one."""
    return store
