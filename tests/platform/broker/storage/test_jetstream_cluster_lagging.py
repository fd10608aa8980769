"""A replica behind the leader never makes a group skip a message (#88 item 1).

Direct gets are answered by any replica, and one behind the leader answers a lane's batch
short without saying so (nats-server 2.12 on ignores ``min_last_seq``). A ``GroupReader``
takes a lane of fewer messages than it asked for as read to its end (protocol-commands.md §5.4), so
a short lane beside a newer one from another replica moved the group's position past what the
lagging replica lacked: those messages were never handed out to the group again. The
mailbox's head now says each lane's newest msg_id, decided with the write; a lane read short
of it asks the leader what follows.

Played two ways: the store's own requests answering a lane's batch as a replica behind would
(exact, on one server), and a real 3-node cluster whose follower, the one the reading broker
is connected to, is stopped and resumed over and over (SIGSTOP/SIGCONT, the way a slow disk
or a long pause looks) under mixed-priority load: every acknowledged SEND is handed out to
the group exactly once.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import pytest

from mq9_broker.engine.engine import Engine
from mq9_broker.state.mailbox import StoredMessage
from mq9_broker.storage.jetstream import ClusterStore, reads
from mq9_broker.storage.mailbox_store import Mark
from mq9_platform import Mq9Client
from mq9_platform.client.transport import MemoryTransport
from mq9_platform.groups import GroupReader
from mq9_wire.nats_floor.jetstream.api import Batch
from mq9_wire.protocol import PRIORITY_ORDER, Priority
from testbed.support.jetstream_servers import (
    JetStreamCluster,
    close_store,
    open_replicated_store,
    open_store,
)

pytestmark = pytest.mark.slow  # nats-server processes

START = Mark(0, 0)


@pytest.fixture
def one_server(shared_jetstream: list[str]) -> list[str]:
    # (the worker's shared server: each test writes a layout of its own and stops no node)
    return shared_jetstream


@pytest.fixture
async def store(one_server: list[str]) -> AsyncIterator[ClusterStore]:
    opened = await open_store(one_server, f"L{uuid.uuid4().hex[:10]}")
    try:
        yield opened
    finally:
        await close_store(opened)


def _now() -> int:
    return int(time.time())


async def _mixed(store: ClusterStore, mailbox: str, count: int) -> tuple[Mark, list[int]]:
    """``mailbox`` holding ``count`` messages, every third critical: its mark, the normal
    lane's msg_ids."""
    await store.create_mailbox(mailbox, ttl=0, desc="", now=_now())
    normal = []
    for n in range(count):
        priority = Priority.CRITICAL if n % 3 == 0 else Priority.NORMAL
        msg_id = await store.append(mailbox, StoredMessage(-1, b"%d" % n, priority, 0), now=0)
        if priority is Priority.NORMAL:
            normal.append(msg_id)
    last = await store.last(mailbox)
    assert last is not None and last.lanes is not None
    return last, normal


def _lane_reads_behind(store: ClusterStore, seq: int) -> list[dict[str, Any]]:
    """The normal lane's batches answered as a replica whose last sequence is ``seq`` would:
    short, and nothing saying so. The leader's gets, recorded."""
    send, leader = store.requests.direct_batch, store.requests.leader_get
    asked: list[dict[str, Any]] = []

    async def behind(stream: str, request: Mapping[str, Any], *, single: bool = False) -> Any:
        answer = await send(stream, request, single=single)
        if str(request.get("next_by_subj", "")).endswith(".normal.*.*"):
            kept = [entry for entry in answer.entries if entry.seq <= seq]
            return Batch(kept, 0)
        return answer

    async def noted(stream: str, **request: Any) -> Any:
        asked.append(request)
        return await leader(stream, **request)

    store.requests.direct_batch = behind  # type: ignore[method-assign]
    store.requests.leader_get = noted  # type: ignore[method-assign]
    return asked


