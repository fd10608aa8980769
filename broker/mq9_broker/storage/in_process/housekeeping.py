"""``Housekeeping``: what the state of one broker process does when time passes, and the
writes it shares, written once for the two that hold that state: ``BrokerEngine``
(engine/engine.py, the state behind its lock) and ``ProcessState`` (process_state.py, the same
state behind ``ProcessStore``'s calls). Mailboxes expired, delayed messages written when due
and RobustMQ's retention applied, each at the second it falls due on the holder's injected
clock and stored as a transaction of its own (the holder's ``_stored``); a mailbox held and a
message written, told to the holder's ``Storage`` and to its ``arrivals``.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
from collections.abc import Callable
from typing import TypeVar

from mq9_wire.protocol import PRIORITY_ORDER

from ...state.clock import Clock
from ...state.mailbox import Mailbox, StoredMessage
from ...state.registry import AgentRegistry
from ..mailbox_store import RETENTION_SECONDS as RETENTION_SECONDS
from ..mailbox_store import StorageError
from .persistence import Storage
from .sent_keys import SentKeys

log = logging.getLogger("mq9_broker")

T = TypeVar("T")

# RobustMQ keeps a mailbox's messages RETENTION_SECONDS (7 days: the store interface's) by
# create_time, whatever the mailbox TTL, and removes older ones in a scan every 10 minutes
# (storage-engine commitlog/rocksdb/expire.rs).
RETENTION_SCAN_SECONDS = 600
# A mailbox's retention is stored in pieces removing this many bytes of names at most (an
# address, at most MAX_ADDRESS_LENGTH, and a msg_id a removal): a piece is one small change,
# far below any record a store writes (a JetStream record: the server's max_payload)
RETENTION_PIECE_BYTES = 64 * 1024
REMOVAL_ROOM = 32  # a removal's bytes in a record beyond its address: a msg_id, brackets
LANES = tuple(priority.value for priority in PRIORITY_ORDER)  # a group's lanes, critical first


class Housekeeping:
    """Mixed into a holder of the process's state, which sets these in its ``__init__``
    (and its ``_clear``) and gives ``_stored``, its one transaction."""

    clock: Clock
    storage: Storage
    mailboxes: dict[str, Mailbox]  # live: what SEND and CREATE see
    topics: dict[str, Mailbox]  # every log, an expired mailbox's too
    offsets: dict[str, dict[str, int]]  # lane group -> shard -> next msg_id to read
    registry: AgentRegistry  # (what a restore fills beside the mailboxes: base.Restorable)
    sent_keys: SentKeys  # keyed SENDs answered, restored too
    arrivals: list[Callable[[str], None]]
    _seq: itertools.count[int]
    _next_retention_scan: float
    # min-heaps checked before every request: (when, seq, mailbox) and delayed messages
    _mailbox_expiry: list[tuple[int, int, Mailbox]]
    _delayed: list[tuple[int, int, str, StoredMessage]]
    # each mailbox's delayed messages held, soonest first (its share of ``_delayed``,
    # released in the same order): what a COUNT says of them without walking the queue
    _scheduled: dict[str, list[tuple[int, int]]]

    _broken: str | None  # why every request is refused, once the data file is unread

    def _stored(self, work: Callable[[], T]) -> T:
        """(under the holder's lock) ``work()`` as one storage transaction."""
        raise NotImplementedError

    def _clear(self) -> None:
        """Forget every durable thing (at the start, and before a restore after a failure)."""
        raise NotImplementedError

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

    def add_mailbox(self, mailbox: Mailbox, *, live: bool = True) -> None:
        """Hold ``mailbox``, new or restored (``live=False``: the log of an expired one)."""
        self.topics[mailbox.address] = mailbox
        if not live:
            return
        self.mailboxes[mailbox.address] = mailbox
        if mailbox.expires_at is not None:
            heapq.heappush(self._mailbox_expiry, (mailbox.expires_at, next(self._seq), mailbox))

    def hold_delayed(self, due: int, address: str, message: StoredMessage) -> int:
        """Queue a delayed message until ``due``; returns its place, which storage keys by."""
        seq = next(self._seq)
        heapq.heappush(self._delayed, (due, seq, address, message))
        heapq.heappush(self._scheduled.setdefault(address, []), (due, seq))
        return seq

    def delayed_held(self, address: str) -> tuple[int, int | None]:
        """How many delayed messages for ``address`` are held and not yet due, and
        the second the soonest is due (None: none held)."""
        held = self._scheduled.get(address)
        return (len(held), held[0][0]) if held else (0, None)

    def _write(self, mailbox: Mailbox, message: StoredMessage) -> StoredMessage:
        replaced = mailbox.keys.get(message.key) if message.key is not None else None
        mailbox.append(message)
        if replaced is not None:
            self.storage.message_removed(mailbox, replaced)
        self.storage.message_stored(mailbox, message)
        for told in self.arrivals:
            told(mailbox.address)
        return message

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
        held = self._scheduled.get(address)
        if held:  # (its soonest: the queue and each mailbox's share go in one order)
            heapq.heappop(held)
            if not held:
                del self._scheduled[address]
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
        per_id = len(mailbox.address.encode()) + REMOVAL_ROOM
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

    def _drop_offsets(self, group: str | None, shard: str | None) -> bool:
        """Drop the offsets of ``group`` (None: every group) on ``shard`` (None: every one)."""
        lanes = [f"{group}-{lane}" for lane in LANES] if group is not None else list(self.offsets)
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
