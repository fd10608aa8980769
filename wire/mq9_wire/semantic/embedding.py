"""The embedder core both models share: an ONNX session turned into unit vectors.

The semantic extra's model (``mq9_wire.semantic``) and the operator's model directory
(``model_dir``) each bring their tokenizer and pooling; what runs them is here, so neither
module imports the other.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any, Protocol

from ..protocol.errors import Mq9Error

# RobustMQ's agent index holds this many floats per agent (all-MiniLM-L6-v2's width)
DIMENSIONS = 384
# Vectors kept per embedder, by text: enough for a registry at the bundled broker's limit of
# 10,000 agents plus queries (1.5 KiB each, about 16 MiB when full).
CACHE_SIZE = 10_240


class ModelError(Mq9Error, RuntimeError):
    """Embeddings were asked for but cannot be had: the semantic extra's model is not the
    pinned file, or the model directory chosen cannot be used (not a missing extra). An
    ``Mq9Error``: a search that needs the model fails with it, in words (a broker answers it,
    a tool says it), never as a crash."""


class Embeds(Protocol):
    """What ranks ``semantic`` searches by meaning: an ``Embedder``, the multilingual
    option's ``UseEmbedder``, or a test's stand-in. Vectors are unit-length numpy arrays."""

    def embed(self, text: str) -> Any: ...

    def embed_query(self, text: str) -> Any: ...


class Embedder:
    """A sentence model on onnxruntime: ``embed(text)`` is a unit vector of float32.

    ``encode`` gives a text's token ids, ``pool`` turns the session's first output into one
    vector. Vectors are cached by text (least recently used go first), so a card is embedded
    once however often a client ranks a listing that holds it."""

    def __init__(
        self,
        session: Any,  # an onnxruntime.InferenceSession (onnxruntime ships no types)
        numpy: Any,  # the numpy module, imported by whoever found the model
        *,
        name: str,
        encode: Callable[[str], list[int]],
        pool: Callable[[Any], Any],
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
    """An inference session for the ONNX model ``data`` (``onnxruntime``: the module)."""
    options = onnxruntime.SessionOptions()
    # One thread per embedding: a card or a query is one short sequence, and the broker has
    # other requests to serve on the other cores.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # a failed run is a ModelError that says it; no log line too
    return onnxruntime.InferenceSession(
        data, sess_options=options, providers=["CPUExecutionProvider"]
    )
