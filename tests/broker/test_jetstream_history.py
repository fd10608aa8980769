"""Any history of requests on the JetStream store (issue #55 item 3): the same answers as the
engine that keeps nothing, and restored exactly from the stream.

The histories are test_durability.py's (two mailboxes, sends with priorities, keys, tags, delays
and TTLs, group fetches and acks, deletes, agents with and without A2A cards, the clock moved past
TTLs and the retention), applied request by request to an engine on ``MemoryStorage`` and one on
``JetStreamStorage`` sharing one hand-moved clock: every answer must be the same. Then a broker
started on the stream (a replay) must hold exactly the state of both, answer more requests as
they do, and what it changed must be in the stream too.

Found so: a restarted engine (either store) served a log past its retention for up to 10 more
minutes; it now scans at its first request (the test at the end).
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from store_lane import STATE_SERVER, TEST_STORE
from test_durability import T0, engine_state, request_of, requests

from langchain_mq9 import protocol as p
from langchain_mq9.broker import BrokerEngine, ManualClock
from langchain_mq9.broker.engine.engine import RETENTION_SECONDS
from langchain_mq9.broker.storage import JetStreamStorage, SqliteStorage, Storage

pytestmark = pytest.mark.slow  # a nats-server process

# Histories checked: a few seconds in every session, more with MQ9_TEST_STORE=jetstream
EXAMPLES = 300 if TEST_STORE == "jetstream" else 40


async def answer_alike(memory: BrokerEngine, stored: BrokerEngine, clock: ManualClock, ops) -> None:
    for op in ops:
        if op[0] == "advance":
            clock.advance(op[1])
            continue
        subject, headers, body = request_of(op)
        expected = json.loads(await memory.handle(subject, headers, body))
        answered = json.loads(await stored.handle(subject, headers, body))
        assert answered == expected, (op, answered, expected)


SHARD = re.compile(r"^(.*/\d+)/\d+$")  # address/create_time/a number of the engine's own


def alike(state: Any) -> Any:
    """``state`` with each mailbox log's shard name cut to what two engines share: the number
    that keeps a re-created mailbox's log apart is each engine's own."""
    if isinstance(state, dict):
        return {alike(key): alike(value) for key, value in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(alike(item) for item in state)
    if isinstance(state, str):
        return SHARD.sub(r"\1", state)
    return state


def on_stream(clock: ManualClock, stream: str, snapshot_bytes: int | None = None) -> BrokerEngine:
    storage = JetStreamStorage(STATE_SERVER.urls, stream=stream, snapshot_bytes=snapshot_bytes)
    return BrokerEngine(clock=clock, storage=storage)


# Snapshots (tests/broker/test_jetstream_snapshots.py): none, and one as soon as the records
# since the last one take as many bytes as it did (every few requests), begun, written and
# purged between the requests; a history's last one is often cut off by its end
SNAPSHOTS = {"no snapshots": None, "small snapshot threshold": 1}


@pytest.mark.parametrize("snapshot_bytes", SNAPSHOTS.values(), ids=SNAPSHOTS.keys())
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(requests, max_size=40), st.lists(requests, max_size=10))
def test_any_history_answers_as_in_memory_and_is_restored_exactly(
    snapshot_bytes, history, afterwards
):
    clock = ManualClock(T0)
    memory = BrokerEngine(clock=clock)
    stream = f"S{uuid.uuid4().hex[:12]}"
    writer = on_stream(clock, stream, snapshot_bytes)
    engines = [writer]
    try:
        asyncio.run(answer_alike(memory, writer, clock, history))
        assert alike(engine_state(writer)) == alike(engine_state(memory))
        writer.storage.close()
        reader = on_stream(clock, stream, snapshot_bytes)
        engines.append(reader)
        assert engine_state(reader) == engine_state(writer)
        # A restarted engine scans for retention at its first request (the test below), the
        # engine that did not restart on its schedule: the same schedule, so the answers compare
        reader._next_retention_scan = memory._next_retention_scan
        asyncio.run(answer_alike(memory, reader, clock, afterwards))
        reader.storage.close()
        # what the restored engine changed was kept as well
        again = on_stream(clock, stream, snapshot_bytes)
        engines.append(again)
        assert engine_state(again) == engine_state(reader)
        assert alike(engine_state(again)) == alike(engine_state(memory))
    finally:
        for engine in engines[:-1]:
            engine.storage.close()
        asyncio.run(STATE_SERVER.drop(engines[-1].storage))


@pytest.mark.parametrize("store", ["sqlite", "jetstream"])
async def test_a_log_past_its_retention_is_gone_after_a_restart_as_before(store, tmp_path):
    path = tmp_path / "b.sqlite3"

    def reopen(storage: Storage) -> Storage:
        if isinstance(storage, JetStreamStorage):
            return JetStreamStorage(storage.servers, stream=storage.stream)
        return SqliteStorage(path)

    clock = ManualClock(T0)
    first = STATE_SERVER.storage() if store == "jetstream" else SqliteStorage(path)
    storage = first
    try:
        before = BrokerEngine(clock=clock, storage=first)
        await before.handle(p.MAILBOX_CREATE, None, p.encode({"name": "old", "ttl": 60}))
        clock.advance(60 + RETENTION_SECONDS + 1)
        first.close()
        storage = reopen(first)
        after = BrokerEngine(clock=clock, storage=storage)
        fetch = p.encode({"config": {"max_wait_ms": 0}})
        answer = json.loads(await after.handle(p.fetch_subject("old"), None, fetch))
        # what an engine that did not restart answers (tests/broker/test_durability.py)
        assert "not found" in answer["error"], answer
    finally:
        await STATE_SERVER.drop(storage)
