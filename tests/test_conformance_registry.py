"""PROTOCOL.md conformance for the agent registry: REGISTER (upsert), UNREGISTER, REPORT and
DISCOVER (text, semantic, pagination), over ``memory://`` and a real nats-server."""

from __future__ import annotations

import dataclasses
import json

import pytest

from langchain_mq9 import Mq9Error
from langchain_mq9 import protocol as p

T0 = 1_700_000_000




def mailboxes(agents: list[dict]) -> list[str]:
    return [a["mailbox"] for a in agents]


TRANSLATOR = {
    "name": "translator",
    "mailbox": "agents.translator",
    "description": "Translates documents between English and French",
    "skills": [{"id": "translate", "tags": ["language", "translation"]}],
}
SUMMARIZER = {
    "name": "summarizer",
    "mailbox": "agents.summarizer",
    "description": "Summarizes long reports into short briefs",
    "skills": [{"id": "summarize", "tags": ["text", "summary"]}],
}
WEATHER = {
    "name": "weather",
    "mailbox": "agents.weather",
    "description": "Answers questions about the weather forecast for any city",
    "skills": [{"id": "forecast", "tags": ["weather", "climate"]}],
}


async def register_all(client, *cards: dict) -> None:
    for card in cards:
        await client.agent_register(card)


# -- REGISTER ------------------------------------------------------------------------------------


async def test_card_is_returned_exactly_as_sent(client):
    card = {
        "name": "exotic",
        "mailbox": "agents.exotic",
        "version": 3,
        "ratio": 0.25,
        "enabled": True,
        "nothing": None,
        "unicode": "naïve ✓ 日本",
        "nested": {"list": [1, "two", {"three": [3.0]}], "empty": {}},
    }
    await client.agent_register(card)
    assert await client.agent_discover() == [card]


async def test_register_reply_shape(broker):
    reply = await broker.raw(p.AGENT_REGISTER, json.dumps(TRANSLATOR).encode())
    assert reply == {"error": ""}


async def test_register_upserts_by_mailbox(client):
    await register_all(client, TRANSLATOR, SUMMARIZER)
    updated = {"mailbox": "agents.translator", "description": "now speaks German"}
    await client.agent_register(updated)
    agents = await client.agent_discover()
    assert len(agents) == 2
    assert updated in agents and SUMMARIZER in agents and TRANSLATOR not in agents


async def test_register_upserts_by_name(client):
    await register_all(client, TRANSLATOR, WEATHER)
    moved = {**TRANSLATOR, "mailbox": "agents.translator.v2"}
    await client.agent_register(moved)
    agents = await client.agent_discover()
    assert len(agents) == 2
    assert moved in agents and TRANSLATOR not in agents
    # the old mailbox no longer names an agent, the new one does
    with pytest.raises(Mq9Error, match=r"^agent not found$"):
        await client.agent_unregister("agents.translator")
    await client.agent_unregister("agents.translator.v2")
    assert await client.agent_discover() == [WEATHER]


async def test_upsert_replaces_the_old_card_in_search(client):
    await client.agent_register(TRANSLATOR)
    await client.agent_register({**TRANSLATOR, "description": "Writes poetry"})
    assert await client.agent_discover(text="french") == []
    assert mailboxes(await client.agent_discover(text="poetry")) == ["agents.translator"]
    assert mailboxes(await client.agent_discover(semantic="poetry")) == ["agents.translator"]


@pytest.mark.parametrize(
    "body",
    [b"{}", b'{"name":"x"}', b'{"mailbox":""}', b'{"mailbox":"  "}', b'{"mailbox":5}',
     b'{"mailbox":null}', b""],
)
async def test_register_without_usable_mailbox_exact_text(broker, client, body):
    reply = await broker.raw(p.AGENT_REGISTER, body)
    assert reply["error"] == "agent card must contain a mailbox field"
    assert await client.agent_discover() == []


async def test_client_refuses_card_without_mailbox_with_exact_text(broker, client):
    for card in ({"name": "x"}, {"mailbox": ""}, {"mailbox": 7}):
        with pytest.raises(Mq9Error) as caught:
            await client.agent_register(card)
        assert caught.value.message == "agent card must contain a mailbox field"
    assert len(broker.engine.registry) == 0


