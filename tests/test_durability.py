"""Durable storage: what the broker answered is still there after a restart, and after kill -9.

The first tests restart an engine in-process over the same SQLite file (a ``ManualClock`` drives
TTLs, delays and leases, so nothing sleeps); a property test checks that for any sequence of
requests the restored engine holds exactly the state of the one that wrote the file. The last
tests kill -9 a real ``python -m langchain_mq9.broker --data`` process and restart it.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import tempfile
import uuid
from pathlib import Path

import pytest
from devbroker_helpers import DevBroker, port_open, process_alive, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from langchain_mq9 import Mq9Client, Mq9Error, Priority
from langchain_mq9 import protocol as p
from langchain_mq9.broker import (
    BrokerEngine,
    BrokerLimits,
    ManualClock,
    drop_memory_broker,
    install_memory_broker,
)
from langchain_mq9.broker.nats_process import start_nats_server
from langchain_mq9.broker.storage import SqliteStorage, StorageError

ACK_WAIT = 30


class Restartable:
    """An engine over a data file, reachable as ``memory://NAME``; ``restart()`` rebuilds it."""

    def __init__(self, path: Path, clock: ManualClock | None = None) -> None:
        self.path = path
        self.clock = clock or ManualClock()
        self.name = ""
        self.engine = self._start()

    def _start(self) -> BrokerEngine:
        engine = BrokerEngine(
            clock=self.clock,
            limits=BrokerLimits(ack_wait=ACK_WAIT),
            storage=SqliteStorage(self.path),
        )
        self.name = f"durable{uuid.uuid4().hex}"
        install_memory_broker(self.name, engine)
        return engine

    def stop(self) -> None:
        self.engine.storage.close()
        drop_memory_broker(self.name)

    def restart(self) -> BrokerEngine:
        self.stop()
        self.engine = self._start()
        return self.engine

    def client(self) -> Mq9Client:
        return Mq9Client(f"memory://{self.name}")


@pytest.fixture
def durable(tmp_path):
    broker = Restartable(tmp_path / "broker.sqlite3")
    yield broker
    broker.stop()


def wire(messages) -> list[tuple]:
    return [(m.msg_id, m.payload, m.priority, m.create_time, m.key, m.tags) for m in messages]


def ids(messages) -> list[int]:
    return [m.msg_id for m in messages]


# -- restart in-process -------------------------------------------------------------------------


async def test_messages_keep_every_attribute_and_msg_ids_are_never_reused(durable):
    async with durable.client() as client:
        box = await client.mailbox_create(name="box.a")
        await client.send(box, "n1")
        await client.send(box, "c1", priority=Priority.CRITICAL, key="state")
        await client.send(box, b"\x00\xffbinary", priority=Priority.URGENT, tags=["x", "y"])
        await client.send(box, "short-lived", ttl=50)
        await client.send(box, "c2", priority=Priority.CRITICAL, key="state")  # replaces c1
        newest = await client.send(box, "deleted before the restart")
        await client.delete(box, newest)
        stored = await client.query(box)
        in_order = await client.fetch(box, deliver="earliest", max_wait_ms=0)
    assert [m.text() for m in in_order if m.key] == ["c2"]

    durable.restart()
    async with durable.client() as client:
        assert wire(await client.query(box)) == wire(stored)
        assert wire(await client.fetch(box, deliver="earliest", max_wait_ms=0)) == wire(in_order)
        assert [m.text() for m in await client.query(box, key="state")] == ["c2"]
        assert len(await client.query(box, tags=["x", "y"])) == 1
        assert await client.send(box, "after") == newest + 1  # the deleted id stays used
        durable.clock.advance(50)  # the message TTL was kept too
        left = [m.payload for m in await client.query(box)]
        assert left == [m.payload for m in stored if m.payload != b"short-lived"] + [b"after"]


async def test_mailbox_ttl_and_a_recreated_mailbox_survive_restart(durable):
    async with durable.client() as client:
        await client.mailbox_create(name="temp", ttl=10)
        await client.send("temp", "old")
        await client.fetch("temp", group_name="g", deliver="earliest", max_wait_ms=0)
        await client.mailbox_create(name="lasting", ttl=100)
        durable.clock.advance(10)
        await client.mailbox_create(name="temp")  # the expired one is gone: a fresh mailbox
        await client.send("temp", "new")
    durable.restart()
    async with durable.client() as client:
        fresh = await client.fetch("temp", group_name="g", deliver="earliest", max_wait_ms=0)
        assert [(m.msg_id, m.text()) for m in fresh] == [(0, "new")]
        durable.clock.advance(90)
        with pytest.raises(Mq9Error, match="mailbox lasting does not exist"):
            await client.query("lasting")
        assert len(await client.query("temp")) == 1  # ttl 0: never expires


