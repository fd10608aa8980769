"""The default ranking model: both models of the ``semantic`` extra at once.

A card is embedded by the multilingual model (``multilingual``: Universal Sentence Encoder
multilingual v3) and by the English one (all-MiniLM-L6-v2, RobustMQ's model), and its vector
is the two side by side, scaled to unit length. A query's vector is made so that its dot
product with a card's is the **mean of the two models' cosines** when the query is written in
ASCII characters only (English, as far as a query can say so without a language detector),
and the multilingual model's cosine alone otherwise (an accent, a CJK or Cyrillic character:
the English model reads such text as noise). So ``ranking`` scores it as it scores one model,
a cosine-like number in [-1, 1] that the hybrid ranking adds its word share to.

Why both: on the sets tuned on, the English model understands English paraphrase and jargon
that the multilingual one misses, and the multilingual one finds the other languages;
docs/discovery.md ("The default model") gives the figures and what the pair costs.

``PairEmbedder.standardised`` (off unless ``AgentIndex.standardise`` asks for it)
scores a query with each model's cosines standardised over the query's candidates first; on
the sets tuned on it found fewer cards first than the plain mean (docs/discovery.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from .embedding import CACHE_SIZE, DIMENSIONS, Embeds

CHOICE = "multilingual+minilm"  # MQ9_EMBEDDING_MODEL's value that names it
# A card's vector: [multilingual, english] * SCALE, unit length when both halves are
_SCALE = 1 / math.sqrt(2)
# A model whose cosines over a query's candidates spread less than this has no order of its
# own to standardise (one candidate, cards it reads alike): float32 cosines of equal vectors
# still differ in their last bits once averaged, so not 0
FLAT = 1e-6


def english(query: str) -> bool:
    """Whether the English model reads ``query`` too: only ASCII characters in it."""
    return query.isascii()


class PairEmbedder:
    """The two models as one ``embedding.Embeds``: card vectors of both, unit length, cached
    by text as ``embedding.Embedder`` caches them; a query's dot product with a card's is the
    score described in the module docstring."""

    def __init__(self, multilingual: Embeds, minilm: Embeds, numpy: Any, *, name: str) -> None:
        self._multilingual = multilingual
        self._minilm = minilm
        self._np = numpy
        self.name = name
        # the halves are not cached by the models (embed_query): a card is held once, here
        self._cached = lru_cache(maxsize=CACHE_SIZE)(self._card)

    def embed(self, text: str) -> Any:
        return self._cached(text)

    def embed_query(self, text: str) -> Any:
        np = self._np
        first = self._multilingual.embed_query(text)
        if english(text):
            # (cos_m + cos_e) / 2 against a card's [m, e] / sqrt(2)
            second = self._minilm.embed_query(text)
            vector = np.concatenate([first, second]) * _SCALE
        else:
            # cos_m alone: the English half zero, the other scaled back up
            vector = np.concatenate([first, np.zeros(DIMENSIONS, first.dtype)]) / _SCALE
        vector = vector.astype(np.float32)
        vector.setflags(write=False)
        return vector

    def standardised(self, matrix: Any, vector: Any) -> Any:
        """Each card's score (a row of ``matrix``, the cards' vectors stacked) against the
        query's ``vector``, with each model's cosines standardised over these cards
        (``standardised``); ``matrix @ vector``, the plain score, where that cannot be: a query
        the English model was not asked for (its half of ``vector`` zero), or a flat model."""
        plain = matrix @ vector
        cut = matrix.shape[1] - DIMENSIONS  # the multilingual half, then the English one
        if not vector[cut:].any():
            return plain
        parts = [matrix[:, :cut] @ vector[:cut], matrix[:, cut:] @ vector[cut:]]
        found = standardised(parts, self._np)
        return plain if found is None else found.astype(plain.dtype)

    def _card(self, text: str) -> Any:
        np = self._np
        halves = [self._multilingual.embed_query(text), self._minilm.embed_query(text)]
        vector = (np.concatenate(halves) * _SCALE).astype(np.float32)
        vector.setflags(write=False)  # shared through the cache
        return vector


def standardised(parts: Sequence[Any], numpy: Any) -> Any | None:
    """The sum of ``parts`` (each model's share of a query's score, over its candidates) with
    each part standardised first: its z-score over the candidates, scaled back to
    the parts' mean spread (their standard deviations), its mean kept. So the score stays on the
    plain sum's scale, a cosine-like number the hybrid ranking adds its word share to as before
    (with equal spreads it is that sum), and orders the cards as the mean of the models'
    z-scores does: a model whose cosines spread more no longer outweighs the other. None when a
    part is flat (spread at most ``FLAT``: it has no order to weigh)."""
    wide = [numpy.asarray(part, dtype=numpy.float64) for part in parts]
    spreads = [float(part.std()) for part in wide]
    if not wide or min(spreads) <= FLAT:
        return None
    spread = sum(spreads) / len(spreads)
    means = [float(part.mean()) for part in wide]
    moved = [
        (part - mean) * (spread / own) for part, mean, own in zip(wide, means, spreads, strict=True)
    ]
    return sum(means) + sum(moved)
