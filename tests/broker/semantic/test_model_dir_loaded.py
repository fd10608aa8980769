"""The operator's model directory loaded and used (``MQ9_EMBEDDING_MODEL``): its tokenizer's
ids and its vectors checked against Hugging Face's and RobustMQ's pooling, and the variable
choosing it for broker and client. Slow (#78): each loads all-MiniLM-L6-v2 from a directory
laid out as RobustMQ's ``embedding_model_path`` (bench/discovery.py's ``minilm_directory``) and
embeds with it; tests/langchain/semantic/test_model_dir.py holds the directories refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import discovery
from mq9_wire import protocol as p
from mq9_wire import semantic
from mq9_wire.semantic import model_dir
from mq9_wire.semantic.ranking import AgentEntry, AgentIndex

pytestmark = pytest.mark.slow  # loads an embedding model from a directory and embeds with it

ROOT = Path(__file__).resolve().parents[3]
GOLDEN = json.loads((ROOT / "tests" / "data" / "semantic_golden.json").read_text("utf-8"))

if not (semantic.installed() and model_dir.installed()):
    pytest.skip("needs the semantic and semantic-model-dir extras", allow_module_level=True)


@pytest.fixture(scope="module")
def directory(tmp_path_factory):
    return discovery.minilm_directory(tmp_path_factory.mktemp("minilm"))


@pytest.fixture(scope="module")
def loaded(directory):
    return model_dir.open_directory(str(directory))


def test_the_tokenizer_gives_the_ids_hugging_face_gives(loaded):
    for text, ids in GOLDEN["tokens"]:
        assert loaded.token_ids(text) == ids, text
    # cut at the model's 512 positions, as fastembed's truncation does
    assert len(loaded.token_ids("word " * 2000)) == 512


def test_vectors_are_the_first_tokens_as_robustmq_pools_a_directory_model(loaded):
    np = pytest.importorskip("numpy")
    default = semantic.minilm_embedder()
    text = "Translates contracts between German and Japanese"
    ids = np.array([loaded.token_ids(text)], dtype=np.int64)
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    feed["token_type_ids"] = np.zeros_like(ids)
    first = default._session.run(None, feed)[0][0][0]
    vector = loaded.embed(text)
    assert vector.shape == (semantic.DIMENSIONS,)
    assert float(vector @ (first / np.linalg.norm(first))) > 0.99999
    # ... not the mean the semantic-minilm extra's model uses: the two rank differently
    # (docs/discovery.md)
    assert float(vector @ default.embed(text)) < 0.99


def test_the_environment_variable_chooses_the_model_for_broker_and_client(directory, monkeypatch):
    monkeypatch.setenv(semantic.MODEL_ENV, str(directory))
    chosen = semantic.embedder()
    assert chosen is not semantic.minilm_embedder() and chosen.name.startswith("the model in")
    assert semantic.installed()
    assert (
        semantic.describe() == f"embeddings (the model in {directory}, as RobustMQ's "
        "embedding_model_path)"
    )
    index = AgentIndex()  # the ranking the bundled broker and the client share
    for card in (
        p.agent_card("translator", description="Japanese translation service"),
        p.agent_card("weather", description="Forecasts rain and sunshine for any city"),
    ):
        index.put_index(AgentEntry.make(card["name"], p.encode(card).decode(), 0))
    assert index.embedder is chosen and index.ranking == semantic.RANKING_EMBEDDINGS
    assert index.search_semantic("will it rain tomorrow")[0].card_name == "weather"
    monkeypatch.delenv(semantic.MODEL_ENV)
    assert semantic.embedder() is semantic.default_embedder()
