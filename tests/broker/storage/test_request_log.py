"""The SQLite store's request log (``broker/storage/in_process/request_log.py``): what is
written is read back exactly, a record is replayed only if it is one the broker writes, and
damage ends what is replayed, counted.

The attacker here can write the data directory: a record with a matching crc32 whose body is
not what the broker writes (another statement, another type, a code object) must be counted as
damage and never executed.
"""

from __future__ import annotations

import marshal
import os
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_durability import Restartable

from mq9_broker.storage.in_process.request_log import (
    HEADER_SIZE,
    RequestLog,
    decode_changes,
    encode_changes,
)

KNOWN = frozenset(range(1, 18))

values = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.text(),
    st.binary(),
)
changes = st.lists(
    st.tuples(st.sampled_from(sorted(KNOWN)), st.lists(values, max_size=11).map(tuple)),
    max_size=6,
)


@pytest.mark.slow  # over a second on a quiet machine (#89)
@given(st.lists(changes, max_size=8))
def test_what_is_appended_is_read_back_exactly(tmp_path_factory, records):
    path = tmp_path_factory.mktemp("log") / "log"
    log = RequestLog(path, sync=False)
    fresh = log.start(7)
    log.swap(fresh, 7, keep_old_as=None)
    for record in records:
        log.append(encode_changes(record))
    log.close(remove=False)
    again = RequestLog(path, sync=False)
    assert again.generation == 7
    found = again.read(HEADER_SIZE, KNOWN.__contains__)
    assert [changes for _, changes in found.records] == records
    assert (found.lost, found.damaged) == (0, False)
    assert again.end == path.stat().st_size
    again.close(remove=True)


def _code():
    return compile("raise SystemExit('executed')", "attacker", "exec")


def test_only_what_the_broker_writes_is_decoded():
    assert decode_changes(encode_changes([(6, ("box", 1, b"x", None))]), KNOWN.__contains__)
    hostile = [
        marshal.dumps(((99, ()),)),  # a statement the broker does not know
        marshal.dumps(((6, (1.5,)),)),  # a float
        marshal.dumps(((6, ((1, 2),)),)),  # a nested tuple
        marshal.dumps(((6, ("x",), "extra"),)),  # three items
        marshal.dumps([(6, ())]),  # a list at the top
        marshal.dumps(((True, ()),)),  # a bool for a statement number
        marshal.dumps(((6, (_code(),)),)),  # a code object: built, never run
        marshal.dumps(_code()),
        b"\x00garbage",
        b"",
    ]
    for body in hostile:
        assert decode_changes(body, KNOWN.__contains__) is None, body


def _append_raw(path: Path, body: bytes) -> None:
    with path.open("ab") as file:
        file.write(struct.pack("<II", len(body), zlib.crc32(body)) + body)


async def test_a_forged_record_with_a_good_checksum_is_damage_not_a_change(tmp_path):
    broker = Restartable(tmp_path / "broker.sqlite3")
    await broker.create("box")
    await broker.send("box", "real")
    storage = broker.engine.storage
    storage._db.close()  # a crash: both records are in the log only
    storage._log.close(remove=False)
    log_path = tmp_path / "broker.sqlite3-log"
    # Drop every mailbox, in a record the broker never writes (a statement number it lacks)
    _append_raw(log_path, marshal.dumps(((99, ("DELETE FROM mailboxes",)),)))
    _append_raw(log_path, encode_changes([(5, ("box",))]))  # a real statement, after it

    broker.engine = broker._start()
    assert broker.engine.storage.restored["log_lost"] == 2
    assert [m["payload"] for m in await broker.query("box")] == ["real"]
    kept = tmp_path / "broker.sqlite3-log.damaged"
    assert kept.exists()  # for whoever wants to look at it
    assert await broker.send("box", "after") == 1
    broker.restart()
    assert [m["payload"] for m in await broker.query("box")] == ["real", "after"]
    assert broker.engine.storage.restored["log_lost"] == 0
    broker.stop()


async def test_with_sync_full_every_record_is_synced_before_its_answer(tmp_path, monkeypatch):
    """``--sync full``: an fdatasync of the log after each record's write, before the answer
    (counted through the real call), and the records are replayed after a crash."""
    from mq9_broker import BrokerEngine
    from mq9_broker.storage import SqliteStorage

    class Full(Restartable):
        def _start(self) -> BrokerEngine:
            storage = SqliteStorage(self.path, synchronous="full")
            return BrokerEngine(clock=self.clock, storage=storage)

    broker = Full(tmp_path / "broker.sqlite3")
    await broker.create("box")
    synced = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (synced.append(fd), real(fd))[1])
    for text in "abc":
        await broker.send("box", text)
    assert len(synced) == 3
    storage = broker.engine.storage
    storage._db.close()  # a crash
    storage._log.close(remove=False)
    broker.engine = broker._start()
    assert [m["payload"] for m in await broker.query("box")] == list("abc")
    broker.stop()
