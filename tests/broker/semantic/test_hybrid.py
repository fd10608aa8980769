"""Hybrid ranking (issues #39, #65): with embeddings, a card's cosine similarity plus
``HYBRID_WEIGHT`` times the share of the query's stem weight it holds. Here on
vectors chosen by hand (no model needed), so each case says exactly what the fusion does."""

from __future__ import annotations

import math

import pytest

from mq9_broker.state.registry import AgentRegistry
from mq9_wire import protocol as p
from mq9_wire.semantic.ranking import HYBRID_WEIGHT, AgentEntry, AgentIndex

np = pytest.importorskip("numpy")  # the semantic extra brings it; the lexical path needs none


class Angles:
    """Card vectors at chosen angles from the query's (one axis each), so each cosine is
    what the test says it is."""

    def __init__(self, cosines: dict[str, float]) -> None:
        self._cosines = cosines  # card description -> its cosine with every query

    def embed(self, text: str):
        cosine = next(c for d, c in self._cosines.items() if d in text)
        return np.array([cosine, math.sqrt(1 - cosine * cosine)], dtype=np.float32)

    def embed_query(self, text: str):
        return np.array([1.0, 0.0], dtype=np.float32)


def _registry(cosines: dict[str, float], **kw) -> AgentRegistry:
    registry = AgentRegistry(embedder=Angles(cosines), **kw)
    for i, description in enumerate(cosines):
        card = p.agent_card(f"agent.{i}", description=description)
        registry.register(AgentEntry.make(f"agent.{i}", p.encode(card).decode(), 0))
    return registry


def _names(index: AgentIndex, query: str) -> list[str]:
    return [e.card_name for e in index.search_semantic(query)]


CARDS = {
    "renews tls certificates": 0.60,
    "issues purchase orders": 0.62,  # a little nearer by meaning
    "books concert tickets": 0.30,
}


def test_a_card_holding_every_query_word_wins_a_near_tie():
    hybrid = _registry(CARDS)
    assert _names(hybrid, "tls certificates") == ["agent.0", "agent.1", "agent.2"]
    cosine_only = _registry(CARDS, hybrid=False)  # as RobustMQ's vector search ranks
    assert _names(cosine_only, "tls certificates") == ["agent.1", "agent.0", "agent.2"]


def test_a_word_shared_by_chance_moves_a_card_little():
    # "orders" is one of four query stems, the others held by no card: the card holding it
    # gains its share (about a fifth) times the weight, under a tenth of a cosine
    cards = {"sorts parcels by size": 0.70, "issues purchase orders": 0.60}
    assert _names(_registry(cards), "place my lunch orders quickly") == ["agent.0", "agent.1"]


def test_coverage_is_the_share_of_the_query_weight_a_card_holds():
    registry = _registry(CARDS)
    indexed = registry.indexed()
    shares = registry.coverage("tls certificates", indexed)
    assert shares == {0: pytest.approx(1.0)}
    # a stem no card holds counts against every card, at the weight of the rarest
    half = registry.coverage("tls zebras", indexed)
    assert 0.4 < half[0] < 0.6 and set(half) == {0}
    assert registry.coverage("的证书", indexed) == {}  # no stem at all: the cosine alone
    assert _names(registry, "证书") == ["agent.1", "agent.0", "agent.2"]


def test_a_full_match_adds_the_weight_and_no_more():
    # a card held by every query word passes a card up to HYBRID_WEIGHT nearer, not further
    near = {"renews tls certificates": 0.60, "issues purchase orders": 0.60 + HYBRID_WEIGHT * 0.9}
    far = {"renews tls certificates": 0.60, "issues purchase orders": 0.60 + HYBRID_WEIGHT * 1.1}
    assert _names(_registry(near), "tls certificates")[0] == "agent.0"
    assert _names(_registry(far), "tls certificates")[0] == "agent.1"


def test_without_a_model_the_lexical_ranking_is_unchanged():
    """The default build (no semantic extra): ``hybrid`` changes nothing."""
    orders = []
    for hybrid in (True, False):
        registry = _registry(CARDS, hybrid=hybrid)
        registry.embedder = None
        orders.append([_names(registry, q) for q in ("tls", "purchase tickets", "nothing")])
    assert orders[0] == orders[1]
    assert orders[0][0][0] == "agent.0"