# -- UNREGISTER ----------------------------------------------------------------------------------


async def test_unregister_by_mailbox(client):
    await register_all(client, TRANSLATOR, SUMMARIZER)
    await client.agent_unregister("agents.translator")
    assert await client.agent_discover() == [SUMMARIZER]
    with pytest.raises(Mq9Error) as caught:
        await client.agent_unregister("agents.translator")
    assert caught.value.message == "agent not found"


async def test_unregister_by_name_on_the_wire(broker, client):
    await register_all(client, TRANSLATOR, SUMMARIZER)
    assert await broker.raw(p.AGENT_UNREGISTER, b'{"name":"summarizer"}') == {"error": ""}
    assert await client.agent_discover() == [TRANSLATOR]
    reply = await broker.raw(p.AGENT_UNREGISTER, b'{"name":"summarizer"}')
    assert reply["error"] == "agent not found"


async def test_unregister_unknown_is_agent_not_found(client):
    with pytest.raises(Mq9Error, match=r"^agent not found$"):
        await client.agent_unregister("agents.nobody")


# -- REPORT --------------------------------------------------------------------------------------


async def test_report_merges_under_report_with_report_time(broker, client):
    await register_all(client, TRANSLATOR, SUMMARIZER)
    broker.clock.advance(7)
    await client.agent_report({"mailbox": "agents.translator", "status": "busy", "load": 3})
    [entry] = [a for a in await client.agent_discover() if a["mailbox"] == "agents.translator"]
    assert entry == {**TRANSLATOR, "report": {"status": "busy", "load": 3},
                     "report_time": T0 + 7}
    broker.clock.advance(5)
    await client.agent_report({"mailbox": "agents.translator", "load": 5, "queue": []})
    [entry] = [a for a in await client.agent_discover() if a["mailbox"] == "agents.translator"]
    assert entry["report"] == {"status": "busy", "load": 5, "queue": []}
    assert entry["report_time"] == T0 + 12
    # the card itself is untouched, and the other agent has no report
    assert {k: entry[k] for k in TRANSLATOR} == TRANSLATOR
    assert SUMMARIZER in await client.agent_discover()


async def test_report_by_name(broker, client):
    await client.agent_register(WEATHER)
    await client.agent_report({"name": "weather", "status": "idle"})
    [entry] = await client.agent_discover()
    assert entry["report"] == {"status": "idle"}


async def test_report_reply_shape_and_unknown_agent(broker, client):
    await client.agent_register(WEATHER)
    body = b'{"mailbox":"agents.weather","status":"ok"}'
    assert await broker.raw(p.AGENT_REPORT, body) == {"error": ""}
    with pytest.raises(Mq9Error) as caught:
        await client.agent_report({"mailbox": "agents.nobody", "status": "ok"})
    assert caught.value.message == "agent not found"
    reply = await broker.raw(p.AGENT_REPORT, b'{"status":"ok"}')
    assert "mailbox" in reply["error"]


# -- DISCOVER ------------------------------------------------------------------------------------


async def test_discover_without_query_lists_all_in_registration_order(client):
    await register_all(client, WEATHER, TRANSLATOR, SUMMARIZER)
    assert await client.agent_discover() == [WEATHER, TRANSLATOR, SUMMARIZER]
    assert await client.agent_discover(text="") == [WEATHER, TRANSLATOR, SUMMARIZER]


async def test_discover_empty_registry(client):
    assert await client.agent_discover() == []
    assert await client.agent_discover(text="anything") == []
    assert await client.agent_discover(semantic="anything") == []


async def test_discover_text_needs_all_words_case_insensitively(client):
    await register_all(client, TRANSLATOR, SUMMARIZER, WEATHER)
    assert mailboxes(await client.agent_discover(text="FRENCH")) == ["agents.translator"]
    assert mailboxes(await client.agent_discover(text="english french")) == [
        "agents.translator"
    ]
    assert await client.agent_discover(text="french weather") == []
    # any string in the card counts: a nested skill tag, the name, the mailbox
    assert mailboxes(await client.agent_discover(text="Climate")) == ["agents.weather"]
    assert mailboxes(await client.agent_discover(text="summarizer")) == ["agents.summarizer"]
    assert mailboxes(await client.agent_discover(text="agents.weather")) == ["agents.weather"]
    # several matches keep registration order
    assert mailboxes(await client.agent_discover(text="agents")) == [
        "agents.translator", "agents.summarizer", "agents.weather"
    ]


