"""A broker on the cluster store started with ``--no-search`` loads no embedding model (#77
item 9): nothing of it ranks, and the model is most of a broker's memory, which a SIGKILLed
process frees before the kernel closes its sockets (docs/broker-jetstream.md, "Several brokers at
once": the requests NATS hands it meanwhile are lost). The listing still answers."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from mq9_platform import Mq9Client
from testbed.support.devbroker_helpers import DevBroker
from testbed.support.jetstream_servers import JetStreamCluster, wait_serving

pytestmark = pytest.mark.slow  # nats-server and broker processes


def _mapped(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/<pid>/maps")
def test_no_model_in_a_cluster_broker_without_search():
    with JetStreamCluster(1) as cluster:
        url = cluster.urls[0]
        stream = f"N{uuid.uuid4().hex[:10]}"
        broker = DevBroker("--nats", url, "--store", "jetstream", "--stream", stream,
                           "--no-search", wait=False)  # fmt: skip
        try:
            wait_serving(broker)
            assert "onnxruntime" not in _mapped(broker.process.pid)
            asyncio.run(_registered_and_listed(url))
            assert "onnxruntime" not in _mapped(broker.process.pid)
        finally:
            broker.stop()


async def _registered_and_listed(url: str) -> None:
    async with Mq9Client(url) as client:
        await client.agent_register({"name": "lister", "description": "lists the things"})
        assert [a["name"] for a in await client.agent_discover()] == ["lister"]
        # a search is refused by the broker (RobustMQ's build without vector search), and
        # the client ranks the listing itself
        assert [a["name"] for a in await client.agent_discover(text="things")] == ["lister"]
