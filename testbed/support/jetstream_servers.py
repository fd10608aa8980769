"""nats-server with JetStream on loopback for tests: testbed/jetstream.py (bench/ runs the
same servers: the cluster store's kill and chaos lanes); the wait for a JetStream broker to
serve; a cluster store opened on a connection of its own (a broker, as the store's tests see
one)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import nats

from mq9_broker.storage.jetstream import ClusterStore
from mq9_broker.storage.mailbox_store import StorageError
from testbed.devbroker import wait_serving
from testbed.jetstream import START_TIMEOUT, JetStreamCluster, JetStreamServer
from testbed.support.waiting import until

FORMING = 120.0  # seconds: a cluster on a busy 2-core machine electing its leaders
READY_TIMEOUT = 120.0  # a busy 2-core machine importing the package
ROOT = Path(__file__).resolve().parents[2]

__all__ = [
    "FORMING",
    "START_TIMEOUT",
    "JetStreamCluster",
    "JetStreamServer",
    "close_store",
    "engine_broker",
    "open_replicated_store",
    "open_store",
    "wait_serving",
]


async def open_store(servers: list[str], layout: str) -> ClusterStore:
    """The cluster store of ``layout`` (``--stream``), open, on a connection of its own."""
    connection = await nats.connect(servers)
    store = ClusterStore(connection, name=layout, timeout=20.0)
    await store.open()
    return store


async def close_store(store: ClusterStore) -> None:
    await store.close()
    await store.requests.connection.close()


async def open_replicated_store(url: str, layout: str) -> ClusterStore:
    """The R3 cluster store of ``layout``, opened once the cluster just started has elected
    its leaders (tried again each second for FORMING seconds)."""
    connection = await nats.connect(url)

    async def opened() -> ClusterStore:
        store = ClusterStore(connection, name=layout, replicas=3, timeout=10.0)
        try:
            await store.open()
        except StorageError:
            await store.close()
            raise
        return store

    what = f"the R3 store {layout} open"
    return await until(opened, timeout=FORMING, what=what, every=1, ignoring=(StorageError,))


def engine_broker(urls: list[str], stream: str) -> subprocess.Popen[str]:
    """A broker process of the cluster store of ``stream`` (``bench.js_broker``: the engine
    alone, no model), once it says it serves."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.js_broker", "--nats", ",".join(urls), "--stream", stream],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith("ready"):
            return process
        if not line and process.poll() is not None:
            break
    process.kill()
    raise AssertionError(f"the broker did not serve: {process.stdout.read()}")
