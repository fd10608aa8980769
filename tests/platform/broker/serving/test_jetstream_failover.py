"""Several brokers on one state kept in JetStream (issue #72): every ``mq9-dev-broker --store
jetstream`` started on the same ``--stream`` serves at once, in one queue group; none stands
by, none takes over. One SIGKILLed: the requests sent after it are answered by the others at
once, and nothing answered before is lost. A stream an earlier version wrote (a log of
changes) is refused at start in clear words, until 'state import' moved it
(tests/platform/broker/cli/test_jetstream_history.py moves one). The chaos lane of the cluster
store (nodes
and brokers SIGKILLed under writers and competing readers) is bench/js_chaos.py's
(tests/platform/broker/serving/test_jetstream_cluster_chaos_count.py).
"""

from __future__ import annotations

import asyncio
import uuid

import nats
import pytest

from mq9_broker import Broker, BrokerConfig
from mq9_platform import Mq9Client
from mq9_wire.protocol import names
from testbed.support.devbroker_helpers import DevBroker
from testbed.support.jetstream_servers import JetStreamCluster

pytestmark = pytest.mark.slow  # nats-server processes


@pytest.fixture(scope="module")
def lone_jetstream():
    with JetStreamCluster(1) as cluster:
        yield cluster


@pytest.fixture
def stream():
    return f"FO{uuid.uuid4().hex[:10]}"


def _ready_line(broker: DevBroker) -> str:
    return next(line for line in broker.stdout if line.startswith("mq9 dev broker ready on"))


async def test_the_same_command_twice_serves_twice_and_a_kill_costs_no_takeover(
    lone_jetstream, stream
):
    """Started twice, the command gives two brokers serving (no standby); SIGKILL one and the
    next requests are answered by the other, with every message kept."""
    url = ",".join(lone_jetstream.urls * 2)  # a list, as for a cluster
    args = ("--nats", url, "--store", "jetstream", "--stream", stream, "--no-search")
    with DevBroker(*args) as first, DevBroker(*args) as second:
        for broker in (first, second):
            assert _ready_line(broker) == f"mq9 dev broker ready on {url} (serving)"
            assert f"JetStream stream {stream}_MSGS " in broker.output()
            assert "standby" not in broker.output()
        async with Mq9Client(first.url, request_timeout=30) as client:
            await client.mailbox_create(name="two.box")
            # keyed (#90): a SEND handed to the broker being killed is sent again, stored once
            before = [await client.send("two.box", t, idempotency_key=t) for t in texts("m", 20)]
            first.kill()
            after = [await client.send("two.box", t, idempotency_key=t) for t in texts("n", 5)]
            assert len(set(before + after)) == 25
            got = await client.query("two.box")
            assert [m.text() for m in got] == [f"m{i}" for i in range(20)] + [
                f"n{i}" for i in range(5)
            ]
        assert second.stop() == 0


def texts(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(count)]


def test_no_jetstream_on_the_server_is_a_clear_error_at_once(nats_server):
    refused = DevBroker("--nats", nats_server.url, "--store", "jetstream", wait=False)
    assert refused.wait_exit() == 1
    assert "JetStream is not available" in refused.output()
    assert "Traceback" not in refused.output()


async def test_a_stream_the_earlier_store_wrote_is_refused_in_clear_words(lone_jetstream, stream):
    """The stream named --stream holding a log of changes, as versions before the cluster
    store wrote it: the broker does not start empty beside it, it says what to run."""
    connection = await nats.connect(lone_jetstream.urls)
    try:
        js = connection.jetstream()
        await js.add_stream(name=stream, subjects=[f"mq9state.{stream.lower()}"])
        await js.publish(f"mq9state.{stream.lower()}", b'{"v":2,"blobs":[],"changes":[]}\n')
    finally:
        await connection.close()
    refused = DevBroker(
        "--nats", lone_jetstream.urls[0], "--store", "jetstream", "--stream", stream,
        "--no-search", wait=False,
    )  # fmt: skip
    assert refused.wait_exit() == 1
    said = refused.output()
    assert f"the JetStream stream {stream} holds the state as an earlier" in said
    assert "mq9-dev-broker state import FILE" in said
    assert "Traceback" not in said


async def test_each_message_is_announced_once_whichever_broker_stored_it(lone_jetstream, stream):
    """The waker and the gateway hear of arrivals on ``$mq9.WAKE.<digest of the mailbox>``:
    on this store the stream republishes each stored message there, once, whichever of the
    brokers (two here, both serving) stored it; no broker announces it again."""
    url = lone_jetstream.urls[0]
    config = BrokerConfig(nats=url, store="jetstream", stream=stream, search=False, port=0)
    subject = names.arrival_subject("wake.box")  # $mq9.WAKE.<digest>
    heard: list[str] = []

    async def hear(msg: nats.aio.msg.Msg) -> None:
        heard.append(msg.subject)

    listener = await nats.connect(url)
    try:
        await listener.subscribe("$mq9.WAKE.>", cb=hear)
        await listener.flush()
        brokers = Broker(config, say=lambda _: None), Broker(config, say=lambda _: None)
        async with brokers[0], brokers[1], Mq9Client(url) as client:
            await client.mailbox_create(name="wake.box")
            for i in range(7):
                await client.send("wake.box", f"m{i}")
            # (a bounded wait for the seventh; an eighth would come at once after it)
            deadline = asyncio.get_running_loop().time() + 10
            while len(heard) < 7 and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
            await client.send("wake.box", "last")
            while len(heard) < 8 and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
            await listener.flush()
        assert heard == [subject] * 8
    finally:
        await listener.close()
