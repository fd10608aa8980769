"""PROTOCOL.md conformance for FETCH and ACK: deliver policies, stateless and stateful reads,
leases, competing workers, batch ACK and long-polling.

Every test runs over ``memory://`` and over a real nats-server serving the same engine. Lease
expiry is driven by ``broker.clock``; the only wall-clock bounds are ``asyncio.wait_for``
correctness limits far below the long-poll wait being tested.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest

from langchain_mq9 import Mq9Error
from langchain_mq9.broker import BrokerLimits

T0 = 1_700_000_000  # where the fixture's ManualClock starts


def ids(messages) -> list[int]:
    return [m.msg_id for m in messages]


def texts(messages) -> list[str]:
    return [m.text() for m in messages]




def set_limits(broker, **changes) -> BrokerLimits:
    broker.engine.limits = dataclasses.replace(broker.engine.limits, **changes)
    return broker.engine.limits


async def until(condition, timeout: float = 5.0) -> None:
    """Wait for ``condition()`` to hold (polled), failing after ``timeout`` seconds."""

    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.002)

    await asyncio.wait_for(poll(), timeout)


def fetch_waiting(broker) -> bool:
    """True once some FETCH is parked in the engine waiting for a message."""
    return any(broker.engine._waiters.values())


async def filled(client, count: int, **send_options) -> str:
    box = await client.mailbox_create()
    for i in range(count):
        await client.send(box, f"m{i}", **send_options)
    return box


# -- deliver policies --------------------------------------------------------------------------


async def test_default_deliver_is_latest_for_stateless_fetch(client):
    box = await filled(client, 3)
    assert await client.fetch(box, max_wait_ms=0) == []
    assert await client.fetch(box, deliver="latest", max_wait_ms=0) == []


async def test_latest_group_sees_only_what_arrives_after_its_first_fetch(client):
    box = await filled(client, 2)
    assert await client.fetch(box, group_name="g", max_wait_ms=0) == []
    await client.send(box, "new")
    assert texts(await client.fetch(box, group_name="g", max_wait_ms=0)) == ["new"]


async def test_earliest_starts_at_the_oldest_stored_message(client):
    box = await filled(client, 4)
    await client.delete(box, 0)
    assert ids(await client.fetch(box, deliver="earliest", max_wait_ms=0)) == [1, 2, 3]
    assert ids(await client.fetch(
        box, group_name="g", deliver="earliest", max_wait_ms=0
    )) == [1, 2, 3]


async def test_from_time_is_create_time_at_or_after(broker, client):
    box = await client.mailbox_create()
    await client.send(box, "t0")
    broker.clock.advance(10)
    await client.send(box, "t10")
    broker.clock.advance(10)
    await client.send(box, "t20")
    assert texts(await client.fetch(
        box, deliver="from_time", from_time=T0 + 10, max_wait_ms=0
    )) == ["t10", "t20"]
    assert texts(await client.fetch(
        box, deliver="from_time", from_time=T0 + 11, max_wait_ms=0
    )) == ["t20"]
    assert texts(await client.fetch(
        box, deliver="from_time", from_time=0, max_wait_ms=0
    )) == ["t0", "t10", "t20"]
    assert await client.fetch(box, deliver="from_time", from_time=T0 + 21, max_wait_ms=0) == []
    assert texts(await client.fetch(
        box, group_name="g", deliver="from_time", from_time=T0 + 5, max_wait_ms=0
    )) == ["t10", "t20"]


async def test_from_id_is_msg_id_at_or_after(client):
    box = await filled(client, 5)
    assert ids(await client.fetch(box, deliver="from_id", from_id=3, max_wait_ms=0)) == [3, 4]
    assert ids(await client.fetch(box, deliver="from_id", from_id=0, max_wait_ms=0)) == [
        0, 1, 2, 3, 4
    ]
    assert await client.fetch(box, deliver="from_id", from_id=5, max_wait_ms=0) == []
    assert ids(await client.fetch(
        box, group_name="g", deliver="from_id", from_id=2, max_wait_ms=0
    )) == [2, 3, 4]


async def test_from_id_keeps_priority_order(client):
    box = await client.mailbox_create()
    for priority in ["normal", "critical", "normal", "urgent", "critical"]:
        await client.send(box, priority, priority=priority)
    assert ids(await client.fetch(box, deliver="from_id", from_id=2, max_wait_ms=0)) == [4, 3, 2]


async def test_num_msgs_caps_the_answer_in_priority_order(client):
    box = await client.mailbox_create()
    for priority in ["normal", "urgent", "critical", "normal", "critical"]:
        await client.send(box, priority, priority=priority)
    assert ids(await client.fetch(box, deliver="earliest", num_msgs=3, max_wait_ms=0)) == [
        2, 4, 1
    ]


async def test_invalid_deliver_is_refused(broker, client):
    box = await filled(client, 1)
    with pytest.raises(Mq9Error) as caught:
        await client.fetch(box, deliver="newest", max_wait_ms=0)
    assert "invalid deliver 'newest'" in caught.value.message
    assert "latest, earliest, from_time or from_id" in caught.value.message


# -- stateless ------------------------------------------------------------------------------


async def test_stateless_fetch_records_nothing(broker, client):
    box = await filled(client, 3)
    first = await client.fetch(box, deliver="earliest", max_wait_ms=0)
    again = await client.fetch(box, deliver="earliest", max_wait_ms=0)
    assert ids(first) == ids(again) == [0, 1, 2]
    assert broker.engine.mailboxes[box].groups == {}
    # no lease either: a group still gets everything
    assert ids(await client.fetch(box, group_name="g", deliver="earliest", max_wait_ms=0)) == [
        0, 1, 2
    ]


# -- stateful groups -----------------------------------------------------------------------


async def test_group_keeps_its_position_and_ignores_deliver_later(client):
    box = await filled(client, 5)
    batch = await client.fetch(box, group_name="g", deliver="earliest", num_msgs=2,
                               max_wait_ms=0)
    assert ids(batch) == [0, 1]
    await client.ack(box, "g", 1)
    # a later FETCH resumes, whatever deliver it names
    assert ids(await client.fetch(box, group_name="g", deliver="latest", num_msgs=2,
                                  max_wait_ms=0)) == [2, 3]
    await client.ack(box, "g", 3)
    assert ids(await client.fetch(box, group_name="g", deliver="from_id", from_id=0,
                                  max_wait_ms=0)) == [4]


async def test_group_position_survives_reconnects(broker, client):
    box = await filled(client, 3)
    batch = await client.fetch(box, group_name="g", deliver="earliest", num_msgs=2,
                               max_wait_ms=0)
    await client.ack(box, "g", batch[-1].msg_id)
    await client.close()
    async with broker.client() as other:
        assert ids(await other.fetch(box, group_name="g", max_wait_ms=0)) == [2]


async def test_force_deliver_resets_the_group(client):
    box = await filled(client, 3)
    batch = await client.fetch(box, group_name="g", deliver="earliest", max_wait_ms=0)
    await client.ack(box, "g", batch[-1].msg_id)
    assert await client.fetch(box, group_name="g", deliver="earliest", max_wait_ms=0) == []
    reset = await client.fetch(box, group_name="g", deliver="earliest", force_deliver=True,
                               max_wait_ms=0)
    assert ids(reset) == [0, 1, 2]
    await client.ack(box, "g", 2)
    again = await client.fetch(box, group_name="g", deliver="from_id", from_id=1,
                               force_deliver=True, max_wait_ms=0)
    assert ids(again) == [1, 2]
    await client.ack(box, "g", 2)
    assert await client.fetch(box, group_name="g", deliver="latest", force_deliver=True,
                              max_wait_ms=0) == []
    await client.send(box, "new")
    assert texts(await client.fetch(box, group_name="g", max_wait_ms=0)) == ["new"]


async def test_different_groups_are_independent(broker, client):
    box = await filled(client, 3)
    a = await client.fetch(box, group_name="a", deliver="earliest", max_wait_ms=0)
    await client.ack(box, "a", a[-1].msg_id)
    assert await client.fetch(box, group_name="a", max_wait_ms=0) == []
    b = await client.fetch(box, group_name="b", deliver="earliest", max_wait_ms=0)
    assert ids(b) == [0, 1, 2]  # a's acks and leases do not touch b
    c = await client.fetch(box, group_name="c", deliver="from_id", from_id=2, max_wait_ms=0)
    assert ids(c) == [2]  # b's leases do not touch c


async def test_two_competing_workers_never_share_and_lose_nothing(broker):
    async with broker.client() as sender, broker.client() as w1, broker.client() as w2:
        box = await sender.mailbox_create()
        await sender.fetch(box, group_name="workers", max_wait_ms=0)  # position: latest
        total = 60
        priorities = ["normal", "urgent", "critical"]
        got: dict[str, list[int]] = {"w1": [], "w2": []}
        produced = asyncio.Event()

        async def produce() -> None:
            for i in range(total):
                await sender.send(box, f"m{i}", priority=priorities[i % 3])
            produced.set()

        async def work(name: str, client) -> None:
            while True:
                batch = await client.fetch(box, group_name="workers", num_msgs=4,
                                           max_wait_ms=20)
                if not batch and produced.is_set():
                    # all sent: an empty answer now means nothing is left unleased
                    batch = await client.fetch(box, group_name="workers", max_wait_ms=0)
                    if not batch:
                        return
                if batch:
                    got[name].extend(ids(batch))
                    await client.ack(box, "workers", batch[-1].msg_id)

        await asyncio.wait_for(
            asyncio.gather(produce(), work("w1", w1), work("w2", w2)), timeout=30
        )
        everything = got["w1"] + got["w2"]
        assert set(got["w1"]).isdisjoint(got["w2"])
        assert sorted(everything) == list(range(total))  # none lost, none twice
        assert await sender.fetch(box, group_name="workers", max_wait_ms=0) == []


async def test_competing_fetches_of_one_group_split_a_backlog(broker):
    async with broker.client() as a, broker.client() as b:
        box = await filled(a, 30)
        await a.fetch(box, group_name="g", deliver="earliest", num_msgs=1, max_wait_ms=0)
        answers = await asyncio.gather(
            *(c.fetch(box, group_name="g", num_msgs=5, max_wait_ms=0) for c in (a, b, a, b))
        )
        handed = [msg_id for answer in answers for msg_id in ids(answer)]
        assert len(handed) == len(set(handed)) == 20
        assert 0 not in handed  # still leased by the first FETCH


# -- leases ------------------------------------------------------------------------------------


async def test_lease_expires_after_default_ack_wait_and_message_returns(broker, client):
    assert broker.engine.limits.ack_wait == 30
    box = await filled(client, 2)
    first = await client.fetch(box, group_name="g", deliver="earliest", num_msgs=1,
                               max_wait_ms=0)
    assert ids(first) == [0]
    assert ids(await client.fetch(box, group_name="g", max_wait_ms=0)) == [1]
    assert await client.fetch(box, group_name="g", max_wait_ms=0) == []
    broker.clock.advance(29.9)
    assert await client.fetch(box, group_name="g", max_wait_ms=0) == []
    broker.clock.advance(0.1)
    assert ids(await client.fetch(box, group_name="g", max_wait_ms=0)) == [0, 1]


async def test_lease_follows_configured_ack_wait(broker, client):
    set_limits(broker, ack_wait=5)
    box = await filled(client, 1)
    assert ids(await client.fetch(box, group_name="g", deliver="earliest", max_wait_ms=0)) == [0]
    broker.clock.advance(4)
    assert await client.fetch(box, group_name="g", max_wait_ms=0) == []
    broker.clock.advance(1)
    redelivered = await client.fetch(box, group_name="g", max_wait_ms=0)
    assert ids(redelivered) == [0]
    await client.ack(box, "g", 0)
    broker.clock.advance(100)
    assert await client.fetch(box, group_name="g", max_wait_ms=0) == []


async def test_redelivered_message_is_leased_again(broker, client):
    box = await filled(client, 1)
    await client.fetch(box, group_name="g", deliver="earliest", max_wait_ms=0)
    broker.clock.advance(30)
    assert ids(await client.fetch(box, group_name="g", max_wait_ms=0)) == [0]
    assert await client.fetch(box, group_name="g", max_wait_ms=0) == []  # leased anew


async def test_acked_message_never_comes_back(broker, client):
    box = await filled(client, 3)
    batch = await client.fetch(box, group_name="g", deliver="earliest", max_wait_ms=0)
    await client.ack(box, "g", batch[-1].msg_id)
    for _ in range(3):
        broker.clock.advance(31)
        assert await client.fetch(box, group_name="g", max_wait_ms=0) == []


# -- ACK -------------------------------------------------------------------------------------


async def test_batch_ack_confirms_earlier_in_same_answer_not_later_answers(broker, client):
    box = await filled(client, 5)
    first = await client.fetch(box, group_name="g", deliver="earliest", num_msgs=3,
                               max_wait_ms=0)
    second = await client.fetch(box, group_name="g", num_msgs=3, max_wait_ms=0)
    assert (ids(first), ids(second)) == ([0, 1, 2], [3, 4])
    await client.ack(box, "g", 1)  # confirms 0 and 1, not 2
    await client.ack(box, "g", 3)  # confirms 3 only: 2 was in another answer, 4 came after
    broker.clock.advance(30)
    assert ids(await client.fetch(box, group_name="g", max_wait_ms=0)) == [2, 4]


async def test_batch_ack_follows_the_answer_order_not_msg_id(broker, client):
    box = await client.mailbox_create()
    await client.send(box, "n0")
    await client.send(box, "c1", priority="critical")
    await client.send(box, "n2")
    answer = await client.fetch(box, group_name="g", deliver="earliest", max_wait_ms=0)
    assert ids(answer) == [1, 0, 2]
    await client.ack(box, "g", 1)  # first in the answer: confirms only itself
    broker.clock.advance(30)
    again = await client.fetch(box, group_name="g", max_wait_ms=0)
    assert ids(again) == [0, 2]
    await client.ack(box, "g", 2)  # last in this answer: confirms 0 too
    broker.clock.advance(30)
    assert await client.fetch(box, group_name="g", max_wait_ms=0) == []


async def test_ack_twice_succeeds(client):
    box = await filled(client, 2)
    await client.fetch(box, group_name="g", deliver="earliest", max_wait_ms=0)
    await client.ack(box, "g", 1)
    await client.ack(box, "g", 1)
    await client.ack(box, "g", 0)


async def test_ack_of_never_existing_msg_id_is_message_not_found(client):
    box = await filled(client, 2)
    await client.fetch(box, group_name="g", deliver="earliest", max_wait_ms=0)
    for msg_id in (2, 50, 2**63 - 1):
        with pytest.raises(Mq9Error) as caught:
            await client.ack(box, "g", msg_id)
        assert caught.value.message == "message not found"


async def test_ack_raw_reply_shape(broker, client):
    box = await filled(client, 1)
    await client.fetch(box, group_name="g", deliver="earliest", max_wait_ms=0)
    body = b'{"group_name":"g","mail_address":"%s","msg_id":0}' % box.encode()
    reply = await broker.raw(f"$mq9.AI.MSG.ACK.{box}", body)
    assert reply == {"error": ""}


async def test_ack_before_a_groups_first_fetch_does_not_fix_its_start(client):
    box = await filled(client, 3)
    await client.ack(box, "g", 0)
    # the group's position is created by its first FETCH, from its deliver policy
    assert await client.fetch(box, group_name="g", max_wait_ms=0) == []
    await client.send(box, "new")
    assert texts(await client.fetch(box, group_name="g", max_wait_ms=0)) == ["new"]


async def test_ack_of_a_deleted_message_succeeds(client):
    box = await filled(client, 2)
    await client.fetch(box, group_name="g", deliver="earliest", max_wait_ms=0)
    await client.delete(box, 0)
    await client.ack(box, "g", 0)


# -- long-poll -------------------------------------------------------------------------------


@pytest.mark.parametrize("group", [None, "g"])
async def test_long_poll_answers_as_soon_as_a_message_arrives(broker, client, group):
    box = await client.mailbox_create()
    async with broker.client() as sender:
        poll = asyncio.create_task(client.fetch(box, group_name=group, max_wait_ms=10_000))
        await until(lambda: fetch_waiting(broker))
        assert not poll.done()
        await sender.send(box, "wake", priority="urgent")
        messages = await asyncio.wait_for(poll, 5)
    assert texts(messages) == ["wake"]


async def test_long_poll_of_a_group_with_everything_leased_wakes_on_new_message(broker, client):
    box = await filled(client, 1)
    await client.fetch(box, group_name="g", deliver="earliest", max_wait_ms=0)
    poll = asyncio.create_task(client.fetch(box, group_name="g", max_wait_ms=10_000))
    await until(lambda: fetch_waiting(broker))
    await client.send(box, "second")
    assert texts(await asyncio.wait_for(poll, 5)) == ["second"]


async def test_zero_wait_answers_at_once(client):
    box = await client.mailbox_create()
    assert await asyncio.wait_for(client.fetch(box, max_wait_ms=0), 2) == []
    assert await asyncio.wait_for(client.fetch(box, group_name="g", max_wait_ms=0), 2) == []


async def test_short_wait_answers_empty_after_the_wait(client):
    box = await client.mailbox_create()
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await asyncio.wait_for(client.fetch(box, max_wait_ms=100), 5) == []
    assert loop.time() - started >= 0.09


async def test_long_poll_ends_when_the_mailbox_expires_or_is_gone(broker, client):
    box = await client.mailbox_create(ttl=5)
    poll = asyncio.create_task(client.fetch(box, max_wait_ms=10_000))
    await until(lambda: fetch_waiting(broker))
    broker.clock.advance(5)
    await client.mailbox_create()  # any request lets the broker notice the expiry
    with pytest.raises(Mq9Error, match=f"^mailbox {box} does not exist$"):
        await asyncio.wait_for(poll, 5)


# -- answers never exceed max_payload (a NATS reply can be no larger) -------------------------


async def test_fetch_answer_fits_max_payload_nothing_lost(broker, client):
    set_limits(broker, max_payload=4096)
    box = await client.mailbox_create()
    priorities = ["normal", "critical", "urgent"]
    for i in range(12):
        await client.send(box, bytes([65 + i]) * 1000, priority=priorities[i % 3])
    expected = sorted(range(12), key=lambda i: (["critical", "urgent", "normal"].index(
        priorities[i % 3]), i))
    # stateless: refused (a cut answer would look like the end), saying how many fit
    with pytest.raises(Mq9Error) as caught:
        await client.fetch(box, deliver="earliest", max_wait_ms=0)
    fit = int(caught.value.message.split("ask for at most ")[1].split()[0])
    assert 1 <= fit < 12
    peeked = await client.fetch(box, deliver="earliest", num_msgs=fit, max_wait_ms=0)
    assert ids(peeked) == expected[:fit]
    with pytest.raises(Mq9Error, match="max_payload"):
        await client.fetch(box, deliver="earliest", num_msgs=fit + 1, max_wait_ms=0)
    # stateful: batches that fit, in priority order, every message exactly once
    handed: list[int] = []
    for _ in range(12):
        reply = await broker.raw(f"$mq9.AI.MSG.FETCH.{box}",
                          b'{"group_name":"g","deliver":"earliest","config":{"max_wait_ms":0}}')
        assert len(json.dumps(reply, separators=(",", ":"))) <= 4096
        batch = [m["msg_id"] for m in reply["messages"]]
        if not batch:
            break
        handed.extend(batch)
        await client.ack(box, "g", batch[-1])
    assert handed == expected


async def test_query_answer_is_cut_to_fit_max_payload_keeping_the_newest(broker, client):
    set_limits(broker, max_payload=4096)
    box = await filled(client, 0)
    for _ in range(10):
        await client.send(box, b"q" * 1000)
    found = await client.query(box)
    assert 1 <= len(found) < 10
    assert ids(found) == list(range(10 - len(found), 10))


async def test_a_message_the_broker_accepts_can_always_be_fetched(broker, client):
    """Payloads travel base64-encoded inside JSON answers, a third larger than sent: whatever
    SEND accepts must still fit in a FETCH and a QUERY answer."""
    set_limits(broker, max_payload=6000)
    box = await client.mailbox_create()
    stored = []
    for size in (6000, 5000, 4500, 4000, 3000):
        try:
            await client.send(box, b"z" * size, key=f"k{size}", tags=["t1", "t2"])
        except Mq9Error as exc:  # refused by the client (max_payload) or the broker (base64)
            assert not exc.retryable
            assert "at most" in exc.message or "payload too large" in exc.message
            continue
        stored.append(size)
    assert stored and 6000 not in stored
    for size in stored:
        [message] = await client.query(box, key=f"k{size}")
        assert len(message.payload) == size
    handed = []
    for _ in stored:
        batch = await client.fetch(box, group_name="g", deliver="earliest", max_wait_ms=0)
        handed.extend(len(m.payload) for m in batch)
        await client.ack(box, "g", batch[-1].msg_id)
    assert sorted(handed) == sorted(stored)


async def test_big_messages_over_real_nats_default_limits(broker, client):
    """With the default 1 MiB limits, a backlog larger than one reply and the largest message
    SEND accepts are all delivered (no answer the server would refuse to carry)."""
    box = await client.mailbox_create()
    for _ in range(6):
        await client.send(box, b"b" * 300_000)
    largest = None
    for size in (1_000_000, 900_000, 780_000, 700_000):
        try:
            await client.send(box, b"L" * size)
        except Mq9Error as exc:
            assert not exc.retryable and "at most" in exc.message
            continue
        largest = size
        break
    assert largest is not None
    sizes = []
    for _ in range(7):
        batch = await asyncio.wait_for(
            client.fetch(box, group_name="g", deliver="earliest", max_wait_ms=0), 5
        )
        if not batch:
            break
        sizes.extend(len(m.payload) for m in batch)
        await client.ack(box, "g", batch[-1].msg_id)
    assert sorted(sizes) == sorted([300_000] * 6 + [largest])
    assert len(await asyncio.wait_for(client.query(box, limit=1), 5)) == 1
