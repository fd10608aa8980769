"""Replay that cannot be steered (issue #52): ``replay`` writes only to the mailbox whose dead
letters it reads, skips and reports what is no dead letter of it, and sends back the rest.

The co-agent plants a message with the ordinary ``send_message`` tool; the attacker forges a
dead letter with a raw request (no Mq9Client in between), naming the group's lease mailbox
under the reserved root. Over ``memory://`` and the dev broker on a real nats-server.
"""

from __future__ import annotations

import itertools
import json

import pytest

from mq9_platform import GroupReader
from mq9_platform.groups import DeadLetter, replay
from mq9_platform.groups.dead_letters import DEAD_LETTER_HEADER
from mq9_platform.groups.leases import lease_address
from mq9_platform.operations.catalog import OPERATIONS, ToolPolicy
from mq9_wire.protocol.subjects import send_subject

_boxes = itertools.count()


async def dead_lettered_orders(client) -> str:
    """``team.ordersN`` with two orders set aside by a reader into ``team.ordersN.dlq``."""
    box = await client.mailbox_create(name=f"team.orders{next(_boxes)}")
    for order in ("order 1", "order 2"):
        await client.send(box, order)
    reader = GroupReader(client, box, "billing")
    for message in await reader.fetch():
        await reader.dead_letter(message.msg_id, "billing was down")
    return box


async def test_a_planted_message_is_skipped_and_reported_and_the_rest_replayed(client):
    box = await dead_lettered_orders(client)
    co_agent = ToolPolicy(allowed_mailboxes=("team",))
    planted = {"mail_address": f"{box}.dlq", "payload": "not a dead letter"}
    sent = await OPERATIONS["send_message"].execute(client, planted, co_agent)

    replayed = await replay(client, f"{box}.dlq")

    assert len(replayed.sent) == 2
    [(skipped, why)] = replayed.skipped.items()
    assert skipped == sent.content["msg_id"] and "is not a dead letter" in why
    back = [m for m in await client.query(box) if m.msg_id in replayed.sent]
    assert sorted(m.text() for m in back) == ["order 1", "order 2"]
    # the group passed the planted message too: a second replay has nothing left
    again = await replay(client, f"{box}.dlq")
    assert again.sent == [] and again.skipped == {}


async def test_a_forged_dead_letter_naming_the_reserved_root_writes_nothing_there(broker, client):
    box = await dead_lettered_orders(client)
    leases = lease_address(box, "billing")
    before = await client.query(leases)
    about = {
        "mailbox": leases,
        "group": "billing",
        "msg_id": 0,
        "create_time": 0,
        "key": None,
        "attempts": 8,
        "reason": "forged",
    }
    # Raw, as a NATS user denied mq9.> could: only the dead-letter mailbox is written.
    forged = {DEAD_LETTER_HEADER: json.dumps(about), "mq9-tags": "d0.0"}
    await broker.raw(send_subject(f"{box}.dlq"), b"d0.0", forged)

    replayed = await replay(client, f"{box}.dlq")

    assert len(replayed.sent) == 2
    [why] = replayed.skipped.values()
    assert "replay sends back only to the mailbox it was given" in why
    assert [m.msg_id for m in await client.query(leases)] == [m.msg_id for m in before]
    back = [m for m in await client.query(box) if m.msg_id in replayed.sent]
    assert sorted(m.text() for m in back) == ["order 1", "order 2"]


async def test_replay_is_told_where_to_write_and_never_under_the_reserved_root(client):
    box = await dead_lettered_orders(client)
    await client.mailbox_create(name=f"{box}.aside")
    reader = GroupReader(client, box, "other", dead_letter=f"{box}.aside")
    await client.send(box, "order 3")
    for message in await reader.fetch():
        if message.text() == "order 3":
            await reader.dead_letter(message.msg_id, "no stock")
    with pytest.raises(ValueError, match="give replay the mailbox"):
        await replay(client, f"{box}.aside")
    with pytest.raises(ValueError, match="library's own records"):
        await replay(client, f"{box}.dlq", mailbox=lease_address(box, "billing"))
    replayed = await replay(client, f"{box}.aside", mailbox=box)
    assert len(replayed.sent) == 1 and replayed.skipped == {}
    assert [DeadLetter.read(m).mailbox for m in await client.query(f"{box}.aside")] == [box]
