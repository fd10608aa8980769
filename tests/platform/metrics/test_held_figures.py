"""What the broker holds, read cheaply at each scrape (#73): a mailbox unchanged since it was
last read is not read again, a changed one is (appends, deletes, a key's message replaced,
a mailbox made anew), and within a bound of messages a scrape reads; beyond it the figures
stay as last read, ``held_exact`` says 0, and the next scrape reads what waited longest."""

from __future__ import annotations

import uuid

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from mq9_broker import BrokerEngine, drop_memory_broker, install_memory_broker
from mq9_broker.cli.metrics import HeldFigures
from mq9_broker.state.clock import ManualClock
from mq9_platform import Mq9Client


class _Scrape:
    def __init__(self, engine: BrokerEngine, walk_limit: int) -> None:
        self.engine = engine
        self.held = HeldFigures(walk_limit)

    def collect(self):
        return self.held.families(self.engine)

    def __call__(self) -> dict[str, float]:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        text = generate_latest(registry).decode()
        return {
            line.split(" ")[0].removeprefix("mq9_broker_"): float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line and not line.startswith("#")
        }


@pytest.fixture
async def world():
    engine = BrokerEngine()
    name = f"held{uuid.uuid4().hex}"
    install_memory_broker(name, engine)
    try:
        async with Mq9Client(f"memory://{name}") as client:
            yield engine, client
    finally:
        drop_memory_broker(name)


async def _fill(client: Mq9Client, box: str, sizes: list[int]) -> list[int]:
    await client.mailbox_create(name=box)
    return [await client.send(box, "x" * size) for size in sizes]


async def test_each_change_is_read_and_an_unchanged_mailbox_costs_nothing(world):
    engine, client = world
    scrape = _Scrape(engine, walk_limit=10)
    ids = await _fill(client, "agent.a", [1, 2, 3, 4, 5, 6, 7, 8])
    first = scrape()
    assert (first["message_bytes"], first["held_exact"]) == (36, 1)
    await _fill(client, "agent.b", [10] * 8)
    # 16 messages in all, above the bound of 10: agent.a, unchanged, is not read again
    second = scrape()
    assert (second["message_bytes"], second["held_exact"]) == (36 + 80, 1)
    await client.delete("agent.a", ids[0])
    assert scrape()["message_bytes"] == 35 + 80
    await client.send("agent.a", "yy")
    assert scrape()["message_bytes"] == 37 + 80
    await client.send("agent.b", "k" * 3, key="one")
    await client.send("agent.b", "k" * 5, key="one")  # replaces the first: one removed, one added
    held = scrape()
    assert (held["message_bytes"], held["messages"], held["held_exact"]) == (37 + 85, 17, 1)


async def test_beyond_the_bound_the_figures_are_marked_and_read_next_time(world):
    engine, client = world
    scrape = _Scrape(engine, walk_limit=10)
    await _fill(client, "agent.a", [1] * 6)
    await _fill(client, "agent.b", [2] * 6)
    first = scrape()  # one of the two fits the bound; the other waits
    assert first["held_exact"] == 0 and first["message_bytes"] in (6, 12)
    assert first["messages"] == 12  # counts are lengths: always exact
    second = scrape()  # the one that waited is read; the other is unchanged
    assert (second["message_bytes"], second["held_exact"]) == (18, 1)
    await _fill(client, "agent.big", [1] * 11)  # alone above the bound: never read whole
    third = scrape()
    assert (third["message_bytes"], third["messages"], third["held_exact"]) == (18, 23, 0)


async def test_the_groups_pending_counts_within_the_bound(world):
    engine, client = world
    await _fill(client, "agent.a", [1] * 8)
    taken = await client.fetch("agent.a", group_name="g", deliver="earliest", num_msgs=2,
                               max_wait_ms=0)  # fmt: skip
    await client.ack("agent.a", "g", taken[-1].msg_id)
    roomy = _Scrape(engine, walk_limit=100)()
    assert (roomy["group_pending_messages"], roomy["held_exact"]) == (6, 1)
    tight = _Scrape(engine, walk_limit=10)()  # 8 read for the bytes: the lane's 6 do not fit
    assert (tight["group_pending_messages"], tight["groups"], tight["held_exact"]) == (0, 1, 0)


async def test_a_mailbox_made_anew_is_read_again():
    clock = ManualClock()
    engine = BrokerEngine(clock=clock)
    name = f"held{uuid.uuid4().hex}"
    install_memory_broker(name, engine)
    scrape = _Scrape(engine, walk_limit=100)
    try:
        async with Mq9Client(f"memory://{name}") as client:
            await client.mailbox_create(name="agent.a", ttl=60)
            for _ in range(2):
                await client.send("agent.a", "4444")
            assert scrape()["message_bytes"] == 8
            clock.advance(61)  # its TTL ran out: gone from the figures
            await client.mailbox_create(name="agent.other")  # (the engine looks at the time)
            assert scrape()["message_bytes"] == 0
            await client.mailbox_create(name="agent.a", ttl=60)
            for _ in range(2):
                await client.send("agent.a", "9" * 9)
            # a new mailbox object: read, whatever the engine kept of the old one's messages
            live = engine.mailboxes["agent.a"].messages.values()
            assert scrape()["message_bytes"] == sum(len(m.payload) for m in live) >= 18
    finally:
        drop_memory_broker(name)
