"""Snapshots of the JetStream store's state stream, and its purge (issue #55, the compaction).

Now and then the serving broker writes its whole state into the stream, between the records of
the requests that go on meanwhile, then purges what came before: the stream stays bounded, and
a start or a takeover reads only the newest snapshot and the records after it. Here, on a real
JetStream nats-server: a state of every kind is restored exactly from a snapshot (and
test_durability.py's restart tests pass with a snapshot every few records); the stream's size
stays bounded over many SENDs and DELETEs; requests made while snapshots are written are all
kept; a takeover (fence, then a new broker) after many SENDs reads only the tail, also of a
stream written before snapshots; a broker cut off mid-snapshot (its store closed, or its
process SIGKILLed) is restored exactly, its snapshot skipped; a stale broker's snapshot after a
takeover's fence is refused and changes nothing.
That random histories are restored exactly with snapshots taken every few requests is
tests/broker/test_jetstream_history.py's property test, with a small threshold.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import nats
import pytest
import test_durability
from store_lane import STATE_SERVER
from test_durability import CARDS, GROUPS, T0, engine_state, request_of
from test_jetstream_store import RESTART_TESTS, OnJetStream

from langchain_mq9 import protocol as p
from langchain_mq9.broker import BrokerEngine, ManualClock
from langchain_mq9.broker.standby.leader import LeaderLock
from langchain_mq9.broker.storage import JetStreamStorage, jetstream
from langchain_mq9.broker.storage.jetstream import store

pytestmark = pytest.mark.slow  # a nats-server process

WAIT = 60.0  # bounded waits on real processes, generous for a busy 2-core machine
BIG = 200_000  # a payload: 25 of them take 5 MB, a snapshot of 5 parts


# test_durability.py's restart tests, with a snapshot as soon as the records since the last one
# take its size (test_jetstream_store.py runs them without)
globals().update({name: getattr(test_durability, name) for name in RESTART_TESTS})


@pytest.fixture
async def durable() -> AsyncIterator[OnJetStream]:
    broker = OnJetStream(STATE_SERVER.urls, f"T{uuid.uuid4().hex[:12]}", snapshot_bytes=1)
    yield broker
    await STATE_SERVER.drop(broker.engine.storage)


@pytest.fixture
async def streams() -> AsyncIterator[Callable[..., BrokerEngine]]:
    """Engines on one stream of the test's own (``snapshot_bytes`` as asked), closed and the
    stream deleted at the end."""
    stream = f"SN{uuid.uuid4().hex[:10]}"
    engines: list[BrokerEngine] = []

    def start(snapshot_bytes: int | None, clock: ManualClock | None = None) -> BrokerEngine:
        storage = JetStreamStorage(STATE_SERVER.urls, stream=stream, snapshot_bytes=snapshot_bytes)
        engines.append(BrokerEngine(clock=clock or ManualClock(T0), storage=storage))
        return engines[-1]

    yield start
    for engine in engines[:-1]:
        engine.storage.close()
    if engines:
        await STATE_SERVER.drop(engines[-1].storage)


async def ok(engine: BrokerEngine, subject: str, body: bytes | dict) -> dict:
    raw = p.encode(body) if isinstance(body, dict) else body
    reply = json.loads(await engine.handle(subject, {}, raw))
    assert reply["error"] == "", reply
    return reply


async def stream_state(stream: str):
    connection = await nats.connect(STATE_SERVER.urls)
    try:
        return (await connection.jetstream().stream_info(stream)).state
    finally:
        await connection.close()


async def snapshot_records(stream: str) -> list[tuple[int, str, str]]:
    """(sequence, snapshot id, kind) of every snapshot record the stream holds."""
    connection = await nats.connect(STATE_SERVER.urls)
    found = []
    try:
        js = connection.jetstream()
        info = (await js.stream_info(stream)).state
        for seq in range(info.first_seq, info.last_seq + 1):
            head = (await js.get_msg(stream, seq)).data.partition(b"\n")[0]
            record = json.loads(head)
            if record.get("v") == jetstream.SNAPSHOT_VERSION:
                found.append((seq, record["snap"][0], record["snap"][1]))
        return found
    finally:
        await connection.close()


async def wait_for(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not await condition():
        assert loop.time() < deadline, f"waited {WAIT:g} s for {what}"
        await asyncio.sleep(0.05)


async def test_the_stream_stays_bounded_over_many_sends_and_deletes(streams):
    engine = streams(4000)  # a snapshot after about 20 records
    stream = engine.storage.stream
    await ok(engine, p.MAILBOX_CREATE, {"name": "box", "ttl": 0})
    held = []
    for i in range(600):
        sent = await ok(engine, p.send_subject("box"), f"message {i}".encode())
        held.append(sent["msg_id"])
        if len(held) > 20:  # the oldest deleted: 20 kept, a snapshot of about 2 kB
            await ok(engine, p.delete_subject("box", held.pop(0)), b"")
        if i % 150 == 149:
            state = await stream_state(stream)
            # 1,180 records written by the end, and never more than a snapshot and its tail
            # (4,000 bytes of records, about 40): 7 to 33 measured
            assert state.messages <= 80, (i, state)
    assert (await stream_state(stream)).first_seq > 1100
    again = streams(4000)
    assert engine_state(again) == engine_state(engine)
    assert again.storage.restored["messages"] == 20


# A state of every kind: live, expired and re-created mailboxes, messages of every field, one
# replaced by key, the last ones deleted (msg_ids go on past them), group offsets, delayed
# messages, agents with and without A2A cards, a card registered under another name
EVERY_KIND = [
    ("create", "a", 0),
    ("create", "b.c", 5),
    ("create", "gone", 5),
    ("send", "a", "urgent", "k1", None, 2**64 - 1, ("x", "y")),
    ("send", "a", "critical", "k1", None, None, ("x",)),
    ("send", "a", "normal", None, None, 4, ()),
    ("send", "b.c", "normal", "k2", None, None, ()),
    ("send", "b.c", "normal", None, None, None, ()),
    ("send", "a", "normal", None, 3600, None, ("x",)),  # delayed
    ("send", "b.c", "urgent", None, 60, 30, ()),  # delayed, with a TTL
    ("fetch", "a", "g1", 2, "earliest", False),
    ("ack", "a", "g1", 1),
    ("ack", "b.c", "g2", 0),
    ("delete", "b.c", 1),
    ("delete", "a", 2),
    ("register", "m1", "text"),
    ("register", "n1", CARDS[0]),
    ("register", "m2", CARDS[1]),
    ("register", "n2", "text"),
    ("unregister", "n2"),
    ("advance", 6),  # b.c and gone expire: their logs stay
    ("create", "gone", 0),  # taken up again
]
READS = [
    ("fetch", box, group, 4, "earliest", False) for box in ("a", "b.c", "gone") for group in GROUPS
]


async def test_a_state_of_every_kind_is_restored_exactly_from_a_snapshot(streams):
    clock = ManualClock(T0)
    engine = streams(1, clock)  # a snapshot as soon as the records since take its size
    stream = engine.storage.stream
    for op in EVERY_KIND:
        if op[0] == "advance":
            clock.advance(op[1])
            continue
        await engine.handle(*request_of(op))
    covered = (await stream_state(stream)).last_seq
    await ok(engine, p.MAILBOX_CREATE, {"name": "filler", "ttl": 0})
    for i in range(200):  # until a snapshot taken after the state is complete
        if (await stream_state(stream)).first_seq > covered:
            break
        await ok(engine, p.send_subject("filler"), f"filler {i}".encode())
    assert (await stream_state(stream)).first_seq > covered  # the state's records are gone
    restored = streams(1, clock)
    assert engine_state(restored) == engine_state(engine)
    for op in READS:  # the expired mailboxes' logs and the groups' offsets, as before
        assert await restored.handle(*request_of(op)) == await engine.handle(*request_of(op)), op


async def test_requests_made_while_snapshots_are_written_are_all_kept(streams):
    """Bursts of concurrent requests: their changes go together in records (the group
    commit), those told after a snapshot's state was taken in records after its beginning."""
    engine = streams(3000)
    stream = engine.storage.stream
    for box in ("a", "b"):
        await ok(engine, p.MAILBOX_CREATE, {"name": box, "ttl": 0})
    for burst in range(20):
        sends = [
            ok(engine, p.send_subject(box), f"{burst} {i}".encode())
            for i in range(15)
            for box in ("a", "b")
        ]
        deletes = [ok(engine, p.delete_subject("a", burst * 15 + i), b"") for i in range(0, 15, 2)]
        await asyncio.gather(*sends)
        await asyncio.gather(*deletes)
    assert (await stream_state(stream)).first_seq > 1  # snapshots were written, and purged
    again = streams(3000)
    assert engine_state(again) == engine_state(engine)
    assert again.storage.restored["messages"] == 600 - 160


