"""A task's timeline in the mail store (``mq9_mcp/task_events.py``, the draft SEP-2694), on the
in-process broker: events numbered from 0 and stored in order, each stored before a stream
sends it; a stream from a cursor, to the task's last event; what is kept bounded, a cursor
before it ``events_gone``; a timeline read whole by a process that did not write it (a server
started again), a send stored twice counted once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError

from mq9_mcp import task_events
from mq9_mcp.task_events import TaskLog
from mq9_platform.client.connection import Mq9Connection


@pytest.fixture
async def connection() -> AsyncIterator[Mq9Connection]:
    connection = Mq9Connection("memory://task-events")
    try:
        yield connection
    finally:
        await connection.aclose()


async def opened(connection: Mq9Connection, task_id: str = "a1b2") -> TaskLog:
    timeline = TaskLog(connection, task_id, timeout=5)
    call = task_events.ToolCall(
        name="fetch_messages", arguments={"mail_address": "x"}, asks=False
    )
    await timeline.open("127.0.0.1 d alice", call, 60_000, "2026-11-28T06:00:00.000Z")
    return timeline


async def streamed(timeline: TaskLog, after: int | None) -> list[task_events.TaskEvent]:
    sent: list[task_events.TaskEvent] = []

    async def send(event: task_events.TaskEvent) -> None:
        sent.append(event)

    # it returns once the task's last event was sent (tasks/stream then answers {})
    await task_events.stream(timeline, after, send, lambda: True)
    return sent


async def test_events_are_numbered_from_zero_stored_in_order_and_streamed_after_a_cursor(
    connection,
):
    timeline = await opened(connection)
    seqs = [timeline.emit("com.example.step", {"n": n}) for n in range(5)]
    seqs.append(timeline.emit(task_events.STATUS, {"status": "completed"}, last=True))
    assert seqs == [0, 1, 2, 3, 4, 5]
    assert timeline.emit("com.example.step", {"n": 9}) == -1  # closed after its last event
    await timeline.flush()
    assert timeline.ended and [seq for seq, _ in timeline.kept] == seqs

    everything = await streamed(timeline, None)
    assert [e["seq"] for e in everything] == seqs
    assert everything[0] == {
        "seq": 0, "taskId": "a1b2", "type": "com.example.step", "payload": {"n": 0},
        "_meta": {"io.modelcontextprotocol/related-task": {"taskId": "a1b2"}},
    }  # fmt: skip
    assert [e["seq"] for e in await streamed(timeline, 3)] == [4, 5]
    assert await streamed(timeline, 5) == []  # at the end of a task that ended: nothing


async def test_past_what_is_kept_the_oldest_go_and_an_older_cursor_is_events_gone(
    connection, monkeypatch
):
    monkeypatch.setattr(task_events, "MAX_EVENTS", 3)
    timeline = await opened(connection, "b2c3")
    for n in range(6):
        timeline.emit("com.example.step", {"n": n}, last=n == 5)
    await timeline.flush()
    assert timeline.earliest == 3
    assert [e["seq"] for e in await streamed(timeline, None)] == [3, 4, 5]
    assert [e["seq"] for e in await streamed(timeline, 2)] == [3, 4, 5]  # nothing missed
    with pytest.raises(MCPError) as gone:
        await streamed(timeline, 1)  # seq 2 is gone
    assert gone.value.error.code == task_events.EVENTS_GONE == -32010
    assert gone.value.error.data == {"reason": "events_gone", "taskId": "b2c3", "earliestSeq": 3}


async def test_another_process_reads_the_timeline_whole_from_the_store(connection):
    timeline = await opened(connection, "c3d4")
    timeline.emit(task_events.STATUS, {"status": "working"})
    timeline.emit(task_events.CALL_STATE, {"task_id": "t-1", "state": "working"})
    await timeline.flush()
    # the same event sent again (a send retried after its answer was lost): counted once
    await connection.run(lambda c: c.send(timeline.mailbox, {"seq": 1, "type": "x", "payload": {}}))

    found = await TaskLog.load(connection, "c3d4", timeout=5)
    assert found is not None and not found.ended
    assert found.owner == "127.0.0.1 d alice" and found.call["name"] == "fetch_messages"
    assert (found.ttl_ms, found.created_at) == (60_000, "2026-11-28T06:00:00.000Z")
    assert found.next_seq == 2
    assert found.last[task_events.CALL_STATE] == {"task_id": "t-1", "state": "working"}
    assert found.emit(task_events.STATUS, {"status": "completed"}, last=True) == 2  # goes on
    await found.flush()
    assert [e["seq"] for e in await streamed(found, None)] == [0, 1, 2]
    # no timeline: a task never kept, an id that is no task id, a mailbox that is no task's
    assert await TaskLog.load(connection, "ffff", timeout=5) is None
    assert await TaskLog.load(connection, "../x", timeout=5) is None
    await connection.run(lambda c: c.mailbox_create(name=task_events.mailbox_of("e5"), ttl=60))
    await connection.run(lambda c: c.send(task_events.mailbox_of("e5"), {"seq": 0}))
    assert await TaskLog.load(connection, "e5", timeout=5) is None  # no header: not a task's


async def test_a_payload_too_large_is_kept_cut_and_said_so(connection):
    timeline = await opened(connection, "f6")
    timeline.emit("com.example.big", {"text": "x" * (task_events.MAX_PAYLOAD_CHARS + 10)})
    await timeline.flush()
    [event] = await streamed_until_first(timeline)
    assert event["payload"]["truncated"] is True
    assert len(event["payload"]["json"]) == task_events.MAX_PAYLOAD_CHARS


async def streamed_until_first(timeline: TaskLog) -> list[dict[str, Any]]:
    """The first event of a task that has not ended (its stream would go on)."""
    records, _cursor, _more = await timeline.read(0)
    return [
        {"seq": r["seq"], "payload": r["payload"]} for r, _ in records if "seq" in r
    ]
