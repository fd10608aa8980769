"""``ClusterServing``: a ``ClusterEngine`` (the state kept in JetStream, issue #72) served as
``serve.py`` serves a ``BrokerEngine``, by any number of brokers at once in the queue group
``QUEUE``.

What serve.py and the ownership checks (identities/ownership.py) ask an engine for, over a
store of data: the largest answer each connection carries (``carry``), no answer waiting for
a later store write (each SEND is acknowledged by JetStream before its answer), no arrivals to
announce (the stream republishes every stored message on ``$mq9.WAKE.<digest>`` itself,
whichever broker or schedule wrote it), and which mailboxes and agents exist, read from the
cluster before a request's checks (``look_up``) since the checks themselves do not wait.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ..._nats.jetstream.ready import until_ready
from ..engine.cluster import ClusterEngine
from ..engine.limits import BrokerLimits
from ..engine.owned import Named, Requester
from ..storage.cluster import ClusterStore

QUEUE = "mq9-brokers"  # every broker of one store answers in it: NATS hands a request to one
_LOOKED_UP = 65_536  # names whose existence a broker remembers from its last look


class _Seen:
    """Names found to exist (or not) by the last ``look_up`` of each: ``name in seen``."""

    def __init__(self) -> None:
        self._found: OrderedDict[str, bool] = OrderedDict()

    def note(self, name: str, exists: bool) -> None:
        self._found[name] = exists
        self._found.move_to_end(name)
        while len(self._found) > _LOOKED_UP:
            self._found.popitem(last=False)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._found.get(name, False)

    def __len__(self) -> int:
        return sum(self._found.values())


@dataclasses.dataclass
class _Registry:
    entries: _Seen


class ClusterServing:
    """``engine`` with what serve.py and the ownership checks ask of an engine."""

    def __init__(self, engine: ClusterEngine) -> None:
        self.cluster = engine
        self.store: ClusterStore = engine.store
        self.arrivals: list[Callable[[str], None]] = []  # announced by the stream
        self._given: BrokerLimits = engine.limits
        self._carriers: dict[object, int] = {}
        # what the ownership checks read: mailbox logs kept (live or expired), live
        # mailboxes, registered agents, as the last look found them
        self.topics = _Seen()
        self.mailboxes = _Seen()
        self.registry = _Registry(_Seen())

    @property
    def limits(self) -> BrokerLimits:
        return self.cluster.limits

    @property
    def search(self) -> bool:
        return self.cluster.search

    @property
    def answer_limit(self) -> int | None:
        return self.cluster.answer_limit

    def carry(self, carrier: object, max_bytes: int | None) -> None:
        """``carrier`` carries answers of at most ``max_bytes`` (None: no more): the engine
        keeps its answers within the smallest, as ``BrokerEngine.carry`` has it."""
        if max_bytes is None:
            self._carriers.pop(carrier, None)
        else:
            self._carriers[carrier] = max_bytes
        bounds = list(self._carriers.values())
        if self._given.max_answer is not None:
            bounds.append(self._given.max_answer)
        self.cluster.limits = dataclasses.replace(self._given, max_answer=min(bounds, default=None))

    async def handle(
        self, subject: str, headers: Any, body: bytes, requester: Requester | None = None
    ) -> bytes:
        return await self.cluster.handle(subject, headers, body, requester)

    def load_model_soon(self) -> None:
        """(the model is loaded before the broker serves: Broker._load_model)"""

    async def look_up(self, named: Named) -> None:
        """Read from the cluster whether what a request's ownership check asks about exists
        (``named``, engine/owned.py): the mailbox it names, or the agent when its check asks
        the registry."""
        if named.listed:
            agents = await self.store.agents()
            self.registry.entries.note(named.agent, any(row[0] == named.agent for row in agents))
            return
        address = named.mailbox
        if not isinstance(address, str) or not address:
            return
        now = self.cluster.now_second()
        record = await self.store.mailbox(address, now=now)
        self.topics.note(address, record is not None)
        self.mailboxes.note(address, record is not None and record.live(now))

    async def close(self) -> None:
        await self.store.close()


async def open_store(store: ClusterStore, tries_until: Callable[[Exception], None]) -> None:
    """``store.open()``, tried again while the cluster cannot place it yet (a leader being
    elected, servers still joining): ``tries_until`` raises once the wait is over."""

    async def opened() -> None:
        try:
            await store.open()
        except Exception:
            await store.close()  # (its reads' subscription: the next try makes its own)
            raise

    await until_ready(opened, tries_until, pause=0.5)
