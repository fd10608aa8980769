"""Against LangGraph's Agent Server (a real ``langgraph dev --no-browser``,
testbed/support/agent_server.py): an mq9 toolkit agent calls a LangGraph assistant by its A2A
card (``/a2a/{assistant_id}``, A2A 1.0 JSON-RPC), waiting and coming back later; its card is
imported into the registry and found by agent_discover beside the mq9 agents."""

from __future__ import annotations

import asyncio
import json

import pytest

from langchain_mq9 import Mq9Toolkit
from mq9_platform._http.hosts import HostPolicy
from mq9_platform.a2a import mail as w
from mq9_platform.a2a.caller import AgentCaller
from mq9_platform.a2a.http.caller import fetch_card
from mq9_platform.a2a.http.cards import import_card
from testbed.support.agent_server import ECHO_GRAPH, AgentServer, langgraph_command

# slow: LangGraph imported and an assistant served, 1.7 to 6.7 s a test on a quiet machine
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(langgraph_command() is None, reason="langgraph-cli not installed"),
]

LOOPBACK = HostPolicy(["127.0.0.1"])
# The echo graph, 2 s slower: a call that does not wait returns before it is done.
SLOW_GRAPH = ECHO_GRAPH.replace(
    "def answer(state: State) -> dict[str, Any]:",
    "def answer(state: State) -> dict[str, Any]:\n    import time\n\n    time.sleep(2)",
)


@pytest.fixture(scope="module")
def langgraph_server(tmp_path_factory):
    graphs = {"echo": ECHO_GRAPH, "slow": SLOW_GRAPH}
    server = AgentServer(tmp_path_factory.mktemp("langgraph"), graphs=graphs)
    server.start()
    yield server
    server.stop()


def card_url(server, graph: str = "echo") -> str:
    return f"{server.url}/.well-known/agent-card.json?assistant_id={server.assistant_ids[graph]}"


@pytest.mark.parametrize("broker", ["memory"], indirect=True)
async def test_an_mq9_caller_calls_a_langgraph_assistant_by_its_card(client, langgraph_server):
    card = await fetch_card(card_url(langgraph_server), LOOPBACK)
    assert w.http_interface(card)["url"].endswith("/a2a/" + langgraph_server.assistant_ids["echo"])
    caller = AgentCaller(client, "agent.me.calls", hosts=LOOPBACK)
    done = await caller.call_http(card, "hello from mq9", wait=60)
    assert done.state == w.COMPLETED, done.view().get("reason")
    assert "hello from mq9" in done.view()["result"]

    # wait=0 on a graph still running: back with the task's id from the stream's first event
    # (LangGraph holds a SendMessage until done, returnImmediately or not)
    slow = await fetch_card(card_url(langgraph_server, "slow"), LOOPBACK)
    later = await caller.call_http(slow, "come back later")
    assert later.state in (w.SUBMITTED, w.WORKING), later.view()
    picked = await caller.check(later.task_id, wait=60)
    assert picked.state == w.COMPLETED and "come back later" in picked.view()["result"]


@pytest.mark.parametrize("broker", ["memory"], indirect=True)
async def test_a_langgraph_card_is_imported_found_and_called_by_name(
    client, langgraph_server, monkeypatch
):
    monkeypatch.setenv("MQ9_A2A_ALLOW_HOSTS", "127.0.0.1")
    entry = await import_card(client, card_url(langgraph_server), hosts=LOOPBACK)
    assert entry["name"] == "echo"
    toolkit = Mq9Toolkit(client=client, agent_mailbox="agent.boss", calls=True)
    tools = {t.name: t for t in toolkit.get_tools()}
    found = json.loads(await tools["agent_discover"].ainvoke({"query": ""}))
    echo = next(a for a in found["agents"] if a["name"] == "echo")
    assert echo["transport"] == "http"
    answer = json.loads(
        await tools["call_agent"].ainvoke({"agent": "echo", "task": "ping", "wait_seconds": 60})
    )
    assert answer["state"] == "completed" and "ping" in answer["result"], answer
    await toolkit.aclose()
    await asyncio.sleep(0)
