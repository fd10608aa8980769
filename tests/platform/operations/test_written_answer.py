"""An answer the message tools already wrote while fitting it to the budget (``Outcome.written``)
is the text the model reads only while the content is still what it was written of: amended
afterwards (a prefix, the client's warning, the one filter a QUERY used), it is written again.
Either way the text is the content's compact JSON."""

from __future__ import annotations

import uuid

import pytest

from mq9_platform import Mq9Client
from mq9_platform.operations.catalog import OPERATIONS
from mq9_platform.operations.policy import ToolPolicy
from mq9_platform.operations.results import MessageSent, Outcome, answer_text

BOX = "team.box"


def test_an_outcome_amended_after_it_was_written_is_written_again():
    result = MessageSent(sent=True, msg_id=3)
    content = result.content()
    outcome = Outcome(result, 3, (content, answer_text(content)))
    assert outcome.text() == answer_text(content)
    outcome.content["warning"] = "the log went back"
    assert outcome.text() == answer_text(outcome.content)
    assert "the log went back" in outcome.text()


@pytest.fixture
async def client():
    async with Mq9Client(f"memory://written{uuid.uuid4().hex}") as client:
        await client.mailbox_create(name=BOX)
        for n in range(25):
            await client.send(BOX, {"n": n, "text": "x" * 40}, key=f"k{n}", tags=["t"])
        yield client


CASES = [
    ("query_messages", {"mail_address": BOX}),  # a page, the next one named in next_step
    ("query_messages", {"mail_address": BOX, "key": "k3", "tags": ["t"]}),  # filter_used
    ("query_messages", {"mail_address": BOX, "tags": ["t"], "limit": 20}),
    ("fetch_messages", {"mail_address": BOX, "max_wait_ms": 0}),
]


@pytest.mark.parametrize(("name", "args"), CASES)
@pytest.mark.parametrize("max_answer_chars", [9_000, 1_200])  # all fit / a few do
async def test_the_text_is_the_contents_after_every_amend(client, name, args, max_answer_chars):
    policy = ToolPolicy(tool_prefix="mq9_", max_answer_chars=max_answer_chars)
    client.warnings[BOX] = "mailbox team.box: a SEND got msg_id 0, but an earlier one got 9"
    outcome = await OPERATIONS[name].execute(client, args, policy)
    assert outcome.written is not None  # the path under test: fitted, then amended
    assert outcome.text() == answer_text(outcome.content)
    assert outcome.content["warning"] in outcome.text()
    assert outcome.content["count"] < 25 or max_answer_chars == 9_000


async def test_unamended_answers_reuse_the_text_written(client):
    outcome = await OPERATIONS["query_messages"].execute(
        client, {"mail_address": BOX}, ToolPolicy()
    )
    assert outcome.written is not None and outcome.written[0] == outcome.content
    assert outcome.text() is outcome.written[1]
    assert outcome.text() == answer_text(outcome.content)
