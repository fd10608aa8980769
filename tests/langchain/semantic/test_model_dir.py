"""The operator's model directory (``MQ9_EMBEDDING_MODEL``, ``mq9-dev-broker --embedding-model``):
the files RobustMQ's ``embedding_model_path`` holds, embedded as RobustMQ's fastembed 4.9.1
embeds a user-defined model (wire/mq9_wire/semantic/model_dir.py says how).

The directory used here is all-MiniLM-L6-v2 laid out that way (bench/discovery.py's
``minilm_directory``: the semantic extra's ONNX file and a tokenizer.json built from its
vocabulary): the model we can check every step against. The tests that load it and embed with
it are slow: tests/broker/semantic/test_model_dir_loaded.py (#78).
"""

from __future__ import annotations

import json
import os
import shutil
import textwrap
from pathlib import Path

import pytest

import mq9_broker.cli.dev_broker as cli
from bench import discovery
from mq9_wire import semantic
from mq9_wire.semantic import model_dir
from testbed.support.semantic_support import run_python

ROOT = Path(__file__).resolve().parents[3]

if not (semantic.installed() and model_dir.installed()):
    pytest.skip("needs the semantic and semantic-model-dir extras", allow_module_level=True)


@pytest.fixture(scope="module")
def directory(tmp_path_factory):
    return discovery.minilm_directory(tmp_path_factory.mktemp("minilm"))


@pytest.mark.parametrize(
    "damage, says",
    [
        (lambda d: (d / "tokenizer.json").unlink(), "lacks tokenizer.json"),
        (lambda d: (d / "model.onnx").unlink(), "lacks model.onnx"),
        (
            lambda d: (d / "tokenizer_config.json").write_text('{"model_max_length": 512}'),
            "string pad_token",
        ),
        (lambda d: (d / "config.json").write_text("not json"), "cannot be read as JSON"),
        (lambda d: (d / "model.onnx").write_bytes(b"not a model"), "model.onnx cannot be loaded"),
    ],
    ids=["no tokenizer", "no model", "no pad token", "bad config", "bad model"],
)
def test_a_directory_robustmq_could_not_load_is_an_error(directory, tmp_path, damage, says):
    broken = tmp_path / "broken"
    shutil.copytree(directory, broken)
    damage(broken)
    with pytest.raises(semantic.ModelError, match=says):
        model_dir.open_directory(str(broken))


