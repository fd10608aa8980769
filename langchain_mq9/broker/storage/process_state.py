"""``ProcessState``: the state of one broker process (state/mailbox.py, state/registry.py) as
``ProcessStore`` (in_process.py) keeps it: the live mailboxes and every log, the groups'
offsets, the registry's rows, the mailbox expiry and delayed-message queues; each change made
as one step under one lock, told to a ``Storage`` (base.py: memory or SQLite) in a transaction,
after the housekeeping that fell due on the injected clock (mailboxes expired, delayed
messages written, RobustMQ's retention), as ``BrokerEngine`` keeps house before each request.
What a store call reads and writes of it is in_process.py's.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from ...protocol import PRIORITY_ORDER
from ...semantic.ranking import AgentEntry
from ..state.clock import Clock, system_clock
from ..state.mailbox import Mailbox, StoredMessage
from ..state.registry import AgentRegistry
from .base import Storage, StorageError
from .mailbox_store import Full
from .memory import MemoryStorage

log = logging.getLogger("langchain_mq9.broker")

T = TypeVar("T")

# RobustMQ's retention and its scan (the same figures as engine.py's, which names them)
RETENTION_SECONDS = 7 * 86_400
RETENTION_SCAN_SECONDS = 600
RETENTION_PIECE_BYTES = 64 * 1024  # names a stored piece of a mailbox's retention removes
_REMOVAL_ROOM = 32  # a removal's bytes in a record beyond its address
LANES = tuple(priority.value for priority in PRIORITY_ORDER)


class _Rows(AgentRegistry):
    """The registrations and the search index as rows: the engine embeds the cards it ranks
    (on its worker, once each), so the store never runs the model under its lock."""

    def embed(self, entry: AgentEntry) -> None:
        """(no vector here: the engine's copy of the index holds them)"""


class ProcessState:
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

    def _write(self, mailbox: Mailbox, message: StoredMessage) -> int:
        replaced = mailbox.keys.get(message.key) if message.key is not None else None
        mailbox.append(message)
        if replaced is not None:
            self.storage.message_removed(mailbox, replaced)
        self.storage.message_stored(mailbox, message)
        for told in self.arrivals:
            told(mailbox.address)
        return message.msg_id
