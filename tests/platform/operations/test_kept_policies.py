"""Readers that stay (issue #51): the policies (and so the group readers) a toolkit or server
keeps per identity are bounded per owner and in all, and one owner's load never drops another
owner's unfinished work. A reader that is dropped all the same costs nothing: what it was
handed is acked by the next one from the broker's records, and nothing is charged a delivery
for being forgotten. The attacker plays another MCP client making up worker names; over
``memory://`` and the dev broker on a real nats-server."""

from __future__ import annotations

import itertools

import pytest

from mq9_platform.groups.leases import lease_address
from mq9_platform.operations.catalog import OPERATIONS, OperationError, ToolPolicy
from mq9_platform.operations.policy import KeptPolicies

_boxes = itertools.count()


async def inbox_with(client, count: int) -> str:
    box = await client.mailbox_create(name=f"kept.inbox{next(_boxes)}")
    for i in range(count):
        await client.send(box, f"order {i}")
    return box


async def fetched(client, policy: ToolPolicy) -> list[int]:
    answer = await OPERATIONS["fetch_messages"].execute(client, {}, policy)
    return [m["msg_id"] for m in answer.content["messages"]]


def test_an_owner_past_its_share_drops_its_own_least_recently_used():
    kept = KeptPolicies(per_owner=2, total=10)
    first = kept.get("mallory", "w0", ToolPolicy)
    kept.get("mallory", "w1", ToolPolicy)
    assert kept.get("mallory", "w0", ToolPolicy) is first  # used again: w1 is the oldest now
    kept.get("mallory", "w2", ToolPolicy)
    assert kept.get("mallory", "w0", ToolPolicy) is first
    assert len(kept) == 2


async def test_another_owners_made_up_names_never_drop_a_reader_holding_work(client):
    box = await inbox_with(client, 3)
    kept = KeptPolicies(per_owner=7, total=8)  # mallory fills the rest before its share
    base = ToolPolicy(agent_mailbox=box)
    victim = kept.get("victim", "", base.session)
    assert await fetched(client, victim) == [0, 1, 2]
    idle = kept.get("bystander", "", base.session)  # holds nothing: may make room
    for name in range(300):  # 257 were enough to drop it before
        kept.get("mallory", f"w{name}", base.session)
    assert kept.get("victim", "", base.session) is victim
    assert kept.get("bystander", "", base.session) is not idle
    # the table full of work and a new owner: refused, nothing dropped
    full = KeptPolicies(per_owner=1, total=1)
    full.get("victim", "", lambda: victim)
    with pytest.raises(OperationError, match="ack what you were given"):
        full.get("mallory", "w0", base.session)
    assert full.get("victim", "", base.session) is victim


async def test_a_dropped_reader_costs_nothing(client):
    box = await inbox_with(client, 3)
    kept = KeptPolicies(per_owner=1, total=4)
    base = ToolPolicy(agent_mailbox=box)
    first = kept.get("victim", "", base.session)
    shown = await fetched(client, first)
    kept.get("victim", "other", base.session)  # the owner's own load drops it
    again = kept.get("victim", "", base.session)
    assert again is not first and not again.holds_work()
    acked = await OPERATIONS["ack_messages"].execute(client, {"msg_id": shown[-1]}, again)
    assert acked.content["confirmed"] == shown
    assert await client.fetch(box, group_name="default", max_wait_ms=0) == []
    # charged once each, when shown; never for being forgotten
    records = await client.query(lease_address(box, "default"))
    for msg_id in shown:
        assert sum(any(t.startswith(f"h{msg_id}.") for t in r.tags) for r in records) == 1
