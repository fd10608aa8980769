"""What fetch_messages charges a message (issue #52): a delivery only for what the model was
shown and did not finish. A co-agent's large critical message fills the answer; the five
messages the answer budget kept out are charged nothing however often it happens, and the
large one, once acked, is never shown or set aside again. Over ``memory://`` and the dev
broker on a real nats-server; each model session is a new ``ToolPolicy.session()`` (a new
reader, as a restarted agent or MCP session gets)."""

from __future__ import annotations

import itertools

from mq9_platform.groups import DeadLetter
from mq9_platform.groups.dead_letters import DEFAULT_MAX_DELIVERIES
from mq9_platform.operations.catalog import OPERATIONS, ToolPolicy

_boxes = itertools.count()


async def crowded_inbox(client) -> tuple[str, list[int], int]:
    """Five small messages, then a co-agent's large critical one that fills an answer (of
    ``max_answer_chars=1000``: every message shown gets its share first, so only an answer
    too small for a share of each leaves messages out)."""
    box = await client.mailbox_create(name=f"charges.inbox{next(_boxes)}")
    small = [await client.send(box, f"order {i} " + "." * 1000) for i in range(5)]
    large = await client.send(box, "x" * 8500, priority="critical")
    return box, small, large


def agent(box: str) -> ToolPolicy:
    return ToolPolicy(agent_mailbox=box, max_payload_chars=8500, max_answer_chars=1000)


async def fetch(client, policy: ToolPolicy) -> list[dict]:
    return (await OPERATIONS["fetch_messages"].execute(client, {}, policy)).content["messages"]


async def dead_lettered(client, box: str) -> set[int]:
    try:
        return {DeadLetter.read(m).msg_id for m in await client.query(f"{box}.dlq")}
    except Exception:  # no dead-letter mailbox: nothing set aside
        return set()


async def test_messages_cut_from_the_answer_are_charged_nothing(client):
    box, small, large = await crowded_inbox(client)
    policy = agent(box)
    for _session in range(DEFAULT_MAX_DELIVERIES):  # each shown the large one, and dies
        shown = await fetch(client, policy.session())
        assert [m["msg_id"] for m in shown] == [large]
    # shown 8 times and never finished: set aside; the five never shown come with no count
    shown = await fetch(client, policy.session())
    assert shown and [m["msg_id"] for m in shown] == small[: len(shown)]
    assert all("handed_out" not in m for m in shown)
    assert await dead_lettered(client, box) == {large}


async def test_a_message_the_model_acked_is_never_shown_or_set_aside_again(client):
    """Each session acks the large message when it is shown (the group cannot pass it:
    older messages wait, shown in later sessions and not finished)."""
    box, small, large = await crowded_inbox(client)
    policy = agent(box)
    shown_large = 0
    for _session in range(DEFAULT_MAX_DELIVERIES):
        session = policy.session()
        shown = [m["msg_id"] for m in await fetch(client, session)]
        if large in shown:
            shown_large += 1
            ack = OPERATIONS["ack_messages"]
            acked = (await ack.execute(client, {"msg_id": large}, session)).content
            assert acked["confirmed"] == [large]
        else:
            assert shown and shown == small[: len(shown)]
    assert shown_large == 1
    assert await dead_lettered(client, box) == set()
