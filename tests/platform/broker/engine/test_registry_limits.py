"""Registry bounds (#12 item 16): a card's size and the number of agents are bounded with clear
errors, and one large card cannot make DISCOVER fail for everyone: an answer that would not
fit holds the best-ranked agents that do."""

from __future__ import annotations

import json

import pytest

from mq9_broker import BrokerEngine, BrokerLimits, ManualClock
from mq9_wire import protocol as p
from testbed.brokers import start_broker, stop_broker


def _card(name: str, description: str = "helper", filler: int = 0) -> bytes:
    card = p.agent_card(name, mailbox=f"{name}.inbox", description=description)
    card["skills"] = [{"id": "pad", "name": "pad", "description": "x" * filler}] if filler else []
    return p.encode(card)


async def _call(engine: BrokerEngine, subject: str, body: bytes) -> dict:
    return json.loads(await engine.handle(subject, None, body))


@pytest.mark.parametrize("transport", ["memory", pytest.param("nats", marks=pytest.mark.slow)])
async def test_default_discover_still_answers_with_a_near_limit_card_registered(transport, request):
    """Before: one card just under max_payload made every listing DISCOVER an error."""
    url = request.getfixturevalue("nats_server").url if transport == "nats" else None
    # max_payload below max_card_bytes, so the card limit lets the near-limit card in
    broker, handle = await start_broker(transport, url, max_payload=60_000)
    try:
        await _near_limit_card(broker)
    finally:
        await stop_broker(broker, handle)


async def _near_limit_card(broker) -> None:
    for i in range(3):
        assert (await broker.raw(p.AGENT_REGISTER, _card(f"agent{i}")))["error"] == ""
    limit = broker.engine._message_limit()
    assert limit == 60_000
    # the big card alone takes all but 200 bytes of a DISCOVER answer
    alone = len(p.encode({"error": "", "agents": [{"name": "zbig", "agent_info": ""}]}))
    big = _card("zbig", filler=limit - 200 - alone - len(json.dumps(_card("zbig").decode())))
    assert (await broker.raw(p.AGENT_REGISTER, big))["error"] == ""
    listed = await broker.raw(p.AGENT_DISCOVER, b"{}")
    assert listed["error"] == ""
    # listed by name, whole (#22: a listing is never cut; an answer carries more than a message)
    assert [a["name"] for a in listed["agents"]] == ["agent0", "agent1", "agent2", "zbig"]
    # a search ranks ties in registration order: the same three
    found = await broker.raw(p.AGENT_DISCOVER, b'{"text":"helper","limit":10}')
    assert found["error"] == ""
    assert [a["name"] for a in found["agents"]] == ["agent0", "agent1", "agent2"]


async def test_discover_keeps_the_best_ranked_agents_that_fit():
    limits = BrokerLimits(max_payload=4_000, max_answer=4_000)
    engine = BrokerEngine(clock=ManualClock(), limits=limits)
    for i in range(10):
        reply = await _call(engine, p.AGENT_REGISTER, _card(f"a{i}", filler=500))
        assert reply["error"] == ""
    found = await _call(engine, p.AGENT_DISCOVER, b'{"text":"helper","limit":10}')
    assert found["error"] == ""
    names = [a["name"] for a in found["agents"]]
    assert 1 <= len(names) < 10 and names == [f"a{i}" for i in range(len(names))]
    assert len(p.encode(found)) <= 4_000
    # one more agent would not have fitted
    one_more = p.encode({"error": "", "agents": found["agents"] + found["agents"][:1]})
    assert len(one_more) > 4_000
    # (#22) the listing is not cut to what fits: it is refused, saying why
    listed = await _call(engine, p.AGENT_DISCOVER, b"{}")
    assert p.LISTING_TOO_LARGE in listed["error"] and "10 agents" in listed["error"]


async def test_card_above_max_card_bytes_is_refused_clearly(broker):
    limit = broker.engine.limits.max_card_bytes
    assert limit == 64 * 1024
    big = _card("big", filler=limit)
    reply = await broker.raw(p.AGENT_REGISTER, big)
    assert reply["error"].startswith("agent card is ")
    assert f"above the {limit} bytes this broker keeps per agent" in reply["error"]
    raw = p.REGISTER_REQUEST.body(name="raw", payload="y" * (limit + 1))
    assert "above the" in (await broker.raw(p.AGENT_REGISTER, raw))["error"]
    at_limit = p.REGISTER_REQUEST.body(name="raw", payload="y" * limit)
    assert (await broker.raw(p.AGENT_REGISTER, at_limit))["error"] == ""
    listed = await broker.raw(p.AGENT_DISCOVER, b"{}")
    assert [a["name"] for a in listed["agents"]] == ["raw"]