async def test_discover_text_does_not_match_keys_only(client):
    await client.agent_register({"mailbox": "agents.k", "skills": "none"})
    assert await client.agent_discover(text="skills") == []


async def test_discover_semantic_ranks_by_meaning(client):
    await register_all(client, WEATHER, SUMMARIZER, TRANSLATOR)
    found = await client.agent_discover(semantic="I need a translation of this text into French")
    assert found and found[0]["mailbox"] == "agents.translator"
    found = await client.agent_discover(semantic="summary of a long report")
    assert found[0]["mailbox"] == "agents.summarizer"
    found = await client.agent_discover(semantic="will it rain tomorrow? weather forecasts")
    assert found[0]["mailbox"] == "agents.weather"
    # no literal word match needed: "translating" shares its meaning with "translates"
    assert await client.agent_discover(text="translating") == []
    assert mailboxes(await client.agent_discover(semantic="translating"))[:1] == [
        "agents.translator"
    ]


async def test_discover_semantic_wins_over_text(client):
    await register_all(client, WEATHER, TRANSLATOR)
    found = await client.agent_discover(text="weather", semantic="translate french documents")
    assert found[0]["mailbox"] == "agents.translator"
    assert "agents.weather" not in mailboxes(found)


async def test_discover_pagination(client):
    cards = [{"mailbox": f"agents.a{i:02d}", "role": "worker"} for i in range(25)]
    await register_all(client, *cards)
    assert await client.agent_discover() == cards[:20]  # default limit 20, page 1
    assert await client.agent_discover(page=2) == cards[20:]
    assert await client.agent_discover(limit=10, page=3) == cards[20:]
    assert await client.agent_discover(limit=10, page=4) == []
    assert await client.agent_discover(limit=7, page=2) == cards[7:14]
    assert await client.agent_discover(text="worker", limit=5, page=5) == cards[20:]
    pages = [await client.agent_discover(limit=4, page=n) for n in range(1, 8)]
    assert [card for page in pages for card in page] == cards


async def test_discover_reply_shape(broker, client):
    await client.agent_register(TRANSLATOR)
    reply = await broker.raw(p.AGENT_DISCOVER, b'{"text":"french","limit":1,"page":1}')
    assert reply == {"error": "", "agents": [TRANSLATOR]}
    reply = await broker.raw(p.AGENT_DISCOVER, b"")
    assert reply == {"error": "", "agents": [TRANSLATOR]}


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b'{"limit":0}', "limit"),
        (b'{"page":0}', "page"),
        (b'{"limit":"many"}', "limit"),
        (b'{"text":5}', "text"),
        (b'{"semantic":["a"]}', "semantic"),
        (b'{"query":"x"}', "unknown field 'query'"),
    ],
)
async def test_discover_bad_requests_say_what_is_wrong(broker, body, words):
    reply = await broker.raw(p.AGENT_DISCOVER, body)
    assert words in reply["error"]


async def test_discover_answers_never_exceed_max_payload(broker, client):
    """A DISCOVER answer is one NATS reply: an entry too big to travel is refused when it is
    registered or reported, and a page too big asks for a smaller limit."""
    broker.engine.limits = dataclasses.replace(broker.engine.limits, max_payload=2000)
    with pytest.raises(Mq9Error, match="keep large data out of the card"):
        await client.agent_register({"mailbox": "agents.huge", "blob": "x" * 3000})
    cards = [{"mailbox": f"agents.m{i}", "about": "y" * 600} for i in range(5)]
    await register_all(client, *cards)
    with pytest.raises(Mq9Error) as caught:
        await client.agent_discover()
    assert "ask for fewer agents per page" in caught.value.message
    assert await client.agent_discover(limit=2) == cards[:2]
    assert await client.agent_discover(limit=2, page=3) == cards[4:]
    with pytest.raises(Mq9Error, match="keep large data out of the card"):
        await client.agent_report({"mailbox": "agents.m0", "log": "z" * 1500})
    assert await client.agent_discover(limit=1) == cards[:1]  # the refused report left no trace