async def test_a_takeover_after_many_sends_replays_only_the_tail(streams):
    """Also of a stream written before snapshots: its first broker takes none."""
    old = streams(None)
    await ok(old, p.MAILBOX_CREATE, {"name": "box", "ttl": 0})
    for i in range(400):
        await ok(old, p.send_subject("box"), f"old {i}".encode())
    serving = streams(20_000)  # the stream before it (401 records) is read whole
    assert serving.storage.records_read == 401
    fetch = {"group_name": "g", "deliver": "earliest", "config": {"max_wait_ms": 0, "num_msgs": 1}}
    for i in range(1200):
        await ok(serving, p.send_subject("box"), f"new {i}".encode())
        handed = await ok(serving, p.fetch_subject("box"), fetch)
        ack = {"group_name": "g", "mail_address": "box", "msg_id": handed["messages"][0]["msg_id"]}
        await ok(serving, p.ack_subject("box"), ack)
    lock = LeaderLock(STATE_SERVER.urls, serving.storage.stream)
    try:
        assert lock.fence() > 0
    finally:
        lock.close()
    taking_over = streams(20_000)
    assert engine_state(taking_over) == engine_state(serving)
    written = (await stream_state(serving.storage.stream)).last_seq
    # 2,802 records written, and the snapshots'; read: the last snapshot (at most 1,600
    # messages, about 150 kB), then at most about as many bytes of records (150 bytes a SEND,
    # 100 an ACK): some 1,000 at most (525 measured; without snapshots, all 2,802)
    assert written > 2800
    assert taking_over.storage.records_read < 1100, taking_over.storage.records_read
    sent = await ok(taking_over, p.send_subject("box"), b"after")
    assert sent["msg_id"] == 1600  # msg_ids go on from the stream


