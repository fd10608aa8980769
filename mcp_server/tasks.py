"""MCP Tasks (the 2025-11-25 revision's task-augmented ``tools/call``) for the calls that wait:
``call_agent`` with a wait, ``check_call`` and ``fetch_messages`` with ``max_wait_ms``.

A client that asks for a task (``"task": {"ttl": ...}`` in the call's params) gets the task at
once and the call runs on; it reads the state with ``tasks/get``, the result with
``tasks/result`` (which waits for it) and may ``tasks/cancel`` it. A client that does not ask
gets today's answer. The MCP SDK 2.3 leaves ``tasks/*`` out (its tools/call results are checked
as a ``CallToolResult``), so the task answer to ``tools/call`` is given by a middleware before
the SDK's check, and ``tasks/*`` are served as methods of this server. The 2026-07-28 revision
moved Tasks to an extension the SDK does not serve: its clients get today's answers.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from mcp import types
from mcp.shared.exceptions import MCPError

# The one revision with Tasks in the protocol itself (2026-07-28 has them as an extension).
TASKS_VERSION = "2025-11-25"
# The tools whose calls may wait long: worth running as a task.
TASK_TOOLS = ("call_agent", "check_call", "fetch_messages")
DEFAULT_TTL_MS = 15 * 60 * 1000
MAX_TTL_MS = 60 * 60 * 1000
MAX_TASKS = 256  # past this the oldest finished task is forgotten (a running one never is)
POLL_INTERVAL_MS = 1000


def _now() -> str:
    """The time in UTC as ISO 8601 (2026-07-28T12:00:00.123Z)."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


@dataclass
class _Task:
    task_id: str
    ttl: int
    created_at: str = field(default_factory=_now)
    last_updated_at: str = ""
    status: types.TaskStatus = "working"
    result: types.CallToolResult | None = None
    runner: asyncio.Task[None] | None = None

    def view(self) -> types.Task:
        return types.Task(
            task_id=self.task_id,
            status=self.status,
            created_at=self.created_at,
            last_updated_at=self.last_updated_at or self.created_at,
            ttl=self.ttl,
            poll_interval=POLL_INTERVAL_MS,
        )


class TaskStore:
    """The tasks of one server: bounded, each run by an asyncio task of its own."""

    def __init__(self) -> None:
        self.tasks: OrderedDict[str, _Task] = OrderedDict()

    def start(self, run: Callable[[], Awaitable[types.CallToolResult]], ttl: int | None) -> _Task:
        ttl = min(ttl or DEFAULT_TTL_MS, MAX_TTL_MS)
        task = _Task(task_id=secrets.token_urlsafe(12), ttl=ttl)
        self._make_room()
        self.tasks[task.task_id] = task

        async def work() -> None:
            try:
                task.result = await run()
                task.status = "failed" if task.result.is_error else "completed"
            except asyncio.CancelledError:
                task.status = "cancelled"
                raise
            finally:
                task.last_updated_at = _now()

        task.runner = asyncio.get_running_loop().create_task(work())
        return task

    def _make_room(self) -> None:
        finished = [i for i, t in self.tasks.items() if t.status != "working"]
        while len(self.tasks) >= MAX_TASKS and finished:
            self.tasks.pop(finished.pop(0))

    def find(self, task_id: str) -> _Task:
        task = self.tasks.get(task_id)
        if task is None:
            raise MCPError(types.INVALID_PARAMS, f"no task {task_id[:64]!r}: it ended long ago")
        return task

    async def get(self, _ctx: Any, params: types.GetTaskRequestParams) -> dict[str, Any]:
        return _wire(self.find(params.task_id).view())

    async def result(self, _ctx: Any, params: types.GetTaskPayloadRequestParams) -> dict[str, Any]:
        task = self.find(params.task_id)
        if task.runner is not None:
            await asyncio.wait({task.runner})
        if task.result is None:
            raise MCPError(types.INVALID_PARAMS, f"task {task.task_id} was cancelled")
        return task.result.model_dump(by_alias=True, mode="json", exclude_none=True)

    async def cancel(self, _ctx: Any, params: types.CancelTaskRequestParams) -> dict[str, Any]:
        task = self.find(params.task_id)
        if task.status != "working":
            raise MCPError(types.INVALID_PARAMS, f"task {task.task_id} is already {task.status}")
        if task.runner is not None:
            task.runner.cancel()
            await asyncio.wait({task.runner})
        return _wire(task.view())

    async def list(self, _ctx: Any, _params: Any) -> dict[str, Any]:
        return {"tasks": [_wire(task.view()) for task in self.tasks.values()]}


def _wire(task: types.Task) -> dict[str, Any]:
    # ttl is required, null meaning unlimited; the other unset fields are left out
    return {**task.model_dump(by_alias=True, mode="json", exclude_none=True), "ttl": task.ttl}


def capability() -> types.ServerTasksCapability:
    calls = types.TasksToolsCapability(call=types.TasksCallCapability())
    return types.ServerTasksCapability(
        list=types.TasksListCapability(),
        cancel=types.TasksCancelCapability(),
        requests=types.ServerTasksRequestsCapability(tools=calls),
    )


def offered(protocol_version: str | None) -> bool:
    """Whether Tasks are offered at this protocol version (None: before it is negotiated)."""
    return protocol_version in (None, TASKS_VERSION)


def serve(server: Any, store: TaskStore, start_call: Callable[[Any, Any], Any]) -> None:
    """Add Tasks to ``server``: ``start_call(ctx, params)`` starts one tool call (a coroutine
    function of nothing giving its ``CallToolResult``) for a task-augmented request."""
    for method, params_type, handler in (
        ("tasks/get", types.GetTaskRequestParams, store.get),
        ("tasks/result", types.GetTaskPayloadRequestParams, store.result),
        ("tasks/cancel", types.CancelTaskRequestParams, store.cancel),
        ("tasks/list", types.PaginatedRequestParams, store.list),
    ):
        server.add_request_handler(method, params_type, handler)

    async def as_task(ctx: Any, call_next: Any) -> Any:
        asked = (
            ctx.method == "tools/call" and isinstance(ctx.params, dict) and ctx.params.get("task")
        )
        if not asked or not offered(ctx.protocol_version):
            return await call_next(ctx)
        params = types.CallToolRequestParams.model_validate(ctx.params, by_name=False)
        run = start_call(ctx, params.model_copy(update={"task": None}))
        if run is None:  # not a tool that waits: answered at once, as without a task
            return await call_next(ctx)
        task = store.start(run, params.task.ttl if params.task else None)
        return {"task": _wire(task.view())}

    server.middleware.append(as_task)
