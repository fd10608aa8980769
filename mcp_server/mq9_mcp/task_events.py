"""Resumable task event streams, as the draft SEP-2694 ("Resumable Task Event Streams", on the
Tasks extension SEP-2663) proposes them: every task of mq9-mcp keeps a timeline of events, each
with a task-scoped sequence number (``seq``, 0 first, each next one more), and a client reads it
with ``tasks/stream {taskId, after?}``: the events it kept after ``after`` replayed, then the live
ones, each a ``notifications/tasks/event`` of that request; the request answers ``{}`` once the
task has ended and every event was sent. A cursor older than what is kept is the SEP's
``events_gone`` error (``-32010``, ``data.earliestSeq``).

The timeline lives in the mail store, not in the process: each task's events are the messages of
a mailbox of its own (``mq9mcp.task.<taskId>``), each stored before any client is sent it, so a
client cut off (a proxy, a laptop's sleep) or a server SIGKILLed and started again resumes with
its last ``seq`` and misses nothing and gets nothing twice. A first message, before the events,
says who owns the task, the tool call it runs, its TTL and when it was made: a server started
again finds a task it never made there (``TaskLog.load``), answers for it, and runs what is
left of its work (``tasks.py``'s ``Resume``).

Event types are prefixed, as the SEP asks: ``io.mq9.task.status`` (the task as ``tasks/get``
shows it, at each change of its status, the result in the last) and ``io.mq9.call.state`` (each
state a waiting agent call goes through, as ``check_call`` shows it). What is kept: at most
``MAX_EVENTS`` events a task (past that the oldest go, and a cursor before them is
``events_gone``), each payload at most ``MAX_PAYLOAD_CHARS`` of JSON (a larger one is stored cut,
marked ``truncated``), as long as the task is (its mailbox's TTL: the task's and an hour, so a
task running past its TTL keeps its timeline; ``tasks.py`` forgets a finished one at its TTL).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import NotRequired, TypedDict, TypeVar, final

import anyio
from mcp.shared.exceptions import MCPError

from mq9_platform.client.client import Mq9Client
from mq9_platform.client.connection import Mq9Connection
from mq9_platform.operations.context import CallView, Progress
from mq9_platform.operations.results import JsonObject
from mq9_wire.protocol.errors import Mq9Error

from . import events

log = logging.getLogger("mq9_mcp")

STATUS = "io.mq9.task.status"
CALL_STATE = "io.mq9.call.state"
RELATED_TASK = "io.modelcontextprotocol/related-task"
NOTIFICATION = "notifications/tasks/event"
# The SEP's error for a cursor older than what is kept (its "implementation-defined server
# error range"), with data.reason "events_gone" and data.earliestSeq.
EVENTS_GONE = -32010
MAX_EVENTS = 1000  # kept a task; past that the oldest go
MAX_PAYLOAD_CHARS = 16_000
KEPT_AFTER_TTL_SECONDS = 3600  # the log's mailbox outlives the task's TTL by this much
MAILBOX_PREFIX = "mq9mcp.task."
WRITE_RETRY_SECONDS = 0.5  # a store write that failed is tried again, in order, this often
POLL_SECONDS = 1.0  # a stream of a task run by another process looks this often

T = TypeVar("T")


class ToolCall(TypedDict, total=False):
    """The tool call a task runs, as its header keeps it (what a server started again runs)."""

    name: str
    arguments: JsonObject  # the client's, as it sent them
    asks: bool  # its questions go to the client through the task (2026-07-28)


class TaskHeader(TypedDict):
    """A task mailbox's first message: who owns the task, what it runs, its TTL, its birth."""

    header: int  # 1
    owner: str
    call: ToolCall
    ttlMs: int
    createdAt: str


@final  # no other keys: a record with "header" is never one (mypy narrows on it)
class StoredEvent(TypedDict):
    """One event as its task's mailbox keeps it (``last``: the task's final status)."""

    seq: int
    type: str  # STATUS or CALL_STATE
    payload: JsonObject  # the event type's own JSON (the SEP: any), cut to MAX_PAYLOAD_CHARS
    last: NotRequired[bool]


class RelatedTask(TypedDict):
    taskId: str


class TaskEvent(TypedDict):
    """One ``notifications/tasks/event``'s params, as the SEP spells them."""

    seq: int
    taskId: str
    type: str
    payload: JsonObject
    _meta: dict[str, RelatedTask]  # RELATED_TASK: the task


def mailbox_of(task_id: str) -> str:
    return MAILBOX_PREFIX + task_id


def events_gone(task_id: str, earliest: int) -> MCPError:
    return MCPError(
        EVENTS_GONE,
        "Task events are no longer available",
        {"reason": "events_gone", "taskId": task_id, "earliestSeq": earliest},
    )


