"""The client's ranking of a listing and the bundled broker's registry rank alike (issue #36),
with the embedding model the registry loads: slow (#78: it loads and runs the model, 60 examples
of up to 8 cards and 4 queries each; tests/platform/semantic/test_ranking.py holds the rest)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mq9_broker.state.registry import AgentRegistry
from mq9_wire.semantic.ranking import AgentEntry, AgentIndex
from tests.platform.semantic.test_ranking import QUERIES, WORDS, _agent_info

pytestmark = pytest.mark.slow  # loads the embedding model and embeds every card and query


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
        orders[f"semantic {query}"] = [(e.name, e.card_name) for e in index.search_semantic(query)]
    return orders


@settings(max_examples=60, deadline=None)
@given(listings)
def test_a_listing_is_ranked_as_the_registry_of_its_agents_ranks(agents):
    items = [
        {"name": a["name"], "agent_info": _agent_info(a["card"], a["description"])} for a in agents
    ]
    registry = AgentRegistry()
    for item in items:  # as the bundled broker took the registrations, in order
        registry.register(AgentEntry.make(item["name"], item["agent_info"], 0))
    listed = AgentIndex.of_listing(items)
    assert _orders(listed) == _orders(registry)  # by embeddings, when the extra is here
    listed.embedder = registry.embedder = None
    assert _orders(listed) == _orders(registry)  # and lexically
