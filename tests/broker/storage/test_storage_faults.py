"""Storage faults: a write that fails changes nothing, damage on disk is detected, and a data
file or directory the broker cannot use is refused in words that say what to do.

Faults are injected at the storage's writes: ``FullDisk`` is a ``SqliteStorage`` whose request
log writes half a record and then gets what the kernel says of a full disk, and whose SQLite
commits fail as SQLite's do then, so the real transaction rolls back as it would.
Rule under test: nothing is visible or confirmed unless it was persisted.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import sqlite3
import subprocess
import uuid
from pathlib import Path

import nats
import pytest
from test_durability import Restartable

from mq9_broker import BrokerEngine, BrokerLimits, serve_on_nats
from mq9_broker.storage import SqliteStorage, StorageError
from mq9_broker.storage.in_process.request_log import RequestLog
from mq9_broker.storage.in_process.sqlite import FOLD_EVERY
from mq9_wire import protocol as p
from testbed.nats_server import start_nats_server
from testbed.support.devbroker_helpers import DevBroker

DISK_FULL = os.strerror(errno.ENOSPC)  # "No space left on device"


class FullLog(RequestLog):
    """A request log on a disk that fills up on demand: while ``full``, half of a record is
    written, then the disk is full, as the kernel reports it. ``records`` counts the records
    actually written."""

    full = False
    records = 0

    def _pwrite(self, fd: int, data: bytes, at: int) -> int:
        if self.full:
            os.pwrite(fd, data[: len(data) // 2], at)
            raise OSError(errno.ENOSPC, DISK_FULL)
        return os.pwrite(fd, data, at)

    def append(self, body: bytes) -> None:
        super().append(body)
        self.records += 1


class FullDisk(SqliteStorage):
    """A data file and its request log on a disk that fills up on demand: ``full`` fails both
    the log's writes and SQLite's commits (folds), ``sqlite_full`` the commits alone."""

    request_log = FullLog
    sqlite_full = False

    @property
    def full(self) -> bool:
        return self._log.full

    @full.setter
    def full(self, value: bool) -> None:
        self._log.full = self.sqlite_full = value

    @property
    def commits(self) -> int:
        return self._log.records

    def _commit(self) -> None:
        if self.sqlite_full:
            raise sqlite3.OperationalError("database or disk is full")
        super()._commit()


class Faulty(Restartable):
    fold_every = FOLD_EVERY

    def _start(self) -> BrokerEngine:
        storage = FullDisk(self.path, fold_every=self.fold_every)
        return BrokerEngine(clock=self.clock, storage=storage)

    @property
    def disk(self) -> FullDisk:
        return self.engine.storage

    async def refused(self, subject: str, body: bytes | dict = b"", headers=None) -> str:
        """The request fails with the full-disk error; the disk is freed afterwards."""
        self.disk.full = True
        try:
            reply = await self.call(subject, body, headers)
        finally:
            self.disk.full = False
        assert DISK_FULL in reply["error"], reply
        assert "could not save" in reply["error"], reply
        return reply["error"]

    async def state(self) -> list[tuple[int, str]]:
        return [(m["msg_id"], m["payload"]) for m in await self.query("box")]


@pytest.fixture
def faulty(tmp_path):
    broker = Faulty(tmp_path / "broker.sqlite3")
    yield broker
    broker.stop()


# -- item 1: a failed write changes nothing -----------------------------------------------------


async def test_a_create_that_was_not_saved_leaves_no_mailbox(faulty):
    await faulty.refused(p.MAILBOX_CREATE, {"name": "box"})
    reply = await faulty.call(p.send_subject("box"), b"early")
    assert "does not exist" in reply["error"] or "not found" in reply["error"], reply
    await faulty.create("box")  # the retry: not "already exists"
    await faulty.send("box", "first")
    faulty.restart()
    assert await faulty.state() == [(0, "first")]


async def test_every_send_confirmed_after_a_failed_create_survives_a_restart(faulty):
    await faulty.create("other")
    await faulty.send("other", "kept")
    await faulty.refused(p.MAILBOX_CREATE, {"name": "box"})
    await faulty.create("box")
    for text in ("a", "b", "c"):
        await faulty.send("box", text)
    faulty.restart()  # the start that refused the file (KeyError) before
    assert await faulty.state() == [(0, "a"), (1, "b"), (2, "c")]
    assert [m["payload"] for m in await faulty.query("other")] == ["kept"]


async def test_a_send_that_got_an_error_is_never_handed_out(faulty):
    await faulty.create("box")
    await faulty.send("box", "one")
    await faulty.refused(p.send_subject("box"), b"failed")
    assert await faulty.state() == [(0, "one")]
    assert await faulty.fetch("box", group_name="g", deliver="earliest") == [0]
    assert await faulty.send("box", "retried") == 1  # the failed SEND used no msg_id
    faulty.restart()
    assert await faulty.state() == [(0, "one"), (1, "retried")]


async def test_a_delete_that_failed_changes_nothing_and_its_retry_sticks(faulty):
    await faulty.create("box")
    await faulty.send("box", "doomed")
    await faulty.send("box", "stays")
    await faulty.refused(p.delete_subject("box", 0))
    assert await faulty.state() == [(0, "doomed"), (1, "stays")]
    await faulty.ok(p.delete_subject("box", 0))
    faulty.restart()
    assert await faulty.state() == [(1, "stays")]


async def test_an_ack_or_a_reset_that_failed_moves_no_offset(faulty):
    await faulty.create("box")
    for text in ("a", "b", "c"):
        await faulty.send("box", text)
    await faulty.ack("box", "g", 0)
    ack = {"group_name": "g", "mail_address": "box", "msg_id": 1}
    await faulty.refused(p.ack_subject("box"), ack)
    assert await faulty.fetch("box", group_name="g") == [1, 2]
    # force_deliver commits inside FETCH: the same rule
    reset = {
        "group_name": "g",
        "deliver": "from_id",
        "from_id": 2,
        "force_deliver": True,
        "config": {"max_wait_ms": 0},
    }
    await faulty.refused(p.fetch_subject("box"), reset)
    assert await faulty.fetch("box", group_name="g") == [1, 2]
    faulty.restart()
    assert await faulty.fetch("box", group_name="g") == [1, 2]


async def test_a_delayed_send_that_failed_is_never_released(faulty):
    await faulty.create("box")
    await faulty.refused(p.send_subject("box"), b"later", {"mq9-delay": "5"})
    await faulty.send("box", "kept", {"mq9-delay": "5"})
    faulty.clock.advance(6)
    assert await faulty.state() == [(0, "kept")]
    faulty.restart()
    assert await faulty.state() == [(0, "kept")]


async def test_a_failed_registration_leaves_no_agent(faulty):
    card = p.agent_card("translator", description="translates text", skills=["translate"])
    await faulty.refused(p.AGENT_REGISTER, card)
    assert await faulty.discover() == []
    await faulty.ok(p.AGENT_REGISTER, card)
    faulty.restart()
    assert [a["name"] for a in await faulty.discover()] == ["translator"]


async def test_a_waiter_parked_in_a_long_poll_survives_a_failed_write(faulty):
    await faulty.create("box")
    body = {"group_name": "g", "deliver": "earliest", "config": {"max_wait_ms": 50}}
    waiter = asyncio.ensure_future(faulty.call(p.fetch_subject("box"), body))
    await asyncio.sleep(0)  # it read nothing and sleeps its wait
    await faulty.refused(p.send_subject("box"), b"failed")
    assert await waiter == {"error": "", "messages": []}
    await faulty.send("box", "after")
    assert await faulty.fetch("box", group_name="g", deliver="earliest") == [0]


async def test_a_repeated_ack_writes_nothing(faulty):
    """200 readers of one group acking the same message: one write, not 200 (item 15)."""
    await faulty.create("box")
    await faulty.send("box", "m")
    before = faulty.disk.commits
    for _ in range(200):
        await faulty.ack("box", "g", 0)
    assert faulty.disk.commits - before == 1
    faulty.restart()
    assert await faulty.fetch("box", group_name="g") == []


async def test_a_fold_on_a_full_disk_fails_no_request_and_is_done_later(faulty, caplog):
    faulty.fold_every = 2
    faulty.restart()
    await faulty.create("box")  # record 1
    faulty.disk.sqlite_full = True
    for text in "abcde":  # records 2-6: folds at 2, 4 and 6 fail
        await faulty.send("box", text)
    assert sum("could not fold" in r.message for r in caplog.records) == 3
    faulty.disk.sqlite_full = False
    for text in "fg":  # the fold at 8 takes all of them
        await faulty.send("box", text)
    faulty.disk._db.close()  # a crash: nothing folded at close
    with sqlite3.connect(faulty.path) as db:
        assert db.execute("SELECT count(*) FROM messages").fetchone() == (7,)
    db.close()
    faulty.engine = faulty._start()
    assert [text for _, text in await faulty.state()] == list("abcdefg")


async def test_a_record_that_could_not_be_logged_is_undone_and_the_rest_folded(faulty):
    """Only the log's disk is full: the request fails, and reading the state back folds the
    records before it into SQLite (its commit works) without the failed one."""
    await faulty.create("box")
    for text in "ab":
        await faulty.send("box", text)
    faulty.disk._log.full = True  # the log's disk alone
    reply = await faulty.call(p.send_subject("box"), b"failed")
    faulty.disk._log.full = False
    assert DISK_FULL in reply["error"], reply
    assert faulty.disk._unfolded == []  # folded by the read-back
    assert await faulty.send("box", "c") == 2  # the failed SEND used no msg_id
    faulty.disk._db.close()  # a crash
    faulty.engine = faulty._start()
    assert [text for _, text in await faulty.state()] == list("abc")


async def test_the_log_starts_over_and_a_crash_at_any_point_loses_nothing(tmp_path):
    class Small(Restartable):
        def _start(self) -> BrokerEngine:
            storage = SqliteStorage(self.path, fold_every=3, log_limit=400)
            return BrokerEngine(clock=self.clock, storage=storage)

    broker = Small(tmp_path / "broker.sqlite3")
    log_path = tmp_path / "broker.sqlite3-log"
    await broker.create("box")
    sizes = []
    for i in range(40):
        await broker.send("box", f"m{i}")
        sizes.append(log_path.stat().st_size)
        if i % 7 == 6:  # a crash: the file and the log closed without a fold
            storage = broker.engine.storage
            storage._db.close()
            storage._log.close(remove=False)
            broker.engine = broker._start()
    assert max(sizes) < 1000 and min(sizes) < 100  # it started over, again and again
    assert not log_path.with_name(log_path.name + ".new").exists()
    assert [m["payload"] for m in await broker.query("box")] == [f"m{i}" for i in range(40)]
    broker.stop()
    assert not log_path.exists()  # a clean stop folds it all and leaves the file alone
    broker.engine = broker._start()
    assert len(await broker.query("box")) == 40
    broker.stop()


async def test_a_new_log_that_cannot_take_the_old_ones_place_stops_writes_not_data(tmp_path):
    """The data file moved on to a new generation, but the new log could not replace the old
    one: the store takes no more changes (a record in the old log would be taken for folded
    at the next start), and a restart drops the old log, all of it folded, and loses
    nothing."""

    class Tiny(Restartable):
        def _start(self) -> BrokerEngine:
            storage = SqliteStorage(self.path, fold_every=1, log_limit=1)
            return BrokerEngine(clock=self.clock, storage=storage)

    broker = Tiny(tmp_path / "broker.sqlite3")
    await broker.create("box")
    storage = broker.engine.storage

    def swap_fails(*args, **kwargs):
        raise OSError(errno.EIO, "the rename failed")

    storage._log.swap = swap_fails
    assert await broker.send("box", "kept") == 0  # stored and folded; the new log failed
    reply = await broker.call(p.send_subject("box"), b"refused")
    assert "takes no more changes" in reply["error"], reply
    storage._db.close()  # a crash
    storage._log.close(remove=False)
    broker.engine = broker._start()
    assert [m["payload"] for m in await broker.query("box")] == ["kept"]
    assert await broker.send("box", "after") == 1
    broker.stop()


async def test_a_data_file_older_than_its_log_is_refused(faulty):
    await faulty.create("box")
    await faulty.send("box", "in the log only")
    faulty.disk._db.close()  # a crash
    with sqlite3.connect(faulty.path) as db:  # as an older copy of the file would say
        db.execute("UPDATE log_folded SET generation = generation - 1")
    db.close()
    with pytest.raises(StorageError, match=r"newer than the data file .* same copy"):
        faulty._start()


# -- restore tolerates what an interrupted write can leave ---------------------------------------


async def test_orphan_rows_are_skipped_with_a_warning(faulty, caplog):
    await faulty.create("box")
    await faulty.send("box", "kept")
    await faulty.create("gone")
    for text in ("old 0", "old 1"):
        await faulty.send("gone", text)
    faulty.stop()
    with sqlite3.connect(faulty.path) as db:  # its messages stay, as a lost write leaves them
        db.execute("DELETE FROM mailboxes WHERE address = 'gone'")
    db.close()
    with caplog.at_level(logging.WARNING, logger="mq9_broker"):
        faulty.restart()
    assert "skipped 2 messages of mailbox 'gone', which is not stored" in caplog.text
    assert await faulty.state() == [(0, "kept")]
    assert faulty.disk.restored["skipped"] == 2
    await faulty.create("gone")  # a new log under that name does not take them up
    await faulty.send("gone", "new")
    faulty.restart()
    assert [m["payload"] for m in await faulty.query("gone")] == ["new"]
    assert faulty.disk.restored["skipped"] == 0


# -- item 2: damage on disk -----------------------------------------------------------------------


def flip_payload_byte(path: Path, msg_id: int) -> None:
    with sqlite3.connect(path) as db:
        (payload,) = db.execute(
            "SELECT payload FROM messages WHERE msg_id = ?", (msg_id,)
        ).fetchone()
        damaged = bytes([payload[0] ^ 0x01]) + bytes(payload[1:])
        db.execute("UPDATE messages SET payload = ? WHERE msg_id = ?", (damaged, msg_id))
    db.close()


async def test_a_flipped_byte_in_a_payload_is_detected_and_not_served(faulty, caplog):
    await faulty.create("box")
    await faulty.send("box", "intact")
    await faulty.send("box", "will be damaged")
    faulty.stop()
    flip_payload_byte(faulty.path, 1)
    with caplog.at_level(logging.ERROR, logger="mq9_broker"):
        faulty.restart()
    assert "message 1 of mailbox 'box' is damaged" in caplog.text
    assert faulty.disk.restored["damaged"] == 1
    assert await faulty.state() == [(0, "intact")]
    assert await faulty.send("box", "next") == 2  # its msg_id is not reused


async def test_a_version_7_file_keeps_its_keys_through_the_upgrade(faulty):
    """Schema 8 (#113) keeps each key's party beside it: a file of schema 7 (no party) is
    upgraded in place, its keys still answering within their window."""
    await faulty.create("box")
    first = await faulty.send("box", "once", {p.HEADER_IDEMPOTENCY_KEY: "k1"})
    faulty.stop()
    with sqlite3.connect(faulty.path) as db:  # back to the schema-7 layout
        db.execute("ALTER TABLE sent_keys DROP COLUMN party")
        db.execute("PRAGMA user_version = 7")
    db.close()
    faulty.restart()
    assert await faulty.send("box", "once", {p.HEADER_IDEMPOTENCY_KEY: "k1"}) == first
    assert await faulty.state() == [(first, "once")]
    faulty.stop()
    with sqlite3.connect(faulty.path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 8
        assert "party" in {row[1] for row in db.execute("PRAGMA table_info(sent_keys)")}
    db.close()
    faulty.restart()


async def test_a_version_3_file_is_upgraded_with_checksums(faulty):
    await faulty.create("box")
    await faulty.send("box", "old one", {"mq9-delay": "9"})
    await faulty.send("box", "old two")
    faulty.stop()
    with sqlite3.connect(faulty.path) as db:  # back to the schema-3 layout
        db.execute("ALTER TABLE messages DROP COLUMN crc")
        db.execute("ALTER TABLE delayed DROP COLUMN crc")
        db.execute("PRAGMA user_version = 3")
    db.close()
    faulty.restart()
    assert await faulty.state() == [(0, "old two")]
    faulty.clock.advance(10)
    assert await faulty.state() == [(0, "old two"), (1, "old one")]
    faulty.stop()
    flip_payload_byte(faulty.path, 0)  # the checksum computed by the upgrade guards it
    faulty.restart()
    assert await faulty.state() == [(1, "old one")]


def test_a_zero_length_data_file_is_refused(tmp_path):
    empty = tmp_path / "broker.sqlite3"
    empty.touch()
    with pytest.raises(StorageError, match=r"is empty \(0 bytes\).*delete it"):
        SqliteStorage(empty)


# -- item 3: a read-only data directory -----------------------------------------------------------


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory holding a data file, made read-only: by its mode, or for root (whom modes
    do not stop) by a read-only tmpfs mount."""
    where = tmp_path / "ro"
    where.mkdir()
    if os.geteuid() != 0:
        SqliteStorage(where).close()
        where.chmod(0o555)
        yield where
        where.chmod(0o755)
        return
    if subprocess.run(
        ["mount", "-t", "tmpfs", "tmpfs", str(where)], capture_output=True
    ).returncode:
        pytest.skip("running as root without permission to mount a read-only tmpfs")
    try:
        SqliteStorage(where).close()
        subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


@pytest.mark.slow  # a process (a nats-server, or the fixture's)
def test_a_read_only_data_directory_is_named_as_such(read_only_dir):
    for target in (read_only_dir, read_only_dir / "new"):
        with pytest.raises(StorageError, match="read-only") as failure:
            SqliteStorage(target)
        assert "disk I/O error" not in str(failure.value)
        assert str(read_only_dir) in str(failure.value)


# -- item 4: --max-payload above the nats-server's ----------------------------------------------


@pytest.mark.slow  # a process (a nats-server, or the fixture's)
async def test_a_message_nats_could_not_hand_out_is_refused_and_the_batch_flows():
    """The broker allows 1 MiB messages, the nats-server 4 KiB: the smaller limit rules."""
    with start_nats_server(max_payload=4096) as server:
        engine = BrokerEngine(limits=BrokerLimits(max_payload=1024 * 1024))
        service_connection = await nats.connect(server.url)
        service = await serve_on_nats(engine, service_connection)
        client = await nats.connect(server.url)
        box = f"box.{uuid.uuid4().hex[:8]}"

        async def call(subject, body=b"", headers=None) -> dict:
            return json.loads(
                (await client.request(subject, body, timeout=5, headers=headers)).data
            )

        try:
            await call(p.MAILBOX_CREATE, p.encode({"name": box}))
            assert (await call(p.send_subject(box), b"before"))["error"] == ""
            # 3,000 bytes travel to the broker, but escaped in an answer they take > 4 KiB
            big = await call(p.send_subject(box), b'"' * 3000)
            assert "message too large" in big["error"] and "at most 4096 bytes" in big["error"], big
            assert (await call(p.send_subject(box), b"after"))["error"] == ""
            fetched = await call(
                p.fetch_subject(box),
                p.encode({"group_name": "g", "deliver": "earliest", "config": {"max_wait_ms": 0}}),
            )
            assert fetched["error"] == ""
            assert [m["payload"] for m in fetched["messages"]] == ["before", "after"]
        finally:
            await client.close()
            await service.stop()
            await service_connection.close()


@pytest.mark.slow
async def test_the_cli_names_what_it_did_not_restore_and_the_payload_limit_in_effect(tmp_path):
    data = Restartable(tmp_path / "broker.sqlite3")
    await data.create("box")
    await data.send("box", "intact")
    await data.send("box", "damaged")
    data.stop()
    flip_payload_byte(data.path, 1)
    with (
        start_nats_server(max_payload=4096) as server,
        # (the default --max-payload, 1 MiB, follows a server that carries less; one given
        # above it is refused at start-up: tests/platform/broker/storage/test_large_messages.py)
        DevBroker("--nats", server.url, "--data", str(data.path)) as broker,
    ):
        broker.stop()
        output = broker.output()
    assert "restored 1 mailboxes, 1 messages" in output
    assert "NOT restored: 1 damaged messages" in output
    assert "message 1 of mailbox 'box' is damaged" in output
    assert "refused by NATS itself" not in output
    # (#99: no warning about a --max-payload nobody gave; the banner says what is in effect)
    assert "max payload 1048576 bytes (in effect 4096: the servers' max_payload" in output
