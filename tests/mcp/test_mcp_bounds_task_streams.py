"""mq9-mcp's open ``tasks/stream`` requests are bounded per client
(``tasks.MAX_STREAMS_PER_CLIENT``) and in all (``MAX_STREAMS``), and the client's bound is the
client's own (#106, docs/security-broker.md "Whose bound it is"): mallory holding her streams open,
under as many worker names as she likes, leaves bob's stream opened. Were the streams counted
in all at her share, bob's would be refused.

Played on the server's ``TaskStore`` with its timelines in the in-process broker (memory://):
each stream follows a task still running, so it stays open until the test ends it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from mcp import types
from mcp.shared.exceptions import MCPError

from mq9_mcp import tasks
from mq9_platform.client.connection import Mq9Connection
from testbed.support.mcp_support import LEGACY
from testbed.support.waiting import until

SHARE = 3  # mallory's streams: the bound made small (the rule is the same at 16)
MALLORY, BOB = "10.0.0.66 0123456789ab", "10.0.0.7 ba9876543210"  # peer address, credentials


class Session:
    """A client's session: the events its stream was sent (the task's first status among
    them once the stream is open)."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def send_notification(self, note: Any, **_related: Any) -> None:
        self.sent.append(note)


class Ctx:
    """What a store reads of a ``tasks/stream`` request: its owner (a client, then the worker
    name), its era (2025-11-25: no extension to declare) and a session of its own."""

    def __init__(self, owner: str) -> None:
        self.owner, self.protocol_version, self.method = owner, LEGACY, "tasks/stream"
        self.session, self.request, self.request_id = Session(), None, 1


@pytest.fixture
async def store() -> AsyncIterator[tasks.TaskStore]:
    connection = Mq9Connection("memory://mcp-bounds-task-streams")
    try:
        yield tasks.TaskStore(lambda ctx: ctx.owner, connection=connection, timeout=10)
    finally:
        await connection.aclose()


async def _running(store: tasks.TaskStore, owner: str, release: asyncio.Event) -> str:
    async def blocked(_ask: object) -> types.CallToolResult:
        await release.wait()
        return types.CallToolResult(content=[])

    task = await store.start(owner, blocked, None)
    assert task is not None
    return task.task_id


async def test_a_client_at_its_task_streams_leaves_another_clients_stream_open(store, monkeypatch):
    monkeypatch.setattr(tasks, "MAX_STREAMS_PER_CLIENT", SHARE)
    release = asyncio.Event()
    open_streams: list[asyncio.Task[Any]] = []

    sessions: list[Session] = []

    def follow(owner: str, task_id: str) -> asyncio.Task[Any]:
        ctx = Ctx(owner)
        sessions.append(ctx.session)
        params = tasks.StreamTaskParams(task_id=task_id)
        stream = asyncio.ensure_future(store.stream(ctx, params))
        open_streams.append(stream)
        return stream

    def streaming() -> int:  # the streams sent their task's first event: open
        return sum(1 for session in sessions if session.sent)

    try:
        # mallory follows her tasks, each under a worker name made up for it
        for n in range(SHARE):
            owner = f"{MALLORY} made-up-{n}"
            follow(owner, await _running(store, owner, release))
        await until(lambda: streaming() == SHARE, timeout=30, what="mallory's streams open")
        owner = f"{MALLORY} made-up-{SHARE}"
        with pytest.raises(MCPError, match=f"at most {SHARE} tasks/stream requests open"):
            await follow(owner, await _running(store, owner, release))
        # bob's stream of his own task is opened: mallory's share is hers alone
        bobs = follow(f"{BOB} bob", await _running(store, f"{BOB} bob", release))
        await until(lambda: streaming() == SHARE + 1, timeout=30, what="bob's stream open")
        assert not bobs.done()
    finally:
        release.set()
        for stream in open_streams:
            stream.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*open_streams, return_exceptions=True)
