"""Broker processes on the cluster store serving at once (issue #72): two ``bench.js_broker``
processes in one queue group on one layout, a client on the nats-server. One of them SIGKILLed:
the requests sent after it are answered by the other, with no takeover (there is none to wait
for), and nothing answered before or after is lost.
"""

from __future__ import annotations

import signal
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from mq9_platform import Mq9Client
from testbed.support.jetstream_servers import JetStreamCluster, engine_broker

pytestmark = pytest.mark.slow  # nats-server and broker processes


@pytest.fixture(scope="module")
def servers() -> Iterator[list[str]]:
    with JetStreamCluster(1) as cluster:
        yield cluster.urls


def texts(word: str) -> list[str]:
    return [f"{word} {i}" for i in range(30)]


async def test_a_broker_killed_leaves_the_other_answering(servers: list[str]) -> None:
    stream = f"K{uuid.uuid4().hex[:10]}"
    brokers = [engine_broker(servers, stream), engine_broker(servers, stream)]
    try:
        async with Mq9Client(servers[0]) as client:
            await client.mailbox_create(name="jobs", ttl=0)
            # keyed (#90): a SEND NATS hands the broker being killed, before nats-server sees its
            # connection close, is sent again by the client, and stored once
            before = [await client.send("jobs", t, idempotency_key=t) for t in texts("before")]
            brokers[0].send_signal(signal.SIGKILL)
            brokers[0].wait(30)
            after = [await client.send("jobs", t, idempotency_key=t) for t in texts("after")]
            stored = await client.fetch("jobs", deliver="earliest", num_msgs=100)
            assert [m.msg_id for m in stored] == before + after
            assert [m.payload.decode() for m in stored][-1] == "after 29"
    finally:
        for process in brokers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
