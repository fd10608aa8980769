"""One ranking for the bundled broker and the client (issue #36): the client ranks a broker's
listing (when the broker has no search) with ``semantic.ranking``, as the bundled broker's
registry ranks the same agents, and without importing the broker for it. The property that the
two rank alike with the embedding model: tests/platform/semantic/test_ranking_model.py (slow)."""

from __future__ import annotations

import ast
import random
from pathlib import Path

import pytest

from mq9_wire import protocol as p
from mq9_wire.semantic.ranking import AgentEntry, AgentIndex

ROOT = Path(__file__).resolve().parents[3]
WORDS = ("translates", "japanese", "contracts", "weather", "python", "reviews", "rain")
QUERIES = ("translation of japanese contracts", "will it rain", "review python", "nothing")


def _agent_info(card_name: str | None, description: str) -> str:
    if card_name is None:  # a {name, payload} registration: no card, not searchable
        return description
    return p.encode(p.agent_card(card_name, description=description)).decode()


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
    for path in (ROOT / "platform" / "mq9_platform" / "client").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add((path.name, node.module))
    assert not [(f, m) for f, m in imported if m.endswith("broker.registry")]
    assert ("client.py", "mq9_wire.semantic.ranking") in imported


@pytest.mark.slow  # over a second on a quiet machine (#89)
def test_agents_holding_the_same_words_tie_exactly_and_keep_registration_order():
    """Two cards with the same words in another order score exactly alike, so the first
    registered ranks first, in both rankings (lexical ``semantic`` and the hybrid's coverage).
    The words' sets may iterate in different orders: a plain float sum then differed in its
    last bit for some pairs, and ties fell by that noise. The two cards are named "a" and
    "an": no stem (stopwords), and the words ``a`` and ``an``, which the query leaves out."""
    rng = random.Random(7)
    vocab = [f"w{i}x" for i in range(60)]
    query = " ".join(vocab)
    for _ in range(200):  # a plain sum put about one pair in twenty out of order
        index = AgentIndex(embedder=None)
        for j in range(30):  # other agents, so that the words weigh differently
            held = " ".join(rng.sample(vocab, rng.randint(1, 30)))
            index.put_index(AgentEntry.make(f"o{j}", _agent_info(f"o{j}", held), 0))
        first = rng.sample(vocab, 40)
        second = rng.sample(first, len(first))  # the same words, shuffled
        for name, held in (("a", first), ("an", second)):
            index.put_index(AgentEntry.make(name, _agent_info(name, " ".join(held)), 0))
        for found in (index.search_text(query), index.search_semantic(query)):
            assert [e.card_name for e in found if e.card_name in ("a", "an")] == ["a", "an"]
        shares = index.coverage(query, index.indexed())
        assert shares[len(index.indexed()) - 2] == shares[len(index.indexed()) - 1]
