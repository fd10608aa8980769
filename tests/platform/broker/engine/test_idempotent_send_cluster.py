"""Issue #90 on the cluster store: two engines on one layout are two brokers; a key sent
through each is stored once (its key entry and the message in one atomic batch, the key
expecting none: the servers decide), whatever the number of message streams.

Each engine is reached by an ``Mq9Client`` over ``MemoryTransport``, on the session's
loopback JetStream nats-server (as test_jetstream_cluster_engine.py).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import nats
import pytest

from mq9_broker.engine.engine import Engine
from mq9_broker.engine.limits import BrokerLimits
from mq9_broker.storage.jetstream import ClusterStore
from mq9_platform import Mq9Client
from mq9_platform.client.transport import MemoryTransport
from mq9_wire import protocol as p
from mq9_wire.protocol.errors import InvalidArgument, Mq9Error
from testbed.support.waiting import until

pytestmark = pytest.mark.slow  # a nats-server process


@pytest.fixture(scope="module")
def servers(shared_jetstream: list[str]) -> list[str]:
    return shared_jetstream


@pytest.fixture(params=[1, 3], ids=["one-stream", "three-streams"])
async def brokers(
    servers: list[str], request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Mq9Client, Mq9Client]]:
    """Two engines on one layout of ``request.param`` message streams, a client on each."""
    layout = f"K{uuid.uuid4().hex[:10]}"
    connections, clients = [], []
    for _ in range(2):
        connection = await nats.connect(servers)
        store = ClusterStore(connection, name=layout, timeout=20.0, streams=request.param)
        await store.open()
        engine = Engine(store, limits=BrokerLimits(idempotency_window=60))
        client = Mq9Client(transport=MemoryTransport(engine))
        await client.connect()
        connections.append((store, connection))
        clients.append(client)
    try:
        yield clients[0], clients[1]
    finally:
        for client in clients:
            await client.close()
        for store, connection in connections:
            await store.close()
            await connection.close()


async def test_one_key_through_two_brokers_is_one_message(
    brokers: tuple[Mq9Client, Mq9Client],
) -> None:
    """100 keys, each sent through both brokers at once: 100 messages, one msg_id a key."""
    a, b = brokers
    boxes = [await a.mailbox_create(name=f"once.{n}") for n in range(4)]
    keys = [f"key-{n}" for n in range(100)]

    async def both(n: int, key: str) -> tuple[int, int]:
        box = boxes[n % len(boxes)]
        first, second = await asyncio.gather(
            a.send(box, f"payload {key}", idempotency_key=key),
            b.send(box, f"payload {key}", idempotency_key=key),
        )
        return first, second

    answers = await asyncio.gather(*(both(n, key) for n, key in enumerate(keys)))
    assert all(first == second for first, second in answers)
    stored = []
    for box in boxes:
        stored += [m.payload.decode() for m in await a.fetch(box, deliver="earliest", num_msgs=200)]
    assert sorted(stored) == sorted(f"payload {key}" for key in keys)
    # the key is the broker's: no reader sees it
    fetched = await b.fetch(boxes[0], deliver="earliest", num_msgs=200)
    assert all(p.HEADER_IDEMPOTENCY_KEY not in m.header for m in fetched)
    assert a.keys_recognised_for(boxes[0]) is True and b.keys_recognised_for(boxes[0]) is True


async def test_the_same_key_in_one_batch_is_written_once(
    brokers: tuple[Mq9Client, Mq9Client],
) -> None:
    a, _ = brokers
    box = await a.mailbox_create(name="once.batch")
    answers = await asyncio.gather(*(a.send(box, "x", idempotency_key="k") for _ in range(20)))
    assert len(set(answers)) == 1
    assert len(await a.fetch(box, deliver="earliest", num_msgs=50)) == 1


async def test_another_send_with_the_key_is_refused(
    brokers: tuple[Mq9Client, Mq9Client],
) -> None:
    a, b = brokers
    box = await a.mailbox_create(name="once.refused")
    await a.send(box, "first", idempotency_key="k")
    with pytest.raises(InvalidArgument, match="idempotency key 'k' was used for another SEND"):
        await b.send(box, "second", idempotency_key="k")
    # the same key to another mailbox is another SEND
    other = await a.mailbox_create(name="once.other")
    assert await b.send(other, "second", idempotency_key="k") == 0
    assert len(await a.fetch(box, deliver="earliest")) == 1


async def test_a_delayed_keyed_send_is_held_once(brokers: tuple[Mq9Client, Mq9Client]) -> None:
    a, b = brokers
    box = await a.mailbox_create(name="once.delayed")
    answers = await asyncio.gather(
        a.send(box, "later", delay=1, idempotency_key="k"),
        b.send(box, "later", delay=1, idempotency_key="k"),
    )
    assert list(answers) == [-1, -1]
    with pytest.raises(InvalidArgument):
        await a.send(box, "other", delay=1, idempotency_key="k")

    async def delivered() -> list[str]:
        return [m.payload.decode() for m in await b.fetch(box, deliver="earliest", max_wait_ms=0)]

    # the servers write the schedule when due, a broker numbers it: once
    seen: list[str] = await until(delivered, timeout=30, what="the delayed message written")
    assert seen == ["later"]
    assert await delivered() == ["later"]


async def test_a_keyed_send_has_one_tag_fewer_refused_in_words_by_the_engine(
    brokers: tuple[Mq9Client, Mq9Client],
) -> None:
    """(#92) The key's entry goes in the SEND's atomic batch beside its tags' entries: the
    engine refuses, in one line, a keyed SEND with one tag more than the store's batch holds
    (the store declares its limits and checks none itself); one tag fewer is stored, and a
    delayed keyed SEND, its key written apart, keeps the whole room."""
    a, _ = brokers
    box = await a.mailbox_create(name="once.tagged")
    most = ClusterStore.send_limits.tags_most
    assert most == 998
    tags = [f"t{n}" for n in range(most)]
    with pytest.raises(Mq9Error) as refused:
        await a.send(box, "many", tags=tags, idempotency_key="k")
    assert str(refused.value) == (
        "SEND refused: a message with 998 distinct tags: this broker's cluster store takes at "
        "most 997 with an idempotency key"
    )
    assert await a.send(box, "fits", tags=tags[:-1], idempotency_key="k") == 0
    assert await a.send(box, "unkeyed", tags=tags) == 1
    assert await a.send(box, "later", tags=tags, delay=60, idempotency_key="d") == -1
    found = await a.query(box, tags=["t996"])
    assert sorted(m.payload.decode() for m in found) == ["fits", "unkeyed"]