def _bounded(payload: Mapping[str, object]) -> JsonObject:
    text = json.dumps(payload, ensure_ascii=False, default=str)
    if len(text) <= MAX_PAYLOAD_CHARS:
        return dict(json.loads(text))
    return {"truncated": True, "json": text[:MAX_PAYLOAD_CHARS]}


def _parsed(record: object) -> TaskHeader | StoredEvent | None:
    """A message of a task's mailbox, read back: its header, an event, or None (neither)."""
    if not isinstance(record, dict):
        return None
    if record.get("header"):
        call, ttl = record.get("call"), record.get("ttlMs")
        known: ToolCall = {}
        if isinstance(call, dict):
            if isinstance(name := call.get("name"), str):
                known["name"] = name
            if isinstance(arguments := call.get("arguments"), dict):
                known["arguments"] = arguments
            known["asks"] = bool(call.get("asks"))
        return TaskHeader(
            header=1,
            owner=str(record.get("owner", "")),
            call=known,
            ttlMs=ttl if isinstance(ttl, int) else 0,
            createdAt=str(record.get("createdAt", "")),
        )
    seq, payload = record.get("seq"), record.get("payload")
    if not isinstance(seq, int) or isinstance(seq, bool):
        return None
    event = StoredEvent(
        seq=seq, type=str(record.get("type")), payload=payload if isinstance(payload, dict) else {}
    )
    if record.get("last"):
        event["last"] = True
    return event


@dataclass
class _Pending:
    seq: int
    record: StoredEvent


@dataclass
class TaskLog:
    """The event timeline of one task, in its mailbox. The process running the task writes it
    (``emit``: in order, each stored before it is shown); any process reads it (``after``)."""

    connection: Mq9Connection
    task_id: str
    timeout: float
    next_seq: int = 0
    earliest: int = 0
    ended: bool = False  # the task's last status is stored: nothing more comes
    owner: str = ""
    call: ToolCall = field(default_factory=lambda: ToolCall())  # the tool call the task runs
    ttl_ms: int = 0
    created_at: str = ""
    last: dict[str, JsonObject] = field(default_factory=dict)  # the newest payload of each type
    kept: deque[tuple[int, int]] = field(default_factory=deque)  # (seq, msg_id) stored
    _queue: deque[_Pending] = field(default_factory=deque)
    _writer: asyncio.Task[None] | None = None
    _stored: asyncio.Event = field(default_factory=asyncio.Event)
    _end_seq: int | None = None

    @property
    def mailbox(self) -> str:
        return mailbox_of(self.task_id)

    async def _run(self, action: Callable[[Mq9Client], Awaitable[T]]) -> T:
        with anyio.fail_after(self.timeout):
            return await self.connection.run(action)

    async def open(self, owner: str, call: ToolCall, ttl_ms: int, created_at: str) -> None:
        """Make the task's mailbox (its TTL: the task's and an hour) and store who owns the
        task, what it runs, its TTL and when it was made."""
        self.owner, self.call, self.ttl_ms, self.created_at = owner, call, ttl_ms, created_at
        ttl = ttl_ms // 1000 + KEPT_AFTER_TTL_SECONDS
        header = TaskHeader(header=1, owner=owner, call=call, ttlMs=ttl_ms, createdAt=created_at)
        await self._run(lambda c: c.mailbox_create(name=self.mailbox, ttl=ttl))
        # (no idempotency key, as the events: the first header stored counts, ``load``)
        await self._run(lambda c: c.send(self.mailbox, dict(header)))

    def emit(self, kind: str, payload: Mapping[str, object], *, last: bool = False) -> int:
        """Add an event to the timeline (stored in order, in the background); its seq.
        ``last``: the task's final status, after which the timeline is closed."""
        if self.ended or self._end_seq is not None:
            return -1
        seq = self.next_seq
        self.next_seq += 1
        body = _bounded(payload)
        self.last[kind] = body
        record = StoredEvent(seq=seq, type=kind, payload=body)
        if last:
            record["last"] = True
            self._end_seq = seq
        self._queue.append(_Pending(seq, record))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write())
        return seq

    async def _write(self) -> None:
        while self._queue:
            pending = self._queue[0]

            # sent with no idempotency key, so no key mq9-mcp's clients spent under its
            # identity can refuse the timeline; an event tried again may be stored twice, and
            # every reader keeps the first of each seq (``_take``, ``stream``)
            def store(c: Mq9Client, p: _Pending = pending) -> Awaitable[int]:
                return c.send(self.mailbox, dict(p.record))

            try:
                msg_id = await self._run(store)
            except (Mq9Error, TimeoutError) as exc:
                log.warning("task %s: event %d not stored yet (%s)", self.task_id,
                            pending.seq, exc)  # fmt: skip
                await asyncio.sleep(WRITE_RETRY_SECONDS)
                continue
            self._queue.popleft()
            self.kept.append((pending.seq, msg_id))
            if pending.record.get("last"):
                self.ended = True
            await self._forget_oldest()
            self._stored.set()
            self._stored = asyncio.Event()

    async def _forget_oldest(self) -> None:
        while len(self.kept) > MAX_EVENTS:
            seq, msg_id = self.kept.popleft()
            self.earliest = seq + 1

            def drop(c: Mq9Client, m: int = msg_id) -> Awaitable[None]:
                return c.delete(self.mailbox, m)

            with contextlib.suppress(Mq9Error, TimeoutError):
                await self._run(drop)

    async def flush(self) -> None:
        """Wait until every event emitted so far is stored."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)

    async def stored(self, timeout: float) -> None:
        """Wait for the next event stored here, at most ``timeout`` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stored.wait(), timeout)

    # -- reading --------------------------------------------------------------------------------

    async def read(
        self, cursor: int
    ) -> tuple[list[tuple[TaskHeader | StoredEvent, int]], int, bool]:
        """The stored records (the header, the events) from msg_id ``cursor`` on, each with
        its msg_id, the cursor after them, whether more wait."""
        source = events.Source(events.EVENT_TYPES[events.ARRIVED], self.mailbox, self.mailbox)
        batch = await events.Reader(self.connection, self.timeout).after(source, cursor)
        found = []
        for message in batch.messages:
            with contextlib.suppress(ValueError):
                record = _parsed(message.json())
                if record is not None:
                    found.append((record, message.msg_id))
        return found, batch.cursor, batch.more

    @classmethod
    async def load(cls, connection: Mq9Connection, task_id: str, timeout: float) -> TaskLog | None:
        """The timeline of a task this process did not make, read whole from the store (None:
        no such task is kept)."""
        if not task_id or len(task_id) > 64 or not task_id.isalnum() or not task_id.islower():
            return None
        loaded = cls(connection, task_id, timeout)
        cursor, more, header = 0, True, False
        try:
            while more:
                records, cursor, more = await loaded.read(cursor)
                for record, msg_id in records:
                    if "header" not in record:
                        if header:  # an event before any header is never a task's
                            loaded._take(record, msg_id)
                    elif not header:
                        header = True
                        loaded._header(record)
        except MCPError:  # the mailbox is gone (or the broker away): no such task here
            return None
        return loaded if header else None  # without its header: never a task's

    def _header(self, record: TaskHeader) -> None:
        self.owner, self.call = record["owner"], record["call"]
        self.ttl_ms, self.created_at = record["ttlMs"], record["createdAt"]

    def _take(self, record: StoredEvent, msg_id: int) -> None:
        seq = record["seq"]
        if seq < self.next_seq:
            return  # a send tried again: the first one stored counts
        self.kept.append((seq, msg_id))
        self.earliest = self.kept[0][0]
        self.next_seq = seq + 1
        self.last[record["type"]] = record["payload"]
        if record.get("last"):
            self.ended = True


