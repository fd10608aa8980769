"""#77 item 3: the bounds of ``--store jetstream`` decided by JetStream, not by a read then a
write. Three nats-servers clustered on loopback and two ``mq9-dev-broker --store jetstream
--max-mailboxes 10 --max-messages 10`` processes, as docs/deploy.md runs them; clients on two
servers, so that NATS hands their requests to both brokers:

- 100 CREATEs of new names at once make exactly 10 mailboxes (the report: 17), the rest told
  the bound; CREATE of one of them again: "already exists", as before;
- 100 SENDs at once into one mailbox store exactly 10 (the report: 78), numbered 0-9; the
  rest told the mailbox is full; a DELETE makes room for one more, as on every store;
- 100 REGISTERs of new names at once keep exactly 10 (``--max-agents 10``), an UNREGISTER
  makes room for one; 100 ACKs of new groups on one mailbox at once make exactly 10
  (``--max-groups 10``), a known group's ACK always taken;
- with one broker alone, the same rules one after another (the conformance suites' own rule
  for the other stores): a keyed SEND into a full mailbox is refused too, a delayed SEND is
  counted when sent.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import nats
import pytest

from mq9_broker.engine.engine import Engine
from mq9_broker.engine.limits import BrokerLimits
from mq9_platform import Mq9Client
from mq9_platform.client.transport import MemoryTransport
from mq9_wire import protocol as p
from mq9_wire.protocol.errors import Mq9Error
from testbed.support.devbroker_helpers import DevBroker
from testbed.support.jetstream_servers import close_store, open_store, wait_serving

pytestmark = pytest.mark.slow  # three nats-servers and two broker processes

BOUND = 10  # --max-mailboxes and --max-messages
AT_ONCE = 100  # requests sent together


@pytest.fixture(scope="module")
def cluster(shared_jetstream_cluster: list[str]) -> list[str]:
    # the session's 3-node cluster: the brokers are killed here, never a node
    return shared_jetstream_cluster


@pytest.fixture
def brokers(cluster: list[str]) -> Iterator[list[str]]:
    """Two bounded brokers on a layout of the test's own; the URLs clients use (two
    servers)."""
    stream = f"L{uuid.uuid4().hex[:10]}"
    args = ("--nats", ",".join(cluster), "--store", "jetstream", "--stream", stream)
    bounds = ("--max-mailboxes", str(BOUND), "--max-messages", str(BOUND), "--no-search")
    bounds += ("--max-agents", str(BOUND), "--max-groups", str(BOUND))
    started: list[DevBroker] = []
    try:
        for _ in range(2):
            started.append(DevBroker(*args, *bounds))
            wait_serving(started[-1])
        yield cluster[:2]
    finally:
        for broker in started:
            broker.kill()


async def _outcomes(calls: list) -> tuple[list, list[str]]:
    """What succeeded, and the errors' texts, of ``calls`` run at once."""
    done = await asyncio.gather(*calls, return_exceptions=True)
    unexpected = [r for r in done if isinstance(r, BaseException) and not isinstance(r, Mq9Error)]
    assert not unexpected, unexpected
    return [r for r in done if not isinstance(r, BaseException)], [
        str(r) for r in done if isinstance(r, BaseException)
    ]


async def test_creates_at_once_through_two_brokers_make_at_most_the_bound(brokers):
    async with Mq9Client(brokers[0]) as one, Mq9Client(brokers[1]) as two:
        clients = (one, two)
        calls = [clients[n % 2].mailbox_create(name=f"box.{n}", ttl=0) for n in range(AT_ONCE)]
        made, errors = await _outcomes(calls)
        assert len(made) == BOUND, (len(made), errors[:3])
        assert all("mailbox limit reached" in text for text in errors), errors[:3]
        # the legitimate use beside: what was made is there, through either broker
        raw = await nats.connect(brokers[1])
        try:
            for address in made:
                body = p.CREATE_REQUEST.body(name=address, ttl=0)
                reply = p.loads((await raw.request(p.MAILBOX_CREATE, body, 10)).data)
                assert reply["error"] == p.err_mailbox_exists(address)
                assert await one.send(address, "hello") == 0
        finally:
            await raw.close()