@pytest.mark.parametrize("transport", ["memory", pytest.param("nats", marks=pytest.mark.slow)])
async def test_agent_limit_refuses_new_names_only(transport, request):
    url = request.getfixturevalue("nats_server").url if transport == "nats" else None
    broker, handle = await start_broker(transport, url, max_agents=3)
    try:
        for i in range(3):
            assert (await broker.raw(p.AGENT_REGISTER, _card(f"a{i}")))["error"] == ""
        refused = await broker.raw(p.AGENT_REGISTER, _card("a3"))
        assert refused["error"] == p.err_agent_limit(3)
        assert "at most 3 agents" in refused["error"]
        # a taken name answers success as before (its first entry kept)
        assert (await broker.raw(p.AGENT_REGISTER, _card("a0", "other")))["error"] == ""
        unregistered = await broker.raw(p.AGENT_UNREGISTER, b'{"name":"a1"}')
        assert unregistered["error"] == ""
        assert (await broker.raw(p.AGENT_REGISTER, _card("a3")))["error"] == ""
        listed = await broker.raw(p.AGENT_DISCOVER, b"{}")
        assert [a["name"] for a in listed["agents"]] == ["a0", "a2", "a3"]
    finally:
        await stop_broker(broker, handle)


def test_default_limits():
    limits = BrokerLimits()
    assert limits.max_card_bytes == 64 * 1024
    assert limits.max_agents == 10_000


@pytest.mark.parametrize("transport", ["memory", pytest.param("nats", marks=pytest.mark.slow)])
async def test_consumer_group_limit_is_per_mailbox_and_refuses_new_groups_only(transport, request):
    """One client making group names up fills the mailbox it floods, never another (#21,
    scenario 6: before, 10,000 made-up groups stopped every new group everywhere)."""
    url = request.getfixturevalue("nats_server").url if transport == "nats" else None
    broker, handle = await start_broker(transport, url, max_groups=2)
    try:
        for name in ("box", "other"):
            assert (await broker.raw(p.MAILBOX_CREATE, p.encode({"name": name})))["error"] == ""

        async def ack(group: str, box: str = "box") -> str:
            body = p.ACK_REQUEST.body(group_name=group, mail_address=box, msg_id=0)
            return (await broker.raw(p.MSG_ACK + box, body))["error"]

        assert await ack("g1") == "" and await ack("g2") == ""
        assert await ack("g3") == p.err_group_limit(2, "box")
        assert "at most 2 groups per mailbox, and box has them all" in p.err_group_limit(2, "box")
        assert await ack("g1") == ""  # a group that exists keeps committing
        assert await ack("g3", "other") == ""  # the flood filled one mailbox only
        assert await ack("g1", "other") == ""
        assert sorted(broker.engine.offsets) == sorted(
            f"g{i}-{lane}" for i in (1, 2, 3) for lane in ("critical", "urgent", "normal")
        )
        # dropping a group on the flooded mailbox makes room there
        assert broker.engine.drop_group("g2", "box")
        assert not broker.engine.drop_group("g2", "box")
        assert await ack("g3") == ""
        assert broker.engine.drop_group("g1")  # on every mailbox
        assert "g1-normal" not in broker.engine.offsets
    finally:
        await stop_broker(broker, handle)


async def test_group_name_longer_than_the_client_sends_is_refused():
    engine = BrokerEngine(clock=ManualClock())
    await _call(engine, p.MAILBOX_CREATE, b'{"name":"box"}')
    long = "g" * (p.MAX_GROUP_NAME + 1)
    body = p.ACK_REQUEST.body(group_name=long, mail_address="box", msg_id=0)
    reply = await _call(engine, p.MSG_ACK + "box", body)
    assert reply["error"] == p.err_group_name_too_long(p.MAX_GROUP_NAME + 1)
    assert engine.offsets == {}
    body = p.ACK_REQUEST.body(group_name=long[:-1], mail_address="box", msg_id=0)
    assert (await _call(engine, p.MSG_ACK + "box", body))["error"] == ""


def test_default_group_limit():
    assert BrokerLimits().max_groups == 1_000
