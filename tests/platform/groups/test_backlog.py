"""A consumer group never stalls behind a backlog of higher lanes (#113, item 1).

A group has one position for its three lanes, and a FETCH reads the critical lane first and
stops once it holds ``num_msgs``: while an older normal message waits, the group's position
stays behind it, and every answer began with the critical and urgent messages above it,
handled or not. Once those outgrew what one answer holds (the broker's answer limit), the
normal message was never handed out: the reader gave up with ``AnswerTooLarge``, and a new
group reading from the earliest stalled at the same place. Now a group's reader asks the
bundled broker to read each lane after the run of done messages it begins with
(``skip_through``, docs/groups.md "Past a backlog"), so its progress depends neither on how
many messages of a higher priority wait above its position nor on the answer limit.

Played on every store (memory, SQLite, JetStream, and JetStream read through replicas that
answer each lane's batch short, as one behind the leader does), with backlogs of 4 and 3
times what an answer holds, and a writer that goes on sending while the group reads.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from mq9_broker import BrokerEngine, BrokerLimits, ManualClock
from mq9_broker.storage import SqliteStorage
from mq9_platform import GroupReader, Mq9Client
from mq9_platform.client.transport import MemoryTransport
from mq9_wire.nats_floor.jetstream.api import Batch

# About ten of these messages fit in one answer
BODY = "x" * 1000
LIMITS = BrokerLimits(max_answer=13_000)
CRITICAL, URGENT = 40, 30  # backlogs of 4 and 3 answers' worth

_boxes = itertools.count()


def _behind(store: Any) -> None:
    """Every lane's batch answered as a replica behind the leader answers it: short (half
    of it), and nothing saying so
    (tests/platform/broker/storage/test_jetstream_cluster_lagging.py)."""
    send = store.requests.direct_batch

    async def behind(stream: str, request: Mapping[str, Any], *, single: bool = False) -> Any:
        answer = await send(stream, request, single=single)
        if "next_by_subj" in request and len(answer.entries) > 1:
            return Batch(answer.entries[: len(answer.entries) // 2], 0)
        return answer

    store.requests.direct_batch = behind


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        pytest.param("jetstream", marks=pytest.mark.slow),  # the session's nats-server
        pytest.param("jetstream-lagging", marks=pytest.mark.slow),
    ]
)
async def client(request, tmp_path) -> AsyncIterator[Mq9Client]:
    layout = None
    if request.param.startswith("jetstream"):
        request.getfixturevalue("shared_jetstream")  # started at first use
        from testbed.support.store_lane import STATE_SERVER

        layout = await STATE_SERVER.layout()
        engine: Any = layout.engine(LIMITS)
        if request.param == "jetstream-lagging":
            _behind(engine.store)
    else:
        storage = SqliteStorage(tmp_path / "b.sqlite3") if request.param == "sqlite" else None
        engine = BrokerEngine(clock=ManualClock(), storage=storage, limits=LIMITS)
    connected = Mq9Client(transport=MemoryTransport(engine))
    await connected.connect()
    try:
        yield connected
    finally:
        await connected.close()
        if layout is not None:
            from testbed.support.store_lane import STATE_SERVER

            await STATE_SERVER.drop(layout)
        else:
            await engine.close()


async def _send(client: Mq9Client, box: str, priority: str, count: int, sent: dict) -> None:
    for _ in range(count):
        sent[await client.send(box, f"{len(sent)}{BODY}", priority=priority)] = priority


async def _drain(reader: GroupReader, num_msgs: int, seen: list[int], more=None) -> None:
    """Fetch and mark done until the reader has nothing new; ``more()`` after each batch."""
    while batch := await reader.fetch(num_msgs=num_msgs):
        seen.extend(m.msg_id for m in batch)
        await reader.done([m.msg_id for m in batch])
        if more is not None:
            await more()


@pytest.mark.parametrize("num_msgs", [1, 4, 10])
async def test_a_group_reads_every_message_past_a_backlog_of_higher_lanes(client, num_msgs):
    box = await client.mailbox_create(name=f"backlog.box{next(_boxes)}")
    sent: dict[int, str] = {}
    await _send(client, box, "normal", 1, sent)  # the oldest, held back by what follows
    await _send(client, box, "critical", CRITICAL, sent)
    await _send(client, box, "urgent", URGENT, sent)
    await _send(client, box, "normal", 5, sent)
    backlog = dict(sent)
    rounds = itertools.count()

    async def writer_goes_on() -> None:
        if next(rounds) < 6:
            await _send(client, box, "critical", 1, sent)
            await _send(client, box, "normal", 1, sent)

    reader = GroupReader(client, box, "g")
    seen: list[int] = []
    await _drain(reader, num_msgs, seen, writer_goes_on)
    assert sorted(seen) == sorted(sent), f"never handed out: {sorted(set(sent) - set(seen))}"
    assert len(seen) == len(set(seen)), "a message handed out twice"
    assert reader.committed == max(sent)
    # in priority order where it can: the backlog there at the start, critical lane first
    order = [backlog[i] for i in seen if i in backlog]
    assert order == sorted(order, key=["critical", "urgent", "normal"].index)
    # what the group's position passed, a fresh reader of the group never gets
    assert await GroupReader(client, box, "g").fetch(num_msgs=10) == []
    # and a new group reading from the earliest reads everything, once
    fresh: list[int] = []
    await _drain(GroupReader(client, box, "new"), num_msgs, fresh)
    assert sorted(fresh) == sorted(sent) and len(fresh) == len(set(fresh))


async def test_a_restarted_reader_goes_on_behind_a_backlog_it_handled(client):
    """A reader that handled the critical backlog and died handling the older normal message:
    its successor hands that one out past the backlog, and the group passes them all."""
    box = await client.mailbox_create(name=f"backlog.box{next(_boxes)}")
    sent: dict[int, str] = {}
    await _send(client, box, "normal", 1, sent)
    await _send(client, box, "critical", CRITICAL, sent)
    first = GroupReader(client, box, "g")
    handled: list[int] = []
    while len(handled) < CRITICAL:  # it dies handling the normal one
        batch = await first.fetch(num_msgs=7)
        handled += [m.msg_id for m in batch if sent[m.msg_id] == "critical"]
        await first.done([m.msg_id for m in batch if sent[m.msg_id] == "critical"])
    assert first.committed is None  # the normal message holds the position back
    seen: list[int] = []
    successor = GroupReader(client, box, "g")
    await _drain(successor, 4, seen)
    # the normal one, past the backlog (what the first finished, its records say: not again)
    assert seen == [i for i, p in sent.items() if p == "normal"]
    assert successor.committed == max(sent)
    assert await GroupReader(client, box, "g").fetch(num_msgs=10) == []