async def stream(
    log_of_task: TaskLog,
    after: int | None,
    send: Callable[[TaskEvent], Awaitable[None]],
    running_here: Callable[[], bool],
) -> None:
    """One ``tasks/stream``: the events after ``after`` (None: from the earliest kept) sent
    with ``send`` as they are read from the store, then the live ones, until the task's last
    event is sent. ``running_here``: whether this process writes the log (else
    it is looked at every ``POLL_SECONDS``)."""
    task_log = log_of_task
    if after is not None and after + 1 < task_log.earliest:
        raise events_gone(task_log.task_id, task_log.earliest)
    want = task_log.earliest if after is None else after + 1
    cursor = 0
    while True:
        waiting = task_log._stored  # an event stored after this read wakes the wait below
        records, cursor, more = await task_log.read(cursor)
        for record, _msg_id in records:
            if "header" in record or record["seq"] < want:
                continue
            seq = record["seq"]
            if seq > want:  # what the client needs next is gone from the store
                raise events_gone(task_log.task_id, seq)
            note: TaskEvent = {
                "seq": seq,
                "taskId": task_log.task_id,
                "type": record["type"],
                "payload": record["payload"],
                "_meta": {RELATED_TASK: {"taskId": task_log.task_id}},
            }
            await send(note)
            want = seq + 1
            if record.get("last"):
                return
        if more:
            continue
        if task_log.ended and want >= task_log.next_seq:
            return
        if running_here():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiting.wait(), POLL_SECONDS)
        else:
            await asyncio.sleep(POLL_SECONDS)


# The log of the task whose work is running (its tool call reports agent-call states into it).
CURRENT: contextvars.ContextVar[TaskLog | None] = contextvars.ContextVar(
    "mq9_mcp_task_log", default=None
)


def call_states() -> Progress | None:
    """Where a waiting agent call run as a task tells its states: an ``io.mq9.call.state``
    event each (None outside a task)."""
    task_log = CURRENT.get()
    if task_log is None:
        return None

    async def report(view: CallView) -> None:
        task_log.emit(CALL_STATE, view)

    return report
