"""``ProcessState``: the state of one broker process (state/mailbox.py, state/registry.py) as
``ProcessStore`` (store.py) keeps it: the live mailboxes and every log, the groups'
offsets, the registry's rows, the mailbox expiry and delayed-message queues; each change
made as one step under one lock, told to a ``Storage`` (persistence.py: memory or SQLite) in a
transaction, after the housekeeping that fell due on the injected clock (mailboxes expired,
delayed messages written, RobustMQ's retention), as ``BrokerEngine`` keeps house before each
request.
What a store call reads and writes of it is store.py's.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from mq9_wire.semantic.ranking import AgentEntry

from ...state.clock import Clock, system_clock
from ...state.mailbox import Mailbox, StoredMessage
from ...state.registry import AgentRegistry
from ..mailbox_store import Full, StorageError
from .housekeeping import Housekeeping
from .persistence import MemoryStorage, Storage
from .sent_keys import SentKeys

log = logging.getLogger("mq9_broker")

T = TypeVar("T")


class _Rows(AgentRegistry):
    """The registrations and the search index as rows: the engine embeds the cards it ranks
    (on its worker, once each), so the store never runs the model under its lock."""

    def embed(self, entry: AgentEntry) -> None:
        """(no vector here: the engine's copy of the index holds them)"""


class ProcessState(Housekeeping):
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
        self._scheduled: dict[str, list[tuple[int, int]]] = {}  # each mailbox's share
        self.sent_keys = SentKeys()  # keyed SENDs answered, until their window ends

    # -- what ``Storage.restore`` fills (base.Restorable) ---------------------------------

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
            self._restore_after(failure)
            raise

    # -- housekeeping, at the second it falls due -----------------------------------------
