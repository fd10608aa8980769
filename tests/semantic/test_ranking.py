"""One ranking for the bundled broker and the client (issue #36): the client ranks a broker's
listing (when the broker has no search) with ``semantic.ranking``, as the bundled broker's
registry ranks the same agents, and without importing the broker for it."""

from __future__ import annotations

import ast
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from langchain_mq9 import protocol as p
from langchain_mq9.broker.registry import AgentRegistry
from langchain_mq9.semantic.ranking import AgentEntry, AgentIndex

ROOT = Path(__file__).resolve().parents[2]
WORDS = ("translates", "japanese", "contracts", "weather", "python", "reviews", "rain")
QUERIES = ("translation of japanese contracts", "will it rain", "review python", "nothing")


def _agent_info(card_name: str | None, description: str) -> str:
    if card_name is None:  # a {name, payload} registration: no card, not searchable
        return description
    return p.encode(p.agent_card(card_name, description=description)).decode()


listings = st.lists(
    st.fixed_dictionaries(
        {
            "name": st.sampled_from(["agent.a", "agent.b", "agent.c", "agent.d"]),
            # a card name shared by two registrations: the later card replaces the row
            "card": st.sampled_from([None, "x", "y", "z"]),
            "description": st.lists(st.sampled_from(WORDS), max_size=4).map(" ".join),
        }
    ),
    max_size=8,
)


def _orders(index: AgentIndex) -> dict[str, list[tuple[str, str]]]:
    orders = {"indexed": [(e.name, e.card_name) for e in index.indexed()]}
    for query in QUERIES:
        orders[f"text {query}"] = [(e.name, e.card_name) for e in index.search_text(query)]
        orders[f"semantic {query}"] = [
            (e.name, e.card_name) for e in index.search_semantic(query)
        ]
    return orders


@settings(max_examples=60, deadline=None)
@given(listings)
def test_a_listing_is_ranked_as_the_registry_of_its_agents_ranks(agents):
    items = [
        {"name": a["name"], "agent_info": _agent_info(a["card"], a["description"])}
        for a in agents
    ]
    registry = AgentRegistry()
    for item in items:  # as the bundled broker took the registrations, in order
        registry.register(AgentEntry.make(item["name"], item["agent_info"], 0))
    listed = AgentIndex.of_listing(items)
    assert _orders(listed) == _orders(registry)  # by embeddings, when the extra is here
    listed.embedder = registry.embedder = None
    assert _orders(listed) == _orders(registry)  # and lexically


def test_a_listing_keeps_the_first_of_a_name_and_cards_only():
    items = [
        {"name": "agent.a", "agent_info": _agent_info("x", "translates japanese")},
        {"name": "agent.a", "agent_info": _agent_info("y", "forecasts weather")},  # taken
        {"name": "agent.b", "agent_info": "no card"},
        {"name": "agent.c", "agent_info": 7},  # not a string: as an empty agent_info
    ]
    index = AgentIndex.of_listing(items)
    assert [(e.name, e.card_name) for e in index.indexed()] == [("agent.a", "x")]


def test_the_client_ranks_without_the_broker():
    """The client's fallback ranking is semantic.ranking, not the bundled broker's registry
    (which the client once built to rank a listing)."""
    imported = set()
    for path in (ROOT / "langchain_mq9" / "client").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add((path.name, node.module))
    assert not [(f, m) for f, m in imported if m.endswith("broker.registry")]
    assert ("client.py", "semantic.ranking") in imported