@pytest.mark.parametrize("kind", ["begin", "part"])
async def test_a_broker_cut_off_mid_snapshot_is_restored_exactly(streams, kind):
    """Its store closed once the snapshot's beginning, or its first part, is in the stream:
    the snapshot has no end, so a restore skips it and replays the records around it."""
    writer = streams(20 * BIG)  # the 21st SEND takes a snapshot: of 21 messages, 5 parts
    stream = writer.storage.stream
    connection = await nats.connect(STATE_SERVER.urls)
    cut_off = asyncio.Event()

    async def watch(msg) -> None:
        record = json.loads(msg.data.partition(b"\n")[0])
        if record.get("snap", [None, None])[1] == kind and not cut_off.is_set():
            writer.storage.close()  # on the serving loop: what a killed broker stops doing
            cut_off.set()

    await connection.subscribe(writer.storage.subject, cb=watch)
    try:
        await ok(writer, p.MAILBOX_CREATE, {"name": "box", "ttl": 0})
        for i in range(21):  # then nothing under way but the snapshot
            await ok(writer, p.send_subject("box"), bytes([65 + i]) * BIG)
        await asyncio.wait_for(cut_off.wait(), WAIT)
    finally:
        await connection.close()
    kinds = [found[2] for found in await snapshot_records(stream)]
    assert kind in kinds and "end" not in kinds, kinds  # cut off mid-snapshot indeed
    restored = streams(20 * BIG)
    assert engine_state(restored) == engine_state(writer)
    assert restored.storage.restored["messages"] == 21
    assert (await stream_state(stream)).first_seq == 1  # nothing purged


