"""``leases.judge``: who holds a message, from its lease records, with no broker (docs/groups.md).

Workers judge a claim's age by the broker's time as each last saw it, while the broker hides a
claim at its own exact expiry; near that moment a claim is in doubt, and nobody may take the
message, not even its holder, so two workers never both believe they hold it.
"""

from __future__ import annotations

import pytest

from mq9_broker import ManualClock
from mq9_platform import GroupReader
from mq9_platform.client.client import Message
from mq9_platform.groups.leases import (
    GRACE,
    claim_tag,
    done_tag,
    is_reserved,
    judge,
    lease_address,
)
from mq9_wire.protocol import Priority
from mq9_wire.protocol.errors import MailboxExists

JOB = Message(7, b"job", Priority.NORMAL, create_time=50)
TTL = 10


def record(msg_id: int, worker: str, tag: str, at: int) -> Message:
    return Message(msg_id, worker.encode(), Priority.NORMAL, create_time=at, tags=[tag])


def holder(records: list[Message], worker: str, now: int) -> str:
    verdict = judge([JOB], records, worker, TTL, now)
    for name, ids in (("done", verdict.done), ("mine", verdict.mine), ("free", verdict.free)):
        if JOB.msg_id in ids:
            return name
    return verdict.others[JOB.msg_id]


def test_the_oldest_claim_holds_and_a_done_record_ends_it():
    claims = [record(1, "a", claim_tag(JOB), 100), record(2, "b", claim_tag(JOB), 100)]
    assert holder(claims, "a", 100) == "mine"
    assert holder(claims, "b", 100) == "a"
    assert holder([*claims, record(3, "b", done_tag(JOB), 101)], "a", 101) == "done"
    assert (
        holder([record(1, "a", claim_tag(Message(7, b"", Priority.NORMAL, 51)), 100)], "b", 100)
        == "free"
    )


def test_near_its_end_a_claim_is_in_doubt_for_everyone():
    claim = [record(1, "a", claim_tag(JOB), 100)]
    end = 100 + TTL
    assert holder(claim, "a", end - GRACE - 1) == "mine"
    for now in range(end - GRACE, end + GRACE):  # its holder waits, and so do the others
        assert holder(claim, "a", now) == "a"
        assert holder(claim, "b", now) == "a"
    # surely over: a claim written without a TTL (a forger's) holds no longer than this
    assert holder(claim, "b", end + GRACE) == "free"


def test_the_reserved_root_and_the_lease_mailbox_name():
    assert is_reserved("mq9") and is_reserved("mq9.lease.x")
    assert not is_reserved("mq9x") and not is_reserved("team.mq9")
    assert lease_address("a", "g") != lease_address("a", "h") != lease_address("b", "g")
    # a mailbox address holds no newline, so the newline between it and the group is a seam
    assert lease_address("a", "b\nc") != lease_address("a.b", "c")


async def test_a_claim_written_without_a_ttl_ends_for_a_worker_that_looks_often(broker, client):
    """Issue #35: a worker waiting with fetch(max_wait_ms=...) looks every 0.1 s. Its idea of
    the broker's time was reset to the newest record's create_time at every look, so with one
    record that never goes (a claim sent without a TTL) its time stood still and the message
    was held for ever; docs/groups.md promises at most lease_ttl + GRACE."""
    box = await client.mailbox_create(name="lease.forged")
    await client.send(box, "job")
    ttl = 5
    await client.mailbox_create(name=lease_address(box, "g"), ttl=ttl)
    [job] = await client.query(box)
    await client.send(lease_address(box, "g"), "forger", tags=[claim_tag(job)])  # no TTL
    clock = ManualClock(0)  # this worker's elapsed seconds
    worker = GroupReader(client, box, "g", worker="w", lease_ttl=ttl, clock=clock)
    for _ in range(10 * (ttl + GRACE + 1)):  # looks every 0.1 s, the broker's time goes on
        if await worker.fetch():
            break
        clock.advance(0.1)
        broker.clock.advance(0.1)
    else:
        raise AssertionError("the forged claim held the message past lease_ttl + GRACE")
    assert clock.now <= ttl + GRACE + 1


async def test_a_worker_makes_the_records_mailbox_at_its_first_read(client):
    """(#100) Not on the first claims, which every worker of a group writes on the same
    arrival: on RobustMQ two CREATEs of a new name that cross lose the mailbox for good
    (docs/protocol-commands.md §5.1). The first worker to read makes it, before anything arrives."""
    box = await client.mailbox_create(name="lease.early")
    worker = GroupReader(client, box, "g", worker="w")
    assert await worker.fetch() == []
    with pytest.raises(MailboxExists):
        await client.mailbox_create(name=lease_address(box, "g"), ttl=60)
    assert await client.query(lease_address(box, "g")) == []  # nothing recorded yet
