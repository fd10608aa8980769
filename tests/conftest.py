"""Shared fixtures: a real nats-server on loopback, and a broker reachable over each transport.

``broker`` is parametrized over ``memory`` and ``nats``, so every test that uses it runs against
the in-process transport and against a real nats-server serving the same engine.

The real-broker lane: when ``MQ9_ROBUSTMQ_URL`` names a running RobustMQ 8bd49dc (started by
hand on loopback, see docs/protocol.md §1), ``broker`` also runs every such test against it as
``robustmq``. A test that needs what only the bundled broker has (its engine, a hand-moved
clock) is skipped there, with the reason, when it reaches for it.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass

import nats
import pytest
from shared_broker import Namespace, NamespacedTransport, clear_registry

from langchain_mq9 import Mq9Client
from langchain_mq9.broker import (
    BrokerEngine,
    BrokerLimits,
    ManualClock,
    drop_memory_broker,
    install_memory_broker,
    serve_on_nats,
)
from langchain_mq9.broker.nats_process import start_nats_server
from langchain_mq9.nats_guard import GuardedClient, protect

ROBUSTMQ_URL = os.environ.get("MQ9_ROBUSTMQ_URL")
BROKERS = ["memory", "nats"] + (["robustmq"] if ROBUSTMQ_URL else [])


@pytest.fixture(scope="session")
def nats_server():
    """One nats-server for the session, on a free loopback port."""
    with start_nats_server() as server:
        yield server


@dataclass
class Broker:
    """A broker under test: where to reach it, its engine and its hand-moved clock (the
    bundled broker's; a test on RobustMQ that reaches for them is skipped)."""

    url: str
    _engine: BrokerEngine | None
    _clock: ManualClock | None
    transport: str
    names: Namespace | None = None  # on a shared RobustMQ: this test's own names

    @property
    def engine(self) -> BrokerEngine:
        if self._engine is None:
            pytest.skip("needs the bundled broker's engine; RobustMQ is reached only by wire")
        return self._engine

    @property
    def clock(self) -> ManualClock:
        if self._clock is None:
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
        if self.transport == "memory":
            reply = await self.engine.handle(subject, headers, body)
        elif self.names is not None:
            async with self.client() as client:
                reply = await client._transport.request(subject, body, headers, 5)
        else:
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


async def start_broker(transport: str, nats_url: str | None, **limits) -> tuple[Broker, object]:
    if transport == "robustmq":
        if limits:
            pytest.skip("sets the bundled broker's limits; RobustMQ has its own")
        broker = Broker(ROBUSTMQ_URL, None, None, transport, Namespace())
        async with broker.client() as client:
            await clear_registry(client)
        return broker, None
    clock = ManualClock()
    engine = BrokerEngine(clock=clock, limits=BrokerLimits(**limits))
    if transport == "memory":
        name = f"test{uuid.uuid4().hex}"
        install_memory_broker(name, engine)
        return Broker(f"memory://{name}", engine, clock, transport), name
    connection = await nats.connect(nats_url)
    service = await serve_on_nats(engine, connection)
    return Broker(nats_url, engine, clock, transport), (service, connection)


async def stop_broker(broker: Broker, handle) -> None:
    if broker.transport == "robustmq":
        return
    if broker.transport == "memory":
        drop_memory_broker(handle)
        return
    service, connection = handle
    await service.stop()
    await connection.close()


@pytest.fixture(params=BROKERS)
async def broker(request):
    nats_url = request.getfixturevalue("nats_server").url if request.param == "nats" else None
    started, handle = await start_broker(request.param, nats_url)
    try:
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
