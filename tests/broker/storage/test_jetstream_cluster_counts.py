"""#106, item 3 on the cluster store: what a COUNT answers is counted by the servers, never read
and written back by a broker (storage/jetstream/counts.py): each lane's messages, the delayed
messages held and the second the soonest is due (its subject says it, counted down so the
servers list it last). Two stores on one layout are two brokers, and count alike. COUNTs of one
mailbox asked while one is under way share the next one (``Shared``), begun after they were
asked: eight in flight cost the servers one count at a time, and each sees what was written
before it was asked. (The servers' clock writes delayed messages when due: real seconds.)"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from mq9_broker.state.mailbox import StoredMessage
from mq9_broker.storage.jetstream import ClusterStore
from mq9_broker.storage.jetstream.counts import Shared
from mq9_broker.storage.jetstream.mapping import DUE_MOST, Layout, due_of, schedule_id
from mq9_wire.protocol import Priority
from testbed.support.jetstream_servers import close_store, open_store
from testbed.support.waiting import until

pytestmark = pytest.mark.slow  # a nats-server process


@pytest.fixture
async def pair(shared_jetstream: list[str]) -> AsyncIterator[tuple[ClusterStore, ClusterStore]]:
    """Two stores (two brokers) on a layout of the test's own."""
    layout = f"C{uuid.uuid4().hex[:10]}"
    first = await open_store(shared_jetstream, layout)
    second = await open_store(shared_jetstream, layout)
    try:
        yield first, second
    finally:
        await close_store(first)
        await close_store(second)


def _now() -> int:
    return int(time.time())


def _message(payload: bytes, priority: Priority = Priority.NORMAL, **fields) -> StoredMessage:
    return StoredMessage(-1, payload, priority, _now(), **fields)


def _lanes(critical: int = 0, urgent: int = 0, normal: int = 0) -> dict[str, int]:
    return {"critical": critical, "urgent": urgent, "normal": normal}


async def test_both_brokers_count_what_the_stream_holds(pair):
    first, second = pair
    await first.create_mailbox("team.count", ttl=0, desc="", now=_now())
    gone = await first.append("team.count", _message(b"a", Priority.CRITICAL), now=_now())
    for n in range(3):
        await second.append("team.count", _message(b"u%d" % n, Priority.URGENT), now=_now())
    await first.append("team.count", _message(b"old", key="k"), now=_now())
    await second.append("team.count", _message(b"new", key="k"), now=_now())  # replaces it
    for store in pair:
        assert await store.lane_counts("team.count", now=_now()) == _lanes(1, 3, 1)
    assert await second.delete("team.count", gone)
    for store in pair:
        lanes, last, held = await store.counted("team.count", now=_now())
        assert (lanes, held) == (_lanes(0, 3, 1), (0, None))
        assert last is not None and last.msg_id == gone + 5
    assert await first.lane_counts("never.made", now=_now()) == _lanes()


async def test_delayed_messages_are_counted_held_with_the_soonest_due(pair):
    first, second = pair
    await first.create_mailbox("team.later", ttl=0, desc="", now=_now())
    await first.create_mailbox("team.other", ttl=0, desc="", now=_now())
    now = _now()
    await first.hold("team.later", _message(b"hour"), due=now + 3600, now=now)
    await second.hold("team.later", _message(b"soon", Priority.URGENT), due=now + 2, now=now)
    await first.hold("team.later", _message(b"day"), due=now + 86_400, now=now)
    await first.hold("team.other", _message(b"sooner"), due=now + 1, now=now)  # not counted
    for store in pair:
        assert await store.scheduled("team.later", now=now) == (3, now + 2)
        assert await store.lane_counts("team.later", now=now) == _lanes()

    async def written() -> bool:
        return await second.scheduled("team.later", now=_now()) == (2, now + 3600)

    await until(written, timeout=30, what="the soonest delayed message written when due")

    async def numbered() -> bool:
        return await first.lane_counts("team.later", now=_now()) == _lanes(0, 1, 0)

    await until(numbered, timeout=30, what="the delayed message numbered into its lane")


async def test_counts_asked_at_once_share_one_of_the_servers_at_a_time():
    """Eight COUNTs of one mailbox in flight: two runs (the one under way, the next one they
    share), and a COUNT asked after a write sees it, though a count began before it."""
    runs: list[str] = []
    held = {"box": 1}
    gate = asyncio.Event()

    async def count(mailbox: str) -> int:
        seen = held[mailbox]  # (as of the moment it begins)
        runs.append(mailbox)
        await gate.wait()
        return seen

    shared = Shared(count)
    under_way = asyncio.ensure_future(shared("box"))
    while not runs:
        await asyncio.sleep(0)
    held["box"] = 2  # written after the first count began
    later = [asyncio.ensure_future(shared("box")) for _ in range(7)]
    await asyncio.sleep(0)
    gate.set()
    assert await under_way == 1
    assert await asyncio.gather(*later) == [2] * 7
    assert runs == ["box", "box"]
    assert await shared("box") == 2 and len(runs) == 3  # (none under way: one of its own)


async def test_a_cancelled_waiter_cancels_no_other_count():
    gate = asyncio.Event()

    async def count(mailbox: str) -> int:
        await gate.wait()
        return 7

    shared = Shared(count)
    first, second = asyncio.ensure_future(shared("b")), asyncio.ensure_future(shared("b"))
    await asyncio.sleep(0)
    first.cancel()
    gate.set()
    assert await second == 7


def test_a_schedules_subject_says_when_it_is_due_the_soonest_sorting_last():
    layout = Layout("S")
    dues = (90, 5, 1_800_000_000)
    subjects = [layout.schedule_subject("m", schedule_id(due, "u")) for due in dues]
    assert [due_of(s) for s in subjects] == [90, 5, 1_800_000_000]
    assert due_of(max(subjects)) == 5
    assert due_of(layout.schedule_subject("m", uuid.uuid4().hex)) is None  # held before #106
    assert max(subjects) > layout.schedule_subject("m", "f" * 32)  # after any such one
    assert due_of(layout.schedule_subject("m", schedule_id(DUE_MOST + 5, "u"))) == DUE_MOST
