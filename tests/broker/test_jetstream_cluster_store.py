"""The store kept in the cluster (issue #72): ``ClusterStore`` on a real JetStream nats-server.

Each test has a layout of its own (``--stream``) on one loopback server; two stores on one
layout, each on its own connection, are two brokers. What is checked: a mailbox created once
whichever store asks, an expired one taken up with its log, messages read back by lane with
every field, keys replacing across priorities, TTLs hidden, delayed messages written by the
server, DELETE kept to its own mailbox, positions one store commits seen by the other, the
first registration kept; and two stores writing and reading one mailbox at once: nothing lost,
nothing out of order within a priority.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import nats
import pytest
from jetstream_servers import JetStreamCluster

from langchain_mq9.broker.state.mailbox import StoredMessage
from langchain_mq9.broker.storage.cluster import ClusterStore
from langchain_mq9.protocol import PRIORITY_ORDER, Priority

pytestmark = pytest.mark.slow  # a nats-server process


@pytest.fixture(scope="module")
def servers() -> Iterator[list[str]]:
    with JetStreamCluster(1) as cluster:
        yield cluster.urls


@pytest.fixture
def layout() -> str:
    return f"T{uuid.uuid4().hex[:10]}"


async def _store(servers: list[str], layout: str) -> ClusterStore:
    connection = await nats.connect(servers)
    store = ClusterStore(connection, name=layout, timeout=20.0)
    await store.open()
    return store


async def _close(store: ClusterStore) -> None:
    await store.close()
    await store.requests.connection.close()


@pytest.fixture
async def pair(servers: list[str], layout: str) -> AsyncIterator[tuple[ClusterStore, ClusterStore]]:
    """Two stores on one layout: two brokers."""
    first = await _store(servers, layout)
    second = await _store(servers, layout)
    try:
        yield first, second
    finally:
        await _close(first)
        await _close(second)


def _now() -> int:
    return int(time.time())


def _message(
    payload: bytes, priority: Priority = Priority.NORMAL, **fields: object
) -> StoredMessage:
    return StoredMessage(-1, payload, priority, _now(), **fields)  # type: ignore[arg-type]


async def test_a_name_is_created_once_whichever_store_asks(
    pair: tuple[ClusterStore, ClusterStore],
) -> None:
    first, second = pair
    made = await asyncio.gather(
        *(store.create_mailbox("team.inbox", ttl=0, desc="", now=_now()) for store in pair * 4)
    )
    assert sum(record is not None for record in made) == 1
    record = await second.mailbox("team.inbox", now=_now())
    assert record is not None and record.name == "team.inbox"
    assert await first.mailbox("never.made", now=_now()) is None


async def test_an_expired_mailbox_is_created_again_with_its_log(
    pair: tuple[ClusterStore, ClusterStore],
) -> None:
    first, second = pair
    now = _now()
    old = await first.create_mailbox("short", ttl=5, desc="a", now=now - 10)
    assert old is not None and not old.live(now)
    again = await second.create_mailbox("short", ttl=0, desc="b", now=now)
    assert again is not None and again.log == old.log and again.desc == "b"
    assert await first.create_mailbox("short", ttl=0, desc="c", now=now) is None


async def test_messages_come_back_by_lane_with_every_field(
    pair: tuple[ClusterStore, ClusterStore],
) -> None:
    first, second = pair
    await first.create_mailbox("box", ttl=0, desc="", now=_now())
    sent = []
    for number, priority in enumerate([Priority.NORMAL, Priority.CRITICAL, Priority.URGENT] * 3):
        header = b"NATS/1.0\r\nmq9-priority: %s\r\n\r\n" % priority.value.encode()
        message = _message(b"m%d \xff" % number, priority, header=header)
        sent.append((await first.append("box", message, now=_now()), message))
    ids = [msg_id for msg_id, _ in sent]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    last = await second.last_id("box")
    assert last == ids[-1]
    lanes = await second.read_lanes("box", None, 10, upto=last, now=_now())
    for priority, lane in zip(PRIORITY_ORDER, lanes, strict=True):
        expected = [m for _, m in sent if m.priority is priority]
        assert [m.msg_id for m in lane] == [m.msg_id for m in expected]
        assert [(m.payload, m.header) for m in lane] == [(m.payload, m.header) for m in expected]
        assert all(abs(m.create_time - _now()) < 60 for m in lane)
    # from a msg_id on, a limit, and a state no newer than `upto`
    later = await second.read_lanes("box", ids[4], 1, upto=ids[6], now=_now())
    assert [[m.msg_id for m in lane] for lane in later] == [[ids[4]], [ids[5]], [ids[6]]]
    assert [m.msg_id for m in await second.read("box", ids[2], 3, upto=None, now=_now())] == ids[
        2:5
    ]
    assert await second.first_id("box") == ids[0]
    assert await second.count("box") == 9
    assert await second.read("other", None, 5, upto=None, now=_now()) == []


async def test_a_key_replaces_its_message_of_any_priority_and_ttls_hide(
    pair: tuple[ClusterStore, ClusterStore],
) -> None:
    first, second = pair
    await first.create_mailbox("keyed", ttl=0, desc="", now=_now())
    await first.append("keyed", _message(b"v1", key="state"), now=_now())
    await second.append("keyed", _message(b"v2", Priority.CRITICAL, key="state"), now=_now())
    newest = await first.by_key("keyed", "state", now=_now())
    assert newest is not None and newest.payload == b"v2"
    assert [m.payload for m in await first.read("keyed", None, 10, upto=None, now=_now())] == [
        b"v2"
    ]
    gone = _message(b"expired", expire_at=_now() - 1)
    kept = _message(b"lives", expire_at=_now() + 3600)
    await first.append("keyed", gone, now=_now())
    await first.append("keyed", kept, now=_now())
    payloads = [m.payload for m in await second.read("keyed", None, 10, upto=None, now=_now())]
    assert payloads == [b"v2", b"lives"]


async def test_a_delayed_message_is_written_by_the_server_when_due(
    pair: tuple[ClusterStore, ClusterStore],
) -> None:
    first, second = pair
    await first.create_mailbox("later", ttl=0, desc="", now=_now())
    await first.hold(
        "later", _message(b"due", key="k", expire_at=_now() + 3600), due=_now() + 1, now=_now()
    )
    await first.hold("later", _message(b"never", expire_at=_now()), due=_now() + 1, now=_now())
    assert await second.read("later", None, 10, upto=None, now=_now()) == []
    deadline = time.monotonic() + 30  # the server's schedules tick about once a second
    found: list[StoredMessage] = []
    while not found and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        found = await second.read("later", None, 10, upto=None, now=_now())
    assert [m.payload for m in found] == [b"due"]
    assert found[0].expire_at == 0  # written without its TTL, as RobustMQ writes it


async def test_delete_touches_only_its_own_mailbox(pair: tuple[ClusterStore, ClusterStore]) -> None:
    first, second = pair
    for name in ("mine", "theirs"):
        await first.create_mailbox(name, ttl=0, desc="", now=_now())
    theirs = await first.append("theirs", _message(b"t"), now=_now())
    mine = await first.append("mine", _message(b"m"), now=_now())
    assert not await second.delete("mine", theirs)
    assert not await second.delete("mine", 0) and not await second.delete("mine", 10**9)
    assert await second.delete("mine", mine)
    assert not await first.delete("mine", mine)
    assert await first.read("mine", None, 5, upto=None, now=_now()) == []
    assert [m.payload for m in await first.read("theirs", None, 5, upto=None, now=_now())] == [b"t"]


async def test_a_position_one_store_commits_the_other_reads(
    pair: tuple[ClusterStore, ClusterStore],
) -> None:
    first, second = pair
    box = await first.create_mailbox("work", ttl=0, desc="", now=_now())
    other = await first.create_mailbox("elsewhere", ttl=0, desc="", now=_now())
    assert box is not None and other is not None
    assert (await second.position("g", box)).offset is None
    assert not (await second.position("g", box)).committed_anywhere
    await first.commit("g", box, 42)
    assert (await second.position("g", box)).offset == 42
    elsewhere = await second.position("g", other)
    assert elsewhere.offset is None and elsewhere.committed_anywhere
    await second.commit("g", box, 7)  # backwards too: the last ACK wins, as on RobustMQ
    assert (await first.position("g", box)).offset == 7


async def test_the_first_registration_is_kept(pair: tuple[ClusterStore, ClusterStore]) -> None:
    first, second = pair
    kept = await asyncio.gather(
        first.register("billing", '{"v": 1}', 10), second.register("billing", '{"v": 2}', 11)
    )
    assert sorted(kept) == [False, True]
    assert len(await first.agents()) == 1
    await second.unregister("billing")
    assert await first.agents() == []
    assert await first.register("billing", '{"v": 3}', 12)
    assert await second.agents() == [("billing", '{"v": 3}', 12)]


async def test_two_stores_writing_and_reading_at_once_lose_nothing_and_keep_order(
    pair: tuple[ClusterStore, ClusterStore],
) -> None:
    """Four writers on each store send to one mailbox while a reader on each reads the lanes
    again and again: every acknowledged msg_id is stored, each writer's messages of one
    priority are in its order, and no read shows a lane out of order or one state's lane
    missing what another lane of that read shows before it."""
    await pair[0].create_mailbox("shared", ttl=0, desc="", now=_now())
    sent: dict[tuple[int, Priority], list[int]] = {}
    done = asyncio.Event()
    problems: list[str] = []

    async def writer(number: int, store: ClusterStore) -> None:
        rng = random.Random(number)
        for index in range(40):
            priority = rng.choice(PRIORITY_ORDER)
            msg_id = await store.append(
                "shared", _message(b"%d-%d" % (number, index), priority), now=_now()
            )
            sent.setdefault((number, priority), []).append(msg_id)

    async def reader(store: ClusterStore) -> None:
        while not done.is_set():
            last = await store.last_id("shared")
            if last is None:
                await asyncio.sleep(0.01)
                continue
            lanes = await store.read_lanes("shared", None, 1000, upto=last, now=_now())
            for lane in lanes:
                ids = [m.msg_id for m in lane]
                if ids != sorted(ids) or any(i > last for i in ids):
                    problems.append(f"a lane out of order or past {last}: {ids}")
            seen = {m.msg_id for lane in lanes for m in lane}
            acked = {i for ids in list(sent.values()) for i in ids if i <= last}
            if acked - seen:
                problems.append(f"acknowledged below {last} but not read: {sorted(acked - seen)}")

    readers = [asyncio.create_task(reader(store)) for store in pair]
    await asyncio.gather(*(writer(n, pair[n % 2]) for n in range(8)))
    done.set()
    await asyncio.gather(*readers)
    assert problems == []
    last = await pair[1].last_id("shared")
    assert last is not None
    stored = await pair[1].read_lanes("shared", None, 1000, upto=last, now=_now())
    by_lane = {
        priority: [m.msg_id for m in lane]
        for priority, lane in zip(PRIORITY_ORDER, stored, strict=True)
    }
    for (_, priority), ids in sent.items():
        assert ids == sorted(ids)
        assert set(ids) <= set(by_lane[priority])
    assert sum(len(ids) for ids in by_lane.values()) == 8 * 40


async def test_a_stream_message_no_broker_wrote_is_not_served_and_the_rest_is(
    pair: tuple[ClusterStore, ClusterStore],
) -> None:
    first, second = pair
    await first.create_mailbox("box", ttl=0, desc="", now=_now())
    await first.append("box", _message(b"before"), now=_now())
    foreign = first.layout.message_subject("box", Priority.NORMAL, None)
    await first.requests.publish(foreign, b"\x00\x00\x00\xffnot a frame")
    await first.append("box", _message(b"after"), now=_now())
    read = await second.read("box", None, 10, upto=None, now=_now())
    assert [m.payload for m in read] == [b"before", b"after"]


async def test_every_stored_message_is_announced_a_delayed_one_too(
    pair: tuple[ClusterStore, ClusterStore],
) -> None:
    """The stream republishes each message's headers on ``$mq9.WAKE.<digest>`` (the waker's
    subject), so no broker needs to: a delayed message the server wrote is announced too."""
    from langchain_mq9.wake.rules import ARRIVALS_PREFIX, digest

    first, second = pair
    heard: asyncio.Queue[bytes] = asyncio.Queue()

    async def hear(message: object) -> None:
        heard.put_nowait(message.data)  # type: ignore[attr-defined]

    connection = first.requests.connection
    subscription = await connection.subscribe(ARRIVALS_PREFIX + digest("woken"), cb=hear)
    await connection.flush()
    await first.create_mailbox("woken", ttl=0, desc="", now=_now())
    await second.append("woken", _message(b"now"), now=_now())
    await first.append("other", _message(b"elsewhere"), now=_now())
    assert await asyncio.wait_for(heard.get(), 30) == b""
    await first.hold("woken", _message(b"later"), due=_now() + 1, now=_now())
    assert await asyncio.wait_for(heard.get(), 30) == b""  # the server wrote it when due
    await subscription.unsubscribe()
    assert heard.empty()
