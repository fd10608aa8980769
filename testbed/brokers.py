"""The brokers the platform's tests (and the faces' above it) reach, over each transport, with
their clients: ``broker`` is parametrized over ``memory`` and ``nats`` (and ``robustmq`` when
``MQ9_ROBUSTMQ_URL`` names a running RobustMQ 8bd49dc: the real-broker lane), so every test that
uses it runs against the in-process transport and against a real nats-server serving the same
engine. A test that needs what only the bundled broker has (its engine, a hand-moved clock) is
skipped on RobustMQ, with the reason, when it reaches for it. A tests folder's conftest.py
imports the fixtures it uses from here.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from mq9_platform import Mq9Client
from testbed.pytest_plugin import BROKERS, ROBUSTMQ_URL
from testbed.support.shared_broker import (
    Namespace,
    NamespacedTransport,
    clear_registry,
    named_client,
    until_indexed,
)

if TYPE_CHECKING:
    from mq9_broker import BrokerEngine, ManualClock
    from mq9_broker.engine.engine import Engine
    from mq9_broker.engine.limits import BrokerLimits
    from testbed.support.store_lane import ClusterLayout


@dataclass
class Broker:
    """A broker under test: where to reach it, its engine and its hand-moved clock (the
    bundled broker's; a test on RobustMQ that reaches for them is skipped)."""

    url: str
    _engine: BrokerEngine | None
    _clock: ManualClock | None
    transport: str
    names: Namespace | None = None  # on a shared RobustMQ: this test's own names
    # on the JetStream store (MQ9_TEST_STORE=jetstream, jetstream_broker): the cluster's
    # engine, which raw requests go into, and its layout, deleted when the broker stops
    cluster: Engine | None = None
    layout: ClusterLayout | None = None

    @property
    def keeps_keys(self) -> bool:
        """Whether a SEND's idempotency key is kept (the bundled broker, every store): RobustMQ
        keeps none, so there a replayed or retried send is stored again (as the docs
        say); a test of exactly once asserts what its broker does."""
        return self.transport != "robustmq"

    async def search_settled(self, card: str, *, present: bool = True) -> None:
        """On RobustMQ (whose vector-search build indexes a card about 0.5 s after REGISTER
        answers and drops one about 1 s after UNREGISTER): wait until a search finds the card
        named ``card``, or no longer does. The bundled broker's search is exact at once."""
        if self.transport == "robustmq":
            async with self.client() as client:
                await until_indexed(client, card, present=present)

    def copies(self, sends: int = 2) -> int:
        """What ``sends`` SENDs under one key store: one on a broker that keeps keys, each of
        them on RobustMQ."""
        return 1 if self.keeps_keys else sends

    @property
    def engine(self) -> BrokerEngine:
        if self._engine is None:
            if self.cluster is not None:
                pytest.skip(
                    "reads the in-process engine's state; on the JetStream store the state "
                    "is in the cluster"
                )
            pytest.skip("needs the bundled broker's engine; RobustMQ is reached only by wire")
        return self._engine

    @property
    def clock(self) -> ManualClock:
        if self._clock is None:
            if self.cluster is not None:
                pytest.skip(
                    "moves an injected clock; on the JetStream store the servers' clock writes "
                    "create times, ends TTLs and releases delays"
                )
            pytest.skip("needs an injected clock; RobustMQ keeps its own time")
        return self._clock

    def client(self, **options) -> Mq9Client:
        client = Mq9Client(self.url, **options)
        if self.names is not None:
            client._transport = NamespacedTransport(client._transport, self.names)
        return client

    async def raw(self, subject: str, body: bytes = b"", headers: dict | None = None) -> dict:
        """One request exactly as it goes on the wire, no Mq9Client in between: straight into
        the engine for memory, over a plain nats-py connection for nats. The decoded reply."""
        if self.transport == "memory" and self.cluster is not None:
            reply = await self.cluster.handle(subject, headers, body)
        elif self.transport == "memory":
            reply = await self.engine.handle(subject, headers, body)
        elif self.names is not None:
            async with self.client() as client:
                reply = await client._transport.request(subject, body, headers, 5)
        else:
            from mq9_wire.nats_floor.guard import GuardedClient, protect

            connection = GuardedClient()  # plain nats-py gets no answer from RobustMQ
            protect(connection).cancel()
            await connection.connect(self.url)
            try:
                reply = (await connection.request(subject, body, timeout=5, headers=headers)).data
            finally:
                await connection.close()
        decoded = json.loads(reply)
        assert isinstance(decoded, dict) and isinstance(decoded.get("error"), str), decoded
        return decoded


async def start_broker(
    transport: str, nats_url: str | None, cluster: bool = False, **limits
) -> tuple[Broker, object]:
    """A broker on ``transport``; the bundled one keeps its state in memory, or in JetStream
    (``cluster``, or a served broker in the store lane: MQ9_TEST_STORE=jetstream) in a layout
    of its own, deleted when the broker stops."""
    import nats

    from mq9_broker import (
        BrokerEngine,
        BrokerLimits,
        ManualClock,
        install_memory_broker,
        serve_on_nats,
    )
    from testbed.support import store_lane

    if transport == "robustmq":
        if limits:
            pytest.skip("sets the bundled broker's limits; RobustMQ has its own")
        broker = Broker(ROBUSTMQ_URL, None, None, transport, Namespace())
        async with broker.client() as client:
            await clear_registry(client)
        return broker, None
    if cluster or (transport == "nats" and store_lane.TEST_STORE == "jetstream"):
        return await _start_on_cluster(transport, nats_url, BrokerLimits(**limits))
    clock = ManualClock()
    engine = BrokerEngine(clock=clock, limits=BrokerLimits(**limits))
    # loaded before it answers, as ``Broker`` loads it before it says ready: else the
    # first REGISTER loads it on the engine's worker thread (nice 10), which beside busy
    # processes on 2 cores took longer than the client's 5 s (once per process: cached)
    await asyncio.wrap_future(engine.load_model_soon())
    if transport == "memory":
        name = f"test{uuid.uuid4().hex}"
        install_memory_broker(name, engine)
        return Broker(f"memory://{name}", engine, clock, transport), name
    connection = await nats.connect(nats_url)
    service = await serve_on_nats(engine, connection)
    return Broker(nats_url, engine, clock, transport), (service, connection)


async def _start_on_cluster(
    transport: str, nats_url: str | None, limits: BrokerLimits
) -> tuple[Broker, object]:
    """A ``Engine`` on a layout of its own on the session's JetStream nats-server,
    reached in process (``memory``) or served on ``nats_url`` as ``--store jetstream`` serves."""
    import nats

    from mq9_broker import install_memory_broker, serve_on_nats
    from mq9_broker.serving.queue_group import QUEUE
    from testbed.support.store_lane import STATE_SERVER

    layout = await STATE_SERVER.layout()
    engine = layout.engine(limits)
    try:
        if transport == "memory":
            name = f"test{uuid.uuid4().hex}"
            install_memory_broker(name, engine)  # type: ignore[arg-type]
            url, handle = f"memory://{name}", name
        else:
            connection = await nats.connect(nats_url)
            # in a queue group as --store jetstream serves, of this layout's brokers only: a
            # test's two brokers on one nats-server each answer every request, as before
            queue = f"{QUEUE}.{layout.store.layout.name}"
            service = await serve_on_nats(engine, connection, queue=queue)
            url, handle = nats_url, (service, connection)
    except BaseException:
        await STATE_SERVER.drop(layout)
        raise
    return Broker(url, None, None, transport, cluster=engine, layout=layout), handle


async def stop_broker(broker: Broker, handle) -> None:
    from mq9_broker import drop_memory_broker

    if broker.transport == "robustmq":
        return
    if broker.transport == "memory":
        drop_memory_broker(handle)
    else:
        service, connection = handle
        await service.stop()
        await connection.close()
    if broker.layout is not None:
        from testbed.support.store_lane import STATE_SERVER

        await STATE_SERVER.drop(broker.layout)


# What the store lane (MQ9_TEST_STORE=jetstream) answers otherwise, by test name: the servers
# write a delayed message when their schedule ticks (about once a second), not before the
# broker's next request as the in-process engine does, so a SEND answered meanwhile takes the
# number first (docs/protocol-differences.md §13). Not strict: a tick may come first.
SCHEDULE_TICK = frozenset({"test_a_delay_of_zero_still_goes_through_the_delay_queue"})


def _store_lane_differences(request, started: Broker) -> None:
    on_servers = started.cluster is not None
    if on_servers and request.node.originalname in SCHEDULE_TICK:
        reason = "a delayed message is written at the servers' next schedule tick (§13)"
        request.applymarker(pytest.mark.xfail(reason=reason, strict=False))


@functools.cache
def _reaches_for(function) -> frozenset[str]:
    source = inspect.getsource(function)
    return frozenset(name for name in ("clock", "engine") if f"broker.{name}" in source)


def skip_what_cannot_run(request, started: Broker) -> None:
    """Skip a test that moves the injected clock (or reads the engine) where there is none,
    before it starts rather than at the first move: its steps before that move assume time
    stands still, and on the servers' clock a second may tick between them (CI, stop 94:
    a message of TTL 0 gone before the test's first look). Read from the test's own source: one
    that reaches for them only through a helper is skipped when it does, as before."""
    for name in _reaches_for(request.function):
        getattr(started, name)  # the property skips, saying why


@pytest.fixture(params=BROKERS)
async def broker(request):
    nats_url = request.getfixturevalue("nats_server").url if request.param == "nats" else None
    started, handle = await start_broker(request.param, nats_url)
    try:
        skip_what_cannot_run(request, started)
        _store_lane_differences(request, started)
        with pytest.MonkeyPatch.context() as patch:
            if started.names is not None:  # on a shared RobustMQ: toolkits take the test's names
                made = named_client(started.names)
                patch.setattr("mq9_platform.client.connection.Mq9Client", made)
            yield started
    finally:
        await stop_broker(started, handle)


@pytest.fixture
async def jetstream_broker(request):
    """The bundled broker in process (``memory://``) keeping its state in JetStream (a
    ``Engine`` on a layout of its own on the session's JetStream nats-server), whatever
    MQ9_TEST_STORE says: the lanes
    that run parts of the suites on that store in every session (tests/broker/*/test_jetstream_*)
    name it their ``broker``."""
    started, handle = await start_broker("memory", None, cluster=True)
    try:
        skip_what_cannot_run(request, started)
        yield started
    finally:
        await stop_broker(started, handle)


@pytest.fixture
async def client(broker):
    async with broker.client() as connected:
        yield connected


@pytest.fixture
async def nats_broker(nats_server):
    """The bundled broker served on the session's real nats-server only."""
    started, handle = await start_broker("nats", nats_server.url)
    try:
        yield started
    finally:
        await stop_broker(started, handle)
