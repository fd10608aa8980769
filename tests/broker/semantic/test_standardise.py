"""Each model's cosines standardised per query (issue #107, ``AgentIndex.standardise``): the
default pair's two cosines turned into z-scores over the query's candidates before they are
averaged, put back on the plain score's scale. Off by default (it found fewer cards first on
the sets tuned on: docs/discovery.md); here on stand-in models whose cosines are chosen by
hand, so each case says exactly what it does, the degenerate ones included."""

from __future__ import annotations

import json
import math

import pytest

from mq9_broker import BrokerEngine
from mq9_broker.state.registry import AgentRegistry
from mq9_wire import protocol as p
from mq9_wire.semantic import pair
from mq9_wire.semantic.embedding import DIMENSIONS
from mq9_wire.semantic.ranking import AgentEntry, AgentIndex

np = pytest.importorskip("numpy")  # the semantic extra brings it


class Angles:
    """A stand-in model of ``width`` floats: a card (a text holding one of ``cosines``' keys)
    at that cosine from every query, a query (any other text) on the first axis."""

    def __init__(self, width: int, cosines: dict[str, float]) -> None:
        self._width = width
        self._cosines = cosines

    def embed(self, text: str):  # a card, when the model ranks alone
        return self.embed_query(text)

    def embed_query(self, text: str):
        vector = np.zeros(self._width, dtype=np.float32)
        cosine = next((c for key, c in self._cosines.items() if key in text), None)
        if cosine is None:
            vector[0] = 1
        else:
            vector[:2] = cosine, math.sqrt(1 - cosine * cosine)
        return vector


# The multilingual model's cosines spread widely, the English model's narrowly: averaged
# plainly the wide one decides (alpha first); standardised, each counts alike, and the
# English model's clear favourite (bravo) comes first
WIDE = {"alpha": 0.60, "bravo": 0.40, "charlie": 0.20, "delta": 0.40}
NARROW = {"alpha": 0.50, "bravo": 0.53, "charlie": 0.50, "delta": 0.50}


def _pair(wide=WIDE, narrow=NARROW) -> pair.PairEmbedder:
    return pair.PairEmbedder(Angles(512, wide), Angles(DIMENSIONS, narrow), np, name="stand-in")


def _card(name: str, does: str) -> dict:
    return p.agent_card(name, description=f"{does} jobs")


def _index(names: list[str], *, standardise: bool, model=None, **kw) -> AgentRegistry:
    registry = AgentRegistry(embedder=model or _pair(), standardise=standardise, **kw)
    for i, does in enumerate(names):
        card = _card(f"agent.{i}.{does}", does)
        registry.register(AgentEntry.make(card["name"], p.encode(card).decode(), 0))
    return registry


def _order(index: AgentIndex, query: str = "find one for me") -> list[str]:
    return [e.card_name.split(".")[2] for e in index.search_semantic(query)]


def test_standardised_each_model_counts_alike():
    names = list(WIDE)
    assert _order(_index(names, standardise=False)) == ["alpha", "bravo", "delta", "charlie"]
    assert _order(_index(names, standardise=True)) == ["bravo", "alpha", "delta", "charlie"]
    # the same with the word share on: the query holds no card's stem, so nothing is added
    assert _order(_index(names, standardise=True, hybrid=True)) == _order(
        _index(names, standardise=True, hybrid=False)
    )


def test_the_order_is_the_mean_of_the_z_scores_on_the_plain_scale():
    wide, narrow = np.array(list(WIDE.values())), np.array(list(NARROW.values()))
    found = pair.standardised([wide / 2, narrow / 2], np)
    zscores = ((wide - wide.mean()) / wide.std() + (narrow - narrow.mean()) / narrow.std()) / 2
    assert list(np.argsort(-found)) == list(np.argsort(-zscores))
    # on the plain mean's scale: its centre, and the models' mean spread, kept (a word share of
    # HYBRID_WEIGHT still weighs what it weighed against a cosine)
    spread = (wide.std() + narrow.std()) / 2
    assert found == pytest.approx((wide + narrow).mean() / 2 + spread * zscores)


def test_equal_spreads_change_nothing():
    first = np.array([0.1, 0.5, 0.3, 0.7])
    second = np.array([0.6, 0.2, 0.4, 0.0])  # the same spread, another order
    assert pair.standardised([first, second], np) == pytest.approx(first + second)


