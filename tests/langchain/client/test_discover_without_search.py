"""Discovery on a broker without agent search: RobustMQ's default build (issue #20, point 6).

RobustMQ 8bd49dc built without its vector-search feature answers DISCOVER with ``text`` or
``semantic`` with an error, and only the listing works; ``mq9-dev-broker --no-search`` (an
engine with ``search=False``) answers the same. The client then ranks the listing itself, as
the bundled broker ranks, and pages it.
"""

from __future__ import annotations

import json
import uuid

import nats
import pytest

from langchain_mq9 import Mq9Toolkit
from mq9_broker import (
    BrokerEngine,
    drop_memory_broker,
    install_memory_broker,
    serve_on_nats,
)
from mq9_platform import Mq9Client
from mq9_wire import protocol as p
from testbed.support.devbroker_helpers import DevBroker

CARDS = [
    ("agent.translator", "Translates documents between Japanese and English"),
    ("agent.summarizer", "Summarizes long reports into short briefs"),
    ("agent.coder", "Writes and reviews Python code"),
    ("agent.reviewer", "Reviews legal contracts and summarizes their risks"),
    ("agent.weather", "Forecasts the weather for a city"),
]
QUERIES = [
    {"semantic": "translate a Japanese document"},
    {"text": "long reports"},
    {"semantic": "review my code"},
    {"text": "weather city"},
]


async def register_all(url: str) -> None:
    async with Mq9Client(url) as client:
        for name, description in CARDS:
            await client.agent_register({"name": name, "mailbox": name, "description": description})


@pytest.fixture(params=["memory", pytest.param("nats", marks=pytest.mark.slow)])
async def two_brokers(request):
    """Client URLs of two brokers holding the same agents: one with search (in-process), and
    one without (in-process, or served on a real nats-server)."""
    searching = f"search{uuid.uuid4().hex}"
    install_memory_broker(searching, BrokerEngine())
    without = BrokerEngine(search=False)
    if request.param == "memory":
        name = f"nosearch{uuid.uuid4().hex}"
        install_memory_broker(name, without)
        url = f"memory://{name}"
    else:
        url = request.getfixturevalue("nats_server").url
        connection = await nats.connect(url)
        service = await serve_on_nats(without, connection)
    try:
        for each in (f"memory://{searching}", url):
            await register_all(each)
        yield f"memory://{searching}", url
    finally:
        drop_memory_broker(searching)
        if request.param == "memory":
            drop_memory_broker(name)
        else:
            await service.stop()
            await connection.close()


async def test_without_search_the_broker_answers_as_robustmqs_default_build():
    engine = BrokerEngine(search=False)
    for query in ({"text": "x"}, {"semantic": "x"}):
        reply = json.loads(await engine.handle(p.AGENT_DISCOVER, None, p.encode(query)))
        assert reply == {"error": p.ERR_SEARCH_NOT_BUILT}
    listing = json.loads(await engine.handle(p.AGENT_DISCOVER, None, b"{}"))
    assert listing == {"error": "", "agents": []}


@pytest.mark.parametrize("query", QUERIES)
async def test_the_client_ranks_the_listing_as_the_bundled_broker_searches(two_brokers, query):
    with_search, without = two_brokers
    async with Mq9Client(with_search) as a, Mq9Client(without) as b:
        searched = await a.agent_discover(**query)
        ranked = await b.agent_discover(**query)
    assert not searched.ranked_here and ranked.ranked_here
    # The same agents, the same best match (ties may fall otherwise: the listing comes by
    # name, the broker's index in registration order), each with its mailbox.
    assert {x["name"] for x in ranked} == {x["name"] for x in searched}
    assert ranked[0]["name"] == searched[0]["name"]
    assert all(x["mailbox"] == x["name"] for x in ranked)


async def test_pages_of_the_ranking_cut_nothing(two_brokers):
    _, without = two_brokers
    async with Mq9Client(without) as client:
        whole = [a["name"] for a in await client.agent_discover(semantic="reports", limit=100)]
        pages = []
        for page in (1, 2, 3):
            found = await client.agent_discover(semantic="reports", limit=2, page=page)
            pages += [a["name"] for a in found]
    assert len(whole) == len(CARDS)
    assert pages == whole


async def test_the_tool_finds_the_agent_and_says_how(two_brokers):
    _, without = two_brokers
    async with Mq9Toolkit(server=without) as kit:
        tool = next(t for t in kit.get_tools() if t.name == "agent_discover")
        message = await tool.ainvoke(
            {"name": tool.name, "args": {"query": "Japanese"}, "id": "1", "type": "tool_call"}
        )
    result = json.loads(message.content)
    assert result["agents"][0]["name"] == "agent.translator"
    assert "no agent search" in result["note"]


async def test_a_search_table_not_yet_made_is_no_agents():
    """A vector-search RobustMQ before its first A2A card answers that its table is missing."""

    class FreshVectorBuild(BrokerEngine):
        async def _discover(self, target: str, headers, body: bytes) -> bytes:
            if json.loads(body or b"{}").get("semantic"):
                raise p.Mq9Error(
                    "Grpc call of the node failed,Grpc status was code: 'Internal error', "
                    f'message: "{p.SEARCH_TABLE_MISSING}"'
                )
            return await super()._discover(target, headers, body)

    name = f"fresh{uuid.uuid4().hex}"
    install_memory_broker(name, FreshVectorBuild())
    try:
        async with Mq9Client(f"memory://{name}") as client:
            assert await client.agent_discover(semantic="anyone") == []
            with pytest.raises(p.Mq9Error, match="invalid"):  # other errors still raise
                await client.agent_discover(text="x", limit=0)
    finally:
        drop_memory_broker(name)


@pytest.mark.slow
async def test_dev_broker_no_search_flag():
    with DevBroker("--port", "0", "--no-search") as broker:
        assert "agent search: off (--no-search)" in "\n".join(broker.stdout)
        async with Mq9Client(broker.url) as client:
            await client.agent_register({"name": "agent.a", "description": "translates text"})
            with pytest.raises(p.Mq9Error) as refused:
                await client._call(p.AGENT_DISCOVER, p.encode({"text": "translates"}))
            assert refused.value.detail == p.ERR_SEARCH_NOT_BUILT  # the broker's own words
            found = await client.agent_discover(text="translates")
            assert [a["name"] for a in found] == ["agent.a"] and found.ranked_here
        assert broker.stop() == 0
