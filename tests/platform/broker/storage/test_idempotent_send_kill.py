"""Issue #90: a broker's SIGKILL costs its callers a resend, not an error. Two broker processes
of the cluster store on one layout, a keyed SEND every 10 ms through one broker's SIGKILL:
every SEND is answered (those NATS handed the dying process are sent again by the client,
with their key, and the other broker answers them), and every payload is stored exactly
once (a SEND the dying broker stored before it died is answered from its key).

Without keys the same kill leaves the SENDs NATS handed the dying process unanswered
(test_jetstream_cluster_kill.py).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from mq9_platform import Mq9Client
from mq9_wire.protocol.errors import Mq9Error
from testbed.support.jetstream_servers import JetStreamCluster, engine_broker

pytestmark = pytest.mark.slow  # a nats-server and broker processes

PACE = 0.01  # seconds between SENDs
BEFORE, AFTER = 30, 150  # SENDs started before and after the kill


@pytest.fixture(scope="module")
def servers() -> Iterator[list[str]]:
    with JetStreamCluster(1) as cluster:
        yield cluster.urls


async def _sent(client: Mq9Client, n: int) -> tuple[float, float, int | str]:
    """When SEND ``n`` was started, how long it took, and its msg_id or the error it ended
    with."""
    started = time.monotonic()
    try:
        outcome: int | str = await client.send("jobs", f"job {n}", idempotency_key=f"job-{n}")
    except Mq9Error as exc:
        outcome = f"{type(exc).__name__}: {exc}"
    return started, time.monotonic() - started, outcome


async def test_keyed_sends_through_a_brokers_kill_are_answered_and_stored_once(
    servers: list[str],
) -> None:
    stream = f"K{uuid.uuid4().hex[:10]}"
    brokers = [engine_broker(servers, stream), engine_broker(servers, stream)]
    try:
        async with Mq9Client(servers[0], request_timeout=10.0) as client:
            await client.mailbox_create(name="jobs", ttl=0)
            await client.send("jobs", "hello", idempotency_key="hello")  # learns keys work
            assert client.keys_recognised_for("jobs") is True
            sends = []
            for n in range(BEFORE + AFTER):
                if n == BEFORE:
                    brokers[0].send_signal(signal.SIGKILL)
                    killed = time.monotonic()
                sends.append(asyncio.ensure_future(_sent(client, n)))
                await asyncio.sleep(PACE)
            answered = await asyncio.gather(*sends)
            failed = [(n, out) for n, (_, _, out) in enumerate(answered) if isinstance(out, str)]
            assert failed == [], failed
            stored = await client.fetch("jobs", deliver="earliest", num_msgs=1000)
            texts = [m.payload.decode() for m in stored if m.payload != b"hello"]
            assert sorted(texts) == sorted(f"job {n}" for n in range(BEFORE + AFTER))
            assert len(texts) == len(set(texts))  # none twice
            ids = [outcome for _, _, outcome in answered]
            assert len(set(ids)) == len(ids)
            # what the kill cost (said, not asserted: a loaded machine's figure is its own)
            after = [took for started, took, _ in answered if started >= killed]
            print(f"slowest SEND after the kill: {max(after):.3f} s of {len(after)}")
    finally:
        for process in brokers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
