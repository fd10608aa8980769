"""A mailbox's reads in the cluster store ask the servers for no walk past what they can find
(#81): a filtered direct get makes nats-server walk the stream from its start until the batch
is full, so a read of a priority lane with nothing left, or with fewer messages than the batch,
used to walk every mailbox's messages after it (a FETCH of a group behind 50,000 messages of
other mailboxes cost the servers 6-11 ms for an empty lane). Each read now asks the subject's
last message first (the servers' subject index) and reads nothing past it.

On a real JetStream nats-server: the reads' requests are recorded on their way to it (the
store's own ``Requests``, wrapped to note each direct get), and what the reads return is
checked against what was written.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import pytest

from langchain_mq9.broker.state.mailbox import StoredMessage
from langchain_mq9.broker.storage.jetstream import ClusterStore, Mark
from langchain_mq9.protocol import Priority
from tests.support.jetstream_servers import JetStreamCluster, close_store, open_store

pytestmark = pytest.mark.slow  # a nats-server process

OTHERS = 120  # messages of another mailbox written after the quiet one's


@pytest.fixture(scope="module")
def servers() -> Iterator[list[str]]:
    with JetStreamCluster(1) as cluster:
        yield cluster.urls


@pytest.fixture
async def store(servers: list[str]) -> AsyncIterator[ClusterStore]:
    opened = await open_store(servers, f"R{uuid.uuid4().hex[:10]}")
    try:
        yield opened
    finally:
        await close_store(opened)


def _message(payload: bytes, priority: Priority = Priority.NORMAL) -> StoredMessage:
    return StoredMessage(-1, payload, priority, int(time.time()))


def _recorded(store: ClusterStore, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every batched read the store asks of the servers from now on (sent as before)."""
    asked: list[dict[str, Any]] = []
    send = store.requests.direct_batch

    async def noting(stream: str, request: Mapping[str, Any], *, single: bool = False) -> Any:
        if not single:
            asked.append(dict(request))
        return await send(stream, request, single=single)

    monkeypatch.setattr(store.requests, "direct_batch", noting)
    return asked


async def _quiet_then_busy(store: ClusterStore) -> Mark:
    """'quiet' holds 2 normal messages, then 'busy' OTHERS: quiet's last mark."""
    now = int(time.time())
    for name in ("quiet", "busy"):
        await store.create_mailbox(name, ttl=0, desc="", now=now)
    for n in range(2):
        await store.append("quiet", _message(b"q%d" % n), now=now)
    for n in range(OTHERS):
        await store.append("busy", _message(b"b%d" % n), now=now)
    last = await store.last("busy")
    assert last is not None
    return last


async def test_an_empty_lane_is_not_walked(
    store: ClusterStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    end = await _quiet_then_busy(store)
    asked = _recorded(store, monkeypatch)
    lanes = await store.read_lanes("quiet", Mark(0, 0), 10, upto=end.seq, now=int(time.time()))
    assert [[m.payload for m in lane] for lane in lanes] == [[], [], [b"q0", b"q1"]]
    # the critical and urgent lanes hold nothing: no batch asked for them; the normal lane's
    # batch asks for its two messages (and the one below a start), not for ten
    assert len(asked) == 1, asked
    assert asked[0]["next_by_subj"].endswith(".normal.*.*")
    assert asked[0]["batch"] <= 3


async def test_a_group_past_every_message_reads_nothing(
    store: ClusterStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    end = await _quiet_then_busy(store)
    second = await store.find("quiet", 1)
    assert second is not None
    asked = _recorded(store, monkeypatch)
    # a group that acknowledged msg_id 1 reads from 2, at msg_id 1's sequence
    lanes = await store.read_lanes("quiet", Mark(2, second.seq), 10, upto=end.seq, now=0)
    assert lanes == [[], [], []]
    assert asked == []  # nothing left on any lane: no walk through 'busy' asked for


async def test_reads_still_find_every_message_of_a_mixed_mailbox(
    store: ClusterStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = int(time.time())
    await store.create_mailbox("mixed", ttl=0, desc="", now=now)
    lanes = [Priority.NORMAL, Priority.CRITICAL, Priority.NORMAL, Priority.URGENT] * 6
    for n, priority in enumerate(lanes):
        await store.append("mixed", _message(b"m%d" % n, priority), now=now)
    end = await store.last("mixed")
    assert end is not None
    asked = _recorded(store, monkeypatch)
    read = await store.read_lanes("mixed", Mark(0, 0), 50, upto=end.seq, now=now)
    expected = [
        [b"m%d" % n for n, priority in enumerate(lanes) if priority is wanted]
        for wanted in (Priority.CRITICAL, Priority.URGENT, Priority.NORMAL)
    ]
    assert [[m.payload for m in lane] for lane in read] == expected
    whole = await store.read("mixed", Mark(0, 0), 50, upto=end.seq, now=now)
    assert [m.msg_id for m in whole] == list(range(len(lanes)))
    # from msg_id 20 on: the four left, read in batches no larger than the msg_ids left
    tail = await store.read("mixed", Mark(20, 0), 50, upto=end.seq, now=now)
    assert [m.msg_id for m in tail] == [20, 21, 22, 23]
    assert all(request["batch"] <= len(lanes) + 1 for request in asked)


async def test_a_tag_read_asks_for_no_more_entries_than_are_left(
    store: ClusterStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = int(time.time())
    await store.create_mailbox("tagged", ttl=0, desc="", now=now)
    for n in range(5):
        tags = ("job/a",) if n % 2 == 0 else ("job/b",)
        message = StoredMessage(-1, b"t%d" % n, Priority.NORMAL, now, tags=tags)
        await store.append("tagged", message, now=now)
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
