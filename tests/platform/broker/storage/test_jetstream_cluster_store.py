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
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from mq9_broker.state.mailbox import StoredMessage
from mq9_broker.storage.jetstream import ClusterStore, token
from mq9_broker.storage.jetstream.mapping import NO_KEY
from mq9_broker.storage.mailbox_store import Mark
from mq9_wire.nats_floor.jetstream.api import Batch
from mq9_wire.protocol import PRIORITY_ORDER, Priority
from testbed.support.jetstream_servers import close_store, open_store

pytestmark = pytest.mark.slow  # a nats-server process

START = Mark(0, 0)  # a log's beginning


@pytest.fixture(scope="module")
def servers(shared_jetstream: list[str]) -> list[str]:
    # the session's JetStream server: nothing here kills, restarts or reconfigures it
    return shared_jetstream


@pytest.fixture
def layout() -> str:
    return f"T{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def pair(servers: list[str], layout: str) -> AsyncIterator[tuple[ClusterStore, ClusterStore]]:
    """Two stores on one layout: two brokers."""
    first = await open_store(servers, layout)
    second = await open_store(servers, layout)
    try:
        yield first, second
    finally:
        await close_store(first)
        await close_store(second)


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
    assert ids == list(range(9))  # RobustMQ's numbering: from 0, one after another
    last = await second.last("box")
    assert last is not None and last.msg_id == ids[-1]
    lanes = await second.read_lanes("box", START, 10, upto=last, now=_now())
    for priority, lane in zip(PRIORITY_ORDER, lanes, strict=True):
        expected = [m for _, m in sent if m.priority is priority]
        assert [m.msg_id for m in lane] == [m.msg_id for m in expected]
        assert [(m.payload, m.header) for m in lane] == [(m.payload, m.header) for m in expected]
        assert all(abs(m.create_time - _now()) < 60 for m in lane)
    # from a msg_id on, a limit, and a state no newer than `upto`
    fourth, sixth = await second.find("box", ids[4]), await second.find("box", ids[6])
    assert fourth is not None and sixth is not None
    later = await second.read_lanes("box", fourth, 1, upto=sixth, now=_now())
    assert [[m.msg_id for m in lane] for lane in later] == [[ids[4]], [ids[5]], [ids[6]]]
    # from a msg_id on, whatever sequence the read starts at below it
    from_two = await second.read("box", Mark(ids[2], 0), 3, upto=None, now=_now())
    assert [m.msg_id for m in from_two] == ids[2:5]
    first_mark = await second.first("box")
    assert first_mark is not None and first_mark.msg_id == ids[0]
    assert await second.count("box") == 9
    assert await second.read("other", START, 5, upto=None, now=_now()) == []


async def test_a_key_replaces_its_message_of_any_priority_and_ttls_hide(
    pair: tuple[ClusterStore, ClusterStore],
) -> None:
    first, second = pair
    await first.create_mailbox("keyed", ttl=0, desc="", now=_now())
    await first.append("keyed", _message(b"v1", key="state"), now=_now())
    await second.append("keyed", _message(b"v2", Priority.CRITICAL, key="state"), now=_now())
    newest = await first.by_key("keyed", "state", now=_now())
    assert newest is not None and newest.payload == b"v2"
    assert [m.payload for m in await first.read("keyed", START, 10, upto=None, now=_now())] == [
        b"v2"
    ]
    gone = _message(b"expired", expire_at=_now() - 1)
    kept = _message(b"lives", expire_at=_now() + 3600)
    await first.append("keyed", gone, now=_now())
    await first.append("keyed", kept, now=_now())
    payloads = [m.payload for m in await second.read("keyed", START, 10, upto=None, now=_now())]
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
    assert await second.read("later", START, 10, upto=None, now=_now()) == []
    deadline = time.monotonic() + 30  # the server's schedules tick about once a second
    found: list[StoredMessage] = []
    while not found and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        found = await second.read("later", START, 10, upto=None, now=_now())
    assert [m.payload for m in found] == [b"due"]
    assert found[0].expire_at == 0  # written without its TTL, as RobustMQ writes it
    assert found[0].msg_id == 0  # numbered into the mailbox when written


async def test_delete_touches_only_its_own_mailbox(pair: tuple[ClusterStore, ClusterStore]) -> None:
    first, second = pair
    for name in ("mine", "theirs"):
        await first.create_mailbox(name, ttl=0, desc="", now=_now())
    await first.append("theirs", _message(b"t0"), now=_now())
    theirs = await first.append("theirs", _message(b"t1"), now=_now())
    mine = await first.append("mine", _message(b"m"), now=_now())
    assert (theirs, mine) == (1, 0)  # each mailbox numbered on its own
    assert not await second.delete("mine", theirs)
    assert not await second.delete("mine", 10**9)
    assert await second.delete("mine", mine)
    assert not await first.delete("mine", mine)
    assert await first.read("mine", START, 5, upto=None, now=_now()) == []
    read = await first.read("theirs", START, 5, upto=None, now=_now())
    assert [m.payload for m in read] == [b"t0", b"t1"]