async def test_sends_at_once_through_two_brokers_store_at_most_the_bound(brokers):
    async with Mq9Client(brokers[0]) as one, Mq9Client(brokers[1]) as two:
        await one.mailbox_create(name="full", ttl=0)
        clients = (one, two)
        calls = [clients[n % 2].send("full", f"m{n}") for n in range(AT_ONCE)]
        sent, errors = await _outcomes(calls)
        assert sorted(sent) == list(range(BOUND)), (sent, errors[:3])
        assert all(text.startswith("mailbox full is full") for text in errors), errors[:3]
        stored = await two.fetch("full", deliver="earliest", num_msgs=AT_ONCE)
        assert [m.msg_id for m in stored] == list(range(BOUND))
        # a DELETE makes room for one more (every store's rule), and only one
        await one.delete("full", 3)
        calls = [clients[n % 2].send("full", f"again {n}") for n in range(20)]
        sent, errors = await _outcomes(calls)
        assert sent == [BOUND], (sent, errors[:3])
        assert len(errors) == 19


async def test_registrations_and_groups_at_once_through_two_brokers_stay_within_the_bound(
    brokers,
):
    async with Mq9Client(brokers[0]) as one, Mq9Client(brokers[1]) as two:
        clients = (one, two)
        calls = [
            clients[n % 2].agent_register({"name": f"agent.{n}", "payload": "card"})
            for n in range(AT_ONCE)
        ]
        kept, errors = await _outcomes(calls)
        assert len(kept) == BOUND, (len(kept), errors[:3])
        assert all("agent limit" in text or "agents" in text for text in errors), errors[:3]
        listed = await two.agent_discover()
        assert len(listed) == BOUND
        await one.agent_unregister(listed[0]["name"])
        calls = [
            clients[n % 2].agent_register({"name": f"late.{n}", "payload": "card"})
            for n in range(20)
        ]
        kept, errors = await _outcomes(calls)
        assert len(kept) == 1, (kept, errors[:3])
        await one.mailbox_create(name="read", ttl=0)
        await one.send("read", "m")
        calls = [clients[n % 2].ack("read", f"group.{n}", 0) for n in range(AT_ONCE)]
        done = await asyncio.gather(*calls, return_exceptions=True)
        taken = [n for n, result in enumerate(done) if not isinstance(result, BaseException)]
        assert len(taken) == BOUND, (len(taken), done[:3])
        assert all("consumer group limit" in str(r) for r in done if r is not None), done[:3]
        # the legitimate use beside: a group that holds a position is always taken
        await two.ack("read", f"group.{taken[0]}", 0)
        await one.ack("read", f"group.{taken[-1]}", 0)


async def test_one_brokers_rules_of_the_bound_are_every_stores(cluster):
    """A keyed SEND into a full mailbox is refused (BrokerEngine's ``len >= limit`` before
    the write), a delayed SEND is counted when it is sent; a DELETE frees one place."""
    store = await open_store(cluster[:1], f"L{uuid.uuid4().hex[:10]}")
    try:
        engine = Engine(store, limits=BrokerLimits(max_messages_per_mailbox=2))
        async with Mq9Client(transport=MemoryTransport(engine)) as client:
            await client.mailbox_create(name="two", ttl=0)
            assert await client.send("two", "a", key="k") == 0
            assert await client.send("two", "b") == 1
            for kwargs in ({"key": "k"}, {"delay": 60}, {}):
                with pytest.raises(Mq9Error, match="mailbox two is full"):
                    await client.send("two", "c", **kwargs)
            await client.delete("two", 1)
            assert await client.send("two", "d", key="k") == 2  # (it replaces msg_id 0)
            assert await client.send("two", "e") == 3
            with pytest.raises(Mq9Error, match="mailbox two is full"):
                await client.send("two", "f")
    finally:
        await close_store(store)
