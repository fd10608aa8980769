"""Every change fits (issue #61, item 2): what falls due at once is stored in changes that fit.

Mailbox expiries, delayed messages falling due and the retention were stored as one change
with the next request, however large: above the server's max_payload the record was refused,
and replayed after a restart, refused for good: every later request of every client failed.
Here a client makes 320 mailboxes with 3,790-character names and a 3 s lifetime and sends 10
delayed messages of 200 KB, all due in the same second of the injected clock: over 3 MiB of
changes. Each is applied, in records each within the server's max_payload; another client's
SENDs are answered before, meanwhile and after a restart. And a stream holding such a record
from an older version (written while the server took larger records) still starts.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import nats
import pytest
from devbroker_helpers import request_ok
from jetstream_servers import JetStreamCluster
from test_durability import T0, engine_state
from test_jetstream_store import stream_records

from langchain_mq9 import protocol as p
from langchain_mq9.broker import BrokerEngine, BrokerLimits, ManualClock, serve_on_nats
from langchain_mq9.broker.engine.engine import RETENTION_SECONDS
from langchain_mq9.broker.storage import JetStreamStorage, SqliteStorage, Storage

pytestmark = pytest.mark.slow  # nats-server processes

BOXES, NAME_LENGTH, LIFETIME = 320, 3790, 3
DELAYED, DELAYED_BYTES = 10, 200_000


def _names() -> list[str]:
    return [f"fit.{i:04d}." + "n" * (NAME_LENGTH - 10) for i in range(BOXES)]


def _payloads() -> list[bytes]:
    return [bytes([65 + i]) * DELAYED_BYTES for i in range(DELAYED)]


@pytest.fixture(scope="module")
def lone_jetstream():
    with JetStreamCluster(1) as cluster:
        yield cluster


def _store(kind: str, servers: list[str], stream: str, tmp_path) -> Storage:
    if kind == "jetstream":
        return JetStreamStorage(servers, stream=stream)
    return SqliteStorage(tmp_path / "broker.sqlite3")


@pytest.mark.parametrize("kind", ["jetstream", "sqlite"])
async def test_over_3_mib_falling_due_in_one_second_is_applied_and_survives_a_restart(
    lone_jetstream, tmp_path, kind
):
    servers, stream = lone_jetstream.urls, f"F{uuid.uuid4().hex[:12]}"
    clock = ManualClock(T0)
    engine = BrokerEngine(clock=clock, storage=_store(kind, servers, stream, tmp_path))
    maker, other = await nats.connect(servers), await nats.connect(servers)
    serving = await nats.connect(servers)
    service = await serve_on_nats(engine, serving)
    try:
        await request_ok(other, p.MAILBOX_CREATE, {"name": "other.box", "ttl": 0})
        await request_ok(maker, p.MAILBOX_CREATE, {"name": "later.box", "ttl": 0})
        for name in _names():
            await request_ok(maker, p.MAILBOX_CREATE, {"name": name, "ttl": LIFETIME})
        delay = {p.HEADER_DELAY: str(LIFETIME)}
        for payload in _payloads():
            await request_ok(maker, p.send_subject("later.box"), payload, headers=delay, timeout=30)
        due = BOXES * NAME_LENGTH + DELAYED * DELAYED_BYTES
        assert due > 3 * 2**20
        assert (await request_ok(other, p.send_subject("other.box"), b"before"))["msg_id"] == 0
        records_before = await stream_records(servers, stream) if kind == "jetstream" else 0

        clock.advance(LIFETIME)  # every expiry and every delayed message due in this second
        answers = await asyncio.gather(
            *(_send(other, "other.box", b"meanwhile %d" % i) for i in range(20))
        )
        assert all(reply["error"] == "" for reply in answers), answers
        assert sorted(reply["msg_id"] for reply in answers) == list(range(1, 21))

        assert set(engine.mailboxes) == {"other.box", "later.box"}
        assert [m.payload for m in engine.topics["later.box"].messages.values()] == _payloads()
        assert engine._delayed == []
        if kind == "jetstream":  # cut into several records, each taken by the server
            assert await stream_records(servers, stream) - records_before >= 3
        before = engine_state(engine)
    finally:
        await service.stop()
        engine.storage.close()

    engine = BrokerEngine(clock=clock, storage=_store(kind, servers, stream, tmp_path))
    service = await serve_on_nats(engine, serving)
    try:
        assert engine_state(engine) == before
        reply = await request_ok(other, p.send_subject("other.box"), b"after a restart")
        assert reply["msg_id"] == 21
        # an expired name is free again; the delayed messages are handed out
        await request_ok(maker, p.MAILBOX_CREATE, {"name": _names()[0], "ttl": 0})
        fetch = {"group_name": "g", "deliver": "earliest", "config": {"num_msgs": 4}}
        handed = await request_ok(maker, p.fetch_subject("later.box"), fetch, timeout=30)
        assert [m["msg_id"] for m in handed["messages"]] == [0, 1, 2, 3]
    finally:
        await service.stop()
        engine.storage.close()
        for connection in (maker, other, serving):
            await connection.close()
        if kind == "jetstream":
            await _delete(servers, stream)


async def test_a_retention_of_many_messages_with_long_names_is_stored_in_pieces(lone_jetstream):
    """The retention of 2,000 messages of a mailbox with a 3,790-character name (7.6 MB of
    removals) is applied and replayed; the next SEND is answered."""
    servers, stream = lone_jetstream.urls, f"F{uuid.uuid4().hex[:12]}"
    clock = ManualClock(T0)
    engine = BrokerEngine(clock=clock, storage=JetStreamStorage(servers, stream=stream))
    name = _names()[0]
    try:
        await _ok(engine, p.MAILBOX_CREATE, {"name": name, "ttl": 0})
        for i in range(2000):
            await _ok(engine, p.send_subject(name), b"m%d" % i)
        clock.advance(RETENTION_SECONDS + 1)
        assert (await _ok(engine, p.send_subject(name), b"kept"))["msg_id"] == 2000
        assert list(engine.topics[name].messages) == [2000]
        before = engine_state(engine)
        engine.storage.close()
        engine = BrokerEngine(clock=clock, storage=JetStreamStorage(servers, stream=stream))
        assert engine_state(engine) == before
        assert engine.topics[name].start_offset == 2000
    finally:
        engine.storage.close()
        await _delete(servers, stream)


async def test_a_stream_holding_a_record_larger_than_the_server_now_takes_still_starts():
    """An older version wrote expiries with the next request as one record; the server took
    it (max_payload 4 MB then): the broker started on 1 MB restores it, serves, and its
    snapshot (of everything, forced at once) goes on past it."""
    stream = f"F{uuid.uuid4().hex[:12]}"
    with JetStreamCluster(1, extra_config="max_payload: 4MB") as cluster:
        servers = cluster.urls
        clock = ManualClock(T0)
        engine = BrokerEngine(clock=clock, storage=JetStreamStorage(servers, stream=stream))
        try:
            for name in _names():
                await _ok(engine, p.MAILBOX_CREATE, {"name": name, "ttl": LIFETIME})
            await _ok(engine, p.MAILBOX_CREATE, {"name": "box", "ttl": 0})
        finally:
            engine.storage.close()
        # the older version's record: every expiry and a SEND, one change
        ops = [["mx", name] for name in _names()]
        ops.append(["ms", "box", 1, 0, ["normal", T0 + LIFETIME, None, None, None, 0, [0, 3]]])
        head = json.dumps({"v": 2, "blobs": [3], "changes": [ops]}).encode()
        old_record = head + b"\n" + b"old"
        assert len(old_record) > 2**20
        connection = await nats.connect(servers)
        try:
            await connection.jetstream().publish(f"mq9state.{stream.lower()}", old_record)
        finally:
            await connection.close()
        server = cluster.servers[0]
        server.stop()
        server.extra_config = "max_payload: 1MB"
        server.start()
        clock.advance(LIFETIME)
        engine = BrokerEngine(
            clock=clock, storage=JetStreamStorage(servers, stream=stream, snapshot_bytes=1)
        )
        try:
            assert engine.storage._nc.max_payload == 2**20
            assert set(engine.mailboxes) == {"box"}
            assert [m.payload for m in engine.topics["box"].messages.values()] == [b"old"]
            for i in range(3):  # a snapshot is due at the first: written between them
                assert (await _ok(engine, p.send_subject("box"), b"new"))["msg_id"] == i + 1
            before = engine_state(engine)
            engine.storage.close()
            engine = BrokerEngine(clock=clock, storage=JetStreamStorage(servers, stream=stream))
            assert engine_state(engine) == before
            assert (await _ok(engine, p.send_subject("box"), b"next"))["msg_id"] == 4
        finally:
            engine.storage.close()


async def test_messages_kept_from_larger_records_neither_stop_snapshots_nor_requests(caplog):
    """A message of 1.5 MB and a delayed one, stored while the server took 4 MB records, on a
    server now taking 1 MB: restored and served; the snapshot that cannot hold the message is
    given up (logged), not written, and the delayed one, due, is dropped (logged) rather than
    written: every request around them is answered, before and after a restart."""
    stream, large = f"F{uuid.uuid4().hex[:12]}", b"L" * 1_500_000
    clock = ManualClock(T0)
    with JetStreamCluster(1, extra_config="max_payload: 4MB") as cluster:
        servers = cluster.urls
        limits = BrokerLimits(max_payload=4 * 2**20)
        engine = BrokerEngine(
            clock=clock, limits=limits, storage=JetStreamStorage(servers, stream=stream)
        )
        try:
            await _ok(engine, p.MAILBOX_CREATE, {"name": "box", "ttl": 0})
            assert (await _ok(engine, p.send_subject("box"), large))["msg_id"] == 0
            delayed = json.loads(
                await engine.handle(p.send_subject("box"), {p.HEADER_DELAY: "10"}, large)
            )
            assert delayed == {"error": "", "msg_id": -1}
        finally:
            engine.storage.close()
        server = cluster.servers[0]
        server.stop()
        server.extra_config = "max_payload: 1MB"
        server.start()
        engine = BrokerEngine(
            clock=clock, storage=JetStreamStorage(servers, stream=stream, snapshot_bytes=1)
        )
        try:
            assert [m.payload for m in engine.topics["box"].messages.values()] == [large]
            for i in range(3):  # a snapshot is due at the first, and given up
                assert (await _ok(engine, p.send_subject("box"), b"new"))["msg_id"] == i + 1
            assert "a snapshot of the broker's state is given up" in caplog.text
            clock.advance(10)
            assert (await _ok(engine, p.send_subject("box"), b"after"))["msg_id"] == 4
            assert "a delayed message for 'box' is dropped" in caplog.text
            assert engine._delayed == [] and len(engine.topics["box"].messages) == 5
            before = engine_state(engine)
            engine.storage.close()
            engine = BrokerEngine(clock=clock, storage=JetStreamStorage(servers, stream=stream))
            assert engine_state(engine) == before
            assert (await _ok(engine, p.send_subject("box"), b"next"))["msg_id"] == 5
        finally:
            engine.storage.close()


async def test_a_registration_no_record_holds_is_refused_before_anything_changes():
    """On a server taking records of 64 KB, a REGISTER whose change would take 192 KB is
    refused before it changes anything; the SENDs made around it, whose changes wait in the
    same queue of records, are all stored and answered."""
    with JetStreamCluster(1, extra_config="max_payload: 64KB") as cluster:
        storage = JetStreamStorage(cluster.urls, stream=f"F{uuid.uuid4().hex[:12]}")
        engine = BrokerEngine(clock=ManualClock(T0), storage=storage, search=False)
        try:
            await _ok(engine, p.MAILBOX_CREATE, {"name": "box"})
            big = p.encode({"name": "big", "payload": "\x01" * 32_000})
            sends = [engine.handle(p.send_subject("box"), {}, b"m%d" % i) for i in range(20)]
            answers = await asyncio.gather(
                *sends[:10], engine.handle(p.AGENT_REGISTER, {}, big), *sends[10:]
            )
            replies = [json.loads(answer) for answer in answers]
            refused = replies.pop(10)["error"]
            assert "registration takes" in refused and "max_payload (65536)" in refused
            assert [reply["error"] for reply in replies] == [""] * 20
            assert sorted(reply["msg_id"] for reply in replies) == list(range(20))
            assert "big" not in engine.registry.entries
            before = engine_state(engine)
            engine.storage.close()
            engine = BrokerEngine(clock=ManualClock(T0), storage=JetStreamStorage(
                cluster.urls, stream=storage.stream), search=False)  # fmt: skip
            assert engine_state(engine) == before
        finally:
            engine.storage.close()


# -- helpers -----------------------------------------------------------------------------------


async def _send(connection, address: str, body: bytes) -> dict:
    reply = await connection.request(p.send_subject(address), body, timeout=60)
    return json.loads(reply.data)


async def _ok(engine: BrokerEngine, subject: str, body: bytes | dict) -> dict:
    raw = p.encode(body) if isinstance(body, dict) else body
    reply = json.loads(await engine.handle(subject, {}, raw))
    assert reply["error"] == "", reply
    return reply


async def _delete(servers: list[str], stream: str) -> None:
    connection = await nats.connect(servers)
    try:
        await connection.jetstream().delete_stream(stream)
    finally:
        await connection.close()
