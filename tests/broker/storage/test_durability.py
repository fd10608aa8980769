"""Durable storage: what the broker answered is still there after a restart, and after kill -9.

The first tests restart an engine in-process over the same SQLite file (schema version 5) and
its request log, and talk to it on the wire (``engine.handle``); a ``ManualClock`` drives TTLs
and delays, so nothing sleeps. A property test checks that for any sequence of requests the
restored engine holds exactly the state of the one that wrote the file. The last tests kill -9 a
real ``python -m mq9_broker --data`` process and restart it, with raw nats-py requests.

What must survive is RobustMQ's state: mailboxes, messages (with header and expire_at), delayed
messages, committed group offsets (only ACK and force_deliver commit: a FETCH leaves nothing
to restore) and the agent registry with its search index.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import tempfile
import uuid
from pathlib import Path

import nats
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mq9_broker import BrokerEngine, ManualClock
from mq9_broker.engine.sending import MOST_SECONDS
from mq9_broker.storage import SqliteStorage, StorageError
from mq9_wire import protocol as p
from testbed.nats_server import start_nats_server
from testbed.support.devbroker_helpers import (
    DevBroker,
    port_open,
    process_alive,
    request_ok,
    wait_until,
)

pytestmark = pytest.mark.slow

T0 = 1_700_000_000


class Restartable:
    """An engine over a data file; ``restart()`` rebuilds it from the file."""

    def __init__(self, path: Path, clock: ManualClock | None = None) -> None:
        self.path = path
        self.clock = clock or ManualClock(T0)
        self.engine = self._start()

    def _start(self) -> BrokerEngine:
        return BrokerEngine(clock=self.clock, storage=SqliteStorage(self.path))

    def stop(self) -> None:
        self.engine.storage.close()

    def restart(self) -> BrokerEngine:
        self.stop()
        self.engine = self._start()
        return self.engine

    async def call(self, subject: str, body: bytes | dict = b"", headers=None) -> dict:
        if isinstance(body, dict):
            body = p.encode(body)
        return json.loads(await self.engine.handle(subject, headers, body))

    async def ok(self, subject: str, body: bytes | dict = b"", headers=None) -> dict:
        reply = await self.call(subject, body, headers)
        assert reply["error"] == "", reply
        return reply

    async def create(self, name: str, **fields) -> None:
        await self.ok(p.MAILBOX_CREATE, {"name": name, **fields})

    async def send(self, box: str, payload: bytes | str, headers: dict | None = None) -> int:
        data = payload.encode() if isinstance(payload, str) else payload
        return (await self.ok(p.send_subject(box), data, headers))["msg_id"]

    async def query(self, box: str, body: dict | None = None) -> list[dict]:
        return (await self.ok(p.query_subject(box), body or {}))["messages"]

    async def fetch(self, box: str, **body) -> list[int]:
        body.setdefault("config", {"max_wait_ms": 0})
        reply = await self.ok(p.fetch_subject(box), body)
        return [m["msg_id"] for m in reply["messages"]]

    async def ack(self, box: str, group: str, msg_id: int) -> None:
        body = {"group_name": group, "mail_address": box, "msg_id": msg_id}
        await self.ok(p.ack_subject(box), body)

    async def discover(self, body: dict | None = None) -> list[dict]:
        return (await self.ok(p.AGENT_DISCOVER, body or {}))["agents"]


@pytest.fixture
def durable(tmp_path):
    broker = Restartable(tmp_path / "broker.sqlite3")
    yield broker
    broker.stop()


def a2a_card(name: str, description: str) -> dict:
    return p.agent_card(name, description=description, skills=["skill"])


# -- restart in-process -------------------------------------------------------------------------


async def test_messages_keep_every_field_and_msg_ids_are_never_reused(durable):
    await durable.create("box.a")
    durable.clock.advance(3)
    await durable.send("box.a", "n1", {"x-trace": "abc"})
    await durable.send("box.a", "c1", {"mq9-priority": "critical", "mq9-key": "state"})
    await durable.send("box.a", b"\x00\xffbinary", {"mq9-priority": "urgent", "mq9-tags": "x,y"})
    await durable.send("box.a", "short-lived", {"mq9-ttl": "50"})
    await durable.send("box.a", "c2", {"mq9-priority": "critical", "mq9-key": "state"})
    newest = await durable.send("box.a", "deleted before the restart")
    await durable.ok(p.delete_subject("box.a", newest))
    stored = await durable.query("box.a")
    in_order = await durable.ok(
        p.fetch_subject("box.a"), {"deliver": "earliest", "config": {"max_wait_ms": 0}}
    )

    durable.restart()
    assert await durable.query("box.a") == stored
    assert (
        await durable.ok(
            p.fetch_subject("box.a"), {"deliver": "earliest", "config": {"max_wait_ms": 0}}
        )
        == in_order
    )
    assert [m["payload"] for m in await durable.query("box.a", {"key": "state"})] == ["c2"]
    assert [m["payload"] for m in await durable.query("box.a", {"tags": ["y"]})] == [
        "\x00\ufffdbinary"
    ]
    assert stored[0]["header"] == list(b"NATS/1.0\r\nx-trace: abc\r\n\r\n")
    assert await durable.send("box.a", "after") == newest + 1  # the deleted id stays used
    durable.clock.advance(51)  # expire_at was kept too
    assert [m["payload"] for m in await durable.query("box.a")] == [
        m["payload"] for m in stored if m["payload"] != "short-lived"
    ] + ["after"]


async def test_mailbox_ttls_survive_restart(durable):
    await durable.create("default.ttl")  # 86400 s
    await durable.create("short", ttl=10)
    await durable.create("forever", ttl=0)
    await durable.create("huge", ttl=2**64 - 1)  # beyond SQLite's signed INTEGER
    durable.restart()
    durable.clock.advance(10)
    assert (await durable.call(p.send_subject("short"), b"x"))["error"] == (
        "mailbox short does not exist"
    )
    await durable.create("short")  # the name is free again, and takes its old log up
    assert await durable.send("short", "new") == 0  # it held no message: ids start at 0
    durable.restart()
    durable.clock.advance(86_390)
    assert (await durable.call(p.query_subject("default.ttl")))["error"].startswith("Tenant")
    for name in ("short", "forever", "huge"):
        await durable.query(name)
    assert [m["payload"] for m in await durable.query("short")] == ["new"]
    assert durable.engine.mailboxes["huge"].ttl == 2**64 - 1


async def test_an_expired_mailbox_log_survives_restart(durable):
    await durable.create("gone", ttl=10)
    await durable.send("gone", "kept")
    durable.clock.advance(10)
    assert (await durable.call(p.send_subject("gone"), b"x"))["error"] == (
        "mailbox gone does not exist"
    )
    durable.restart()
    assert (await durable.call(p.send_subject("gone"), b"x"))["error"] == (
        "mailbox gone does not exist"
    )
    assert [m["payload"] for m in await durable.query("gone")] == ["kept"]
    await durable.create("gone")  # taken up again, with its message and next msg_id
    assert await durable.send("gone", "again") == 1


async def test_delayed_messages_wait_across_a_restart(durable):
    await durable.create("later")
    headers = {"mq9-delay": "10", "mq9-priority": "urgent", "mq9-tags": "t"}
    assert await durable.send("later", "first", headers) == -1
    assert await durable.send("later", "second", {"mq9-delay": "20", "mq9-ttl": "30"}) == -1
    assert await durable.send("later", "dropped", {"mq9-delay": "20", "mq9-ttl": "5"}) == -1
    durable.restart()
    assert await durable.query("later") == []
    durable.clock.advance(10)
    [first] = await durable.query("later")
    assert (first["msg_id"], first["payload"], first["priority"]) == (0, "first", "urgent")
    assert first["header"] == list(p.header_block(headers))
    assert first["create_time"] == T0 + 10
    durable.restart()  # released before this restart: not released twice
    durable.clock.advance(10)
    found = await durable.query("later")
    assert [(m["msg_id"], m["payload"]) for m in found] == [(0, "first"), (1, "second")]
    durable.clock.advance(3600)  # the delivered copy has no TTL
    assert len(await durable.query("later")) == 2


async def test_committed_offsets_survive_and_a_fetch_commits_nothing(durable):
    await durable.create("work")
    for i in range(6):
        await durable.send("work", f"m{i}")
    assert await durable.fetch(
        "work", group_name="g", deliver="earliest", config={"num_msgs": 3, "max_wait_ms": 0}
    ) == [0, 1, 2]
    durable.restart()  # between FETCH and ACK: nothing was committed
    assert durable.engine.offsets == {}
    assert await durable.fetch(
        "work", group_name="g", deliver="earliest", config={"num_msgs": 3, "max_wait_ms": 0}
    ) == [0, 1, 2]
    await durable.ack("work", "g", 2)
    durable.restart()
    assert await durable.fetch("work", group_name="g", deliver="latest") == [3, 4, 5]
    # force_deliver's commit (target + 1) is durable too
    assert await durable.fetch(
        "work", group_name="g", deliver="from_id", from_id=4, force_deliver=True
    ) == [4, 5]
    durable.restart()
    assert await durable.fetch("work", group_name="g") == [5]


async def test_offsets_by_group_name_and_huge_offsets_survive(durable):
    await durable.create("a")
    await durable.create("b")
    for box in ("a", "b"):
        for _ in range(3):
            await durable.send(box, "x")
    await durable.ack("a", "g", 0)
    await durable.ack("a", "big", 2**64 - 2)  # commits 2**64 - 1
    durable.restart()
    # g committed on a only: b is read from the beginning, whatever deliver says
    assert await durable.fetch("b", group_name="g", deliver="latest") == [0, 1, 2]
    assert await durable.fetch("a", group_name="g", deliver="latest") == [1, 2]
    assert await durable.fetch("a", group_name="big", deliver="earliest") == []
    assert durable.engine.offsets["big-normal"] == {durable.engine.mailboxes["a"].shard: 2**64 - 1}


async def test_the_longest_message_ttl_survives(durable):
    # (#77: a TTL is at most MOST_SECONDS, 100 years; a longer one is refused, not wrapped)
    await durable.create("box")
    await durable.send("box", "kept", {"mq9-ttl": str(MOST_SECONDS)})
    durable.restart()
    assert [m["payload"] for m in await durable.query("box")] == ["kept"]
    [message] = durable.engine.mailboxes["box"].messages.values()
    assert message.expire_at == T0 + MOST_SECONDS


async def test_the_registry_and_its_search_index_survive(durable):
    await durable.ok(p.AGENT_REGISTER, {"name": "zeta", "payload": "not a card"})
    await durable.ok(p.AGENT_REGISTER, a2a_card("translator", "translates French"))
    await durable.ok(
        p.AGENT_REGISTER, {"name": "alias", "payload": json.dumps(a2a_card("poet", "writes poems"))}
    )
    await durable.ok(p.AGENT_REGISTER, {"name": "zeta", "payload": "second, not kept"})
    await durable.ok(p.AGENT_REGISTER, a2a_card("gone", "leaves soon"))
    await durable.ok(p.AGENT_UNREGISTER, {"name": "gone"})
    # a row named by the card, left behind when its registration goes (RobustMQ does that)
    await durable.ok(
        p.AGENT_REGISTER,
        {"name": "stale", "payload": json.dumps(a2a_card("ghost", "haunts the index"))},
    )
    await durable.ok(p.AGENT_UNREGISTER, {"name": "stale"})
    listing = await durable.discover()
    searches = [
        await durable.discover({"semantic": "poems"}),
        await durable.discover({"text": "index french"}),
    ]
    assert [a["name"] for a in listing] == ["alias", "translator", "zeta"]
    assert [a["name"] for a in searches[1]] == ["translator", "ghost"]

    durable.restart()
    assert await durable.discover() == listing
    assert [
        await durable.discover({"semantic": "poems"}),
        await durable.discover({"text": "index french"}),
    ] == searches
    await durable.ok(p.AGENT_REGISTER, {"name": "zeta", "payload": "still the first"})
    assert await durable.discover() == listing
    durable.restart()
    assert await durable.discover() == listing


async def test_a_search_index_row_that_is_no_card_is_refused_with_a_way_out(durable):
    """The index restore both stores share (storage/in_process/persistence.py
    ``restore_agents``): a row of the search index whose agent_info reads as no A2A card is
    damage, said in words."""
    await durable.ok(p.AGENT_REGISTER, a2a_card("translator", "translates French"))
    durable.stop()
    with sqlite3.connect(durable.path) as db:
        db.execute("UPDATE agent_index SET agent_info = 'not a card'")
    db.close()
    storage = SqliteStorage(durable.path)
    try:
        with pytest.raises(StorageError, match=r"'translator', which is no A2A card .* move it"):
            BrokerEngine(storage=storage)
    finally:
        storage.close()


def test_a_second_broker_on_the_same_file_is_refused(durable):
    with pytest.raises(StorageError, match="in use by another mq9 dev broker"):
        SqliteStorage(durable.path)


def test_a_file_that_is_not_broker_data_is_refused(tmp_path):
    other = tmp_path / "other.sqlite3"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE notes (text)")
    db.close()
    with pytest.raises(StorageError, match="not an mq9 dev-broker data file"):
        SqliteStorage(other)
    old = tmp_path / "old.sqlite3"  # a schema-version-1 file (leases, groups)
    with sqlite3.connect(old) as db:
        db.execute("CREATE TABLE mailboxes (address TEXT)")
        db.execute("PRAGMA user_version=1")
    db.close()
    with pytest.raises(StorageError, match=r"older langchain-mq9 \(schema version 1"):
        SqliteStorage(old)
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError, match=f"cannot use {garbage}"):
        SqliteStorage(garbage)


async def test_retention_and_the_earliest_offset_survive_restart(durable):
    await durable.create("box", ttl=0)
    for _ in range(3):
        await durable.send("box", "old")
    durable.clock.advance(7 * 86400 + 600)
    await durable.send("box", "kept")  # the retention scan runs first
    assert durable.engine.mailboxes["box"].start_offset == 3
    durable.restart()
    assert [m["msg_id"] for m in await durable.query("box")] == [3]
    assert durable.engine.mailboxes["box"].start_offset == 3


async def test_a_damaged_file_is_refused_with_a_way_out(durable):
    await durable.create("box")
    durable.stop()
    with sqlite3.connect(durable.path) as db:  # (a damaged message is only skipped: its crc)
        db.execute("UPDATE mailboxes SET ttl = 'never'")
    db.close()
    storage = SqliteStorage(durable.path)
    try:
        with pytest.raises(StorageError, match=r"cannot restore .* move it away"):
            BrokerEngine(storage=storage)
    finally:
        storage.close()


def test_a_directory_gets_the_default_file_name(tmp_path):
    storage = SqliteStorage(f"{tmp_path}/data/")
    try:
        assert storage.path == tmp_path / "data" / "mq9-broker.sqlite3"
        assert storage.path.exists()
    finally:
        storage.close()


async def test_a_change_that_cannot_be_saved_is_not_answered_as_success(durable):
    await durable.create("box")
    os.close(durable.engine.storage._log._fd)  # the disk went away under the request log
    reply = await durable.call(p.send_subject("box"), b"lost")
    assert "could not save the change" in reply["error"]


async def test_a_data_file_that_cannot_take_a_fold_fails_no_request(tmp_path, caplog):
    """The records are in the request log when SQLite cannot take them: every SEND is
    answered, and the next start replays what never reached the file."""

    class SmallFolds(Restartable):
        def _start(self) -> BrokerEngine:
            return BrokerEngine(clock=self.clock, storage=SqliteStorage(self.path, fold_every=4))

    broker = SmallFolds(tmp_path / "broker.sqlite3")
    await broker.create("box")
    broker.engine.storage._db.close()  # the data file went away; its log did not
    ids = [await broker.send("box", f"m{i}") for i in range(10)]
    assert ids == list(range(10))
    assert sum("could not fold" in r.message for r in caplog.records) == 2  # at 4, then 8
    broker.restart()
    assert [m["payload"] for m in await broker.query("box")] == [f"m{i}" for i in range(10)]
    assert await broker.send("box", "after") == 10
    broker.stop()


# -- any sequence of requests: the restored engine equals the one that wrote the file -----------


def engine_state(engine: BrokerEngine) -> dict:
    """Everything a restart must keep, in a form that compares by value."""
    current = engine.mailboxes

    def message(m) -> tuple:
        return (
            m.msg_id,
            m.payload,
            m.priority,
            m.create_time,
            m.key,
            m.tags,
            m.header,
            m.expire_at,
        )

    boxes = {}
    for address, box in current.items():
        live = box.messages
        boxes[address] = {
            "box": (box.shard, box.create_time, box.ttl, box.desc, box.next_id, box.start_offset),
            "messages": {i: message(m) for i, m in live.items()},
            "lanes": {pr: [i for i in lane if i in live] for pr, lane in box.lanes.items()},
            "order": [(i, t) for i, t in zip(box.order, box.times, strict=True) if i in live],
            "keys": dict(box.keys),
            "tagged": {
                t: [i for i in ids if i in live]
                for t, ids in box.tagged.items()
                if any(i in live for i in ids)
            },
        }
    return {
        "mailboxes": boxes,
        "mailbox_expiry": sorted(
            (t, b.address)
            for t, _, b in engine.store._mailbox_expiry
            if current.get(b.address) is b
        ),
        "delayed": [
            (due, address, message(m)) for due, _, address, m in sorted(engine.store._delayed)
        ],
        "offsets": engine.offsets,
        "agents": {
            name: (e.agent_info, e.create_time) for name, e in engine.registry.entries.items()
        },
        "index": [
            (card, e.name, e.agent_info, e.create_time) for card, e in engine.registry.index.items()
        ],
    }


BOXES = ("a", "b.c")
GROUPS = (None, "g1", "g2")
CARDS = [p.encode(a2a_card(n, f"agent {n}")).decode() for n in ("n1", "n2")]

requests = st.one_of(
    st.tuples(st.just("create"), st.sampled_from(BOXES), st.sampled_from([None, 0, 5, 30])),
    st.tuples(
        st.just("send"),
        st.sampled_from(BOXES),
        st.sampled_from(["normal", "urgent", "critical"]),
        st.sampled_from([None, "k1", "k2"]),
        st.sampled_from([None, None, 0, 3]),  # delay
        st.sampled_from([None, None, 2, 4, MOST_SECONDS, MOST_SECONDS + 1]),  # ttl
        st.sampled_from([(), ("x",), ("x", "y")]),
    ),
    st.tuples(
        st.just("fetch"),
        st.sampled_from(BOXES),
        st.sampled_from(GROUPS),
        st.integers(1, 4),
        st.sampled_from(["earliest", "latest"]),
        st.booleans(),
    ),
    st.tuples(
        st.just("ack"),
        st.sampled_from(BOXES),
        st.sampled_from(GROUPS[1:]),
        st.sampled_from([0, 1, 3, 7, 12, 2**64 - 1]),
    ),
    st.tuples(st.just("delete"), st.sampled_from(BOXES), st.integers(0, 12)),
    st.tuples(
        st.just("register"),
        st.sampled_from(["m1", "m2", "n1", "n2"]),
        st.sampled_from(["text", *CARDS]),
    ),
    st.tuples(st.just("unregister"), st.sampled_from(["m1", "m2", "n1", "n2"])),
    st.tuples(st.just("advance"), st.sampled_from([1, 3, 5, 31, 7 * 86400 + 600])),
)


def request_of(op: tuple) -> tuple[str, dict | None, bytes]:
    kind = op[0]
    if kind == "create":
        body = {"name": op[1]} if op[2] is None else {"name": op[1], "ttl": op[2]}
        return p.MAILBOX_CREATE, None, p.encode(body)
    if kind == "send":
        _, box, priority, key, delay, ttl, tags = op
        headers = {"mq9-priority": priority}
        for name, value in ((p.HEADER_KEY, key), (p.HEADER_DELAY, delay), (p.HEADER_TTL, ttl)):
            if value is not None:
                headers[name] = str(value)
        if tags:
            headers[p.HEADER_TAGS] = ",".join(tags)
        return p.send_subject(box), headers, f"payload {uuid.uuid4().hex[:6]}".encode()
    if kind == "fetch":
        _, box, group, num, deliver, force = op
        body = {
            "group_name": group,
            "deliver": deliver,
            "force_deliver": force,
            "config": {"num_msgs": num, "max_wait_ms": 0},
        }
        return p.fetch_subject(box), None, p.encode(body)
    if kind == "ack":
        _, box, group, msg_id = op
        body = {"group_name": group, "mail_address": box, "msg_id": msg_id}
        return p.ack_subject(box), None, p.encode(body)
    if kind == "delete":
        return p.delete_subject(op[1], op[2]), None, b""
    if kind == "register":
        return p.AGENT_REGISTER, None, p.encode({"name": op[1], "payload": op[2]})
    return p.AGENT_UNREGISTER, None, p.encode({"name": op[1]})


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(requests, max_size=40), st.lists(requests, max_size=10))
def test_any_history_is_restored_exactly(history, afterwards):
    async def run(engine: BrokerEngine, clock: ManualClock, ops) -> list[dict]:
        replies = []
        for op in ops:
            if op[0] == "advance":
                clock.advance(op[1])
                continue
            subject, headers, body = request_of(op)
            reply = json.loads(await engine.handle(subject, headers, body))
            assert not reply["error"].startswith("internal"), reply
            assert "could not save" not in reply["error"], reply
            replies.append(reply)
        return replies

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "broker.sqlite3"
        clock = ManualClock(T0)
        writer = BrokerEngine(clock=clock, storage=SqliteStorage(path))
        asyncio.run(run(writer, clock, history))
        writer.storage.close()
        reader = BrokerEngine(clock=clock, storage=SqliteStorage(path))
        try:
            assert engine_state(reader) == engine_state(writer)
            asyncio.run(run(reader, clock, afterwards))
            reader_state = engine_state(reader)
        finally:
            reader.storage.close()
        # what the restored engine changed was saved as well
        again = BrokerEngine(clock=clock, storage=SqliteStorage(path))
        try:
            assert engine_state(again) == reader_state
        finally:
            again.storage.close()


# -- kill -9 of a real broker process -----------------------------------------------------------


async def test_kill_9_loses_nothing_that_was_answered(tmp_path):
    data = str(tmp_path / "data")
    with start_nats_server() as nats_server:
        # The test owns nats-server, so killing the broker leaves it running for the restart.
        broker = DevBroker("--nats", nats_server.url, "--data", data)
        try:
            connection = await nats.connect(nats_server.url)
            try:
                await request_ok(connection, p.MAILBOX_CREATE, {"name": "jobs"})
                sent = {}
                for i in range(60):
                    priority = ("normal", "urgent", "critical")[i % 3]
                    headers = {"mq9-priority": priority, "mq9-tags": f"t{i % 2}"}
                    body = f"job {i}".encode()
                    reply = await request_ok(connection, p.send_subject("jobs"), body, headers)
                    sent[reply["msg_id"]] = (f"job {i}", priority)
                reply = await request_ok(
                    connection, p.send_subject("jobs"), b"in an hour", {"mq9-delay": "3600"}
                )
                assert reply["msg_id"] == -1
                fetch = {
                    "group_name": "workers",
                    "deliver": "earliest",
                    "config": {"num_msgs": 25, "max_wait_ms": 0},
                }
                batch = await request_ok(connection, p.fetch_subject("jobs"), fetch)
                done = [m["msg_id"] for m in batch["messages"]]
                await request_ok(
                    connection,
                    p.ack_subject("jobs"),
                    {"group_name": "workers", "mail_address": "jobs", "msg_id": 40},
                )
                await request_ok(
                    connection, p.AGENT_REGISTER, {"name": "worker", "payload": "takes jobs"}
                )
                await request_ok(connection, p.AGENT_REGISTER, a2a_card("planner", "plans jobs"))
                agents = (await request_ok(connection, p.AGENT_DISCOVER))["agents"]
            finally:
                await connection.close()
            assert len(done) == 40  # 20 critical, then the urgent lane reads up to 25

            broker.process.send_signal(signal.SIGKILL)
            broker.process.wait(10)
            broker.join_output(5)
            assert broker.process.returncode == -signal.SIGKILL
            broker = DevBroker("--nats", nats_server.url, "--data", data)
            banner = (
                "restored 1 mailboxes, 60 messages, 1 delayed messages, 3 group offsets, 2 agents"
            )
            assert any(banner in line for line in broker.stdout), broker.output()

            connection = await nats.connect(nats_server.url)
            try:
                stored = (await request_ok(connection, p.query_subject("jobs")))["messages"]
                assert {m["msg_id"]: (m["payload"], m["priority"]) for m in stored} == sent
                assert (await request_ok(connection, p.AGENT_DISCOVER))["agents"] == agents
                # every lane of the group continues after the acked 40
                rest = await request_ok(connection, p.fetch_subject("jobs"), fetch)
                assert sorted(m["msg_id"] for m in rest["messages"]) == list(range(41, 60))
                reply = await request_ok(connection, p.send_subject("jobs"), b"after")
                assert reply["msg_id"] == max(sent) + 1
            finally:
                await connection.close()
            assert broker.stop() == 0
        finally:
            broker.kill()


async def test_kill_9_of_the_broker_takes_its_own_nats_server_along(tmp_path):
    from testbed.ports import unclaimed_port

    port = unclaimed_port()
    with DevBroker("--port", str(port), "--data", str(tmp_path)) as broker:
        assert broker.nats_pid is not None and process_alive(broker.nats_pid)
        connection = await nats.connect(broker.url)
        try:
            await request_ok(connection, p.MAILBOX_CREATE, {"name": "kept"})
            await request_ok(connection, p.send_subject("kept"), b"survives")
        finally:
            await connection.close()
        broker.process.send_signal(signal.SIGKILL)
        broker.process.wait(10)
        wait_until(lambda: not process_alive(broker.nats_pid), 10, "nats-server exits")
        wait_until(lambda: not port_open(port), 10, f"port {port} is closed")

    with DevBroker("--port", str(port), "--data", str(tmp_path)) as broker:
        connection = await nats.connect(broker.url)
        try:
            stored = (await request_ok(connection, p.query_subject("kept")))["messages"]
            assert [m["payload"] for m in stored] == ["survives"]
        finally:
            await connection.close()
        assert broker.stop() == 0


async def _kill_after_sends(data: Path, nats_url: str, count: int) -> None:
    """A broker on ``data`` answers a CREATE and ``count`` SENDs, then is killed -9."""
    broker = DevBroker("--nats", nats_url, "--data", str(data))
    try:
        connection = await nats.connect(nats_url)
        try:
            await request_ok(connection, p.MAILBOX_CREATE, {"name": "jobs"})
            for i in range(count):
                await request_ok(connection, p.send_subject("jobs"), f"job {i}".encode())
        finally:
            await connection.close()
        broker.process.send_signal(signal.SIGKILL)
        broker.process.wait(10)
        broker.join_output(5)
    finally:
        broker.kill()


async def test_a_damaged_write_ahead_log_is_healed_from_the_request_log(tmp_path):
    """#22, item 6: after a kill -9 the newest folds live in SQLite's WAL; one changed byte
    there makes SQLite replay only up to it. What it drops is still in the request log, which
    is replayed from what the file holds: every answered SEND is back, and the broker says
    what happened."""
    data = tmp_path / "data"
    with start_nats_server() as nats_server:
        await _kill_after_sends(data, nats_server.url, 150)  # folds of 64 records: 2 in the WAL
        wal = data / "mq9-broker.sqlite3-wal"
        damaged = bytearray(wal.read_bytes())
        damaged[32 + 24 + 100] ^= 0xFF  # in the first frame (after the WAL's and its header)
        wal.write_bytes(bytes(damaged))

        broker = DevBroker("--nats", nats_server.url, "--data", str(data))
        try:
            banner = "\n".join(broker.stdout)
            assert "restored 1 mailboxes, 150 messages" in banner, banner
            redone = re.search(r"the (\d+) writes after the damage were restored from", banner)
            assert redone and int(redone.group(1)) > 0, banner
            assert "NOT restored" not in banner
            assert broker.stop() == 0
        finally:
            broker.kill()


async def test_a_damaged_request_log_is_reported_and_kept(tmp_path):
    """One changed byte in the request log's second-newest record: that record and the one
    after it are not replayed, and said so; the damaged log is kept beside the new one."""
    from mq9_broker.storage.in_process.request_log import HEADER_SIZE, RequestLog

    data = tmp_path / "data"
    with start_nats_server() as nats_server:
        await _kill_after_sends(data, nats_server.url, 150)
        path = data / "mq9-broker.sqlite3-log"
        reader = RequestLog(path, sync=False)
        ends = [end for end, _ in reader.read(HEADER_SIZE, lambda statement: True).records]
        reader.close(remove=False)
        assert len(ends) == 151  # nothing was dropped from the log at a fold
        damaged = bytearray(path.read_bytes())
        damaged[ends[-2] - 2] ^= 0xFF  # in the body of the second-newest SEND
        path.write_bytes(bytes(damaged))

        broker = DevBroker("--nats", nats_server.url, "--data", str(data))
        try:
            banner = "\n".join(broker.stdout)
            assert "restored 1 mailboxes, 148 messages" in banner, banner
            assert "NOT restored: 2 acknowledged writes" in banner, banner
            assert (data / "mq9-broker.sqlite3-log.damaged").read_bytes() == bytes(damaged)
            assert broker.stop() == 0
        finally:
            broker.kill()
        broker = DevBroker("--nats", nats_server.url, "--data", str(data))  # reported once
        try:
            assert "NOT restored" not in "\n".join(broker.stdout)
            assert broker.stop() == 0
        finally:
            broker.kill()


async def test_a_dropped_group_stays_dropped_and_groups_go_with_their_log(durable):
    await durable.create("a", ttl=60)
    await durable.create("b")
    for box in ("a", "b"):
        await durable.send(box, "x")
    await durable.ack("a", "g", 0)
    await durable.ack("b", "g", 0)
    assert durable.engine.drop_group("g", "b")
    durable.restart()
    assert await durable.fetch("b", group_name="g", deliver="earliest") == [0]  # new again
    assert await durable.fetch("a", group_name="g", deliver="earliest") == []
    # a's mailbox expires and the retention empties its log: its groups go with it
    durable.clock.advance(8 * 86_400)
    await durable.create("c")  # any request runs the housekeeping
    assert "g-normal" not in durable.engine.offsets
    durable.restart()
    assert "g-normal" not in durable.engine.offsets