async def test_a_msg_id_is_never_given_twice_after_its_message_is_deleted(
    pair: tuple[ClusterStore, ClusterStore],
) -> None:
    """The newest message deleted (by the store that wrote it or another), its msg_id is
    still the mailbox's last: neither store gives it again, a store whose knowledge of the
    mailbox predates the deletion included."""
    first, second = pair
    await first.create_mailbox("box", ttl=0, desc="", now=_now())
    assert [await first.append("box", _message(b"%d" % n), now=_now()) for n in range(3)] == [
        0,
        1,
        2,
    ]
    assert await second.append("box", _message(b"3"), now=_now()) == 3
    assert await second.delete("box", 3)  # the newest: first still knows 2 as the last
    assert await first.append("box", _message(b"4"), now=_now()) == 4
    assert await first.delete("box", 4) and await first.delete("box", 1)
    assert await second.last_id("box") == 4
    assert await second.append("box", _message(b"5"), now=_now()) == 5
    read = await first.read("box", START, 10, upto=None, now=_now())
    assert [m.msg_id for m in read] == [0, 2, 5]
    assert await first.count("box") == 3  # (a deleted newest's marker goes with a newer one)


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
            mark = await store.last("shared")
            if mark is None:
                await asyncio.sleep(0.01)
                continue
            last = mark.msg_id
            lanes = await store.read_lanes("shared", START, 1000, upto=mark, now=_now())
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
    last = await pair[1].last("shared")
    assert last is not None
    stored = await pair[1].read_lanes("shared", START, 1000, upto=last, now=_now())
    by_lane = {
        priority: [m.msg_id for m in lane]
        for priority, lane in zip(PRIORITY_ORDER, stored, strict=True)
    }
    for (_, priority), ids in sent.items():
        assert ids == sorted(ids)
        assert set(ids) <= set(by_lane[priority])
    assert sum(len(ids) for ids in by_lane.values()) == 8 * 40
    # RobustMQ's numbering across both: each msg_id from 0 once, in stream order
    acknowledged = sorted(i for ids in sent.values() for i in ids)
    assert acknowledged == list(range(8 * 40))
    in_stream = [m.msg_id for m in await pair[0].read("shared", START, 1000, upto=None, now=_now())]
    assert in_stream == acknowledged


async def test_a_stream_message_no_broker_wrote_is_not_served_and_the_rest_is(
    pair: tuple[ClusterStore, ClusterStore],
) -> None:
    first, second = pair
    await first.create_mailbox("box", ttl=0, desc="", now=_now())
    await first.append("box", _message(b"before"), now=_now())
    foreign = first.layout.message_subject(token("box"), Priority.NORMAL, NO_KEY, 1)
    await first.requests.publish(foreign, b"\x00\x00\x00\xffnot a frame")
    # (the mailbox's head numbers, which a message no broker wrote does not move)
    assert await first.append("box", _message(b"after"), now=_now()) == 1
    read = await second.read("box", START, 10, upto=None, now=_now())
    assert [m.payload for m in read] == [b"before", b"after"]


async def test_every_stored_message_is_announced_a_delayed_one_too(
    pair: tuple[ClusterStore, ClusterStore],
) -> None:
    """The stream republishes each message's headers on ``$mq9.WAKE.<digest>`` (the waker's
    subject), so no broker needs to: a delayed message too, once a broker numbered what the
    servers wrote when it was due."""
    from mq9_platform.wake.rules import ARRIVALS_PREFIX, digest

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
    assert await asyncio.wait_for(heard.get(), 30) == b""  # written when due, then numbered
    await subscription.unsubscribe()
    assert heard.empty()