# A broker process: 21 SENDs (the last takes a snapshot of 5 MB), then it waits to be killed
SNAPSHOTTING_BROKER = f"""
import asyncio, sys
from langchain_mq9 import protocol as p
from langchain_mq9.broker import BrokerEngine
from langchain_mq9.broker.storage import JetStreamStorage

async def main():
    servers, stream = sys.argv[1].split(","), sys.argv[2]
    storage = JetStreamStorage(servers, stream=stream, snapshot_bytes={20 * BIG})
    engine = BrokerEngine(storage=storage)
    await engine.handle(p.MAILBOX_CREATE, {{}}, p.encode({{"name": "box", "ttl": 0}}))
    for i in range(21):
        answer = await engine.handle(p.send_subject("box"), {{}}, bytes([65 + i]) * {BIG})
        assert b'"error":""' in answer, answer
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_a_broker_killed_mid_snapshot_is_restored_exactly():
    """SIGKILL once its snapshot's beginning is in the stream: the 21 acknowledged messages
    are restored, every byte, and the snapshot is skipped."""
    stream = f"SN{uuid.uuid4().hex[:10]}"
    connection = await nats.connect(STATE_SERVER.urls)
    killed = asyncio.Event()
    started: list[subprocess.Popen] = []

    async def watch(msg) -> None:
        record = json.loads(msg.data.partition(b"\n")[0])
        if record.get("snap", [None, None])[1] == "begin" and not killed.is_set():
            os.kill(started[0].pid, signal.SIGKILL)
            killed.set()

    await connection.subscribe(f"mq9state.{stream.lower()}", cb=watch)
    broker = subprocess.Popen(
        [sys.executable, "-c", SNAPSHOTTING_BROKER, ",".join(STATE_SERVER.urls), stream]
    )
    started.append(broker)
    try:
        await asyncio.wait_for(killed.wait(), WAIT)
    finally:
        broker.kill()
        broker.wait(WAIT)
        await connection.close()
    assert broker.returncode == -signal.SIGKILL
    kinds = [found[2] for found in await snapshot_records(stream)]
    assert "begin" in kinds and "end" not in kinds, kinds
    restored = BrokerEngine(storage=JetStreamStorage(STATE_SERVER.urls, stream=stream))
    try:
        box = restored.topics["box"]
        assert [(m.msg_id, m.payload) for m in box.messages.values()] == [
            (i, bytes([65 + i]) * BIG) for i in range(21)
        ]
    finally:
        await STATE_SERVER.drop(restored.storage)


async def test_a_stale_brokers_snapshot_after_the_fence_is_refused_and_changes_nothing(
    streams, monkeypatch
):
    """A broker whose snapshot is under way when another takes over (writes the fence and
    reads the stream): none of its snapshot's later records is stored, nothing is purged, and
    the stream still holds what the new broker read."""
    made = threading.Event()  # the stale broker's snapshot is taken, its parts to be made
    go_on = threading.Event()
    make_parts = store.snapshot_parts

    def held_back(*args):
        made.set()
        assert go_on.wait(WAIT)
        return make_parts(*args)

    monkeypatch.setattr(store, "snapshot_parts", held_back)
    stale = streams(2000)
    stream = stale.storage.stream
    await ok(stale, p.MAILBOX_CREATE, {"name": "box", "ttl": 0})
    for i in range(30):
        await ok(stale, p.send_subject("box"), f"m{i}".encode())
        if made.is_set():
            break
    assert made.is_set()

    async def begun() -> bool:
        return [kind for _, _, kind in await snapshot_records(stream)] == ["begin"]

    await wait_for(begun, "the snapshot's beginning")
    lock = LeaderLock(STATE_SERVER.urls, stream)
    try:
        fence = await asyncio.to_thread(lock.fence)
    finally:
        lock.close()
    new = streams(None)
    go_on.set()

    async def refused() -> bool:
        return stale.storage.lost() is not None

    await wait_for(refused, "the stale broker's refusal")
    after = await stream_state(stream)
    assert (after.first_seq, after.last_seq) == (1, fence)  # nothing added, nothing purged
    assert [kind for _, _, kind in await snapshot_records(stream)] == ["begin"]
    again = streams(None)
    assert engine_state(again) == engine_state(new)
    assert again.storage.restored["messages"] == new.storage.restored["messages"] > 0
