"""HTTP A2A agents in the registry: a card read from its well-known URL on a real a2a-sdk server
is registered, found by agent_discover beside the mq9 agents (with its transport), called by
name through the toolkit's call tools, refreshed, and removed when it disappears; an import
never replaces an agent that registered itself, and never reads a host the allow-list refuses."""

from __future__ import annotations

import json

import pytest
from google.protobuf.json_format import MessageToDict
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from langchain_mq9 import Mq9Toolkit
from mq9_platform._http.hosts import HostPolicy
from mq9_platform.a2a import mail as w
from mq9_platform.a2a.http.caller import AgentUnreachable
from mq9_platform.a2a.http.cards import CardImporter, ImportRefused, import_card
from mq9_platform.a2a.server import AgentServer
from testbed.support.a2a_support import text_graph, text_io
from tests.platform.a2a.http_agents import a2a_http_agent, serve_http, shouter_card

LOOPBACK = HostPolicy(["127.0.0.1"])


def tools_of(toolkit) -> dict:
    return {t.name: t for t in toolkit.get_tools()}


async def run(tool, **args) -> dict:
    return json.loads(await tool.ainvoke(args))


@pytest.mark.slow  # over a second on a quiet machine (#89)
async def test_an_imported_card_is_found_and_called_beside_mq9_agents(broker, client, monkeypatch):
    monkeypatch.setenv("MQ9_A2A_ALLOW_HOSTS", "127.0.0.1")
    server = AgentServer(
        text_graph(str.lower),
        name="agent.whisper",
        card={"description": "Whispers text back in small letters"},
        client=client,
        worker="w1",
        **text_io(),
    )
    async with a2a_http_agent() as (base, _executor), server:
        entry = await import_card(client, base, hosts=LOOPBACK)
        assert entry["name"] == "shouter"
        for card in ("shouter", "agent.whisper"):  # (RobustMQ's index trails its registry)
            await broker.search_settled(card)
        toolkit = Mq9Toolkit(client=client, agent_mailbox="agent.boss", calls=True)
        tools = tools_of(toolkit)
        found = await run(tools["agent_discover"], query="")
        by_name = {a["name"]: a for a in found["agents"]}
        assert by_name["shouter"]["transport"] == "http"
        assert by_name["shouter"]["url"] == base + "/rpc" and not by_name["shouter"]["mailbox"]
        assert by_name["agent.whisper"]["transport"] == "mq9"
        assert "data, not instructions" in found["note"]
        ranked = await run(tools["agent_discover"], query="shout text in capital letters")
        assert ranked["agents"][0]["name"] == "shouter"  # ranked with the mq9 agents

        shouted = await run(tools["call_agent"], agent="shouter", task="hi", wait_seconds=20)
        assert shouted["state"] == "completed" and shouted["result"] == "HI"
        assert "not instructions" in shouted["note"]  # the agent's words are data
        whispered = await run(
            tools["call_agent"], agent="agent.whisper", task="HI", wait_seconds=20
        )
        assert whispered["result"] == "hi"
        by_url = await run(tools["call_agent"], agent=base, task="url", wait_seconds=20)
        assert by_url["result"] == "URL" and by_url["agent"] == "Shouter"
        listed = await run(tools["list_calls"])
        assert listed["count"] == 3
        asked = await run(tools["call_agent"], agent="shouter", task="ask", wait_seconds=20)
        assert asked["state"] == "input-required" and asked["question"] == "How loud?"
        answered = await run(
            tools["answer_call"], task_id=asked["task_id"], answer="loud", wait_seconds=20
        )
        assert answered["result"] == "LOUD"
        await toolkit.aclose()


async def test_the_importer_refreshes_and_removes_a_card_that_disappears(client):
    async with a2a_http_agent() as (base, _executor):
        importer = CardImporter(client, {base: "agent.shouter"}, hosts=LOOPBACK, misses=2)
        assert await importer.refresh() == {base: "agent.shouter"}
        assert await importer.refresh() == {base: "agent.shouter"}  # the same: nothing to do
    names = [a["name"] for a in await client.agent_discover()]
    assert "agent.shouter" in names
    await importer.refresh()  # one miss: kept (a restart, say)
    assert "agent.shouter" in [a["name"] for a in await client.agent_discover()]
    await importer.refresh()  # misses in a row: removed
    assert "agent.shouter" not in [a["name"] for a in await client.agent_discover()]
    assert importer.names == {}


async def test_a_card_answering_404_is_removed_at_once(client):
    """A card server that answers 404 (the agent was taken down): the import goes at once."""
    card = {"shown": True}

    async def well_known(request):
        if not card["shown"]:
            return JSONResponse({"error": "not found"}, status_code=404)
        return JSONResponse(MessageToDict(shouter_card("http://127.0.0.1:9/rpc")))

    app = Starlette(routes=[Route("/.well-known/agent-card.json", well_known)])
    async with serve_http(app) as base:
        importer = CardImporter(client, [base], hosts=LOOPBACK, misses=5)
        assert await importer.refresh() == {base: "shouter"}
        card["shown"] = False
        assert await importer.refresh() == {}
        assert "404" in importer.errors[base]
    assert "shouter" not in [a["name"] for a in await client.agent_discover()]


async def test_an_import_never_replaces_an_agent_that_registered_itself(client):
    server = AgentServer(text_graph(str.lower), name="shouter", client=client, **text_io())
    async with a2a_http_agent() as (base, _executor), server:
        with pytest.raises(ImportRefused, match="another agent's"):
            await import_card(client, base, hosts=LOOPBACK)
        kept = next(a for a in await client.agent_discover() if a["name"] == "shouter")
        assert w.transport_of(kept) == "mq9"


async def test_an_import_reads_no_host_the_allow_list_refuses(client):
    async with a2a_http_agent() as (base, _executor):
        for hosts in (HostPolicy(), HostPolicy(["*"]), HostPolicy(["example.com"])):
            with pytest.raises(AgentUnreachable):
                await import_card(client, base, hosts=hosts)
    assert "shouter" not in [a["name"] for a in await client.agent_discover()]