async def test_delayed_messages_wait_across_a_restart(durable):
    async with durable.client() as client:
        await client.mailbox_create(name="later")
        assert await client.send("later", "first", delay=10, priority="urgent", key="k") == -1
        assert await client.send("later", "second", delay=20, tags=["t"]) == -1
    durable.restart()
    async with durable.client() as client:
        assert await client.query("later") == []
        durable.clock.advance(10)
        [first] = await client.query("later")
        assert (first.msg_id, first.text(), first.priority, first.key) == (
            0,
            "first",
            Priority.URGENT,
            "k",
        )
        assert first.create_time == int(durable.clock())
    durable.restart()  # released before this restart: not released twice
    async with durable.client() as client:
        durable.clock.advance(10)
        found = await client.query("later")
        assert [(m.msg_id, m.text(), m.tags) for m in found] == [
            (0, "first", []),
            (1, "second", ["t"]),
        ]


async def test_group_position_acks_leases_and_batches_survive_restart(durable):
    async with durable.client() as client:
        await client.mailbox_create(name="work")
        for i in range(6):
            await client.send("work", f"m{i}")
        first = await client.fetch(
            "work", group_name="g", deliver="earliest", num_msgs=3, max_wait_ms=0
        )
        assert ids(first) == [0, 1, 2]
        await client.ack("work", "g", 1)  # confirms 0 and 1; 2 stays leased
        assert ids(await client.fetch("work", group_name="g", num_msgs=2, max_wait_ms=0)) == [3, 4]
        await client.fetch("work", group_name="late", deliver="latest", max_wait_ms=0)
    durable.restart()
    async with durable.client() as client:
        # 0, 1 acked; 2, 3, 4 still leased: only 5 is left to hand out
        assert ids(await client.fetch("work", group_name="g", max_wait_ms=0)) == [5]
        await client.ack("work", "g", 4)  # the batch [3, 4] was kept: this confirms 3 too
        await client.send("work", "m6")
        # "late" started at the end before the restart: only what came after
        assert ids(await client.fetch("work", group_name="late", max_wait_ms=0)) == [6]
        durable.clock.advance(ACK_WAIT)
        # leases ended: 2 (leased before the restart) and 5, 6 come back; 0, 1, 3, 4 never
        assert ids(await client.fetch("work", group_name="g", max_wait_ms=0)) == [2, 5, 6]


async def test_registry_survives_restarts_in_order_with_reports(durable):
    async with durable.client() as client:
        await client.agent_register({"mailbox": "a.inbox", "name": "alpha", "skill": "translate"})
        await client.agent_register({"mailbox": "b.inbox", "name": "beta", "skill": "summarize"})
        await client.agent_register({"mailbox": "c.inbox", "name": "gamma"})
        await client.agent_report({"mailbox": "b.inbox", "status": "busy", "load": 0.5})
        await client.agent_register({"mailbox": "a.inbox", "name": "alpha", "skill": "ocr"})
        await client.agent_unregister("c.inbox")
        await client.agent_register({"mailbox": "d.inbox", "name": "delta", "emoji": "📬"})
        before = await client.agent_discover(limit=100)
    assert [a["mailbox"] for a in before] == ["a.inbox", "b.inbox", "d.inbox"]
    assert before[1]["report"] == {"status": "busy", "load": 0.5}

    durable.restart()
    async with durable.client() as client:
        assert await client.agent_discover(limit=100) == before
        assert [a["mailbox"] for a in await client.agent_discover(text="ocr")] == ["a.inbox"]
        await client.agent_register({"mailbox": "e.inbox", "name": "beta"})  # replaces beta
        after = await client.agent_discover(limit=100)
    assert [a["mailbox"] for a in after] == ["a.inbox", "e.inbox", "d.inbox"]

    durable.restart()  # the rows were renumbered on the first restart: order still holds
    async with durable.client() as client:
        assert await client.agent_discover(limit=100) == after
        with pytest.raises(Mq9Error, match="agent not found"):
            await client.agent_report({"mailbox": "b.inbox", "status": "gone"})


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
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError, match=f"cannot use {garbage}"):
        SqliteStorage(garbage)


