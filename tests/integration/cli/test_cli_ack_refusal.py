"""#113: an ack the group's reader is not waiting for is refused as a class of its own
(``NotAwaitingAck``: its msg_id, mailbox and what does wait), and ``mq9 ack`` decides on that
class, never on the refusal's words (it looked for "is not waiting for an ack" in the text):
read with ``tests/integration/protocol/test_error_texts.py``'s finder; test_cli.py plays ``mq9
ack``'s
refusal to a person."""

from __future__ import annotations

import pytest

from mq9_platform.client import Mq9Client
from mq9_platform.operations.catalog import OPERATIONS
from mq9_platform.operations.errors import OperationError
from mq9_platform.operations.policy import ToolPolicy
from mq9_wire.protocol.errors import NotAwaitingAck
from tests.integration.protocol.test_error_texts import ROOT, text_tests

# faces/cli's files that decide on an error's class alone (test_error_texts.py's PACKAGES do
# not hold faces/cli yet: connect.py and overview.py still read a few texts)
BY_CLASS = ("faces/cli/mq9_cli/app.py",)


@pytest.mark.parametrize("name", BY_CLASS)
def test_the_command_line_reads_no_error_by_its_words(name: str):
    assert text_tests((ROOT / name).read_text()) == []


async def test_the_tool_refuses_an_ack_nothing_waits_for_as_its_class():
    async with Mq9Client("memory://") as client:
        await client.mailbox_create(name="team.acks")
        for n in range(3):
            await client.send("team.acks", f"job {n}")
        policy = ToolPolicy(default_group="workers", deliver="earliest")
        ack = OPERATIONS["ack_messages"]
        with pytest.raises(OperationError) as refused:
            await ack.execute(client, {"mail_address": "team.acks", "msg_id": 1}, policy)
        cause = refused.value.__cause__
        assert isinstance(cause, NotAwaitingAck) and cause.waiting == ()
        assert (cause.msg_id, cause.address) == (1, "team.acks")
        assert "Call fetch_messages(" in str(refused.value)  # the model's next step is kept
        fetch = OPERATIONS["fetch_messages"]
        taken = await fetch.execute(client, {"mail_address": "team.acks"}, policy)
        handed = [m["msg_id"] for m in taken.content["messages"]]
        assert handed == [0, 1, 2]
        with pytest.raises(OperationError) as refused:
            await ack.execute(client, {"mail_address": "team.acks", "msg_id": 9}, policy)
        cause = refused.value.__cause__
        assert isinstance(cause, NotAwaitingAck) and list(cause.waiting) == handed
        assert f"Waiting for an ack: {handed}" in str(refused.value)
