"""Robustness round 2 (issue #22, items 2-5): text a model or another agent gives can neither
crash a tool, nor break a connection others share, nor flood the model's context, nor hide an
agent in the registry. Over memory:// and the bundled broker on a real nats-server.
"""

from __future__ import annotations

import json

import pytest
from langchain_core.messages import ToolMessage

from langchain_mq9 import Mq9Toolkit
from mq9_platform import Mq9Client, Mq9Error
from mq9_wire import protocol as p

pytestmark = pytest.mark.slow

HALF_EMOJI = "half an emoji \ud83d"  # what json.dumps writes as "\ud83d": a lone surrogate
HUGE = "a" * 1_000_000


async def call(kit: Mq9Toolkit, tool: str, **args) -> ToolMessage:
    [chosen] = [t for t in kit.get_tools() if t.name == tool]
    message = await chosen.ainvoke({"name": tool, "args": args, "id": "1", "type": "tool_call"})
    assert isinstance(message, ToolMessage)
    return message


# -- item 2: one text rule, whichever argument carries the text ----------------------------------


@pytest.mark.parametrize(
    "args",
    [
        {"payload": HALF_EMOJI},
        {"payload": "x", "key": HALF_EMOJI},
        {"payload": "x", "tags": [HALF_EMOJI]},
        {"payload": json.dumps({"note": "x"})[:-1] + ',"y":"\\ud83d"}'},  # escaped in JSON text
    ],
)
async def test_a_lone_surrogate_in_any_argument_is_a_clean_tool_error(broker, args):
    async with Mq9Toolkit(server=broker.url) as kit:
        await call(kit, "create_mailbox", name="texts")
        message = await call(kit, "send_message", mail_address="texts", **args)
    if "y" in args["payload"]:  # JSON text is carried as the text it is: valid, and sent
        assert message.status == "success", message.content
        return
    assert message.status == "error"
    assert "lone surrogate" in message.content and "not valid UTF-8" in message.content


async def test_the_client_refuses_a_lone_surrogate_payload_as_it_refuses_one_in_a_key(client):
    box = await client.mailbox_create(name="texts")
    with pytest.raises(Mq9Error, match="lone surrogate"):
        await client.send(box, HALF_EMOJI)
    with pytest.raises(Mq9Error, match="lone surrogate"):
        await client.send(box, "x", key=HALF_EMOJI)


# -- item 3: an address no subject can carry never reaches the wire ------------------------------


async def test_an_address_longer_than_a_subject_can_carry_is_refused_before_sending(broker):
    long = "a" * (p.MAX_ADDRESS_LENGTH + 1)
    async with broker.client() as client:
        for attempt in (
            lambda: client.mailbox_create(name=long),
            lambda: client.send(long, "x"),
            lambda: client.fetch(long, max_wait_ms=0),
            lambda: client.query(long),
            lambda: client.delete(long, 0),
        ):
            with pytest.raises(Mq9Error) as caught:
                await attempt()
            assert f"longer than {p.MAX_ADDRESS_LENGTH} characters" in caught.value.message
            assert len(caught.value.message) < 400
        longest = "b" * p.MAX_ADDRESS_LENGTH  # the longest that is taken works end to end
        assert await client.mailbox_create(name=longest) == longest
        assert await client.send(longest, "fits") == 0
        await client.delete(longest, 0)
        assert client.is_connected


async def test_the_broker_refuses_to_create_a_mailbox_no_send_could_reach(broker):
    body = p.encode({"name": "c" * (p.MAX_ADDRESS_LENGTH + 1)})
    reply = json.loads(await broker.engine.handle(p.MAILBOX_CREATE, None, body))
    assert reply["error"].startswith("invalid mail_address: 'ccc")
    assert "no NATS subject could carry it" in reply["error"]


# -- item 4: what the model gave comes back bounded ---------------------------------------------


@pytest.mark.parametrize(
    "tool",
    ["create_mailbox", "send_message", "fetch_messages", "ack_messages", "query_messages",
     "delete_message", "agent_register", "agent_discover"],
)  # fmt: skip
async def test_a_megabyte_of_input_never_comes_back_whole(tool):
    args = {"mail_address": HUGE, "payload": "x", "msg_id": 1, "name": HUGE, "query": HUGE}
    async with Mq9Toolkit(server="memory://echo-bound") as kit:
        [chosen] = [t for t in kit.get_tools() if t.name == tool]
        fields = chosen.args_schema["properties"]
        message = await call(kit, tool, **{k: v for k, v in args.items() if k in fields})
    assert len(message.content) < 5_000, (tool, len(message.content), message.content[:300])


def test_error_texts_quote_at_most_a_little_of_what_they_were_given():
    assert len(p.err_invalid_address("X" * 10**6)) < 300
    assert p.quoted("short") == "'short'"
    assert p.quoted("y" * 100).endswith("… (100 characters)")
    assert len(p.clipped("z" * 10_000, 600)) < 700


# -- item 5: a registry that cannot be listed whole says so ---------------------------------------


async def flood(url: str) -> None:
    """17 cards of ~64 KiB (the most a card may hold) under names that sort first: a listing
    above 1 MiB, where a cut list would hide every agent after them."""
    async with Mq9Client(url) as client:
        for i in range(17):
            card = p.agent_card(f"aaa.{i:02}", description="x" * 65_000)
            await client.agent_register(card)
        await client.agent_register({"name": "zed", "payload": "squatted"})


async def test_a_flooded_listing_is_whole_or_refused_never_cut(broker):
    await flood(broker.url)
    async with broker.client() as client:
        try:
            agents = await client.agent_discover()
        except Mq9Error as exc:  # the nats-server's answers carry 1 MiB: refused, in words
            assert p.LISTING_TOO_LARGE in exc.message and "search with text" in exc.message
        else:
            assert {a["name"] for a in agents} >= {"zed", "aaa.00", "aaa.16"}


async def test_register_never_says_registered_when_the_name_may_be_taken(broker):
    await flood(broker.url)
    async with Mq9Toolkit(server=broker.url) as kit:
        message = await call(kit, "agent_register", name="zed", capabilities="translation")
    result = json.loads(message.content)
    if result["registered"]:  # the listing was refused: it says it could not check
        assert "whether another agent had this name already is not known" in result["note"]
    else:  # the listing came whole: the squatter's card is found and shown
        assert "the registry keeps the first card" in result["note"]
        assert "squatted" in json.dumps(result["registered_card"])
