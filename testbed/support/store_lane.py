"""Where the suites' bundled brokers keep their state: ``MQ9_TEST_STORE``.

Unset, or ``memory``: in this process (``BrokerEngine``: the one engine over a ``ProcessStore``,
storage/in_process/store.py, housekeeping on the hand-moved clock; ``process`` names it too, as it
did before the two engines were one). ``jetstream``: every bundled broker that
tests/conftest.py serves on a real nats-server (the ``broker`` fixture's ``nats`` case,
``nats_broker``, ``start_broker("nats", ...)``) is the engine keeping its state in a
layout of its own (a stream and buckets: ``ClusterLayout``) on one loopback JetStream
nats-server, started at first use and stopped with the session (one server, so R1, file
storage), served in the brokers' queue group as ``mq9-dev-broker --store jetstream`` serves it.
Tests that move the injected clock or read the in-process engine skip there, saying why. The
layout is deleted when its broker stops, so every test starts from an empty store. The same
server holds the layouts of conftest's ``jetstream_broker``, which the lanes that run on the
store in every session use (tests/broker/*/test_jetstream_*.py).

``store_broker()`` starts the command line on the store, as a user starts it, for the tests that
talk to a broker process (tests/project/test_examples_on_jetstream.py,
tests/platform/broker/cli/test_jetstream_devbroker.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import nats

from mq9_broker.engine.engine import Engine
from mq9_broker.engine.limits import BrokerLimits
from mq9_broker.storage.jetstream import ClusterStore, Layout
from mq9_broker.storage.jetstream.key_counts import counts_stream
from testbed.support.devbroker_helpers import DevBroker
from testbed.support.jetstream_servers import JetStreamCluster

STORES = ("memory", "jetstream", "process")  # process: memory's other name
TEST_STORE = os.environ.get("MQ9_TEST_STORE") or "memory"


class StateServer:
    """One JetStream nats-server for the brokers' state, started when first asked for."""

    def __init__(self) -> None:
        self._servers: JetStreamCluster | None = None

    @property
    def urls(self) -> list[str]:
        if self._servers is None:
            self._servers = JetStreamCluster(1).__enter__()
        return self._servers.urls

    async def drop(self, layout: ClusterLayout) -> None:
        """Close ``layout``'s store and delete its stream and buckets."""
        await layout.drop()

    async def layout(self) -> ClusterLayout:
        """A cluster store on a layout of its own (made empty), open."""
        connection = await nats.connect(self.urls)
        store = ClusterStore(connection, name=f"L{uuid.uuid4().hex[:12]}", timeout=20.0)
        try:
            await store.open()
        except BaseException:
            await connection.close()
            raise
        return ClusterLayout(connection, store)

    def stop(self) -> None:
        if self._servers is not None:
            self._servers.__exit__()
            self._servers = None


class ClusterLayout:
    """A test's cluster store, on its own connection: its engines, and its deletion."""

    def __init__(self, connection: nats.NATS, store: ClusterStore) -> None:
        self.connection, self.store = connection, store

    def engine(self, limits: BrokerLimits | None = None) -> Engine:
        return Engine(self.store, limits=limits)

    async def drop(self) -> None:
        await self.store.close()
        layout = self.store.layout
        js = self.connection.jetstream()
        streams = (*layout.message_streams, *(f"KV_{bucket}" for bucket in layout.buckets))
        for stream in (*streams, counts_stream(layout)):  # (and the keys' counts)
            with contextlib.suppress(Exception):  # not made, or gone with the server
                await js.delete_stream(stream)
        await self.connection.close()


STATE_SERVER = StateServer()


@contextmanager
def store_broker() -> Iterator[DevBroker]:
    """A JetStream nats-server of its own and ``mq9-dev-broker --nats <it> --store jetstream``
    on a stream of its own (one mq9 broker per nats-server: the command refuses a second). At
    the end the broker must stop cleanly (SIGTERM, status 0) and have logged no internal
    error."""
    stream = f"EX{uuid.uuid4().hex[:10]}"
    with JetStreamCluster(1) as servers:
        broker = DevBroker("--nats", servers.urls[0], "--store", "jetstream", "--stream", stream)
        try:
            assert any(f"JetStream stream {stream}_MSGS " in line for line in broker.stdout), (
                broker.output()
            )
            yield broker
            if broker.process.poll() is None:  # serving still, unless the test stopped it
                broker.stop()
            assert broker.process.returncode == 0, broker.output()
            assert not [
                line for line in broker.stderr if "internal error" in line or "Traceback" in line
            ], broker.output()
        finally:
            broker.kill()


def records_in(broker: DevBroker) -> int:
    """How many messages the broker's messages stream was given (its ``--stream``'s, on its
    ``--nats``)."""
    args = broker.args

    async def count() -> int:
        connection = await nats.connect(args[args.index("--nats") + 1].split(","))
        try:
            stream = Layout(args[args.index("--stream") + 1]).messages
            return (await connection.jetstream().stream_info(stream)).state.last_seq
        finally:
            await connection.close()

    return asyncio.run(count())
