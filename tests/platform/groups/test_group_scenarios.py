"""The eight consumer-group scenarios of docs/groups.md, as users met them, over ``memory://``
and the dev broker on a real nats-server (and RobustMQ in its lane, where no clock is moved).

Each failed on the code before the design: restart lost what was fetched; a late ack rewound
the group and stalled the others; claims wrote into real mailboxes; a model could forge
claims; every read left a mailbox behind; groups could be exhausted; (kills: see
bench/groups_stress.py and tests/platform/groups/test_reader_state.py); every fetch cost three
requests.
"""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from mq9_platform import GroupReader, Mq9Error
from mq9_platform.groups.leases import DEFAULT_LEASE_TTL, lease_address
from mq9_platform.operations.catalog import OPERATIONS, OperationError, ToolPolicy

_boxes = itertools.count()


async def new_box(client, count: int = 0, name: str | None = None) -> str:
    box = await client.mailbox_create(name=name or f"sc.box{next(_boxes)}")
    for i in range(count):
        await client.send(box, f"m{i}")
    return box


async def tool(client, operation: str, policy: ToolPolicy, **args) -> dict:
    return (await OPERATIONS[operation].execute(client, args, policy)).content


def ids(result: dict) -> list[int]:
    return [m["msg_id"] for m in result["messages"]]


