"""Receipts (issue #45, item 3): a client started after a broker lost a mailbox's log finds out
by checking a receipt the application kept — the msg_id a SEND answered and what was sent.

The loss is made the way a client meets it after a RobustMQ node loss (docs/deploy.md): the
mailbox's log starts again at msg_id 0 — here, the same address answered by a fresh engine.
"""

from __future__ import annotations

import uuid

import nats
import pytest

from langchain_mq9 import Mq9Client, Mq9Error
from langchain_mq9.broker import (
    BrokerEngine,
    drop_memory_broker,
    install_memory_broker,
    serve_on_nats,
)


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


@pytest.fixture(params=["memory", "nats"])
async def node(request):
    """``await node(engine)``: a URL where ``engine`` answers from now on, over the parametrized
    transport; called again, the same URL is answered by another engine (a node that came back
    without its log)."""
    name = f"receipts{uuid.uuid4().hex}"
    served: list = []

    async def serving(engine: BrokerEngine) -> str:
        if request.param == "memory":
            drop_memory_broker(name)
            install_memory_broker(name, engine)
            return f"memory://{name}"
        for service, connection in served:
            await service.stop()
            await connection.close()
        served.clear()
        url = request.getfixturevalue("nats_server").url
        connection = await nats.connect(url)
        served.append((await serve_on_nats(engine, connection), connection))
        return url

    yield serving
    drop_memory_broker(name)
    for service, connection in served:
        await service.stop()
        await connection.close()


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
        assert "receipt names msg_id" in warning and "docs/deploy.md" in warning
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