async def test_a_log_the_retention_emptied_goes_on_from_the_record(
    pair: tuple[ClusterStore, ClusterStore],
) -> None:
    """The retention removes a live mailbox's messages oldest first; once all are gone, the
    next number comes from the mailbox record, where brokers write the number they reached
    (``mark_high``, once a minute): never from 0 again."""
    first, second = pair
    await first.create_mailbox("quiet", ttl=0, desc="", now=_now())
    for n in range(3):
        await first.append("quiet", _message(b"%d" % n), now=_now())
    await first.mark_high()
    record = await second.mailbox("quiet", now=_now())
    assert record is not None and record.next_id == 3
    # what the 7-day retention does to a mailbox silent that long: every message gone
    # (its head too: written with its newest message, it goes last)
    for subject in (
        first.layout.mailbox_filter("quiet"),
        first.layout.head_subject(token("quiet")),
    ):
        await first.requests.api(f"STREAM.PURGE.{first.layout.messages}", {"filter": subject})
    assert await second.last_id("quiet") == 2
    assert await second.append("quiet", _message(b"after"), now=_now()) == 3
    assert await first.append("quiet", _message(b"and on"), now=_now()) == 4


async def test_a_report_one_store_keeps_the_other_reads(
    pair: tuple[ClusterStore, ClusterStore],
) -> None:
    first, second = pair
    assert await second.last_report("billing") is None
    # (#106) a name no registration holds keeps no report (it had kept any name's, for good)
    assert await first.report("billing", "busy", 9) is False
    assert await second.last_report("billing") is None
    assert await first.register("billing", "{}", 9)
    assert await first.report("billing", "busy", 10) is True
    await second.report("billing", "idle", 11)  # the last write wins, whichever broker
    assert await first.last_report("billing") == ("idle", 11)
    assert await second.unregister("billing")  # its report goes with it
    assert await first.last_report("billing") is None


async def test_the_registry_copy_follows_what_either_store_writes(
    pair: tuple[ClusterStore, ClusterStore],
) -> None:
    """Each store keeps a copy of the registry buckets, brought up to date before each read:
    rows written, replaced and dropped through the other store are there at once, a
    replaced index row last (RobustMQ's search index names a row by the card)."""
    first, second = pair
    a, b, a2 = ("a", "{}", 1), ("b", "{}", 2), ("a", '{"v": 2}', 3)
    await first.index_put("a", a)
    await first.index_put("b", b)
    assert await second.index_rows() == [a, b]
    await first.index_put("a", a2)
    assert await second.index_rows() == [b, a2]
    await second.index_drop("b")
    assert await first.index_rows() == [a2]
    await second.register("x", "{}", 5)
    assert await first.agents() == [("x", "{}", 5)]
    await first.unregister("x")
    assert await second.agents() == []


