"""``Engine`` (issue #72): the mq9 commands over the state kept in JetStream, two
engines on one layout being two brokers serving at once.

Each engine is reached by an ``Mq9Client`` over ``MemoryTransport`` (the client's requests,
the engine's answers, no serving loop between), on one loopback JetStream nats-server. What
one broker answers the other sees; group readers on both lose nothing, keep each priority's
order, and a group's ``done`` on one broker holds on the other.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator

import nats
import pytest

from mq9_broker.engine.engine import Engine
from mq9_broker.storage.jetstream import ClusterStore
from mq9_platform import Mq9Client
from mq9_platform.client.transport import MemoryTransport
from mq9_platform.groups import GroupReader
from mq9_wire.protocol import Priority
from mq9_wire.protocol.errors import MailboxExists, MailboxNotFound, Mq9Error

pytestmark = pytest.mark.slow  # a nats-server process


@pytest.fixture(scope="module")
def servers(shared_jetstream: list[str]) -> list[str]:
    # the session's JetStream server: nothing here kills, restarts or reconfigures it
    return shared_jetstream


@pytest.fixture
async def brokers(servers: list[str]) -> AsyncIterator[tuple[Mq9Client, Mq9Client]]:
    """Two engines on one layout, a client on each."""
    layout = f"E{uuid.uuid4().hex[:10]}"
    connections, clients = [], []
    for _ in range(2):
        connection = await nats.connect(servers)
        store = ClusterStore(connection, name=layout, timeout=20.0)
        await store.open()
        client = Mq9Client(transport=MemoryTransport(Engine(store)))
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


async def test_what_one_broker_stores_the_other_answers(
    brokers: tuple[Mq9Client, Mq9Client],
) -> None:
    a, b = brokers
    assert await a.mailbox_create(name="team.inbox", ttl=0) == "team.inbox"
    with pytest.raises(MailboxExists):
        await b.mailbox_create(name="team.inbox", ttl=0)
    with pytest.raises(MailboxNotFound):
        await b.send("nobody.here", "lost")
    first = await b.send("team.inbox", "normal one")
    urgent = await a.send("team.inbox", "urgent one", priority=Priority.URGENT)
    second = await b.send("team.inbox", "normal two", key="state")
    third = await a.send("team.inbox", "critical", priority=Priority.CRITICAL, key="state")
    assert [first, urgent, second, third] == [0, 1, 2, 3]  # RobustMQ's, across both
    fetched = await a.fetch("team.inbox", group_name="g", deliver="earliest", num_msgs=10)
    # critical first; the key kept only its newest message, of another priority
    assert [m.payload.decode() for m in fetched] == ["critical", "urgent one", "normal one"]
    await b.ack("team.inbox", "g", urgent)
    after = await a.fetch("team.inbox", group_name="g", num_msgs=10)
    assert [m.payload.decode() for m in after] == ["critical"]
    by_key = await b.query("team.inbox", key="state")
    assert [m.payload.decode() for m in by_key] == ["critical"]
    await a.delete("team.inbox", first)
    assert [m.msg_id for m in await b.query("team.inbox")] == [urgent, third]


async def test_tags_ttls_and_delays(brokers: tuple[Mq9Client, Mq9Client]) -> None:
    a, b = brokers
    await a.mailbox_create(name="box", ttl=0)
    await a.send("box", "alpha", tags=["team/alpha"])
    await b.send("box", "beta", tags=["team/beta", "x"])
    await b.send("box", "plain")
    assert [m.payload.decode() for m in await a.query("box", tags=["team"])] == ["alpha", "beta"]
    assert [m.payload.decode() for m in await a.query("box", tags=["x"])] == ["beta"]
    assert await b.send("box", "later", delay=1) == -1
    deadline = time.monotonic() + 30  # the server's schedules tick about once a second
    while time.monotonic() < deadline:
        if "later" in [m.payload.decode() for m in await b.query("box")]:
            break
        await asyncio.sleep(0.2)
    assert [m.payload.decode() for m in await b.query("box")][-1] == "later"


async def test_the_registry_is_one_for_both(brokers: tuple[Mq9Client, Mq9Client]) -> None:
    a, b = brokers
    card = {
        "name": "billing",
        "description": "pays invoices",
        "url": "https://example.invalid/billing",
        "version": "1",
        "capabilities": {},
        "defaultInputModes": ["text"],
        "defaultOutputModes": ["text"],
        "skills": [{"id": "pay", "name": "pay", "description": "pays invoices", "tags": []}],
    }
    await a.agent_register(card)
    found = await b.agent_discover(text="invoices")
    assert [agent["name"] for agent in found] == ["billing"]
    await b.agent_unregister("billing")
    assert await a.agent_discover() == []


async def test_the_mailbox_limit_is_counted_from_the_bucket(servers: list[str]) -> None:
    from mq9_broker import BrokerLimits

    connection = await nats.connect(servers)
    store = ClusterStore(connection, name=f"L{uuid.uuid4().hex[:8]}")
    await store.open()
    try:
        engine = Engine(store, limits=BrokerLimits(max_mailboxes=2))
        async with Mq9Client(transport=MemoryTransport(engine)) as client:
            await client.mailbox_create(name="one", ttl=0)
            await client.mailbox_create(name="two", ttl=0)
            with pytest.raises(MailboxExists):
                await client.mailbox_create(name="two", ttl=0)
            with pytest.raises(Mq9Error, match="mailbox limit reached"):
                await client.mailbox_create(name="three", ttl=0)
    finally:
        await store.close()
        await connection.close()


async def test_group_readers_on_both_brokers_lose_nothing_and_done_holds(
    brokers: tuple[Mq9Client, Mq9Client],
) -> None:
    """Writers on both brokers send 160 messages of mixed priorities; a group reader on each
    broker (two groups) reads the mailbox while they write. Each group is handed every
    message once, each priority in its order; then a reader of one group on the other broker
    is handed nothing its group's `done` covered."""
    a, b = brokers
    await a.mailbox_create(name="work", ttl=0)
    sent: dict[Priority, list[int]] = {priority: [] for priority in Priority}
    writing = True

    async def writer(number: int, client: Mq9Client) -> None:
        rng = random.Random(number)
        for index in range(40):
            priority = rng.choice(list(Priority))
            msg_id = await client.send("work", f"{number}-{index}", priority=priority)
            sent[priority].append(msg_id)

    async def read(client: Mq9Client, group: str) -> list[tuple[int, Priority]]:
        reader = GroupReader(client, "work", group)
        got: list[tuple[int, Priority]] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            messages = await reader.fetch(num_msgs=16)
            got.extend((m.msg_id, m.priority) for m in messages)
            if messages:
                await reader.done([m.msg_id for m in messages])
            elif not writing and len(got) >= 160:
                break
            else:
                await asyncio.sleep(0.05)
        return got

    readers = [asyncio.create_task(read(client, group)) for client, group in ((a, "g1"), (b, "g2"))]
    await asyncio.gather(*(writer(n, (a, b)[n % 2]) for n in range(4)))
    writing = False
    # both brokers numbered the one mailbox: each msg_id from 0 once
    assert sorted(i for ids in sent.values() for i in ids) == list(range(160))
    for got in await asyncio.gather(*readers):
        ids = [msg_id for msg_id, _ in got]
        assert sorted(ids) == sorted(i for ids in sent.values() for i in ids)  # once each
        for priority in Priority:
            mine = [msg_id for msg_id, p in got if p is priority]
            assert mine == sorted(mine)
    # a reader of g1 on the other broker is handed nothing g1 finished
    again = GroupReader(b, "work", "g1")
    assert await again.fetch(num_msgs=50) == []
    with pytest.raises(Mq9Error):
        await a.fetch("never.created")
