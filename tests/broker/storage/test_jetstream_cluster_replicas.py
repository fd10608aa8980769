"""The cluster store on three servers, its layout replicated 3 times (issue #72): two stores
connected to different servers write and read one mailbox at once, their lane reads answered
by any replica (batched direct gets) no older than the leader's last sequence
(``min_last_seq``): nothing acknowledged is missing from a read bounded by it, and no lane is
out of order.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from mq9_broker.state.mailbox import StoredMessage
from mq9_broker.storage.jetstream import ClusterStore
from mq9_broker.storage.mailbox_store import Mark
from mq9_wire.protocol import PRIORITY_ORDER, Priority
from testbed.support.jetstream_servers import open_replicated_store

pytestmark = pytest.mark.slow  # three nats-server processes


@pytest.fixture(scope="module")
def servers(shared_jetstream_cluster: list[str]) -> list[str]:
    # the session's 3-node cluster: nothing here kills, restarts or reconfigures it
    return shared_jetstream_cluster


@pytest.fixture
async def pair(servers: list[str]) -> AsyncIterator[tuple[ClusterStore, ClusterStore]]:
    layout = f"R{uuid.uuid4().hex[:10]}"
    first = await open_replicated_store(servers[0], layout)
    second = await open_replicated_store(servers[2], layout)
    try:
        yield first, second
    finally:
        for store in (first, second):
            await store.close()
            await store.requests.connection.close()


START = Mark(0, 0)  # a log's beginning


def _now() -> int:
    return int(time.time())


async def test_replicas_answer_reads_no_older_than_the_leader_said(
    pair: tuple[ClusterStore, ClusterStore],
) -> None:
    await pair[0].create_mailbox("shared", ttl=0, desc="", now=_now())
    sent: list[int] = []
    problems: list[str] = []
    done = asyncio.Event()

    async def writer(number: int, store: ClusterStore) -> None:
        rng = random.Random(number)
        for index in range(30):
            message = StoredMessage(-1, b"%d-%d" % (number, index), rng.choice(PRIORITY_ORDER), 0)
            sent.append(await store.append("shared", message, now=_now()))

    async def reader(store: ClusterStore) -> None:
        while not done.is_set():
            acked = set(sent)  # answered before the leader's last sequence is read
            mark = await store.last("shared")
            if mark is None:
                await asyncio.sleep(0.01)
                continue
            last = mark.msg_id
            lanes = await store.read_lanes("shared", START, 1000, upto=mark, now=_now())
            seen = {m.msg_id for lane in lanes for m in lane}
            if acked - seen:
                problems.append(f"answered before {last} but not read: {sorted(acked - seen)}")
            for lane in lanes:
                ids = [m.msg_id for m in lane]
                if ids != sorted(ids):
                    problems.append(f"a lane out of order: {ids}")

    readers = [asyncio.create_task(reader(store)) for store in pair]
    await asyncio.gather(*(writer(n, pair[n % 2]) for n in range(4)))
    done.set()
    await asyncio.gather(*readers)
    assert problems == []
    last = await pair[1].last("shared")
    assert last is not None
    lanes = await pair[1].read_lanes("shared", START, 1000, upto=last, now=_now())
    assert sorted(m.msg_id for lane in lanes for m in lane) == sorted(sent) == list(range(120))
    assert {m.priority for lane in lanes for m in lane} <= set(Priority)
