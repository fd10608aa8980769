"""Target 10: agent discovery by meaning (issue #25).

Retrieval quality on the labeled set ``tests/data/discovery_set.json`` (50 A2A cards, 150
queries: keywords, paraphrases that share no word stem with their card, and the skill's name
in another language): recall@1 and mean reciprocal rank of the embeddings ranking (the
``semantic`` extra: all-MiniLM-L6-v2, as RobustMQ's vector-search build) against the lexical
one it replaces when the extra is absent. And what embeddings cost: CPU to register a card
(embedded once, at REGISTER) and a ``semantic`` DISCOVER over 10,000 agents.

``tests/test_discovery_set.py`` asserts the quality targets; this module is shared by both.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_mq9 import protocol as p
from langchain_mq9 import semantic
from langchain_mq9.broker.registry import AgentEntry, AgentRegistry

SET_FILE = Path(__file__).resolve().parent.parent / "tests" / "data" / "discovery_set.json"
KINDS = ("keywords", "paraphrase", "other-language")
RECALL_TARGET = 0.85  # embeddings recall@1 over the whole set
LEXICAL_FACTOR = 1.3  # ... and at least this many times the lexical recall@1
REGISTER_CPU_LIMIT = 0.020  # seconds of CPU to register one card


def load_set() -> dict[str, Any]:
    return json.loads(SET_FILE.read_text(encoding="utf-8"))


def card_of(spec: dict[str, Any]) -> dict[str, Any]:
    """The A2A card a set entry describes, as our client registers it (mailbox included)."""
    mailbox = spec["name"].replace("-", ".") + ".inbox"
    return p.agent_card(
        spec["name"], mailbox=mailbox, description=spec["description"], skills=spec["skills"]
    )


def registry_of(cards: list[dict[str, Any]], embedder: Any) -> AgentRegistry:
    """A registry holding ``cards``, ranking with ``embedder`` (None: lexically)."""
    registry = AgentRegistry(embedder=embedder)
    for card in cards:
        registry.register(AgentEntry.make(card["name"], p.encode(card).decode(), 0))
    return registry


@dataclass
class Scores:
    """recall@1 and MRR, over all queries and by kind."""

    ranks: dict[str, list[int]] = field(default_factory=dict)  # kind -> rank of the answer

    def add(self, kind: str, rank: int) -> None:
        self.ranks.setdefault(kind, []).append(rank)

    def _all(self, kind: str | None) -> list[int]:
        if kind is None:
            return [r for ranks in self.ranks.values() for r in ranks]
        return self.ranks.get(kind, [])

    def recall_at_1(self, kind: str | None = None) -> float:
        ranks = self._all(kind)
        return sum(r == 1 for r in ranks) / len(ranks)

    def mrr(self, kind: str | None = None) -> float:
        ranks = self._all(kind)
        return sum(1 / r for r in ranks) / len(ranks)

    def misses(self) -> int:
        return sum(r != 1 for r in self._all(None))


def evaluate(rank: Callable[[str], list[str]], queries: list[dict[str, Any]]) -> Scores:
    """Score a ranking function (query -> card names, best first) on the labeled queries."""
    scores = Scores()
    for query in queries:
        names = rank(query["query"])
        rank_of = names.index(query["expect"]) + 1 if query["expect"] in names else len(names) + 1
        scores.add(query["kind"], rank_of)
    return scores


def score_registry(registry: AgentRegistry, queries: list[dict[str, Any]]) -> Scores:
    return evaluate(lambda q: [e.card_name for e in registry.search_semantic(q)], queries)


def both_rankings() -> tuple[Scores, Scores | None]:
    """(lexical, embeddings) scores on the set; embeddings None without the extra."""
    data = load_set()
    cards = [card_of(spec) for spec in data["cards"]]
    lexical = score_registry(registry_of(cards, None), data["queries"])
    embedder = semantic.embedder()
    if embedder is None:
        return lexical, None
    return lexical, score_registry(registry_of(cards, embedder), data["queries"])


# -- cost ------------------------------------------------------------------------------------


def register_cpu(cards: list[dict[str, Any]], embedder: Any, rounds: int) -> list[float]:
    """CPU seconds of registering each card in a fresh registry (its embedding made, not
    taken from a cache: each round embeds a text never seen before)."""
    times = []
    for r in range(rounds):
        for card in cards:
            fresh = {**card, "description": f"{card.get('description', '')} (#{r})"}
            registry = AgentRegistry(embedder=embedder)
            entry = AgentEntry.make(fresh["name"], p.encode(fresh).decode(), 0)
            started = time.process_time()
            registry.register(entry)
            times.append(time.process_time() - started)
    return times


def median_tokens(cards: list[dict[str, Any]]) -> int:
    from langchain_mq9.broker.registry import embed_text_of
    from langchain_mq9.semantic import wordpiece

    return int(statistics.median(len(wordpiece.encode(embed_text_of(c))) for c in cards))


def synthetic_cards(count: int, seed: int = 7) -> list[dict[str, Any]]:
    """Distinct cards for the 10,000-agent DISCOVER (bench/broker_scaling.py's generator)."""
    from .broker_scaling import agent_card

    rng = random.Random(seed)
    return [agent_card(i, rng) for i in range(count)]