async def test_a_lane_a_replica_behind_answered_short_is_read_on_from_the_leader(
    store: ClusterStore,
) -> None:
    # 60 messages, the lanes read by lane (more than BY_ID waiting); the normal lane's
    # batches come from a replica that has only the first half of the stream. The critical
    # lane's newest, read whole from another replica, is above what it lacked: a reader
    # acking the answer's horizon would pass those for good
    last, normal = await _mixed(store, "lagged", 60)
    assert len(normal) > reads.BY_ID
    asked = _lane_reads_behind(store, last.seq // 2)
    lanes = await store.read_lanes("lagged", START, 100, upto=last, now=_now())
    assert [m.msg_id for m in lanes[-1]] == normal
    assert asked, "the leader was asked what the replica lacked"


async def test_a_lane_is_read_to_its_newest_and_no_further(store: ClusterStore) -> None:
    # a read that reached each lane's newest asks the leader nothing; a lane whose newest
    # is below the reader's start is not asked at all
    _, normal = await _mixed(store, "whole", 60)
    for _n in range(30):  # 30 normal messages more: the critical lane's newest stays 57
        await store.append("whole", StoredMessage(-1, b"n", Priority.NORMAL, 0), now=0)
    last = await store.last("whole")
    start = await store.find("whole", 60)
    assert last is not None and start is not None and last.lanes == (57, -1, 89)
    asked = _lane_reads_behind(store, last.seq)  # (a replica as new as the leader)
    lanes = await store.read_lanes("whole", START, 100, upto=last, now=_now())
    assert [m.msg_id for m in lanes[-1]] == normal + list(range(60, 90)) and asked == []
    batches: list[str] = []
    send = store.requests.direct_batch

    async def noting(stream: str, request: Mapping[str, Any], *, single: bool = False) -> Any:
        batches.append(str(request.get("next_by_subj") or request.get("last_by_subj")))
        return await send(stream, request, single=single)

    store.requests.direct_batch = noting  # type: ignore[method-assign]
    lanes = await store.read_lanes("whole", start, 100, upto=last, now=_now())
    assert [[m.msg_id for m in lane] for lane in lanes] == [[], [], list(range(60, 90))]
    assert batches and all(b.endswith(".normal.*.*") for b in batches), batches
    assert asked == [], asked


async def test_a_lane_whose_newest_was_deleted_asks_the_leader_once(store: ClusterStore) -> None:
    # the normal lane's newest (not the mailbox's) deleted: a read short of it is checked
    # with the leader once, then known
    last, normal = await _mixed(store, "gone", 60)
    assert normal[-1] == 59
    await store.append("gone", StoredMessage(-1, b"c", Priority.CRITICAL, 0), now=0)
    assert await store.delete("gone", 59)
    now_last = await store.last("gone")
    assert now_last is not None
    last = now_last
    asked = _lane_reads_behind(store, last.seq)
    for _ in range(3):
        lanes = await store.read_lanes("gone", START, 100, upto=last, now=_now())
        assert [m.msg_id for m in lanes[-1]] == normal[:-1]
    assert len(asked) == 1, asked


async def test_a_head_written_before_lanes_still_reads_whole(store: ClusterStore) -> None:
    # a head without lanes (an older broker's): every short lane read is checked
    last, normal = await _mixed(store, "older", 60)
    unsaid = Mark(last.msg_id, last.seq)
    _lane_reads_behind(store, last.seq // 2)
    lanes = await store.read_lanes("older", START, 100, upto=unsaid, now=_now())
    assert [m.msg_id for m in lanes[-1]] == normal


# -- a real follower stopped and resumed ---------------------------------------------------

ROUNDS = 24  # stops of the follower: 0.4 s stopped, 0.15 s running
MESSAGES = 1200


@pytest.fixture(scope="module")
def three() -> Iterator[JetStreamCluster]:
    with JetStreamCluster(3) as cluster:
        yield cluster


async def _engine_client(url: str, layout: str) -> tuple[Mq9Client, ClusterStore]:
    store = await open_replicated_store(url, layout)
    client = Mq9Client(transport=MemoryTransport(Engine(store)))
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


async def test_a_group_skips_nothing_while_a_follower_lags(three: JetStreamCluster) -> None:
    layout = f"G{uuid.uuid4().hex[:10]}"
    writer, writer_store = await _engine_client(three.urls[0], layout)
    stream = writer_store.layout.mailbox_stream("work")
    info = await writer_store.requests.api(f"STREAM.INFO.{stream}", {})
    follower = next(s for s in three.servers if s.name != info["cluster"]["leader"])
    assert follower.process is not None
    pid = follower.process.pid
    # the reading broker on another server: NATS hands each of its direct gets to any
    # replica's queue subscriber, and one handed to the paused follower is answered when it
    # resumes, from what it had
    others = [s.url for s in three.servers if s is not follower]
    reader, reader_store = await _engine_client(others[-1], layout)
    sent: dict[int, Priority] = {}
    handed: dict[str, list[int]] = {"g1": [], "g2": []}
    writing = True
    try:
        await writer.mailbox_create(name="work", ttl=0)

        async def write(number: int) -> None:
            rng = random.Random(number)
            for n in range(MESSAGES // 4):
                priority = rng.choice(PRIORITY_ORDER)
                sent[await writer.send("work", f"{number}-{n}", priority=priority)] = priority

        async def read(name: str) -> None:
            group = GroupReader(reader, "work", name)
            empty = 0  # answers with nothing in a row once the writes ended
            while writing or empty < 3:
                messages = await group.fetch(num_msgs=20, max_wait_ms=50)
                handed[name].extend(m.msg_id for m in messages)
                if messages:
                    await group.done([m.msg_id for m in messages])
                empty = 0 if messages or writing else empty + 1

        reading = [asyncio.create_task(read(name)) for name in handed]
        pausing = asyncio.create_task(_stop_and_resume(pid, ROUNDS))
        await asyncio.gather(*(write(n) for n in range(4)))
        await pausing
        writing = False
        await asyncio.wait_for(asyncio.gather(*reading), timeout=120)
        assert len(sent) == MESSAGES
        for name, got in handed.items():
            missing = sorted(set(sent) - set(got))
            assert missing == [], f"{name}: {len(missing)} never handed out: {missing[:20]}"
            assert len(got) == len(set(got)), f"{name}: a message handed out twice"
            # what the group's position passed, a fresh reader of the group never gets
            assert await GroupReader(reader, "work", name).fetch(num_msgs=10) == []
    finally:
        os.kill(pid, signal.SIGCONT)
        for client, opened in ((writer, writer_store), (reader, reader_store)):
            await client.close()
            await close_store(opened)
