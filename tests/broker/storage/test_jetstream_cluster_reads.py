"""A mailbox's reads in the cluster store ask the servers for no walk past what they can find
(#81): a filtered direct get makes nats-server walk the stream from its start until the batch
is full, so a read of a priority lane with nothing left, or with fewer messages than the batch,
used to walk every mailbox's messages after it (a FETCH of a group behind 50,000 messages of
other mailboxes cost the servers 6-11 ms for an empty lane). Each read now asks the subject's
last message first (the servers' subject index) and reads nothing past it.

A read with no msg_id left asks nothing, and one of a few msg_ids asks for each by its msg_id
(``BY_ID``): a lane's last message and a batch's count match every subject of the lane, a cost
that grows with the mailbox; one msg_id's subject is found at once.

On a real JetStream nats-server: the reads' requests are recorded on their way to it (the
store's own ``Requests``, wrapped to note each direct get), and what the reads return is
checked against what was written, by either kind of read.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from mq9_broker.state.mailbox import StoredMessage
from mq9_broker.storage.jetstream import ClusterStore, reads
from mq9_broker.storage.mailbox_store import Mark
from mq9_wire.nats_floor.jetstream.api import Batch
from mq9_wire.protocol import Priority
from testbed.support.jetstream_servers import close_store, open_store

pytestmark = pytest.mark.slow  # a nats-server process

OTHERS = 120  # messages of another mailbox written after the quiet one's
QUIET = reads.BY_ID + 2  # the quiet mailbox's messages: more than a read asks for by msg_id


@pytest.fixture(scope="module")
def servers(shared_jetstream: list[str]) -> list[str]:
    # the session's JetStream server: nothing here kills, restarts or reconfigures it
    return shared_jetstream


@pytest.fixture
async def store(servers: list[str]) -> AsyncIterator[ClusterStore]:
    opened = await open_store(servers, f"R{uuid.uuid4().hex[:10]}")
    try:
        yield opened
    finally:
        await close_store(opened)


def _message(payload: bytes, priority: Priority = Priority.NORMAL) -> StoredMessage:
    return StoredMessage(-1, payload, priority, int(time.time()))


def _recorded(
    store: ClusterStore, monkeypatch: pytest.MonkeyPatch, *, singles: bool = False
) -> list[dict[str, Any]]:
    """Every batched read the store asks of the servers from now on (sent as before); with
    ``singles``, the reads of one message (no batch) too."""
    asked: list[dict[str, Any]] = []
    send = store.requests.direct_batch

    async def noting(stream: str, request: Mapping[str, Any], *, single: bool = False) -> Any:
        if singles or not single:
            asked.append(dict(request))
        return await send(stream, request, single=single)

    monkeypatch.setattr(store.requests, "direct_batch", noting)
    return asked


async def _filled(store: ClusterStore, mailbox: str, messages: list[StoredMessage]) -> Mark:
    """``mailbox`` created and ``messages`` written into it, one after another: its last mark."""
    now = int(time.time())
    await store.create_mailbox(mailbox, ttl=0, desc="", now=now)
    for message in messages:
        await store.append(mailbox, message, now=now)
    last = await store.last(mailbox)
    assert last is not None
    return last


async def _quiet_then_busy(store: ClusterStore) -> Mark:
    """'quiet' holds QUIET normal messages, then 'busy' OTHERS: quiet's last mark."""
    now = int(time.time())
    for name in ("quiet", "busy"):
        await store.create_mailbox(name, ttl=0, desc="", now=now)
    for n in range(QUIET):
        await store.append("quiet", _message(b"q%d" % n), now=now)
    for n in range(OTHERS):
        await store.append("busy", _message(b"b%d" % n), now=now)
    last = await store.last("quiet")
    assert last is not None and last.msg_id == QUIET - 1
    return last


