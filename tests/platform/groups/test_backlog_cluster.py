"""A consumer group gets past a backlog of higher lanes on a 3-node cluster whose follower lags
(#113, item 1, as the issue played it; tests/platform/groups/test_backlog.py plays it exactly, with
replicas answering short in process).

The writer's broker on one server, the group's on another, the follower the reads may reach
stopped and resumed over and over (SIGSTOP/SIGCONT, the way a slow disk looks) while the
writer adds a backlog of critical and urgent messages several times what one answer holds
above older normal ones, and goes on writing mixed priorities. Every message reaches the
group once, and a new group reading from the earliest reads everything.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import uuid
from collections.abc import Iterator

import pytest

from mq9_broker import BrokerLimits
from mq9_broker.engine.engine import Engine
from mq9_broker.storage.jetstream import ClusterStore
from mq9_platform import Mq9Client
from mq9_platform.client.transport import MemoryTransport
from mq9_platform.groups import GroupReader
from mq9_wire.protocol import PRIORITY_ORDER
from testbed.support.jetstream_servers import JetStreamCluster, close_store, open_replicated_store

pytestmark = pytest.mark.slow  # three nats-server processes

BODY = "x" * 1000
LIMITS = BrokerLimits(max_answer=13_000)  # about ten of these messages an answer
ROUNDS = 12  # stops of the follower: 0.4 s stopped, 0.15 s running


@pytest.fixture(scope="module")
def three() -> Iterator[JetStreamCluster]:
    with JetStreamCluster(3) as cluster:
        yield cluster


async def _engine_client(url: str, layout: str) -> tuple[Mq9Client, ClusterStore]:
    store = await open_replicated_store(url, layout)
    client = Mq9Client(transport=MemoryTransport(Engine(store, limits=LIMITS)))
    await client.connect()
    return client, store


async def _stop_and_resume(pid: int, rounds: int) -> None:
    # time passing is this helper's subject: the follower paused, then let catch up a little
    for _ in range(rounds):
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(0.4)
        finally:
            os.kill(pid, signal.SIGCONT)
        await asyncio.sleep(0.15)


async def _drain(group: GroupReader, got: list[int], writing: list[bool]) -> None:
    empty = 0  # answers with nothing in a row once the writes ended
    while writing or empty < 3:
        messages = await group.fetch(num_msgs=4, max_wait_ms=50)
        got.extend(m.msg_id for m in messages)
        if messages:
            await group.done([m.msg_id for m in messages])
        empty = 0 if messages or writing else empty + 1


async def test_a_group_gets_past_a_backlog_of_higher_lanes_while_a_follower_lags(
    three: JetStreamCluster,
) -> None:
    layout = f"B{uuid.uuid4().hex[:10]}"
    writer, writer_store = await _engine_client(three.urls[0], layout)
    stream = writer_store.layout.mailbox_stream("work")
    info = await writer_store.requests.api(f"STREAM.INFO.{stream}", {})
    follower = next(s for s in three.servers if s.name != info["cluster"]["leader"])
    assert follower.process is not None
    pid = follower.process.pid
    others = [s.url for s in three.servers if s is not follower]
    reader, reader_store = await _engine_client(others[-1], layout)
    sent: dict[int, str] = {}
    got: list[int] = []
    writing = [True]  # (a list: the reading task sees it emptied)
    try:
        await writer.mailbox_create(name="work", ttl=0)

        async def send(priority: str) -> None:
            sent[await writer.send("work", f"{len(sent)}{BODY}", priority=priority)] = priority

        for priority, count in [("normal", 3), ("critical", 40), ("urgent", 30)]:
            for _ in range(count):
                await send(priority)
        reading = asyncio.create_task(_drain(GroupReader(reader, "work", "g"), got, writing))
        pausing = asyncio.create_task(_stop_and_resume(pid, ROUNDS))
        rng = random.Random(113)
        for _ in range(150):  # the writer goes on, mixed
            await send(rng.choice(PRIORITY_ORDER).value)
        await pausing
        writing.clear()
        await asyncio.wait_for(reading, timeout=120)
        missing = sorted(set(sent) - set(got))
        assert missing == [], f"{len(missing)} never handed out: {missing[:20]}"
        assert len(got) == len(set(got)), "a message handed out twice"
        # what the group's position passed, a fresh reader of the group never gets
        assert await GroupReader(reader, "work", "g").fetch(num_msgs=10) == []
        fresh: list[int] = []
        await _drain(GroupReader(reader, "work", "new"), fresh, [])
        assert sorted(fresh) == sorted(sent) and len(fresh) == len(set(fresh))
    finally:
        os.kill(pid, signal.SIGCONT)
        for client, opened in ((writer, writer_store), (reader, reader_store)):
            await client.close()
            await close_store(opened)
