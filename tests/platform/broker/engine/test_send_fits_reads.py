"""A SEND's size refusal says the largest payload taken, computed as the check computes it
(issue #91, item 6), and what sets the limit (#88, item 2); the cluster store's read window
(storage/jetstream/window.py) lets no more wait at once than it holds."""

from __future__ import annotations

import asyncio

import pytest

from mq9_broker import BrokerEngine
from mq9_broker.engine.limits import BrokerLimits
from mq9_broker.storage.in_process import ProcessStore
from mq9_broker.storage.jetstream import ClusterStore
from mq9_broker.storage.jetstream.window import (
    FILE_RECORD_MOST,
    ReadWindow,
    batch_bytes,
    file_record_size,
)
from mq9_platform.client import Mq9Client
from mq9_wire import protocol as p
from mq9_wire.protocol.errors import PayloadTooLarge


@pytest.mark.parametrize(
    ("headers", "payload"),
    [({}, "x"), ({"trace": "abc" * 50}, "x"), ({}, '"'), ({}, "\x01")],
    ids=["plain", "with-a-header", "quotes", "control-bytes"],
)
async def test_the_largest_payload_said_is_taken_and_one_byte_more_is_not(headers, payload):
    """A body of exactly max_payload (1 MiB, headers counted) is refused, and the refusal says
    the largest payload taken with those headers as plain text: that one is taken, one byte
    more is not. (A payload JSON escapes takes more: its largest is smaller.)"""
    block = len(p.header_block(headers) or b"")  # (what NATS carries: the client's check)
    async with Mq9Client(transport=BrokerEngine(search=False)) as client:
        box = await client.mailbox_create(name="sized")
        with pytest.raises(PayloadTooLarge) as nats:  # above what NATS carries: the client's
            await client.send(box, "x" * (p.DEFAULT_MAX_PAYLOAD - block + 1), headers=headers)
        assert nats.value.largest == p.DEFAULT_MAX_PAYLOAD - block, nats.value.message
        with pytest.raises(PayloadTooLarge) as refused:
            await client.send(box, payload * (p.DEFAULT_MAX_PAYLOAD - block), headers=headers)
        error = refused.value
        assert error.limit == p.DEFAULT_MAX_PAYLOAD
        assert "(this broker's --max-payload)" in error.message, error.message
        assert error.largest is not None and 0 < error.largest < p.DEFAULT_MAX_PAYLOAD
        await client.send(box, "y" * error.largest, headers=headers)
        with pytest.raises(PayloadTooLarge) as again:
            await client.send(box, "y" * (error.largest + 1), headers=headers)
        assert again.value.largest == error.largest


async def test_the_formula_in_the_docs_gives_the_largest_payload():
    """docs/protocol.md: a message takes 113 bytes in a FETCH answer besides its payload (as
    JSON text), its priority's name and its create_time's digits (10), and its header block
    as JSON numbers. With no header, normal priority: 1,048,576 - 113 - 6 - 10."""
    async with Mq9Client(transport=BrokerEngine(search=False)) as client:
        box = await client.mailbox_create(name="formula")
        with pytest.raises(PayloadTooLarge) as refused:
            await client.send(box, "x" * p.DEFAULT_MAX_PAYLOAD)
        assert refused.value.largest == p.DEFAULT_MAX_PAYLOAD - 113 - len("normal") - 10


async def test_over_nats_the_bound_names_the_servers_limit():
    """An engine carried by a transport of 4,096 bytes names the servers' max_payload; one of
    64 MiB, half the pending bytes a connection holds; the cluster store keeps room beside."""
    engine = BrokerEngine(limits=BrokerLimits(max_payload=60_000_000), search=False)
    carrier = object()
    engine.carry(carrier, 4096)
    assert engine.message_bound() == (4096, "the servers' max_payload of 4096")
    engine.carry(carrier, 64 * 1024 * 1024)
    most, why = engine.message_bound()
    assert most == 32 * 1024 * 1024 and "max_pending" in why, why
    assert engine.answer_limit == 32 * 1024 * 1024
    cluster = ClusterStore.send_limits  # (each store's own: #92)
    most, why = cluster.bound(engine.message_bound(cluster.entry_room))
    assert most == 32 * 1024 * 1024 - cluster.entry_room and "less 4096" in why, why
    assert engine.sending is ProcessStore.send_limits
    assert engine.sending.bound((5, "five")) == (5, "five")


def test_a_file_store_record_is_counted_as_nats_server_counts_it():
    # filestore.go: 22 + subject + 4 + headers + data + 8 with headers, else without the 4
    assert file_record_size("m.a.b", 0, 100) == 22 + 5 + 100 + 8
    assert file_record_size("m.a.b", 30, 100) == 22 + 5 + 4 + 30 + 100 + 8
    assert FILE_RECORD_MOST == 32 * 1024 * 1024
    # servers of 1 MiB: batches of 1 MiB; of 64 MiB: one message a batch
    assert batch_bytes(1024 * 1024) == 1024 * 1024
    assert batch_bytes(64 * 1024 * 1024) == 1


async def test_the_read_window_lets_no_more_wait_than_it_holds_first_come_first_served():
    window = ReadWindow(100)
    assert await window.take(60) == 60
    order: list[str] = []

    async def read(name: str, share: int) -> None:
        taken = await window.take(share)
        order.append(name)
        assert window.taken <= window.size
        await asyncio.sleep(0)
        window.give(taken)

    second = asyncio.ensure_future(read("big", 500))  # more than the window: alone
    third = asyncio.ensure_future(read("small", 10))  # fits now, but waits its turn
    await asyncio.sleep(0)
    assert order == [] and window.taken == 60
    cancelled = asyncio.ensure_future(read("never", 10))
    await asyncio.sleep(0)
    cancelled.cancel()
    window.give(60)
    await asyncio.gather(second, third)
    assert order == ["big", "small"] and window.taken == 0
    assert cancelled.cancelled()