async def test_a_registry_copy_read_from_a_replica_behind_misses_nothing_for_good(
    pair: tuple[ClusterStore, ClusterStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica behind the bucket's leader answers the copy's read short of the leader's
    last sequence (nats-server 2.12 on ignores `min_last_seq`). The copy asked the rest again
    and went no further than what it read: the row is there. Before, it took the leader's
    last sequence as read and never read the row. Played by the store's own requests: the
    first read of the index bucket answered as a replica behind would, without its newest
    entry."""
    first, second = pair
    a, b = ("a", "{}", 1), ("b", "{}", 2)
    await first.index_put("a", a)
    assert await second.index_rows() == [a]
    await first.index_put("b", b)
    send = second.requests.direct_batch
    behind = [True]

    async def replica(stream: str, request: Mapping[str, Any], *, single: bool = False) -> Any:
        batch = await send(stream, request, single=single)
        if behind[0] and stream.endswith("_INDEX") and not single and batch.entries:
            behind[0] = False
            return Batch(batch.entries[:-1], 0)  # (its newest entry not applied yet)
        return batch

    monkeypatch.setattr(second.requests, "direct_batch", replica)
    assert await second.index_rows() == [a, b]
    assert not behind[0]  # the short answer was given


async def test_a_query_by_tags_reads_the_index_not_the_mailbox(
    pair: tuple[ClusterStore, ClusterStore],
) -> None:
    """A tag's entries are written with their message, in its batch (whichever store
    writes, alone or gathered); a QUERY reads them and the messages they point at: a tag on
    2 of 300 messages costs 2 index reads and 2 message reads, not the 300; a tag below the
    one asked (``a/b`` for ``a``) is found, a look-alike (``ab``) is not; a message deleted
    or replaced by its key is not served, nor one written after the sequence asked about."""
    first, second = pair
    await first.create_mailbox("tagged", ttl=0, desc="", now=_now())
    await asyncio.gather(
        *(first.append("tagged", _message(b"plain %d" % n), now=_now()) for n in range(150))
    )
    await second.append("tagged", _message(b"one", tags=("a", "a", "x")), now=_now())
    await first.append("tagged", _message(b"below", Priority.URGENT, tags=("a/b",)), now=_now())
    await first.append("tagged", _message(b"alike", tags=("ab",)), now=_now())
    keyed = await second.append("tagged", _message(b"old", key="k", tags=("a",)), now=_now())
    await second.append("tagged", _message(b"new", key="k"), now=_now())  # replaces it
    doomed = await first.append("tagged", _message(b"deleted", tags=("a/c",)), now=_now())
    assert await first.delete("tagged", doomed)
    await asyncio.gather(
        *(second.append("tagged", _message(b"more %d" % n), now=_now()) for n in range(150))
    )
    last = await second.last("tagged")
    assert last is not None and keyed < doomed

    reads = 0
    direct_batch = second.requests.direct_batch

    async def counted(stream: str, request: dict) -> object:
        nonlocal reads
        reads += 1
        return await direct_batch(stream, request)

    second.requests.direct_batch = counted  # type: ignore[method-assign]
    (found,) = await second.by_tags("tagged", ["a"], 100, upto=last.seq, now=_now())
    assert [m.payload for m in found] == [b"one", b"below"]  # by tag ("a" < "a/b"), then id
    assert found[0].tags == ("a", "a", "x") and found[1].priority is Priority.URGENT
    # 2 index reads (the first entry alone, which says how many follow, then those: no
    # batch asks for more than are left, #81), and one read each for the 4 entries'
    # messages: 2 found, the one its key replaced and the deleted one gone
    assert reads == 6
    x, alike, none = await second.by_tags(
        "tagged", ["x", "ab", "zz"], 100, upto=last.seq, now=_now()
    )
    assert ([m.payload for m in x], [m.payload for m in alike], none) == ([b"one"], [b"alike"], [])
    (limited,) = await first.by_tags("tagged", ["a"], 1, upto=last.seq, now=_now())
    assert [m.payload for m in limited] == [b"one"]
    later = await first.append("tagged", _message(b"later", tags=("a",)), now=_now())
    (as_of,) = await first.by_tags("tagged", ["a"], 100, upto=last.seq, now=_now())
    assert later > doomed and [m.payload for m in as_of] == [b"one", b"below"]


async def test_a_stream_made_before_the_tag_index_takes_its_subjects(
    servers: list[str], layout: str
) -> None:
    store = await open_store(servers, layout)
    try:
        info = await store.requests.api(f"STREAM.INFO.{layout}_MSGS", None)
        config = info["config"]
        config["subjects"] = [s for s in config["subjects"] if ".t." not in s]
        await store.requests.api(f"STREAM.UPDATE.{layout}_MSGS", config)
    finally:
        await close_store(store)
    again = await open_store(servers, layout)
    try:
        await again.create_mailbox("b", ttl=0, desc="", now=_now())
        await again.append("b", _message(b"m", tags=("t",)), now=_now())
        last = await again.last("b")
        assert last is not None
        (found,) = await again.by_tags("b", ["t"], 10, upto=last.seq, now=_now())
        assert [m.payload for m in found] == [b"m"]
    finally:
        await close_store(again)


async def test_a_message_with_as_many_tags_as_its_batch_holds_is_stored_and_found(
    pair: tuple[ClusterStore, ClusterStore],
) -> None:
    """The store declares the most (``send_limits``: its batch holds them, its head and the
    message); the engine refuses more before asking (#92: test_store_interface.py,
    test_hostile_cluster_requests.py), the store checks nothing again."""
    first, second = pair
    most = first.send_limits.tags_most
    assert most == 998
    await first.create_mailbox("many", ttl=0, desc="", now=_now())
    tags = tuple(f"t{n}" for n in range(most))
    await first.hold("many", _message(b"d", tags=tags), due=_now() + 600, now=_now())
    assert await first.append("many", _message(b"m", tags=tags), now=_now()) == 0
    last = await second.last("many")
    assert last is not None
    found = await second.by_tags("many", ["t0", "t997"], 10, upto=last.seq, now=_now())
    assert [[m.payload for m in messages] for messages in found] == [[b"m"], [b"m"]]


async def test_a_delayed_message_is_indexed_by_its_tags_once_numbered(
    pair: tuple[ClusterStore, ClusterStore],
) -> None:
    first, second = pair
    await first.create_mailbox("later-tagged", ttl=0, desc="", now=_now())
    await first.hold("later-tagged", _message(b"due", tags=("x/y",)), due=_now() + 1, now=_now())
    deadline = time.monotonic() + 30  # the server's schedules tick about once a second
    found: list[StoredMessage] = []
    while not found and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        last = await second.last("later-tagged")
        if last is not None:
            (found,) = await second.by_tags("later-tagged", ["x"], 10, upto=last.seq, now=_now())
    assert [(m.payload, m.tags, m.msg_id) for m in found] == [(b"due", ("x/y",), 0)]
