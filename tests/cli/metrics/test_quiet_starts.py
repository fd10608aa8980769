"""#99 item 5: quiet starts. A broker's start logs nothing about an extra nobody asked for (it
said "semantic-minilm extra not installed (No module named 'numpy')" at each start) and warns
about no value nobody set (it warned "--max-payload 1048576 is above what nats-server carries"
with no --max-payload given); every readiness answer comes without waiting out a probe (the
console's /readyz took 6 s to answer 503 before it had its credential: a write probe's 3 s and
a read probe's 3 s). No timing is asserted: a /readyz answered "not known yet" is one that did
not wait for its probe, which would have said something else."""

from __future__ import annotations

import asyncio
import os
import sys

import nats
import pytest

from mq9_cli.console.metrics import ConsoleMetrics
from mq9_platform import Mq9Client
from mq9_wire.metrics import probe
from testbed.nats_server import start_nats_server
from testbed.support.devbroker_helpers import DevBroker
from testbed.support.jetstream_servers import JetStreamCluster, wait_serving

GUARD = 60  # seconds: a hang guard, never a timing assertion


async def test_a_probe_that_takes_long_goes_on_behind_an_answer(monkeypatch):
    monkeypatch.setattr(probe, "ANSWER_WITHIN", 0.05)
    release = asyncio.Event()
    asked = 0

    async def ask() -> str | None:
        nonlocal asked
        asked += 1
        await release.wait()
        return "the broker's own answer"

    ready = probe.Probe(ask, kept=3600)
    first = await asyncio.wait_for(ready(), GUARD)
    assert first is not None and first.startswith("not known yet"), first
    assert (await asyncio.wait_for(ready(), GUARD)).startswith("not known yet")
    assert asked == 1  # the one probe goes on; nothing asked twice meanwhile
    release.set()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert await asyncio.wait_for(ready(), GUARD) == "the broker's own answer"


@pytest.mark.slow  # a nats-server
async def test_the_consoles_readyz_answers_before_its_probe_ends():
    """Connected to a nats-server where something takes mq9's requests and never answers
    (a broker hung): the write probe waits its 3 s, the read probe 3 s more; /readyz answers
    meanwhile, not ready, saying it does not know yet."""
    with start_nats_server() as server:
        silent = await nats.connect(server.url)
        await silent.subscribe("$mq9.AI.>", cb=_never_answered)
        await silent.flush()
        async with Mq9Client(server.url, request_timeout=30) as client:
            metrics = ConsoleMetrics("127.0.0.1:0", lambda: True, lambda: client)
            await metrics.start()
            try:
                assert metrics.endpoint is not None
                status, text = await asyncio.wait_for(_get(metrics.endpoint.port), GUARD)
                assert status == 503 and "not known yet" in text, (status, text)
            finally:
                await metrics.stop()
                await silent.close()


async def _never_answered(_msg: object) -> None:
    """A request taken and never answered."""


async def _get(port: int) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    await writer.drain()
    raw = (await reader.read()).decode()
    writer.close()
    head, _, body = raw.partition("\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.slow  # a cluster and the dev broker
def test_a_cluster_brokers_start_says_nothing_nobody_asked_about(tmp_path):
    """The documented start (``--store jetstream``, no --max-payload), without the
    embedding extras (numpy hidden, as on an install without them): search is lexical."""
    # (None in sys.modules: find_spec finds no numpy, and importing it raises ImportError)
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['numpy'] = None\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path[1:]])}
    with JetStreamCluster(3) as cluster:
        args = ["--nats", ",".join(cluster.urls), "--store", "jetstream"]
        with DevBroker(*args, "--metrics", "127.0.0.1:0", env=env) as broker:
            wait_serving(broker)
            assert broker.stop() == 0, broker.output()
            said = broker.output()
    assert "semantic-minilm" not in said and "extra not installed" not in said, said
    assert "--max-payload" not in said, said
    # (the one warning left is about what the operator set: these servers name no accounts,
    # so the state is kept in their default one, which a config naming accounts leaves behind)
    warned = [line for line in said.splitlines() if " WARNING " in line or "warning:" in line]
    assert [w for w in warned if "default account ($G)" not in w] == [], said
    assert "(in effect 1044480" in said  # what is in effect is said once, in the banner
