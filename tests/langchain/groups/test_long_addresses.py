"""Derived names of a valid address at the length limit (issue #52, item 5): a mailbox of
3,797 to 3,800 characters has a dead-letter mailbox (``dead_letter_address``), lease and
reply mailboxes (digests), so ``fetch_messages`` on it answers and a graph run goes on.
Over ``memory://`` and the dev broker on a real nats-server."""

from __future__ import annotations

import json

import pytest
from langchain.agents import create_agent

from langchain_mq9 import Mq9Toolkit
from langchain_mq9.testing import ScriptedChatModel, call, tool_result
from mq9_platform import GroupReader
from mq9_platform.a2a import mail as wire
from mq9_platform.groups import DeadLetter
from mq9_platform.groups.dead_letters import dead_letter_address
from mq9_platform.groups.leases import lease_address
from mq9_platform.operations.catalog import OPERATIONS, ToolPolicy
from mq9_wire.protocol import MAX_ADDRESS_LENGTH, check_address


def long_address(length: int, tag: str = "a") -> str:
    return f"team.{tag}" + "x" * (length - 6)


@pytest.mark.parametrize("length", [3796, 3797, 3799, 3800])
def test_every_derived_name_of_a_valid_address_is_valid_and_its_own(length):
    address = check_address(long_address(length))
    derived = [
        dead_letter_address(address),
        lease_address(address, "g"),
        wire.caller_address(address),
        wire.store_address(address),
    ]
    for name in derived:
        assert check_address(name) and len(name) <= MAX_ADDRESS_LENGTH
    dlq = derived[0]
    assert dlq.startswith("team.")  # an allow-list's prefix covers it, as it covers .dlq
    assert dlq == dead_letter_address(address)  # every reader finds the same one
    if length <= MAX_ADDRESS_LENGTH - len(".dlq"):
        assert dlq == address + ".dlq"  # the names readers used so far stay
    else:  # never the <mailbox>.dlq of another (shorter) mailbox
        assert not dlq.endswith(".dlq")
    assert dlq != dead_letter_address(long_address(length, "b"))  # one per mailbox


async def test_the_tools_read_and_set_aside_in_a_mailbox_at_the_limit(client):
    box = await client.mailbox_create(name=long_address(3800))
    for text in ("order 1", "order 2"):
        await client.send(box, text)
    policy = ToolPolicy(agent_mailbox=box, allowed_mailboxes=("elsewhere",))
    fetch = OPERATIONS["fetch_messages"]
    fetched = (await fetch.execute(client, {}, policy)).content
    assert [m["payload"] for m in fetched["messages"]] == ["order 1", "order 2"]
    ack = {"msg_id": 0, "set_aside": "no stock"}
    aside = (await OPERATIONS["ack_messages"].execute(client, ack, policy)).content
    dlq = dead_letter_address(box)
    assert f"mail_address='{dlq}'" in aside["next_step"]
    shown = await OPERATIONS["query_messages"].execute(client, {"mail_address": dlq}, policy)
    [letter] = shown.content["messages"]
    assert json.loads(letter["dead_letter"])["mailbox"] == box
    # a GroupReader of its own finds the same dead letters
    reader = GroupReader(client, box, "other")
    assert reader.dead_letter_address == dlq
    assert [DeadLetter.read(m).msg_id for m in await client.query(dlq)] == [0]


async def test_a_graph_run_reads_a_mailbox_at_the_limit_to_its_end(broker):
    async with broker.client() as client:
        box = await client.mailbox_create(name=long_address(3797))
        await client.send(box, "order 1")

    def ack_it(messages):
        [message] = tool_result(messages, "fetch_messages")["messages"]
        return call("ack_messages", mail_address=box, msg_id=message["msg_id"])

    script = [call("fetch_messages", mail_address=box), ack_it, "Handled."]
    async with broker.client() as client, Mq9Toolkit(client=client) as kit:
        agent = create_agent(ScriptedChatModel(steps=script), kit.get_tools())
        state = await agent.ainvoke({"messages": [("human", "Read the long mailbox.")]})
        errors = [m.content for m in state["messages"] if getattr(m, "status", "") == "error"]
        assert not errors, errors
        assert state["messages"][-1].content == "Handled."
        assert await client.fetch(box, group_name="default", max_wait_ms=0) == []