async def test_an_empty_lane_is_not_walked(
    store: ClusterStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    end = await _quiet_then_busy(store)
    asked = _recorded(store, monkeypatch)
    lanes = await store.read_lanes("quiet", Mark(0, 0), 30, upto=end, now=int(time.time()))
    assert [[m.payload for m in lane] for lane in lanes] == [
        [],
        [],
        [b"q%d" % n for n in range(QUIET)],
    ]
    # the critical and urgent lanes hold nothing: no batch asked for them; the normal lane's
    # batch asks for its messages (and the one below a start), not for thirty
    assert len(asked) == 1, asked
    assert asked[0]["next_by_subj"].endswith(".normal.*.*")
    assert asked[0]["batch"] <= QUIET + 1


async def test_a_group_past_every_message_reads_nothing(
    store: ClusterStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    end = await _quiet_then_busy(store)
    asked = _recorded(store, monkeypatch, singles=True)
    # a group that acknowledged the newest msg_id reads from the one after it
    lanes = await store.read_lanes("quiet", Mark(end.msg_id + 1, end.seq), 10, upto=end, now=0)
    assert lanes == [[], [], []]
    assert asked == []  # no msg_id written from there on: the servers are asked nothing


async def test_a_read_of_a_few_msg_ids_asks_for_each_and_no_lane(
    store: ClusterStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    end = await _quiet_then_busy(store)
    start = await store.find("quiet", QUIET - 3)
    assert start is not None
    asked = _recorded(store, monkeypatch, singles=True)
    lanes = await store.read_lanes("quiet", start, 10, upto=end, now=int(time.time()))
    assert [[m.msg_id for m in lane] for lane in lanes] == [
        [],
        [],
        [QUIET - 3, QUIET - 2, QUIET - 1],
    ]
    # one read a msg_id, each of its one subject: no lane's wildcard, no batch and its count
    subjects = sorted(r["last_by_subj"] for r in asked)
    assert [s.rsplit(".", 3)[1:] for s in subjects] == [
        ["*", "*", str(msg_id)] for msg_id in range(QUIET - 3, QUIET)
    ]
    assert not any("batch" in r for r in asked)
    assert all(r["min_last_seq"] == end.seq for r in asked)


async def test_a_msg_id_one_replica_lacks_below_one_another_has_is_asked_of_the_leader(
    store: ClusterStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # each get of a read by msg_id may be answered by another replica; one behind the leader
    # (nats-server 2.12 on ignores `min_last_seq`) has no message for the newest msg_ids. A
    # msg_id answered with none, below one answered with a message, is asked of the leader:
    # else a reader acking past the hole would never read it. Played here by the store's own
    # requests answering "no message" for msg_id 1 from the replicas
    now = int(time.time())
    upto = await _filled(store, "gappy", [_message(b"g%d" % n) for n in range(4)])
    send = store.requests.direct_batch

    async def behind(stream: str, request: Mapping[str, Any], *, single: bool = False) -> Any:
        if single and str(request.get("last_by_subj", "")).endswith(".*.*.1"):
            return Batch([], 0)  # a replica that has not got msg_id 1 yet
        return await send(stream, request, single=single)

    monkeypatch.setattr(store.requests, "direct_batch", behind)
    lanes = await store.read_lanes("gappy", Mark(0, 0), 10, upto=upto, now=now)
    assert [m.msg_id for m in lanes[-1]] == [0, 1, 2, 3]


async def test_a_window_a_replica_behind_answered_short_leaves_no_hole_behind_the_lanes(
    store: ClusterStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a backlog: the window of msg_ids, answered by a replica that lacks its last ones, is
    # followed by the lanes read on past it; what the replica lacked is asked of the leader,
    # else the lanes would go on past a hole
    now = int(time.time())
    upto = await _filled(store, "long", [_message(b"l%d" % n) for n in range(reads.BY_ID + 4)])
    send = store.requests.direct_batch
    lacking = {f".*.*.{msg_id}" for msg_id in range(reads.BY_ID - 3, reads.BY_ID)}

    async def behind(stream: str, request: Mapping[str, Any], *, single: bool = False) -> Any:
        subject = str(request.get("last_by_subj", ""))
        if single and any(subject.endswith(end) for end in lacking):
            return Batch([], 0)  # a replica that has not got the window's last msg_ids yet
        return await send(stream, request, single=single)

    monkeypatch.setattr(store.requests, "direct_batch", behind)
    lanes = await store.read_lanes("long", Mark(0, 0), reads.BY_ID - 1, upto=upto, now=now)
    assert [m.msg_id for m in lanes[-1]] == list(range(reads.BY_ID - 1))


async def _lanes_both_ways(
    store: ClusterStore,
    monkeypatch: pytest.MonkeyPatch,
    mailbox: str,
    start: Mark,
    limit: int,
    upto: Mark,
    now: int,
) -> tuple[list[list[int]], list[list[int]]]:
    """``mailbox``'s lanes from ``start`` read by msg_id and read by lane (msg_ids)."""
    by_id = await store.read_lanes(mailbox, start, limit, upto=upto, now=now)
    with monkeypatch.context() as patched:
        patched.setattr(reads, "BY_ID", 0)  # every read by lane
        by_lane = await store.read_lanes(mailbox, start, limit, upto=upto, now=now)
    return [[m.msg_id for m in lane] for lane in by_id], [
        [m.msg_id for m in lane] for lane in by_lane
    ]


async def test_a_read_by_msg_id_finds_what_a_read_by_lane_does(
    store: ClusterStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every start and limit over a mailbox of three lanes, twice as many msg_ids as a read
    asks for by msg_id (a window, then the lanes it did not fill read on past it), deleted
    messages (the newest one too: its marker), messages replaced by their key and ones whose
    TTL has ended: both reads give the same lanes."""
    now = int(time.time())
    await store.create_mailbox("mixed", ttl=0, desc="", now=now)
    n, c, u = Priority.NORMAL, Priority.CRITICAL, Priority.URGENT
    order = [n, c, u, n, n, n, n, c] * (2 * reads.BY_ID // 8)
    keyed = {2: "k", 9: "k", 17: "j", 30: "j"}  # 9 replaces 2, 30 replaces 17
    expired = {5, 25}
    for number, priority in enumerate(order):
        expire_at = now - 5 if number in expired else 0
        message = StoredMessage(
            -1, b"m%d" % number, priority, now, key=keyed.get(number), expire_at=expire_at
        )
        await store.append("mixed", message, now=now)
    newest = len(order) - 1
    deleted = {3, 20, newest}  # in the first window, after it, and the newest
    for msg_id in deleted:
        assert await store.delete("mixed", msg_id)
    upto = await store.last("mixed")
    assert upto is not None and upto.msg_id == newest
    live = set(range(len(order))) - {2, 17} - expired - deleted
    for first in range(len(order) + 1):
        start = await store.find("mixed", first) or Mark(first, 0)
        for limit in (1, 2, 10):
            by_id, by_lane = await _lanes_both_ways(
                store, monkeypatch, "mixed", start, limit, upto, now
            )
            assert by_id == by_lane, (first, limit)
            wanted = [
                [m for m in sorted(live) if m >= first and order[m] is priority][:limit]
                for priority in (Priority.CRITICAL, Priority.URGENT, Priority.NORMAL)
            ]
            assert by_id == wanted, (first, limit)


async def test_a_read_behind_a_backlog_reads_no_lane_its_window_filled(
    store: ClusterStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a group behind a backlog, reading 10: the window of msg_ids holds 10 of the normal
    # lane, which is not read on (its last message and its batches cost the servers the more
    # the more it holds); the critical lane, with fewer, is read on past the window
    end = await _quiet_then_busy(store)
    now = int(time.time())
    await store.append("quiet", _message(b"late", Priority.CRITICAL), now=now)
    upto = await store.last("quiet")
    assert upto is not None and upto.msg_id == end.msg_id + 1
    asked = _recorded(store, monkeypatch, singles=True)
    lanes = await store.read_lanes("quiet", Mark(0, 0), 10, upto=upto, now=now)
    assert [[m.payload for m in lane] for lane in lanes] == [
        [b"late"],
        [],
        [b"q%d" % n for n in range(10)],
    ]
    subjects = [r.get("last_by_subj") or r["next_by_subj"] for r in asked]
    lane_reads = [s for s in subjects if not s.rsplit(".", 1)[1].isdigit()]  # (not by msg_id)
    assert not any(".normal." in subject for subject in lane_reads), asked
    assert any(".critical." in subject for subject in lane_reads), asked


async def test_reads_still_find_every_message_of_a_mixed_mailbox(
    store: ClusterStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = int(time.time())
    lanes = [Priority.NORMAL, Priority.CRITICAL, Priority.NORMAL, Priority.URGENT] * 6
    end = await _filled(store, "mixed", [_message(b"m%d" % n, p) for n, p in enumerate(lanes)])
    asked = _recorded(store, monkeypatch)
    read = await store.read_lanes("mixed", Mark(0, 0), 50, upto=end, now=now)
    expected = [
        [b"m%d" % n for n, priority in enumerate(lanes) if priority is wanted]
        for wanted in (Priority.CRITICAL, Priority.URGENT, Priority.NORMAL)
    ]
    assert [[m.payload for m in lane] for lane in read] == expected
    whole = await store.read("mixed", Mark(0, 0), 50, upto=end, now=now)
    assert [m.msg_id for m in whole] == list(range(len(lanes)))
    # from msg_id 20 on: the four left, read in batches no larger than the msg_ids left
    tail = await store.read("mixed", Mark(20, 0), 50, upto=end, now=now)
    assert [m.msg_id for m in tail] == [20, 21, 22, 23]
    assert all(request["batch"] <= len(lanes) + 1 for request in asked)


async def test_a_read_of_the_whole_mailbox_takes_its_end_from_the_mark(
    store: ClusterStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # QUERY's read: the mailbox's last mark is where its subject ends (its newest msg_id,
    # deleted or not, is the subject's last message), so its last message is not asked again
    # (`last_by_subj m.<m>.>` matches every subject of the mailbox: dearer the more it holds)
    end = await _quiet_then_busy(store)
    assert await store.delete("quiet", QUIET - 1)  # the newest: its marker stays the last
    upto = await store.last("quiet")
    assert upto is not None and upto.msg_id == end.msg_id
    asked = _recorded(store, monkeypatch, singles=True)
    read = await store.read("quiet", Mark(0, 0), 100, upto=upto, now=int(time.time()))
    assert [m.msg_id for m in read] == list(range(QUIET - 1))
    assert not any("last_by_subj" in r for r in asked), asked
    assert all(r["batch"] <= QUIET + 1 for r in asked)  # no more than the msg_ids to the mark


async def test_a_tag_read_asks_for_no_more_entries_than_are_left(
    store: ClusterStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = int(time.time())
    tags = [("job/a",) if n % 2 == 0 else ("job/b",) for n in range(5)]
    await _filled(
        store,
        "tagged",
        [StoredMessage(-1, b"t%d" % n, Priority.NORMAL, now, tags=t) for n, t in enumerate(tags)],
    )
    end = await _quiet_then_busy(store)  # another mailbox's messages after every entry
    asked = _recorded(store, monkeypatch)
    found = await store.by_tags("tagged", ["job/a", "job"], 10, upto=end.seq, now=now)
    assert [[m.payload for m in lane] for lane in found] == [
        [b"t0", b"t2", b"t4"],
        [b"t0", b"t2", b"t4", b"t1", b"t3"],
    ]
    index_reads = [r for r in asked if ".t." in r["next_by_subj"]]
    # each tag: its first entry alone, then exactly the entries it said were left
    assert sorted(r["batch"] for r in index_reads) == [1, 1, 2, 4]
