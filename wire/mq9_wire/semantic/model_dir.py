"""The operator's model: a directory laid out as RobustMQ's ``embedding_model_path``, embedded
as RobustMQ embeds with it.

RobustMQ 8bd49dc loads a ``model.onnx`` there, with the four tokenizer files beside it, as a
fastembed 4.9.1 user-defined model: Hugging Face ``tokenizers`` with the directory's files, cut
at min(512, ``model_max_length``) tokens, no prefix; the first output, pooled by its first
token; unit length; 384 floats. This module does the same with the same files, step by step
as docs/discovery.md ("Which model RobustMQ embeds with") lists them, so the bundled broker and
the client rank as that RobustMQ does. Needs the ``semantic-model-dir`` extra; nothing is
downloaded.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

from .embedding import DIMENSIONS, Embedder, ModelError, session_of

DIR_EXTRA_HINT = (  # the wire's extra (wire/pyproject.toml), which every install holds
    "install mq9-wire with [semantic-model-dir] after its name, as you installed it "
    "(in a clone: pip install -e './wire[semantic-model-dir]')"
)
# The files RobustMQ reads from embedding_model_path, in the order it reads them
FILES = ("tokenizer.json", "config.json", "special_tokens_map.json", "tokenizer_config.json")
MAX_LENGTH = 512  # fastembed's InitOptionsUserDefined default
_MODULES = ("numpy", "onnxruntime", "tokenizers")
# A special token's options, as special_tokens_map.json and AddedToken both name them
_TOKEN_FLAGS = ("single_word", "lstrip", "rstrip", "normalized")


def installed() -> bool:
    return all(importlib.util.find_spec(name) for name in _MODULES)


def describe(directory: str) -> str:
    return f"the model in {directory}, as RobustMQ's embedding_model_path"


def first_token(output: Any) -> Any:
    """fastembed 4.9's pooling for a user-defined model: the first token's vector of a
    per-token output, or the one vector of an output already pooled."""
    return output[0][0] if output.ndim == 3 else output[0]


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _finite(literal: str) -> float:
    number = float(literal)
    if math.isinf(number):
        raise ValueError(f"{literal} is out of range")
    return number


def _json(path: Path) -> dict[str, Any]:
    """A JSON object file, read as strictly as RobustMQ's serde_json reads it (no NaN,
    Infinity, or number beyond a float)."""
    try:
        text = path.read_text(encoding="utf-8")
        value = json.loads(text, parse_constant=_not_json, parse_float=_finite)
    except (OSError, ValueError) as exc:
        raise ModelError(f"model directory: {path} cannot be read as JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ModelError(f"model directory: {path} is not a JSON object")
    return value


def _tokenizer(directory: Path, tokenizers: Any) -> Any:
    """The tokenizer fastembed's load_tokenizer builds from the directory's four files."""
    _json(directory / "config.json")  # read by RobustMQ too: pad_token_id, for batches only
    settings = _json(directory / "tokenizer_config.json")
    specials = _json(directory / "special_tokens_map.json")
    longest = settings.get("model_max_length")
    if (
        not isinstance(longest, (int, float))
        or isinstance(longest, bool)  # true is no length here
        or longest <= 0
        or not isinstance(settings.get("pad_token"), str)
    ):
        # fastembed stops there (RobustMQ does not start): both are required (our choice: a
        # length of 0 or less, which would embed no word, is refused too)
        raise ModelError(
            f"model directory: {directory / 'tokenizer_config.json'} needs a numeric "
            "model_max_length above 0 and a string pad_token (RobustMQ's fastembed requires "
            "both)"
        )
    try:
        tokenizer = tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))
    except Exception as exc:  # tokenizers raises its own exception type
        raise ModelError(f"model directory: tokenizer.json cannot be loaded: {exc}") from None
    tokenizer.no_padding()  # one text at a time: nothing to pad
    tokenizer.enable_truncation(max_length=min(MAX_LENGTH, int(longest)))
    tokenizer.add_special_tokens(_special_tokens(directory, specials, tokenizers))
    return tokenizer


def _special_tokens(directory: Path, specials: dict[str, Any], tokenizers: Any) -> list[Any]:
    """special_tokens_map.json's tokens: a string, or an object of its ``content`` and flags;
    lists (additional_special_tokens) are skipped, as fastembed skips them."""
    added = []
    for key, value in specials.items():
        if isinstance(value, str):
            added.append(tokenizers.AddedToken(value, special=True, normalized=True))
        elif isinstance(value, dict):
            if not isinstance(value.get("content"), str):  # fastembed's unwrap would panic
                raise ModelError(
                    f"model directory: {directory / 'special_tokens_map.json'}: {key!r} needs "
                    "a string 'content' (the token's text)"
                )
            flags = {k: bool(value.get(k)) for k in _TOKEN_FLAGS}
            added.append(tokenizers.AddedToken(value["content"], special=True, **flags))
    return added


def _token_ids(tokenizer: Any, text: str) -> list[int]:
    # encode_batch gives encode's ids, and lets go of Python's lock meanwhile (encode holds it
    # throughout a long text, when no other thread of the broker can run: bench/RESULTS.md)
    ids: list[int] = tokenizer.encode_batch([text], add_special_tokens=True)[0].ids
    return ids


def open_directory(directory: str) -> Embedder:
    """An embedder for the model in ``directory``; ``ModelError`` says what is missing or
    wrong (a chosen model is never replaced by another)."""
    path = Path(directory).expanduser()
    if not path.is_dir():
        raise ModelError(f"model directory {directory!r} is not a directory")
    missing = [name for name in ("model.onnx", *FILES) if not (path / name).is_file()]
    if missing:
        raise ModelError(
            f"model directory {directory!r} lacks {', '.join(missing)} (RobustMQ's "
            "embedding_model_path holds model.onnx, " + ", ".join(FILES) + ")"
        )
    try:
        import numpy
        import onnxruntime  # type: ignore[import-untyped]  # it ships no type hints
        import tokenizers
    except ImportError as exc:
        raise ModelError(
            f"model directory {directory!r} was chosen, but {exc.name} is not installed: "
            f"{DIR_EXTRA_HINT}"
        ) from None
    tokenizer = _tokenizer(path, tokenizers)
    try:
        session = session_of(onnxruntime, (path / "model.onnx").read_bytes())
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelError(f"model directory: model.onnx cannot be loaded: {exc}") from None
    embedder = Embedder(
        session,
        numpy,
        name=describe(directory),
        encode=lambda text: _token_ids(tokenizer, text),
        pool=first_token,
    )
    made = embedder.embed_query("dimension check").shape  # a ModelError if it cannot embed
    if made != (DIMENSIONS,):
        raise ModelError(
            f"model directory {directory!r}: the model makes vectors of shape {made}; "
            f"RobustMQ's agent index holds {DIMENSIONS} floats per agent"
        )
    return embedder
