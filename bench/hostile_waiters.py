"""Check 9b: 200 long-poll readers of one group cost the same with ``--data`` as in memory.

Every SEND wakes all the readers of a group: each FETCHes the new message and ACKs it (a
FETCH only reads, so all of them are handed it). Here that wake-up is played out exactly,
reader by reader, on an engine in process (``BrokerEngine.handle``, the bytes a request
carries), once over a SQLite data file (``SqliteStorage``, as ``mq9-dev-broker --data``) and
once in memory; the runs alternate and each variant keeps its best.

The ratio is the time to feed N messages with a data file over the time in memory. What the
file must add per message is two commits (the SEND and the first ACK that moves the group's
offset); the other 199 ACKs commit the offset already committed and must write nothing. Each
message costs 400 requests either way, so two commits are a few per cent: target <= 1.5x
(an ACK that committed each time would cost a commit per reader).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path

from mq9_broker import BrokerEngine
from mq9_broker.storage import SqliteStorage
from mq9_wire import protocol as p

from .results import Check

WAITERS = 200
GROUP = "workers"
BOX = "bench.waiters"
TARGET = 1.5


def _ok(reply: bytes) -> dict:
    decoded = json.loads(reply)
    if decoded["error"]:
        raise RuntimeError(f"broker refused a benchmark request: {decoded['error']}")
    return decoded


async def _feed(engine: BrokerEngine, messages: int) -> float:
    """Seconds to feed ``messages`` to WAITERS readers of one group, each woken by every
    SEND to FETCH and ACK."""
    _ok(await engine.handle(p.MAILBOX_CREATE, None, p.encode({"name": BOX})))
    fetch = p.encode({"group_name": GROUP, "deliver": "earliest", "config": {"max_wait_ms": 0}})
    handle = engine.handle
    started = time.perf_counter()
    for i in range(messages):
        msg_id = _ok(await handle(p.send_subject(BOX), None, b"job %d" % i))["msg_id"]
        # Woken together, they all read before any of them acks
        for _ in range(WAITERS):
            found = _ok(await handle(p.fetch_subject(BOX), None, fetch))["messages"]
            if [m["msg_id"] for m in found] != [msg_id]:
                raise RuntimeError(f"a reader was handed {found}, expected message {msg_id}")
        ack = p.encode({"group_name": GROUP, "mail_address": BOX, "msg_id": msg_id})
        for _ in range(WAITERS):
            _ok(await handle(p.ack_subject(BOX), None, ack))
    return time.perf_counter() - started


def _run(messages: int, on_disk: bool) -> float:
    with tempfile.TemporaryDirectory(prefix="mq9-bench-") as where:
        storage = SqliteStorage(Path(where) / "broker.sqlite3") if on_disk else None
        try:
            return asyncio.run(_feed(BrokerEngine(storage=storage), messages))
        finally:
            if storage is not None:
                storage.close()


def measure(quick: bool) -> tuple[list[Check], list[tuple[str, str]], list[str]]:
    messages, rounds = (10, 2) if quick else (100, 5)
    disk: list[float] = []
    memory: list[float] = []
    for _ in range(rounds):  # alternated, so both see the same machine
        memory.append(_run(messages, on_disk=False))
        disk.append(_run(messages, on_disk=True))
    ours, baseline = min(disk), min(memory)
    check = Check(
        key="9b",
        title=f"{WAITERS} long-poll readers of one group: feeding {messages} messages with "
        "--data against in memory",
        ours_label="with --data (SQLite)",
        ours=f"{ours:.2f} s",
        baseline_label="in memory",
        baseline=f"{baseline:.2f} s",
        ratio=ours / baseline,
        op="<=",
        limit=TARGET,
        ratio_label="--data / memory",
    )
    figures = [
        (f"9b: feed {messages} messages to {WAITERS} readers, --data", f"{ours:.3f} s"),
        ("9b: the same in memory", f"{baseline:.3f} s"),
        ("9b: requests per message", f"{1 + 2 * WAITERS}"),
    ]
    notes = [
        "9b: after every SEND, each of the 200 readers of the group FETCHes the message and "
        "ACKs it (200 long-poll waiters, polling). "
        "An ACK that commits the offset already committed writes nothing, so the data file "
        "adds two commits per message, not one per reader."
    ]
    return [check], figures, notes


if __name__ == "__main__":
    for row in measure(quick=False)[0]:
        print(row)