# -- degenerate cases: nothing to standardise, the plain score exactly ----------------------


@pytest.mark.parametrize(
    "parts",
    [
        [np.array([0.3]), np.array([0.7])],  # one candidate: no spread at all
        [np.full(4, 0.3, dtype=np.float32), np.array([0.1, 0.2, 0.3, 0.4])],  # one flat model
        [np.array([0.1, 0.2, 0.3]), np.zeros(3)],  # the English model not asked
        [],  # no model
    ],
)
def test_a_flat_or_missing_model_leaves_nothing_to_standardise(parts):
    assert pair.standardised(parts, np) is None


def _plain_and_standardised(model: pair.PairEmbedder, cards: list[str], query: str):
    matrix = np.stack([model.embed(f"{does} jobs") for does in cards])
    vector = model.embed_query(query)
    return matrix @ vector, model.standardised(matrix, vector)


@pytest.mark.parametrize(
    ("cards", "query", "narrow"),
    [
        (["alpha"], "find one for me", NARROW),  # one candidate
        (list(WIDE), "find one for me", dict.fromkeys(NARROW, 0.5)),  # the English model flat
        (list(WIDE), "trouve-m'en un, s'il te plaît", NARROW),  # not ASCII: one model asked
    ],
)
def test_the_pair_scores_plainly_where_nothing_can_be_standardised(cards, query, narrow):
    plain, found = _plain_and_standardised(_pair(narrow=narrow), cards, query)
    assert found.dtype == plain.dtype and np.array_equal(found, plain)


def test_a_query_in_another_language_ranks_as_before():
    names = list(WIDE)
    query = "trouve-m'en un, s'il te plaît"  # the multilingual model's cosine alone
    assert _order(_index(names, standardise=True), query) == _order(
        _index(names, standardise=False), query
    )


def test_one_card_and_no_card():
    assert _order(_index(["alpha"], standardise=True)) == ["alpha"]
    assert _index([], standardise=True).search_semantic("find one for me") == []


def test_ties_keep_registration_order():
    """Cards of the same text score exactly alike, standardised too: registration order
    decides, as RobustMQ's and the plain ranking's ties do, search after search."""
    names = ["alpha", "bravo", "charlie", "bravo", "alpha"]
    index = _index(names, standardise=True)
    first = [e.card_name for e in index.search_semantic("find one for me")]
    assert [name.split(".", 1)[1] for name in first] == [
        "1.bravo",
        "3.bravo",
        "0.alpha",
        "4.alpha",
        "2.charlie",
    ]
    assert [e.card_name for e in index.search_semantic("find one for me")] == first


def test_a_model_that_is_not_the_pair_ranks_as_before():
    """One model (multilingual alone, all-MiniLM-L6-v2, a model directory): nothing to
    standardise against, the plain cosine ranks."""
    alone = Angles(512, WIDE)
    for standardise in (True, False):
        index = _index(list(WIDE), standardise=standardise, model=alone)
        assert _order(index) == ["alpha", "bravo", "delta", "charlie"]


def test_off_by_default():
    assert AgentIndex().standardise is False and AgentRegistry().standardise is False


async def test_discover_pages_split_the_standardised_order():
    """A DISCOVER's pages (limit, page: docs/protocol-commands.md §7.4) are slices of one ranking of
    every card, so page 2 goes on where page 1 stopped, standardised or not."""
    engine = BrokerEngine()
    engine.search_index.ranker = AgentRegistry(embedder=_pair(), standardise=True)
    try:
        for i, does in enumerate(["charlie", "alpha", "delta", "bravo"]):
            await engine.handle(p.AGENT_REGISTER, None, p.encode(_card(f"agent.{i}", does)))

        async def discover(**paging) -> list[str]:
            asked = {"semantic": "find one for me", **paging}
            answer = json.loads(await engine.handle(p.AGENT_DISCOVER, None, p.encode(asked)))
            return [a["description"].split()[0] for a in answer["agents"]]

        whole = await discover()
        assert whole == ["bravo", "alpha", "delta", "charlie"]
        assert await discover(limit=2, page=1) + await discover(limit=2, page=2) == whole
    finally:
        await engine.close()
