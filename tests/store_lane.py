"""Where the suites' bundled brokers keep their state: ``MQ9_TEST_STORE`` (issue #55 item 3).

Unset, or ``memory``: in memory, as always. ``jetstream``: every bundled broker that
tests/conftest.py serves on a real nats-server (the ``broker`` fixture's ``nats`` case,
``nats_broker``, ``start_broker("nats", ...)``) keeps its state in a JetStream stream of its own
on one loopback JetStream nats-server, started at first use and stopped with the session (one
server, so R1, file storage): each answer is given only once JetStream acknowledged the change,
as ``mq9-dev-broker --store jetstream`` gives it. The stream is deleted when its broker stops,
so every test starts from an empty store and the server holds only the running tests' streams.
The same server holds the streams of conftest's ``jetstream_broker``, which the lanes that run
on the store in every session use (tests/broker/test_jetstream_*.py).

``store_broker()`` starts the command line on the store, as a user starts it, for the tests that
talk to a broker process (tests/project/test_examples_on_jetstream.py,
tests/broker/test_jetstream_devbroker.py).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import nats
from devbroker_helpers import DevBroker
from jetstream_servers import JetStreamCluster

from langchain_mq9.broker.storage import JetStreamStorage, Storage

STORES = ("memory", "jetstream")
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

    def storage(self) -> JetStreamStorage:
        """A store on a stream of its own (created empty)."""
        return JetStreamStorage(self.urls, stream=f"S{uuid.uuid4().hex[:12]}")

    async def drop(self, storage: Storage) -> None:
        """Close ``storage`` and delete its stream (a store of another kind is left alone)."""
        storage.close()
        if not isinstance(storage, JetStreamStorage):
            return
        connection = await nats.connect(storage.servers)
        try:
            await connection.jetstream().delete_stream(storage.stream)
        finally:
            await connection.close()

    def stop(self) -> None:
        if self._servers is not None:
            self._servers.__exit__()
            self._servers = None


STATE_SERVER = StateServer()


def served_storage() -> Storage | None:
    """The store of a broker the suites serve on a real nats-server: None keeps the engine's
    default (memory)."""
    return STATE_SERVER.storage() if TEST_STORE == "jetstream" else None


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
            assert any(f"JetStream stream {stream} " in line for line in broker.stdout), (
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
    """How many records the broker's stream holds (its ``--stream`` on its ``--nats``)."""
    args = broker.args

    async def count() -> int:
        connection = await nats.connect(args[args.index("--nats") + 1].split(","))
        try:
            stream = args[args.index("--stream") + 1]
            return (await connection.jetstream().stream_info(stream)).state.last_seq
        finally:
            await connection.close()

    return asyncio.run(count())
