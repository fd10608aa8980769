"""The client's re-rank on RobustMQ (issue #39): ``agent_discover(semantic=..., rerank=True)``
and the toolkit's ``discover_rerank`` read the registry's listing and rank it here, with this
process's model and the hybrid ranking, instead of RobustMQ's English-only vector search.

Run against the bundled engine behind the RobustMQ-shaped listener
(testbed/support/robustmq_shaped.py), its registry ranking as RobustMQ's vector-search build does:
all-MiniLM-L6-v2, the cosine alone. The client ranks with the multilingual option."""

from __future__ import annotations

import json

import pytest
from langchain_core.messages import ToolMessage

from langchain_mq9 import Mq9Toolkit
from mq9_broker import BrokerEngine
from mq9_platform import Mq9Client
from mq9_platform.client import client as client_module
from mq9_wire import semantic
from mq9_wire.semantic import multilingual
from testbed.support.robustmq_shaped import RobustMQShapedListener

pytestmark = [
    pytest.mark.skipif(
        not (semantic.installed() and multilingual.installed() and semantic._minilm_installed()),
        reason="needs the semantic and semantic-minilm extras",
    ),
    # (#78) loads both embedding models and serves the RobustMQ-shaped listener in process;
    # its bench runs a set of queries through both rankings
    pytest.mark.slow,
]

CARDS = [
    {"name": n, "mailbox": n, "description": d}
    for n, d in [
        ("agent.tax", "Prepares income tax returns and explains deductions."),
        ("agent.weather", "Forecasts rain, wind and temperature for any city."),
        ("agent.recipes", "Suggests recipes from the ingredients in your fridge."),
    ]
]
QUERIES = {  # in the users' languages; none shares a word with its card
    "Steuererklärung machen": "agent.tax",
    "明天会下雨吗": "agent.weather",
    "que puis-je cuisiner ce soir": "agent.recipes",
}


@pytest.fixture
async def robustmq_url(monkeypatch):
    """A RobustMQ-shaped listener over a registry ranking as RobustMQ's vector search, the
    three cards registered; the client's process chooses the multilingual model."""
    engine = BrokerEngine()
    engine.search_index.ranker.embedder = semantic.minilm_embedder()  # RobustMQ's model ...
    engine.search_index.ranker.hybrid = False  # ... and its ranking: the cosine alone
    monkeypatch.setenv(semantic.MODEL_ENV, semantic.MULTILINGUAL)
    async with RobustMQShapedListener(engine) as listener:
        async with Mq9Client(listener.url) as client:
            for card in CARDS:
                await client.agent_register(card)
        yield listener.url


async def _first(client: Mq9Client, query: str, **options) -> str:
    return (await client.agent_discover(semantic=query, **options))[0]["name"]


async def test_rerank_finds_what_robustmqs_english_search_misses(robustmq_url):
    async with Mq9Client(robustmq_url) as client:
        theirs = {q: await _first(client, q) for q in QUERIES}
        assert theirs != QUERIES  # the broker's English model misses some of them
        found = await client.agent_discover(semantic="Steuererklärung machen", rerank=True)
        assert found.reranked and found.ranked_here and found.ranking == "embeddings"
        assert {q: await _first(client, q, rerank=True) for q in QUERIES} == QUERIES
        # pages as the broker pages: every agent ranked, two to a page
        pages = [
            await client.agent_discover(semantic="Wetter", rerank=True, limit=2, page=n)
            for n in (1, 2, 3)
        ]
        assert [len(page) for page in pages] == [2, 1, 0]
        assert {a["name"] for page in pages for a in page} == {c["name"] for c in CARDS}


async def test_over_the_bound_the_brokers_search_answers_and_says_so(robustmq_url, monkeypatch):
    monkeypatch.setattr(client_module, "RERANK_MAX_AGENTS", 2)
    async with Mq9Client(robustmq_url) as client:
        found = await client.agent_discover(semantic="Steuererklärung machen", rerank=True)
        plain = await client.agent_discover(semantic="Steuererklärung machen")
    assert not found.reranked and not found.ranked_here
    assert "lists 3 agents, over the 2" in found.not_reranked
    assert [a["name"] for a in found] == [a["name"] for a in plain]


async def test_without_a_model_rerank_is_an_error_not_a_lexical_ranking(robustmq_url, monkeypatch):
    monkeypatch.setattr(semantic, "installed", lambda: False)
    async with Mq9Client(robustmq_url) as client:
        with pytest.raises(semantic.ModelError, match="rerank needs an embedding model"):
            await client.agent_discover(semantic="weather", rerank=True)
        assert len(await client.agent_discover(semantic="weather")) == 3  # unchanged without


async def _tool_answer(url: str, **options) -> dict:
    async with Mq9Toolkit(server=url, **options) as kit:
        tool = next(t for t in kit.get_tools() if t.name == "agent_discover")
        message = await tool.ainvoke(
            {
                "name": "agent_discover",
                "args": {"query": "明天会下雨吗"},
                "id": "call",
                "type": "tool_call",
            }
        )
    assert isinstance(message, ToolMessage) and message.status != "error", message
    return json.loads(message.content)


async def test_the_toolkit_option_reranks_and_the_note_says_so(robustmq_url):
    answer = await _tool_answer(robustmq_url, discover_rerank=True)
    assert answer["agents"][0]["name"] == "agent.weather"
    assert "As configured, every registered agent was read and ranked by meaning" in answer["note"]
    plain = await _tool_answer(robustmq_url)
    assert "ranked by" not in (plain.get("note") or "")


async def test_call_agent_by_capability_reranks_as_configured(robustmq_url):
    """call_agent picks the best match for a capability with the toolkit's discovery settings:
    ``discover_rerank`` too (``operations.registry.search_of``)."""
    from mq9_platform.a2a.mail import tasks_capability
    from mq9_platform.operations.calls import _resolve
    from mq9_platform.operations.context import CallContext
    from mq9_platform.operations.policy import ToolPolicy

    async with Mq9Client(robustmq_url) as client:
        serving = {"extensions": [tasks_capability()]}
        for card in CARDS:  # the same agents, now taking tasks
            await client.agent_unregister(card["name"])
            await client.agent_register({**card, "capabilities": serving})
        picked = {}
        for rerank in (False, True):
            ctx = CallContext(client, ToolPolicy(discover_rerank=rerank))
            picked[rerank] = {q: (await _resolve(ctx, q))["name"] for q in QUERIES}
    assert picked[True] == QUERIES
    assert picked[False] != QUERIES  # the broker's English search, as without the option


async def test_the_bench_measures_the_gain_at_a_url(robustmq_url):
    """bench/discovery.py's ``rerank_gain(url, set)``, as the lead runs it on a real RobustMQ
    (``MQ9_ROBUSTMQ_URL``): here on the RobustMQ-shaped listener, over NATS."""
    from bench import discovery

    data = discovery.load_set(discovery.SET_B_FILE)
    gain = await discovery.rerank_gain(robustmq_url, data, wait=5)
    assert gain["rerank"].recall_at_1() > gain["broker"].recall_at_1()
    assert gain["rerank"].recall_at_1("other-language") >= 0.8
    assert len(gain["rerank_s"]) == len(gain["broker_s"]) == len(data["queries"])
    async with Mq9Client(robustmq_url) as client:  # the set's cards are gone again
        assert {a["name"] for a in await client.agent_discover()} == {c["name"] for c in CARDS}
