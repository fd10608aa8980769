"""#106: the registry's bound is one agent's, not everyone's (docs/security-broker.md,
"Whose bound it is").

Before, a ``--credentials`` broker bounded registrations in all only (``--max-agents``,
10,000): mallory could register names until it was full, and every other agent's REGISTER of
a new name was then refused. Now each agent holds at most its share
(``--max-agents-per-sender``), counted by the identity store in one step as the REGISTER is
answered and given back by its UNREGISTER: mallory registers until refused, in one line
naming her own share and no count of anyone's, and carol's REGISTER of a new name is
answered. Played through ``Identities.handle`` (as serve.py hands a credentialed request on)
on each store, with the share made a few names (the engine's limits, read at each REGISTER);
then on the cluster store through two brokers with identities buckets of their own views,
mallory's REGISTERs racing through both: the counter written with an expected revision holds
her to her share however many brokers take them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import pytest

from mq9_broker import Broker
from mq9_broker.cli.metrics import broker_endpoint
from mq9_broker.config import BrokerConfig
from mq9_broker.engine.engine import Engine
from mq9_broker.engine.limits import BrokerLimits
from mq9_broker.identities.gate import Identities
from mq9_broker.identities.kv_store import KvIdentityStore
from mq9_broker.identities.store import IdentityStore
from mq9_platform import Mq9Client
from mq9_wire import protocol as p
from mq9_wire.protocol.errors import LimitReached, from_reply
from testbed.support.credentials_support import issue
from testbed.support.jetstream_servers import close_store, open_store
from tests.broker.identities.test_ownership_cluster_races import Broker as OneOfTwo
from tests.platform.broker.identities.test_sender_vouched import Place, enforcing

pytest.importorskip("nkeys")  # the credentials extra

SHARE = 3  # mallory's share, a few names (the default is 100)


@pytest.fixture(params=["memory", "sqlite", pytest.param("jetstream", marks=pytest.mark.slow)])
async def place(request, tmp_path):
    made = Place(request.param, tmp_path)
    yield made
    await made.drop()


@pytest.fixture
def identity_store(tmp_path):
    store = IdentityStore(tmp_path / "mq9-identities.sqlite3")
    for name in ("alice", "carol", "mallory"):
        store.issue(name)
    yield store
    store.close()


def _agent(name: str) -> dict:
    return {"name": name, "payload": f"{name}'s card"}


def _shared(engine, **limits: int):
    engine.limits = dataclasses.replace(engine.limits, **limits)
    return engine


async def test_an_agent_filling_its_share_of_the_registry_leaves_anothers_register_answered(
    place, identity_store
):
    agents = enforcing(identity_store, _shared(await place.open(), max_agents_per_sender=SHARE))
    for n in range(SHARE):
        await agents.ok("mallory", p.AGENT_REGISTER, _agent(f"mallory.{n}"))
    refused = await agents("mallory", p.AGENT_REGISTER, _agent("mallory.more"))
    error = refused["error"]
    assert isinstance(from_reply(error, p.AGENT_REGISTER), LimitReached), error
    # one line naming her own share, and no count of what anyone else holds
    assert "\n" not in error and f"at most {SHARE} registrations" in error
    assert "--max-agents-per-sender" in error and "10000" not in error
    # carol's REGISTER of a new name is answered, and so are mallory's held names again
    await agents.ok("carol", p.AGENT_REGISTER, _agent("carol.worker"))
    await agents.ok("mallory", p.AGENT_REGISTER, _agent("mallory.0"))  # held: counted once
    listed = (await agents.ok("alice", p.AGENT_DISCOVER, {}))["agents"]
    assert sorted(a["name"] for a in listed) == [
        "carol.worker",
        *(f"mallory.{n}" for n in range(SHARE)),
    ]
    assert agents.identities.ownership.shares_refused == 1
    # her UNREGISTER gives her room back (the name stays hers)
    await agents.ok("mallory", p.AGENT_UNREGISTER, {"name": "mallory.1"})
    await agents.ok("mallory", p.AGENT_REGISTER, _agent("mallory.more"))
    again = await agents("mallory", p.AGENT_REGISTER, _agent("mallory.1"))
    assert isinstance(from_reply(again["error"]), LimitReached)
    carols = await agents("carol", p.AGENT_REGISTER, _agent("mallory.1"))
    assert "registered by another agent" in carols["error"]
    await place.stop(agents.engine)


async def test_a_register_refused_after_its_count_gives_the_count_back(identity_store):
    """A REGISTER refused by the bound in all (or its card) holds nothing of its agent's
    share: counted, then given back with the refusal."""
    from mq9_broker import BrokerEngine

    engine = BrokerEngine(limits=BrokerLimits(max_agents=2, max_agents_per_sender=2))
    agents = enforcing(identity_store, engine)
    await agents.ok("carol", p.AGENT_REGISTER, _agent("carol.worker"))
    await agents.ok("mallory", p.AGENT_REGISTER, _agent("mallory.0"))
    full = await agents("mallory", p.AGENT_REGISTER, _agent("mallory.1"))
    assert full["error"] == p.err_agent_limit(2)
    await agents.ok("carol", p.AGENT_UNREGISTER, {"name": "carol.worker"})
    # her second name fits her share: the refused one was not counted
    await agents.ok("mallory", p.AGENT_REGISTER, _agent("mallory.1"))


@pytest.mark.slow  # a nats-server process
async def test_an_agents_registers_racing_through_two_brokers_hold_its_share(shared_jetstream):
    """On the cluster store the share is counted in the identities bucket (a counter written
    expecting its revision): mallory's REGISTERs at once through two brokers, neither
    following the other's records, hold her share exactly; carol's is answered."""
    layout = f"T{uuid.uuid4().hex[:10]}"
    limits = BrokerLimits(max_agents_per_sender=SHARE)
    brokers = []
    for _ in range(2):
        store = await open_store(shared_jetstream, layout)
        identities = KvIdentityStore(shared_jetstream, stream=layout, replicas=1)
        if not brokers:
            for name in ("carol", "mallory"):
                identities.issue(name)
        brokers.append(OneOfTwo(store, Identities(identities, Engine(store, limits=limits))))
    try:
        answers = await asyncio.gather(*(
            brokers[n % 2].ask("mallory", p.AGENT_REGISTER, _agent(f"mallory.{n}"))
            for n in range(4 * SHARE)
        ))  # fmt: skip
        assert sum(answer["error"] == "" for answer in answers) == SHARE
        for answer in answers:
            assert answer["error"] == "" or isinstance(from_reply(answer["error"]), LimitReached)
        assert (await brokers[1].ask("carol", p.AGENT_REGISTER, _agent("carol.w")))["error"] == ""
        # given back through one broker, taken through the other
        registered = [n for n, answer in enumerate(answers) if answer["error"] == ""]
        name = f"mallory.{registered[0]}"
        assert (await brokers[0].ask("mallory", p.AGENT_UNREGISTER, {"name": name}))["error"] == ""
        assert (await brokers[1].ask("mallory", p.AGENT_REGISTER, _agent("mallory.z")))[
            "error"
        ] == ""
    finally:
        for broker in brokers:
            await close_store(broker.store)
            broker.identities.store.close()


@pytest.mark.slow  # a nats-server process
async def test_over_a_credentialed_broker_the_share_is_refused_counted_and_named(tmp_path):
    """The same through a real ``--credentials`` broker and real clients: mallory's client
    reads her refusal as ``LimitReached``; carol registers; the scrape counts the refusal."""
    credentials = issue(tmp_path, "carol", "mallory")
    limits = BrokerLimits(max_agents_per_sender=SHARE)
    config = BrokerConfig(port=0, data=tmp_path, credentials=True, search=False, limits=limits)
    broker = Broker(config, say=lambda _: None)
    endpoint = broker_endpoint(broker, "127.0.0.1", 0)
    async with endpoint, broker:
        assert broker.url is not None
        async with Mq9Client(broker.url, credential=credentials["mallory"]) as mallory:
            for n in range(SHARE):
                await mallory.agent_register({"name": f"mallory.{n}", "payload": "x"})
            with pytest.raises(LimitReached) as refused:
                await mallory.agent_register({"name": "mallory.more", "payload": "x"})
            assert f"at most {SHARE} registrations" in str(refused.value)
        async with Mq9Client(broker.url, credential=credentials["carol"]) as carol:
            await carol.agent_register({"name": "carol.worker", "payload": "x"})
        text = await _scrape(endpoint.port)
    assert f"{METRIC}_total 1.0" in text.splitlines()


METRIC = "mq9_broker_registrations_refused_per_sender"


async def _scrape(port: int) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 60)
    writer.close()
    return raw.decode().partition("\r\n\r\n")[2]