class Counting:
    """A transport that counts the requests it carries, by subject kind."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.subjects: Counter[str] = Counter()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    async def request(self, subject, body, headers, timeout):
        self.subjects[subject.split(".")[2] + "." + subject.split(".")[3]] += 1
        return await self.inner.request(subject, body, headers, timeout)


# 1 --------------------------------------------------------------------------------------------


async def test_1_a_restarted_agent_gets_back_what_it_fetched_and_did_not_ack(client):
    box = await new_box(client, 5)
    crashed = ToolPolicy()  # a toolkit, or an MCP session
    first = await tool(client, "fetch_messages", crashed, mail_address=box)
    assert ids(first) == [0, 1, 2, 3, 4]
    assert "given again" in first["next_step"]  # the model is told: at least once
    # killed before acking; a new toolkit, a new session of the same server
    for restarted in (ToolPolicy(), crashed.session()):
        again = await tool(client, "fetch_messages", restarted, mail_address=box)
        assert ids(again) == [0, 1, 2, 3, 4]
    await tool(client, "ack_messages", restarted, mail_address=box, msg_id=4)
    assert await client.fetch(box, group_name="default", max_wait_ms=0) == []


# 2 --------------------------------------------------------------------------------------------


async def test_2_a_late_ack_neither_stalls_nor_repeats_for_the_reader_that_went_on(client):
    box = await new_box(client, 35)
    slow = GroupReader(client, box, "g")
    assert [m.msg_id for m in await slow.fetch(num_msgs=10)] == list(range(10))
    quick = GroupReader(client, box, "g")
    handled: list[int] = []
    while len(handled) < 30:
        batch = await quick.fetch(num_msgs=10)
        handled += [m.msg_id for m in batch]
        await quick.done([m.msg_id for m in batch])
    assert quick.committed == 29
    # slow's ack of 9 is not sent: a reader of the same client acked past it (issue #61)
    await slow.done(list(range(10)))
    assert (await client.fetch(box, group_name="g", max_wait_ms=0))[0].msg_id == 30
    await client.ack(box, "g", 9)  # another client's late ACK: RobustMQ moves the group back
    assert (await client.fetch(box, group_name="g", max_wait_ms=0))[0].msg_id == 10
    # before: "nothing new" for ever while 30..34 waited
    assert [m.msg_id for m in await quick.fetch(num_msgs=10)] == [30, 31, 32, 33, 34]


async def test_2_workers_a_late_ack_makes_nobody_handle_again_what_was_finished(client):
    box = await new_box(client, 35)
    a = GroupReader(client, box, "g", worker="a")
    b = GroupReader(client, box, "g", worker="b")
    assert [m.msg_id for m in await a.fetch(num_msgs=10)] == list(range(10))  # and is slow
    handled: list[int] = []
    while len(handled) < 20:
        batch = await b.fetch(num_msgs=10)
        handled += [m.msg_id for m in batch]
        await b.done([m.msg_id for m in batch])
    assert sorted(handled) == list(range(10, 30))
    assert b.committed is None  # a holds 0..9: b acks nothing past them
    await a.done(list(range(5)))  # a finishes half, then acks late and dies
    await client.ack(box, "g", 4)
    restarted = GroupReader(client, box, "g", worker="a")  # same name: takes back 5..9
    assert [m.msg_id for m in await restarted.fetch(num_msgs=20)] == [5, 6, 7, 8, 9]
    await restarted.done([5, 6, 7, 8, 9])  # 10..29 are b's, done: nobody handles them again
    assert [m.msg_id for m in await b.fetch(num_msgs=10)] == [30, 31, 32, 33, 34]
    await b.done([30, 31, 32, 33, 34])
    assert await client.fetch(box, group_name="g", max_wait_ms=0) == []


# 3 and 4 ---------------------------------------------------------------------------------------


async def test_3_leases_never_touch_a_mailbox_of_the_users(client):
    orders = await new_box(client, 3, name=f"orders{next(_boxes)}")
    inbox = await new_box(client, name=f"{orders}.claims")  # an insurance-claims agent's
    worker = GroupReader(client, orders, "g", worker="w")
    batch = await worker.fetch()
    await worker.done([m.msg_id for m in batch])
    assert await client.query(inbox) == []  # it receives no lease records as work
    assert lease_address(orders, "g").startswith("mq9.lease.")
    assert len(lease_address("a" * 3000, "g" * 256)) == len(lease_address("a", "g"))


async def test_4_no_tool_reaches_the_leases_whatever_the_allow_list(client):
    box = await new_box(client, 2)
    worker = GroupReader(client, box, "g", worker="w")
    await worker.fetch()
    leases = lease_address(box, "g")
    with pytest.raises(ValueError, match="mail"):
        ToolPolicy(allowed_mailboxes=("mq9",))  # cannot even be allowed
    everything = ToolPolicy()  # no allow-list at all
    forge = [
        ("send_message", {"mail_address": leases, "payload": "mallory", "tags": ["c0.0"]}),
        ("delete_message", {"mail_address": leases, "msg_id": 0}),
        ("query_messages", {"mail_address": leases}),
        ("fetch_messages", {"mail_address": leases}),
        ("ack_messages", {"mail_address": leases, "msg_id": 0}),
        ("create_mailbox", {"name": "mq9.lease.x"}),
        ("agent_register", {"name": "mq9.lease.x", "capabilities": "x"}),
    ]
    for name, args in forge:
        with pytest.raises(OperationError, match="is reserved"):
            await tool(client, name, everything, **args)
    with pytest.raises(ValueError, match="agent_mailbox"):
        ToolPolicy(agent_mailbox="mq9.me")
    assert {r.text() for r in await client.query(leases)} == {"w"}  # only the worker wrote


async def test_4_a_raw_clients_forged_claims_delay_messages_for_one_lease_at_most(broker, client):
    box = await new_box(client, 10)
    first = await client.fetch(box, max_wait_ms=0, deliver="earliest", num_msgs=10)
    leases = lease_address(box, "g")
    await client.mailbox_create(name=leases, ttl=0)  # made by the forger, never expiring
    # claims under a made-up worker, without a TTL, for every message waiting
    tags = [f"c{m.msg_id}.{m.create_time}" for m in first]
    await client.send(leases, "mallory", tags=tags)
    worker = GroupReader(client, box, "g", worker="w", lease_ttl=60, clock=broker.clock)
    assert await worker.fetch() == []  # held back...
    broker.clock.advance(62)  # a lease and GRACE
    assert [m.msg_id for m in await worker.fetch()] == list(range(10))  # ...not lost


# 5 --------------------------------------------------------------------------------------------


async def test_5_reading_leaves_no_mailbox_behind(broker, client):
    before = set(broker.engine.mailboxes)
    boxes = [await new_box(client, 1) for _ in range(5)]
    for box in boxes:  # short conversations, each read once with the default group
        policy = ToolPolicy()
        got = await tool(client, "fetch_messages", policy, mail_address=box)
        await tool(client, "ack_messages", policy, mail_address=box, msg_id=ids(got)[-1])
    # one reader records the batch it starts with (the retry budget), in a records mailbox
    # that lives one lease
    assert set(broker.engine.mailboxes) == before | set(boxes) | {
        lease_address(box, "default") for box in boxes
    }
    broker.clock.advance(DEFAULT_LEASE_TTL + 1)
    await client.mailbox_create(name=f"sc.tick{next(_boxes)}")  # the broker's housekeeping
    assert not [a for a in broker.engine.mailboxes if a.startswith("mq9.")]
    for box in boxes:  # and with competing workers
        reader = GroupReader(client, box, "w", worker="w", lease_ttl=30)
        await reader.done([m.msg_id for m in await reader.fetch()])
    assert {lease_address(box, "w") for box in boxes} <= set(broker.engine.mailboxes)
    broker.clock.advance(31)
    await client.mailbox_create(name=f"sc.tick{next(_boxes)}")
    assert not [a for a in broker.engine.mailboxes if a.startswith("mq9.")]


# 6 --------------------------------------------------------------------------------------------


async def test_6_one_client_cannot_make_groups_without_end(broker):
    async with broker.client(max_groups=3) as client:
        box = await new_box(client, 1)
        for group in ("a", "b", "c"):
            await client.ack(box, group, 0)
        with pytest.raises(Mq9Error, match="acked under 3 consumer groups already") as refused:
            await client.ack(box, "d", 0)
        assert "reuse a group name" in refused.value.message
        await client.ack(box, "a", 0)  # a group it has is always taken
    with pytest.raises(ValueError, match="max_groups"):
        broker.client(max_groups=0)


# 8 --------------------------------------------------------------------------------------------


async def test_8_one_reader_costs_one_fetch_per_fetch(client):
    box = await new_box(client, 40)
    reader = GroupReader(client, box, "g")
    await reader.done([m.msg_id for m in await reader.fetch(num_msgs=10)])
    counting = client._transport = Counting(client._transport)  # after the first batch
    for _ in range(3):
        batch = await reader.fetch(num_msgs=10)
        await reader.done([m.msg_id for m in batch])
    assert counting.subjects == {"MSG.FETCH": 3, "MSG.ACK": 3}
    assert await reader.fetch() == [] and counting.subjects["MSG.FETCH"] == 4


async def test_8_a_reader_reads_the_batch_it_starts_with_and_records_what_it_begins(client):
    """The retry budget's count of deliveries that ended with their reader (docs/groups.md,
    "Poison messages"): one QUERY per reader, and one SEND when its first batch goes to a
    handler at once (a model shown it); later fetches cost what they did."""
    box = await new_box(client, 30)
    await client.mailbox_create(name=lease_address(box, "g"), ttl=60)  # made by an earlier one
    counting = client._transport = Counting(client._transport)
    reader = GroupReader(client, box, "g")
    first = [m.msg_id for m in await reader.fetch(num_msgs=10)]
    await reader.begin(first)
    await reader.done(first)
    assert counting.subjects == {"MSG.FETCH": 1, "MSG.SEND": 1, "MSG.QUERY": 1, "MSG.ACK": 1}
    counting.subjects.clear()
    later = [m.msg_id for m in await reader.fetch(num_msgs=10)]
    await reader.begin(later)
    await reader.done(later)
    assert counting.subjects == {"MSG.FETCH": 1, "MSG.ACK": 1}
    unbudgeted = GroupReader(client, box, "h", max_deliveries=None)
    counting.subjects.clear()
    await unbudgeted.done([m.msg_id for m in await unbudgeted.fetch(num_msgs=10)])
    assert counting.subjects == {"MSG.FETCH": 1, "MSG.ACK": 1}


async def test_8_workers_cost_what_the_design_says(client):
    box = await new_box(client, 30)
    worker = GroupReader(client, box, "g", worker="w")
    await worker.fetch(num_msgs=1)  # the lease mailbox is made once
    counting = client._transport = Counting(client._transport)
    batch = await worker.fetch(num_msgs=10)
    assert counting.subjects == {"MSG.FETCH": 1, "MSG.SEND": 1, "MSG.QUERY": 1}
    counting.subjects.clear()
    await worker.done([m.msg_id for m in batch] + [0])
    assert counting.subjects == {"MSG.SEND": 1, "MSG.ACK": 1}
