"""Every change fits (issue #61, item 2): what falls due at once is stored, and survives a
restart, while other clients are answered.

Mailbox expiries, delayed messages falling due and the retention were stored as one change
with the next request, however large. Here a client makes 320 mailboxes with 3,790-character
names and a 3 s lifetime and sends 10 delayed messages of 200 KB, all due in the same second of
the injected clock: over 3 MiB of changes, on the SQLite store. Each is applied; another
client's SENDs are answered before, meanwhile and after a restart.

(The cases of the earlier JetStream store, a log of changes cut into records within the
server's max_payload, went with it in issue #72: the cluster store keeps each message as a
message of its stream and each record as a key of a bucket, each write its own.)
"""

from __future__ import annotations

import asyncio
import json

import nats
import pytest
from test_durability import T0, engine_state

from mq9_broker import BrokerEngine, ManualClock, serve_on_nats
from mq9_broker.storage import SqliteStorage
from mq9_wire import protocol as p
from testbed.support.devbroker_helpers import request_ok
from testbed.support.jetstream_servers import JetStreamCluster

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


async def test_over_3_mib_falling_due_in_one_second_is_applied_and_survives_a_restart(
    lone_jetstream, tmp_path
):
    servers = lone_jetstream.urls
    clock = ManualClock(T0)
    engine = BrokerEngine(clock=clock, storage=SqliteStorage(tmp_path / "broker.sqlite3"))
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

        clock.advance(LIFETIME)  # every expiry and every delayed message due in this second
        answers = await asyncio.gather(
            *(_send(other, "other.box", b"meanwhile %d" % i) for i in range(20))
        )
        assert all(reply["error"] == "" for reply in answers), answers
        assert sorted(reply["msg_id"] for reply in answers) == list(range(1, 21))

        assert set(engine.mailboxes) == {"other.box", "later.box"}
        assert [m.payload for m in engine.topics["later.box"].messages.values()] == _payloads()
        assert engine.store._delayed == []
        before = engine_state(engine)
    finally:
        await service.stop()
        engine.storage.close()

    engine = BrokerEngine(clock=clock, storage=SqliteStorage(tmp_path / "broker.sqlite3"))
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


# -- helpers -----------------------------------------------------------------------------------


async def _send(connection, address: str, body: bytes) -> dict:
    reply = await connection.request(p.send_subject(address), body, timeout=60)
    return json.loads(reply.data)