async def test_a_damaged_file_is_refused_with_a_way_out(durable):
    async with durable.client() as client:
        await client.mailbox_create(name="box")
        await client.send("box", "orphaned below")
    durable.stop()
    with sqlite3.connect(durable.path) as db:
        db.execute("DELETE FROM mailboxes")  # its message row now belongs to nothing
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
    async with durable.client() as client:
        await client.mailbox_create(name="box")
        durable.engine.storage._db.close()  # the disk went away
        with pytest.raises(Mq9Error, match="could not save the change"):
            await client.send("box", "lost")


# -- any sequence of requests: the restored engine equals the one that wrote the file -----------


def engine_state(engine: BrokerEngine) -> dict:
    """Everything a restart must keep, in a form that compares by value."""
    current = engine.mailboxes
    boxes = {}
    for address, box in current.items():
        boxes[address] = {
            "expires_at": box.expires_at,
            "next_id": box.next_id,
            "messages": {
                i: (m.payload, m.priority, m.create_time, m.key, m.tags)
                for i, m in box.messages.items()
            },
            "lanes": {pr: [i for i in lane if i in box.messages] for pr, lane in box.lanes.items()},
            "keys": dict(box.keys),
            "groups": {
                name: (dict(g.floors), set(g.acked), dict(g.leases), dict(g.batches))
                for name, g in box.groups.items()
            },
        }
    live = lambda box: current.get(box.address) is box  # noqa: E731
    return {
        "mailboxes": boxes,
        "mailbox_expiry": sorted((t, b.address) for t, _, b in engine._mailbox_expiry if live(b)),
        "message_expiry": sorted(
            (t, b.address, i)
            for t, _, b, i in engine._message_expiry
            if live(b) and i in b.messages
        ),
        "delayed": [
            (due, b.address, d.payload, d.priority, d.key, d.tags, d.ttl)
            for due, _, b, d in sorted(engine._delayed, key=lambda e: (e[0], e[1]))
            if live(b)
        ],
        "agents": [(e.card, e.report, e.report_time) for e in engine.registry.entries.values()],
        "by_mailbox": sorted(engine.registry.by_mailbox),
        "by_name": sorted(engine.registry.by_name),
    }


BOXES = ("a", "b.c")
GROUPS = (None, "g1", "g2")

requests = st.one_of(
    st.tuples(st.just("create"), st.sampled_from(BOXES), st.sampled_from([0, 0, 5, 30])),
    st.tuples(
        st.just("send"),
        st.sampled_from(BOXES),
        st.sampled_from(list(Priority)),
        st.sampled_from([None, "k1", "k2"]),
        st.sampled_from([0, 0, 0, 3]),  # delay
        st.sampled_from([0, 0, 4]),  # ttl
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
        st.just("ack"), st.sampled_from(BOXES), st.sampled_from(GROUPS[1:]), st.integers(0, 12)
    ),
    st.tuples(st.just("delete"), st.sampled_from(BOXES), st.integers(0, 12)),
    st.tuples(
        st.just("register"),
        st.sampled_from(["m1", "m2", "m3"]),
        st.sampled_from([None, "n1", "n2"]),
        st.text(max_size=5),
    ),
    st.tuples(st.just("unregister"), st.sampled_from(["m1", "m2", "m3"])),
    st.tuples(st.just("report"), st.sampled_from(["m1", "m2"]), st.integers(0, 3)),
    st.tuples(st.just("advance"), st.sampled_from([1, 3, 5, 31])),
)


