"""What SEND stores, a reader can read (issue #88, item 2), on servers whose max_payload an
operator raised to 64 MB: messages of 1, 8 and 31 MiB are taken and read back whole by a
QUERY and by a group FETCH, on the cluster store (``--store jetstream``) and on the dev
broker's memory store; a message too large for an answer is refused with the numbers; a
``--max-payload`` the servers cannot carry is refused at start-up in one line.

Before the fix, the cluster store's reads of such messages got the broker's connection closed
by nats-server ("Slow Consumer Detected: MaxPending of 67108864 Exceeded": a batched get sends
its messages at once) and every read failed ("JetStream did not answer a read ... within
15 s"); a 32 MiB SEND was refused as "message too large", naming no limit.
"""

from __future__ import annotations

import pytest

from mq9_broker import Broker, BrokerConfig
from mq9_broker.config import StartupError
from mq9_broker.engine.limits import BrokerLimits
from mq9_platform.client import Mq9Client
from mq9_wire.protocol.errors import PayloadTooLarge
from testbed.nats_server import start_nats_server
from testbed.support.jetstream_servers import JetStreamCluster

pytestmark = pytest.mark.slow

MIB = 1024 * 1024
# As an operator raises it: the servers carry 64 MB, and queue as much for a connection
RAISED = "max_payload: 64MB\nmax_pending: 64MB\n"
# (more than the 64 MB a connection holds in all: a read of them all at once closed it)
SIZES = (1 * MIB, 8 * MIB, 31 * MIB, 31 * MIB, 31 * MIB)


def body(size: int, mark: str) -> bytes:
    return (mark * (size // len(mark) + 1)).encode()[:size]


@pytest.fixture(scope="module")
def raised():
    with JetStreamCluster(1, extra_config=RAISED) as cluster:
        yield cluster


def config(url: str, store: str, max_payload: int | None = None) -> BrokerConfig:
    limits = BrokerLimits() if max_payload is None else BrokerLimits(max_payload=max_payload)
    return BrokerConfig(nats=url, store=store, limits=limits, answer_rate=0, search=False)


async def _read_back(client: Mq9Client, box: str, sent: dict[int, bytes]) -> None:
    """Every message of ``box`` read back whole by QUERY (its answers cut to what fits) and by
    a group FETCH, one message an answer, acked."""
    queried: dict[int, bytes] = {}
    for message in await client.query(box):
        queried[message.msg_id] = message.payload
    # an answer holds as many as fit: the first QUERY holds the oldest that fit together
    assert queried and all(queried[m] == sent[m] for m in queried), sorted(queried)
    for msg_id in sent:  # each message alone in a QUERY by its key
        (message,) = await client.query(box, key=f"k{msg_id}")
        assert message.payload == sent[msg_id]
    fetched: dict[int, bytes] = {}
    while len(fetched) < len(sent):
        batch = await client.fetch(
            box, group_name="readers", deliver="earliest", num_msgs=1, max_wait_ms=0
        )
        assert len(batch) == 1, sorted(fetched)
        fetched[batch[0].msg_id] = batch[0].payload
        await client.ack(box, "readers", batch[0].msg_id)
    assert fetched == sent


@pytest.mark.parametrize("store", ["jetstream", "memory"])
async def test_large_messages_taken_are_read_back_and_a_larger_one_is_refused_with_numbers(
    raised, store
):
    url = raised.urls[0]
    async with (
        # (the largest either store carries on these servers: half their max_pending, less
        # the room the cluster store keeps for a message's subject and headers)
        Broker(config(url, store, 32 * MIB - 4096), say=lambda _: None),
        Mq9Client(url, request_timeout=60) as client,  # (31 MiB on a busy 2-core machine)
    ):
        box = await client.mailbox_create(name=f"large.{store}")
        sent: dict[int, bytes] = {}
        for size in SIZES:
            data = body(size, f"{size}.")
            sent[await client.send(box, data, key=f"k{len(sent)}")] = data
        await _read_back(client, box, sent)
        with pytest.raises(PayloadTooLarge) as refused:
            await client.send(box, body(32 * MIB, "x"))
        error = refused.value
        assert error.largest is not None and error.limit is not None
        assert 31 * MIB < error.largest < error.limit == 32 * MIB - 4096, error.message
        # the largest said is taken, one byte more is not
        taken = await client.send(box, body(error.largest, "y"))
        with pytest.raises(PayloadTooLarge):
            await client.send(box, body(error.largest + 1, "y"))
        assert taken == len(SIZES)


async def test_a_max_payload_the_servers_cannot_carry_is_refused_at_start_up(raised):
    broker = Broker(config(raised.urls[0], "jetstream", 60_000_000), say=lambda _: None)
    with pytest.raises(StartupError) as refused:
        await broker.start()
    assert str(refused.value) == (
        "--max-payload 60000000 is above the largest message these servers carry: 33550336 "
        "bytes in a FETCH answer (half the 67108864 bytes nats-server queues for a connection "
        "by default, its max_pending, less 4096 for the subject and headers its store adds); "
        "give --max-payload 33550336 or less"
    )


async def test_a_max_payload_above_a_small_servers_is_refused_and_the_default_follows_it():
    with start_nats_server(max_payload=4096) as server:
        broker = Broker(config(server.url, "memory", 100_000), say=lambda _: None)
        with pytest.raises(StartupError) as refused:
            await broker.start()
        assert str(refused.value) == (
            "--max-payload 100000 is above the largest message these servers carry: 4096 "
            "bytes in a FETCH answer (the servers' max_payload of 4096); give --max-payload "
            "4096 or less"
        )
        said: list[str] = []
        async with Broker(config(server.url, "memory"), say=said.append):
            assert any("(in effect 4096: the servers' max_payload" in line for line in said), said
