"""A mailbox's head in the cluster store (#72): ``h.<mailbox>``, written last in each batch of
the mailbox's messages, holding the next msg_id; every write expects its sequence (a literal
subject the server finds at once: a filter over the mailbox's messages had it match each of
them, a write's cost growing with the mailbox). On a real JetStream nats-server.

What is checked: one head a mailbox whatever was written, holding the next number; the
newest message deleted keeps its number from being given again, through the head alone; a
mailbox a layout wrote before heads (messages, a deleted newest's marker, no head) goes on
from its newest number; a delayed message numbered twice (a broker gone before it removed the
staged copy) is stored once; a SEND cut while it writes leaves those that joined its
mailbox's queue written; mailboxes written in one turn go as one batch (each its own
head and expectation), and two stores writing the same mailboxes at once, their batches
refused whole when one mailbox was written by the other, still number each mailbox from 0,
each number once, in stream order.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from mq9_broker.state.mailbox import StoredMessage
from mq9_broker.storage.jetstream import ClusterStore, token
from mq9_broker.storage.jetstream.mapping import DELETED, NO_KEY, frame
from mq9_broker.storage.jetstream.numbering import Numbering, Write
from mq9_broker.storage.mailbox_store import Mark
from mq9_wire.protocol import Priority
from testbed.support.jetstream_servers import JetStreamCluster, close_store, open_store

pytestmark = pytest.mark.slow  # a nats-server process

START = Mark(0, 0)


@pytest.fixture(scope="module")
def servers() -> Iterator[list[str]]:
    with JetStreamCluster(1) as cluster:
        yield cluster.urls


@pytest.fixture
async def store(servers: list[str]) -> AsyncIterator[ClusterStore]:
    opened = await open_store(servers, f"H{uuid.uuid4().hex[:10]}")
    try:
        yield opened
    finally:
        await close_store(opened)


def _now() -> int:
    return int(time.time())


def _message(payload: bytes) -> StoredMessage:
    return StoredMessage(-1, payload, Priority.NORMAL, _now())


async def _heads(store: ClusterStore, mailbox: str) -> list[tuple[int, bytes]]:
    """The head messages the stream holds for ``mailbox``: (sequence, data)."""
    layout = store.layout
    request = {"seq": 1, "next_by_subj": layout.head_subject(token(mailbox)), "batch": 100}
    batch = await store.requests.direct_batch(layout.messages, request)
    return [(entry.seq, entry.data) for entry in batch.entries]


async def test_one_head_holds_the_next_number_and_the_newest_deleted_keeps_it(
    store: ClusterStore,
) -> None:
    await store.create_mailbox("box", ttl=0, desc="", now=_now())
    writes = [store.append("box", _message(b"%d" % n), now=_now()) for n in range(5)]
    ids = await asyncio.gather(*writes)
    assert sorted(ids) == [0, 1, 2, 3, 4]
    [(seq, data)] = await _heads(store, "box")  # (each write rolled the one before up)
    assert data == b"5"
    assert await store.last("box") == Mark(4, seq - 1)  # the newest message: right before it
    assert await store.delete("box", 4)
    assert await store.last_id("box") == 4  # (its number stays the newest written)
    assert await store.append("box", _message(b"after"), now=_now()) == 5
    read = await store.read("box", START, 10, upto=None, now=_now())
    assert [m.msg_id for m in read] == [0, 1, 2, 3, 5]


async def test_a_mailbox_written_before_heads_goes_on_from_its_newest(store: ClusterStore) -> None:
    """Messages and a deleted newest's marker as a layout before heads wrote them: the first
    write numbers past the marker (and removes it), and from then on the head numbers."""
    await store.create_mailbox("old", ttl=0, desc="", now=_now())
    layout, box = store.layout, token("old")
    for msg_id in range(3):
        subject = layout.message_subject(box, Priority.NORMAL, NO_KEY, msg_id)
        await store.requests.publish(subject, frame(None, b"%d" % msg_id))
    newest = layout.message_subject(box, Priority.NORMAL, NO_KEY, 2)
    await store.requests.publish(newest, b"", {DELETED: "1", "Nats-Rollup": "sub"})
    assert await store.last_id("old") == 2  # (from the marker: no head yet)
    assert await store.append("old", _message(b"3"), now=_now()) == 3
    assert [data for _, data in await _heads(store, "old")] == [b"4"]
    read = await store.read("old", START, 10, upto=None, now=_now())
    assert [m.msg_id for m in read] == [0, 1, 3]
    # a headless mailbox's newest deleted there leaves a marker, as before heads
    await store.create_mailbox("older", ttl=0, desc="", now=_now())
    first = layout.message_subject(token("older"), Priority.NORMAL, NO_KEY, 0)
    await store.requests.publish(first, frame(None, b"0"))
    assert await store.delete("older", 0)
    assert await store.append("older", _message(b"1"), now=_now()) == 1


async def test_a_delayed_message_numbered_twice_is_stored_once(store: ClusterStore) -> None:
    """A broker gone after numbering a delayed message but before removing its staged copy:
    the consumer hands it again, and the write, refused by its ``Nats-Msg-Id``, only removes
    the staged copy."""
    await store.create_mailbox("later", ttl=0, desc="", now=_now())
    layout = store.layout
    staged = await store.requests.publish(
        layout.staged_subject("later", Priority.NORMAL), frame(None, b"due")
    )
    numbering = Numbering(store.requests, layout)
    loop = asyncio.get_running_loop()
    try:
        for _ in range(2):
            write = Write(
                Priority.NORMAL,
                NO_KEY,
                frame(None, b"due"),
                {"Nats-Msg-Id": f"staged-{staged}"},
                loop.create_future(),
                staged=staged,
            )
            numbering.enqueue(token("later"), write)
            await write.future
    finally:
        await numbering.stop()
    read = await store.read("later", START, 10, upto=None, now=_now())
    assert [(m.msg_id, m.payload) for m in read] == [(0, b"due")]
    assert await store.requests.leader_get(layout.messages, seq=staged) is None


async def test_a_send_cut_while_writing_leaves_the_sends_that_joined_it_written(
    store: ClusterStore,
) -> None:
    """The first SEND of a burst writes on its own task (#81); the SENDs of its mailbox that
    came meanwhile wait in its queue. Its task cancelled while it writes, they are written
    all the same (by a task they are handed to), numbered on with no gap."""
    await store.create_mailbox("cut", ttl=0, desc="", now=_now())
    first = asyncio.create_task(store.append("cut", _message(b"first"), now=_now()))
    await asyncio.sleep(0)  # its write under way
    rest = [
        asyncio.create_task(store.append("cut", _message(b"%d" % n), now=_now())) for n in range(3)
    ]
    await asyncio.sleep(0)  # (each in the mailbox's queue)
    first.cancel()
    ids = await asyncio.gather(*rest)
    read = await store.read("cut", START, 10, upto=None, now=_now())
    assert [m.msg_id for m in read] == list(range(len(read)))  # from 0, no gap, in order
    assert [(m.msg_id, m.payload) for m in read if m.payload != b"first"] == list(
        zip(ids, [b"0", b"1", b"2"], strict=True)
    )


async def test_two_stores_writing_many_mailboxes_at_once_number_each_from_0_once(
    servers: list[str],
) -> None:
    name = f"H{uuid.uuid4().hex[:10]}"
    stores = [await open_store(servers, name), await open_store(servers, name)]
    boxes = [f"box{n}" for n in range(8)]
    try:
        for box in boxes:
            await stores[0].create_mailbox(box, ttl=0, desc="", now=_now())

        async def writer(store: ClusterStore) -> list[tuple[str, int]]:
            numbered: list[tuple[str, int]] = []
            for _ in range(6):  # each turn every mailbox at once: batches of several
                ids = await asyncio.gather(
                    *(store.append(box, _message(box.encode()), now=_now()) for box in boxes)
                )
                numbered += zip(boxes, ids, strict=True)
            return numbered

        both = await asyncio.gather(*(writer(store) for store in stores))
        for box in boxes:
            given = sorted(i for numbered in both for mailbox, i in numbered if mailbox == box)
            assert given == list(range(12))
            read = await stores[1].read(box, START, 100, upto=None, now=_now())
            assert [m.msg_id for m in read] == given  # (stream order is msg_id order)
            assert {m.payload for m in read} == {box.encode()}
            [(_, data)] = await _heads(stores[1], box)
            assert data == b"12"
    finally:
        for store in stores:
            await close_store(store)
