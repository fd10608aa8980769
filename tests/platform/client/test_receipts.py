"""Receipts (issue #45, item 3): a client started after a broker lost a mailbox's log finds out
by checking a receipt the application kept — the msg_id a SEND answered and what was sent.

The loss is made the way a client meets it after a RobustMQ node loss (docs/deploy-robustmq.md):
the mailbox's log starts again at msg_id 0 — here, the same address answered by a fresh engine.
"""

from __future__ import annotations

import uuid

import nats
import pytest

from mq9_broker import (
    BrokerEngine,
    drop_memory_broker,
    install_memory_broker,
    serve_on_nats,
)
from mq9_platform import Mq9Client, Mq9Error
from mq9_wire import protocol as p


async def test_a_receipt_of_a_message_still_held_checks_out(broker, client):
    box = await client.mailbox_create(name="receipts.kept", ttl=0)
    receipts = [(await client.send(box, f"order {i}"), f"order {i}") for i in range(3)]
    async with broker.client() as fresh:
        for msg_id, payload in receipts:
            assert await fresh.check_receipt(box, msg_id, payload)
        assert fresh.warnings == {}
    # a check reads without consuming: a group still gets everything from the start
    assert [m.msg_id for m in await client.fetch(box, group_name="g", deliver="earliest")] == [
        msg_id for msg_id, _ in receipts
    ]


# What a RobustMQ node out of reach answers (docs/deploy-robustmq.md): a retryable error.
NODE_AWAY = "Failed to send request to node 1 with error message :exceeded max retry times (10)"


class Node(BrokerEngine):
    """One broker address whose answers come from ``log`` (an engine: the node's data), or,
    while ``log`` is None, the text of a node out of reach."""

    def __init__(self) -> None:
        super().__init__()
        self.log: BrokerEngine | None = None

    async def handle(self, subject, headers, body):
        if self.log is None:
            return p.encode({"error": NODE_AWAY})
        return await self.log.handle(subject, headers, body)


@pytest.fixture(params=["memory", pytest.param("nats", marks=pytest.mark.slow)])
async def node(request):
    """``await node(engine)``: the URL of a broker answering from ``engine`` from now on, over
    the parametrized transport; another engine is a node that came back without its log;
    ``None``, a node out of reach."""
    served = Node()
    if request.param == "memory":
        name = f"receipts{uuid.uuid4().hex}"
        install_memory_broker(name, served)
        url, stop = f"memory://{name}", None
    else:
        url = request.getfixturevalue("nats_server").url
        connection = await nats.connect(url)
        stop = (await serve_on_nats(served, connection), connection)

    async def answering_from(engine: BrokerEngine | None) -> str:
        served.log = engine
        return url

    yield answering_from
    if stop is None:
        drop_memory_broker(name)
    else:
        await stop[0].stop()
        await stop[1].close()


async def test_a_fresh_client_learns_that_the_log_went_back(node):
    url = await node(BrokerEngine())
    async with Mq9Client(url) as sender:
        box = await sender.mailbox_create(name="receipts.lost", ttl=0)
        kept = [(await sender.send(box, f"payment {i}"), f"payment {i}") for i in range(3)]
    await node(BrokerEngine())  # the node is back, its log gone: msg_ids start again at 0
    async with Mq9Client(url) as sender:
        await sender.mailbox_create(name=box, ttl=0)
        assert await sender.send(box, "after the loss") == 0
    async with Mq9Client(url) as fresh:
        # msg_id 0 exists again, holding something else; 2 is past the end of the new log
        assert not await fresh.check_receipt(box, kept[0][0], kept[0][1])
        assert not await fresh.check_receipt(box, kept[2][0], kept[2][1])
        warning = fresh.warnings[box]
        assert "receipt names msg_id" in warning and "docs/deploy-robustmq.md" in warning
        assert await fresh.check_receipt(box, 0, "after the loss")


async def test_a_deleted_message_fails_its_receipt_too(client):
    box = await client.mailbox_create(name="receipts.deleted", ttl=0)
    msg_id = await client.send(box, "gone")
    await client.send(box, "stays")
    await client.delete(box, msg_id)
    assert not await client.check_receipt(box, msg_id, "gone")
    assert "deleted or expired" in client.warnings[box]


async def test_a_receipt_for_a_missing_mailbox_is_an_error_not_a_false(client):
    with pytest.raises(Mq9Error):
        await client.check_receipt("receipts.never.made", 0, "x")


async def test_a_sender_is_warned_when_the_log_went_back_under_higher_ids(node):
    """Measured on a RobustMQ cluster with replica 3 (docs/deploy-robustmq.md): after the node
    holding a mailbox is lost, SENDs may go on under msg_ids above every one this client got, the
    messages acknowledged before gone, so no SEND answer shows it. A SEND that succeeds after
    the broker was away for the mailbox makes the client look once at the last message it
    acknowledged."""
    kept = BrokerEngine()
    url = await node(kept)
    async with Mq9Client(url, request_timeout=0.5) as sender:
        box = await sender.mailbox_create(name="receipts.higher", ttl=0)
        for i in range(3):
            await sender.send(box, f"payment {i}")

        async def away_then_back(engine: BrokerEngine) -> None:
            await node(None)  # nobody answers: the SEND fails, retryably
            with pytest.raises(Mq9Error) as caught:
                await sender.send(box, "while it is away")
            assert caught.value.retryable
            await node(engine)

        await away_then_back(kept)  # back with its log: the look finds msg_id 2 as sent
        assert await sender.send(box, "payment 3") == 3
        assert sender.warnings == {}

        other_history = BrokerEngine()
        await away_then_back(other_history)  # back without it; another writer came first
        async with Mq9Client(url) as other:
            await other.mailbox_create(name=box, ttl=0)
            for i in range(6):
                await other.send(box, f"someone else's {i}")
        assert await sender.send(box, "back") == 6  # above every id it got before
        assert "receipt names msg_id 3" in sender.warnings[box]
