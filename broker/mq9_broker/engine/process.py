"""``BrokerEngine``: the engine (engine.py) over the state held in this process
(``ProcessStore``, storage/in_process/store.py), for ``memory://`` clients and a broker on one
nats-server; a memory or SQLite ``Storage`` (storage/in_process/persistence.py) told of every
change.

It answers as the engine answers over any store; what it adds is for code that embeds the
bundled broker, and for its tests: the state itself to read (``mailboxes``, ``topics``,
``offsets``, ``registry``...) and ``drop_group``. Safe to share between event loops and
threads: each store call is one step under the state's lock, and never waits.
"""

from __future__ import annotations

from ..state.clock import Clock, system_clock
from ..state.mailbox import Mailbox
from ..state.registry import AgentRegistry
from ..storage import Storage
from ..storage.in_process import ProcessStore
from .engine import Engine
from .limits import BrokerLimits


class BrokerEngine(Engine[ProcessStore]):
    """The engine over this process's state, kept by ``storage`` (None: memory only), on
    ``clock`` (the store's housekeeping and the engine's seconds are one time); a SEND's
    tags and key kept as data (the store's ``send_limits``: ``OPEN``), each message written
    announced to whoever serve.py or a memory:// client adds to ``arrivals``."""

    def __init__(
        self,
        *,
        clock: Clock = system_clock,
        limits: BrokerLimits | None = None,
        storage: Storage | None = None,
        search: bool = True,
    ):
        store = ProcessStore(clock=clock, storage=storage)
        super().__init__(store, clock=clock, limits=limits, search=search, arrivals=store.arrivals)

    # -- the state, as the store holds it --------------------------------------------------

    @property
    def storage(self) -> Storage:
        return self.store.storage

    @property
    def mailboxes(self) -> dict[str, Mailbox]:
        """The live mailboxes (what SEND and CREATE see)."""
        return self.store.mailboxes

    @property
    def topics(self) -> dict[str, Mailbox]:
        """Every log, an expired mailbox's too (what FETCH, QUERY, DELETE and ACK read)."""
        return self.store.topics

    @property
    def offsets(self) -> dict[str, dict[str, int]]:
        """Committed offsets: lane group ("{group}-{priority}") -> shard -> next msg_id."""
        return self.store.offsets

    @property
    def registry(self) -> AgentRegistry:
        """The registrations and the search index's rows."""
        return self.store.registry

    @property
    def reports(self) -> dict[str, tuple[str, int]]:
        """Each agent's latest REPORT, for the operator."""
        return self.store.reports

    def drop_group(self, group: str, mail_address: str | None = None) -> bool:
        """Forget a consumer group's positions: on one mailbox, or on every one. Its next
        FETCH starts where its deliver policy says, as for a new group. RobustMQ has no such
        command; this is for code that embeds the bundled broker. True if there was one.
        Stored before it returns."""
        return self.store.drop_group(group, mail_address)
