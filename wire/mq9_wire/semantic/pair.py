"""The default ranking model (issue #65): both models of the ``semantic`` extra at once.

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
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

from .embedding import CACHE_SIZE, DIMENSIONS, Embeds

CHOICE = "multilingual+minilm"  # MQ9_EMBEDDING_MODEL's value that names it
# A card's vector: [multilingual, english] * SCALE, unit length when both halves are
_SCALE = 1 / math.sqrt(2)


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

    def _card(self, text: str) -> Any:
        np = self._np
        halves = [self._multilingual.embed_query(text), self._minilm.embed_query(text)]
        vector = (np.concatenate(halves) * _SCALE).astype(np.float32)
        vector.setflags(write=False)  # shared through the cache
        return vector