def request_of(op: tuple) -> tuple[str, dict | None, bytes]:
    kind = op[0]
    if kind == "create":
        return p.MAILBOX_CREATE, None, p.encode({"name": op[1], "ttl": op[2]})
    if kind == "send":
        _, box, priority, key, delay, ttl, tags = op
        headers = p.send_headers(priority, key, delay, ttl, list(tags))
        return p.send_subject(box), headers, f"payload {uuid.uuid4().hex[:6]}".encode()
    if kind == "fetch":
        _, box, group, num, deliver, force = op
        body = {
            "deliver": deliver,
            "force_deliver": force,
            "config": {"num_msgs": num, "max_wait_ms": 0},
        }
        if group:
            body["group_name"] = group
        return p.fetch_subject(box), None, p.encode(body)
    if kind == "ack":
        _, box, group, msg_id = op
        return (
            p.ack_subject(box),
            None,
            p.encode({"group_name": group, "mail_address": box, "msg_id": msg_id}),
        )
    if kind == "delete":
        return p.delete_subject(op[1], op[2]), None, b""
    if kind == "register":
        _, mailbox, name, note = op
        card = {"mailbox": mailbox, "note": note}
        if name:
            card["name"] = name
        return p.AGENT_REGISTER, None, p.encode(card)
    if kind == "unregister":
        return p.AGENT_UNREGISTER, None, p.encode({"mailbox": op[1]})
    return p.AGENT_REPORT, None, p.encode({"mailbox": op[1], "load": op[2]})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
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
            replies.append(reply)
        return replies

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "broker.sqlite3"
        clock = ManualClock()
        limits = BrokerLimits(ack_wait=10)
        writer = BrokerEngine(clock=clock, limits=limits, storage=SqliteStorage(path))
        asyncio.run(run(writer, clock, history))
        writer.storage.close()
        reader = BrokerEngine(clock=clock, limits=limits, storage=SqliteStorage(path))
        try:
            assert engine_state(reader) == engine_state(writer)
            asyncio.run(run(reader, clock, afterwards))
            reader_state = engine_state(reader)
        finally:
            reader.storage.close()
        # what the restored engine changed was saved as well
        again = BrokerEngine(clock=clock, limits=limits, storage=SqliteStorage(path))
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
            async with Mq9Client(nats_server.url) as client:
                await client.mailbox_create(name="jobs")
                sent = {}
                for i in range(60):
                    priority = (Priority.NORMAL, Priority.URGENT, Priority.CRITICAL)[i % 3]
                    msg_id = await client.send(
                        "jobs", f"job {i}", priority=priority, tags=[f"t{i % 2}"]
                    )
                    sent[msg_id] = (f"job {i}".encode(), priority)
                assert await client.send("jobs", "in an hour", delay=3600) == -1
                batch = await client.fetch(
                    "jobs", group_name="workers", deliver="earliest", num_msgs=25, max_wait_ms=0
                )
                await client.ack("jobs", "workers", batch[19].msg_id)  # 20 done, 5 leased
                acked = set(ids(batch[:20]))
                leased = set(ids(batch[20:]))
                await client.agent_register({"mailbox": "jobs", "name": "worker", "v": 1})
                await client.agent_register({"mailbox": "other", "name": "planner"})
                await client.agent_report({"mailbox": "jobs", "status": "busy"})
                agents = await client.agent_discover()

            broker.process.send_signal(signal.SIGKILL)
            broker.process.wait(10)
            broker.join_output(5)
            assert broker.process.returncode == -signal.SIGKILL
            broker = DevBroker("--nats", nats_server.url, "--data", data)
            assert any(
                "restored 1 mailboxes, 60 messages, 1 delayed messages, 1 groups, 2 agents" in line
                for line in broker.stdout
            ), broker.output()

            async with Mq9Client(nats_server.url) as client:
                stored = await client.query("jobs")
                assert {m.msg_id: (m.payload, m.priority) for m in stored} == sent
                assert await client.agent_discover() == agents
                # every unacked message is there for the group; nothing acked comes back, and
                # the five leased before the crash stay leased (they return after ack-wait)
                rest = await client.fetch("jobs", group_name="workers", num_msgs=100, max_wait_ms=0)
                assert set(ids(rest)) == set(sent) - acked - leased
                await client.ack("jobs", "workers", batch[24].msg_id)  # the batch survived
                assert await client.fetch("jobs", group_name="workers", max_wait_ms=0) == []
                assert await client.send("jobs", "after") == max(sent) + 1
            assert broker.stop() == 0
        finally:
            broker.kill()


async def test_kill_9_of_the_broker_takes_its_own_nats_server_along(tmp_path):
    from langchain_mq9.broker.nats_process import free_port

    port = free_port()
    with DevBroker("--port", str(port), "--data", str(tmp_path)) as broker:
        assert broker.nats_pid is not None and process_alive(broker.nats_pid)
        async with Mq9Client(broker.url) as client:
            await client.mailbox_create(name="kept")
            await client.send("kept", "survives")
        broker.process.send_signal(signal.SIGKILL)
        broker.process.wait(10)
        wait_until(lambda: not process_alive(broker.nats_pid), 10, "nats-server exits")
        wait_until(lambda: not port_open(port), 10, f"port {port} is closed")

    with DevBroker("--port", str(port), "--data", str(tmp_path)) as broker:
        async with Mq9Client(broker.url) as client:
            assert [m.text() for m in await client.query("kept")] == ["survives"]
        assert broker.stop() == 0
