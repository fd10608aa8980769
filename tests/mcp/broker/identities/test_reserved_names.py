"""#98 item 3: a name the broker reserves is nobody's.

Before #98 any credentialed agent could REGISTER an agent named ``mq9.readyz.probe``: the
readiness probe of the gateway, ``mq9-mcp`` and ``mq9-wake`` (a REPORT of that name,
metrics/probe.py) was then refused ("registered by another agent") and every ``/readyz``
answered 503, still after she unregistered and after a restart. Now no client registers,
unregisters, reports (but the probe's own REPORT) or creates under a reserved name, on every
store, with or without credentials; and an owner record kept from before (a broker that took
the registration) stops nobody's probe: readiness recovers by itself.
"""

from __future__ import annotations

import json

import pytest

from mq9_broker import Broker, BrokerConfig, BrokerEngine
from mq9_broker.identities.store import IdentityStore
from mq9_platform import Mq9Client
from mq9_wire import protocol as p
from mq9_wire.metrics.probe import PROBE_AGENT, PROBE_MAILBOX, broker_writes
from mq9_wire.protocol.errors import InvalidArgument, from_reply
from mq9_wire.protocol.names import READYZ_PROBE, RESERVED_ROOT
from tests.platform.broker.identities.test_sender_vouched import Place, enforcing

pytest.importorskip("nkeys")  # the credentials extra

RESERVED_AGENTS = [
    READYZ_PROBE, RESERVED_ROOT, f"{RESERVED_ROOT}.tasks.x", f"{RESERVED_ROOT}.lease"
]  # fmt: skip


def test_the_probe_asks_of_the_reserved_name():
    assert PROBE_AGENT == PROBE_MAILBOX == READYZ_PROBE


@pytest.fixture(params=["memory", "sqlite", pytest.param("jetstream", marks=pytest.mark.slow)])
async def place(request, tmp_path):
    made = Place(request.param, tmp_path)
    yield made
    await made.drop()


async def _open(engine, subject: str, body: dict) -> str:
    return json.loads(await engine.handle(subject, None, p.encode(body)))["error"]


@pytest.mark.parametrize("name", RESERVED_AGENTS)
async def test_an_open_broker_refuses_reserved_agent_names(place, name):
    engine = await place.open()
    try:
        card = {"name": name, "payload": "x"}
        for subject, body in (
            (p.AGENT_REGISTER, card),
            (p.AGENT_UNREGISTER, {"name": name}),
        ):
            error = await _open(engine, subject, body)
            assert "reserves" in error and "\n" not in error, error
            assert isinstance(from_reply(error, subject), InvalidArgument)
        report = await _open(engine, p.AGENT_REPORT, {"name": name, "report_info": "x"})
        assert (report == "") is (name == READYZ_PROBE), report
        created = await _open(engine, p.MAILBOX_CREATE, {"name": READYZ_PROBE})
        assert "reserved by the broker" in created
    finally:
        await place.stop(engine)


@pytest.fixture
def identity_store(tmp_path):
    store = IdentityStore(tmp_path / "mq9-identities.sqlite3")
    for name in ("alice", "mallory"):
        store.issue(name)
    yield store
    store.close()


async def test_no_agent_takes_the_probes_name_and_an_old_owner_stops_nobody(
    place, identity_store
):
    agents = enforcing(identity_store, await place.open())
    try:
        refused = await agents("mallory", p.AGENT_REGISTER, {"name": READYZ_PROBE, "payload": "x"})
        assert "reserves" in refused["error"]
        # an owner record kept by a broker from before #98 (it took her registration)
        agents.identities.ownership.agents[READYZ_PROBE] = "mallory"
        for who in ("alice", "mallory"):
            await agents.ok(who, p.AGENT_REPORT, {"name": READYZ_PROBE, "report_info": "readyz"})
        again = await agents("mallory", p.AGENT_UNREGISTER, {"name": READYZ_PROBE})
        assert "reserves" in again["error"]
        made = await agents("mallory", p.MAILBOX_CREATE, {"name": READYZ_PROBE})
        assert made["error"]
    finally:
        await place.stop(agents.engine)


async def test_the_probe_stays_ready_on_an_open_broker_whatever_an_agent_asks():
    engine = BrokerEngine()
    async with Mq9Client(transport=engine) as mallory:
        with pytest.raises(InvalidArgument):
            await mallory.agent_register({"name": READYZ_PROBE, "payload": "x"})
        assert (await broker_writes(mallory)).why_not_ready is None


@pytest.mark.slow  # mq9-dev-broker --credentials on a nats-server of its own
async def test_readiness_holds_through_the_attack_on_a_credentialed_broker(tmp_path):
    """The attack as the issue played it: mallory REGISTERs the probe's name, unregisters,
    and the broker restarts; the probe (as each server runs it, on its own credential) is
    answered ready at every step."""
    config = BrokerConfig(port=0, credentials=tmp_path, search=False)
    async with Broker(config, say=lambda _: None) as broker:
        issued = {name: await broker.issue(name) for name in ("gateway", "mallory")}
        async with (
            Mq9Client(broker.url, credential=issued["gateway"]) as server,
            Mq9Client(broker.url, credential=issued["mallory"]) as mallory,
        ):
            assert (await broker_writes(server)).why_not_ready is None
            with pytest.raises(InvalidArgument):
                await mallory.agent_register({"name": READYZ_PROBE, "payload": "x"})
            assert (await broker_writes(server)).why_not_ready is None
            with pytest.raises(InvalidArgument):
                await mallory.agent_unregister(READYZ_PROBE)
            assert (await broker_writes(server)).why_not_ready is None