def _out_of_vocabulary(directory: Path) -> None:
    """A tokenizer.json whose word ids the model has no row for (a mismatched pair)."""
    tokenizer = json.loads((directory / "tokenizer.json").read_text("utf-8"))
    vocab = tokenizer["model"]["vocab"]
    shifted = {word: i if word.startswith("[") else i + 40_000 for word, i in vocab.items()}
    tokenizer["model"]["vocab"] = shifted
    (directory / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")


def _writes(name: str, text: str):
    return lambda d: (d / name).write_text(text, encoding="utf-8")


def _max_length(value: str):
    return _writes("tokenizer_config.json", f'{{"model_max_length": {value}, "pad_token": "x"}}')


MALFORMED = {
    "special token without content": (
        _writes("special_tokens_map.json", '{"cls_token": {"lstrip": false}}'),
        "special_tokens_map.json: 'cls_token' needs a string 'content'",
    ),
    "special token content a number": (
        _writes("special_tokens_map.json", '{"cls_token": {"content": 5}}'),
        "special_tokens_map.json: 'cls_token' needs a string 'content'",
    ),
    "max length Infinity": (_max_length("Infinity"), "Infinity is not JSON"),
    "max length 1e400": (_max_length("1e400"), "1e400 is out of range"),
    "max length NaN": (_max_length("NaN"), "NaN is not JSON"),
    "max length negative": (_max_length("-1"), "model_max_length above 0"),
    "max length true": (_max_length("true"), "model_max_length above 0"),
    "config NaN": (_writes("config.json", '{"pad_token_id": NaN}'), "config.json"),
    "added token without content": (
        _writes("tokenizer.json", '{"added_tokens": [{"id": 0}]}'),
        "tokenizer.json cannot be loaded",
    ),
    "ids beyond the model": (_out_of_vocabulary, "cannot embed"),
}


@pytest.mark.parametrize(("damage", "says"), MALFORMED.values(), ids=MALFORMED)
def test_a_malformed_directory_is_a_model_error_naming_what_is_wrong(
    directory, tmp_path, damage, says
):
    """Issue #35: these crashed with ``KeyError: 'content'``, ``OverflowError: cannot convert
    float infinity to integer``, ``ValueError`` or onnxruntime's own exception."""
    broken = tmp_path / "broken"
    shutil.copytree(directory, broken)
    damage(broken)
    with pytest.raises(semantic.ModelError) as refused:
        model_dir.open_directory(str(broken))
    assert says in str(refused.value)


def test_the_dev_broker_names_the_malformed_file_without_a_traceback(
    directory, tmp_path, capsys, monkeypatch
):
    """Issue #35: ``mq9-dev-broker --embedding-model`` crashed with ``KeyError: 'content'``."""
    monkeypatch.setenv(semantic.MODEL_ENV, "")  # restored after: main() sets it
    broken = tmp_path / "broken"
    shutil.copytree(directory, broken)
    (broken / "special_tokens_map.json").write_text('{"sep_token": {}}', encoding="utf-8")
    assert cli.main(["--embedding-model", str(broken)]) == 1
    err = capsys.readouterr().err
    assert "special_tokens_map.json: 'sep_token' needs a string 'content'" in err
    assert "Traceback" not in err


async def test_the_clients_own_ranking_answers_a_malformed_model_as_an_error(
    directory, tmp_path, monkeypatch
):
    """Issue #35: with ``MQ9_EMBEDDING_MODEL`` naming a malformed directory, the KeyError
    escaped ``Mq9Client.agent_discover`` and the agent_discover tool (on a broker without
    search, the client ranks the listing itself)."""
    from langchain_mq9 import Mq9Toolkit
    from mq9_broker import BrokerEngine, drop_memory_broker, install_memory_broker
    from mq9_platform import Mq9Client, Mq9Error

    broken = tmp_path / "broken"
    shutil.copytree(directory, broken)
    (broken / "special_tokens_map.json").write_text('{"sep_token": {}}', encoding="utf-8")
    install_memory_broker("nosearchmodel", BrokerEngine(search=False))
    try:
        async with Mq9Client("memory://nosearchmodel") as client:
            await client.agent_register({"name": "agent.t", "description": "translates"})
            monkeypatch.setenv(semantic.MODEL_ENV, str(broken))
            with pytest.raises(Mq9Error, match="'sep_token' needs a string 'content'"):
                await client.agent_discover(semantic="translate")
        async with Mq9Toolkit(server="memory://nosearchmodel") as kit:
            (tool,) = [t for t in kit.get_tools() if t.name == "agent_discover"]
            args = {"query": "translate"}
            answer = await tool.ainvoke(
                {"name": tool.name, "args": args, "id": "1", "type": "tool_call"}
            )
        assert answer.status == "error" and "needs a string 'content'" in answer.content
    finally:
        drop_memory_broker("nosearchmodel")


def test_the_dev_broker_does_not_start_with_a_model_it_cannot_load(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(semantic.MODEL_ENV, "")  # restored after: main() sets it
    assert cli.main(["--embedding-model", str(tmp_path / "nowhere")]) == 1
    assert "is not a directory" in capsys.readouterr().err


WITHOUT_TOKENIZERS = textwrap.dedent(
    """
    import sys
    sys.modules["tokenizers"] = None  # as if the semantic-model-dir extra were not installed
    from mq9_wire import semantic
    try:
        semantic.embedder()
    except semantic.ModelError as exc:
        print(exc)
    """
)


def test_a_chosen_directory_without_its_extra_says_what_to_install(directory):
    run = run_python(WITHOUT_TOKENIZERS, {**os.environ, semantic.MODEL_ENV: str(directory)})
    assert run.returncode == 0, run.stderr[-2000:]
    assert "tokenizers is not installed" in run.stdout
    assert model_dir.DIR_EXTRA_HINT in run.stdout
