"""MCP Tasks for the calls that wait: ``call_agent`` with a wait, ``check_call`` and
``fetch_messages`` with ``max_wait_ms``, in both forms MCP gives them, from one task store.

- 2025-11-25 (Tasks in the protocol): a client that asks for a task (``"task": {"ttl": ...}``
  in the call's params) gets the task at once and the call runs on; it reads the state with
  ``tasks/get``, the result with ``tasks/result`` (which waits for it), lists them with
  ``tasks/list`` and may ``tasks/cancel`` one.
- 2026-07-28 (the Tasks extension ``io.modelcontextprotocol/tasks``, SEP-2663, its
  specification locked for that revision): a client that declares the extension in a
  request's capabilities may get a task (``resultType: "task"``) instead of the result; the
  server decides, and a call that would wait gets one. The client polls ``tasks/get``, which
  carries the result once the call completed, and may ``tasks/cancel``. A called agent's
  question goes to a client that declared elicitation as the task's ``input_required`` status
  (an elicitation in ``inputRequests``), its answer comes with ``tasks/update``
  (``questions.py``); an update without the answer (an accepted form without it, a response
  of another kind) asks again under a new key, as a call sent back without it is (SEP-2322);
  ``tasks/result`` and ``tasks/list`` are not part of the extension.

Every task keeps a timeline of events in the mail store (``task_events.py``), read with
``tasks/stream`` (the draft SEP-2694) in both eras: a status event at each change of the task's
status, and each state of a waiting agent call. A task this process does not hold is looked for
there (a server started again, or another replica): found, it is its owner's again, and what is
left of its work runs here (``Resume``).

A client that does not ask (or does not declare the extension) gets today's answer. The MCP
SDK 2.3 serves neither form (its tools/call results are checked as a ``CallToolResult``), so the
task answer to ``tools/call`` is given by a middleware before the SDK's check, and ``tasks/*``
are served as methods of this server.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import cast

from mcp import types
from mcp.server.context import CallNext, HandlerResult
from mcp.server.context import ServerRequestContext as Ctx  # one request's
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import MCPError
from mcp.types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, Field, StrictInt, ValidationError

from mq9_platform.client.connection import Mq9Connection
from mq9_platform.operations.results import JsonObject

from . import questions, task_events
from .owners import client_of
from .task_events import TaskLog

log = logging.getLogger("mq9_mcp")

# The one revision with Tasks in the protocol itself (2026-07-28 has them as an extension).
TASKS_VERSION = "2025-11-25"
# The Tasks extension of 2026-07-28, as a client declares it and the server offers it.
EXTENSION = "io.modelcontextprotocol/tasks"
_DECLARED = types.ClientCapabilities(extensions={EXTENSION: {}})
DEFAULT_TTL_MS = 15 * 60 * 1000
MAX_TTL_MS = 60 * 60 * 1000
# The tasks kept at once, in total and per client (``owners.client_of``: its worker names share
# its slice). A new task makes room by forgetting a finished task whose result its owner has
# seen (the same client's first), never one still running or unread; without room the call is
# answered as without a task. A finished task is forgotten its ``ttl`` after it was created.
MAX_TASKS = 256
MAX_TASKS_PER_OWNER = 32  # per client, whatever worker names it sends
POLL_INTERVAL_MS = 1000
# tasks/stream requests open at once (the SEP asks them bounded): per client, and in all
MAX_STREAMS_PER_CLIENT = 16
MAX_STREAMS = 256

# A call run as a task: given how to ask the user a question (None: it asks nothing).
Run = Callable[[questions.Ask | None], Awaitable[types.CallToolResult]]
# What is left of a task's work, for a task found in the store that no process runs: given the
# request that found it and its timeline (``TaskLog.call``: the tool call it ran, ``last``: the
# newest event of each type), its Run, or None when it cannot be taken up again.
Resume = Callable[[Ctx, TaskLog], Run | None]


def _now() -> str:
    """The time in UTC as ISO 8601 (2026-07-28T12:00:00.123Z)."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


@dataclass(frozen=True)
class _Question:
    """A question outstanding in a task: its key, its elicitation request, where its answer
    goes, and how many times it has been asked."""

    key: str
    request: JsonObject
    answer: asyncio.Future[str | None]
    times: int


def _answered(response: object) -> tuple[str | None, bool]:
    """The answer in a client's response to a task's question (``questions.FORM``'s field: the
    only form a task asks, an agent's question), and whether it is missing: an accepted form
    without it, or a response of another kind. Declined or dismissed: no answer, not missing."""
    text = questions.answer_text(response)
    if text is not None:
        return text, False
    try:
        declined = types.ElicitResult.model_validate(response).action != "accept"
    except ValidationError:
        declined = False
    return None, not declined


@dataclass
class _Task:
    task_id: str
    ttl: int
    owner: str = ""  # the client that made it: no other sees it (``owners.py``)
    tool: str = ""  # the tool it runs: a token needs that tool's scope to see it
    started: float = 0.0  # the store's clock when it was made
    seen: bool = False  # its result was shown to its owner (tasks/result, tasks/get)
    created_at: str = field(default_factory=_now)
    last_updated_at: str = ""
    status: types.TaskStatus = "working"  # "failed": the tool's result has isError
    result: types.CallToolResult | None = None
    runner: asyncio.Task[None] | None = None
    asked: int = 0  # questions put to the client, each asking again (2026-07-28: inputRequests)
    question: _Question | None = None  # the outstanding one
    log: TaskLog | None = None  # its events, in the store (task_events.py)
    shown: str = ""  # the status its timeline last told

    def changed(self, *, last: bool = False) -> None:
        """Tell the timeline the task's status, if it changed (``last``: the final one)."""
        if self.log is None:
            return
        view = self.detailed()
        if view["status"] != self.shown or last:
            self.shown = str(view["status"])
            self.log.emit(task_events.STATUS, view, last=last)

    def detailed(self) -> JsonObject:
        """The task as the 2026-07-28 extension shows it (its ``DetailedTask``): the result
        inline once there is one, a tool result with ``isError`` included (the extension keeps
        ``failed`` for JSON-RPC errors, which a tool call here never ends in)."""
        view: JsonObject = {
            "taskId": self.task_id,
            "status": self.status,
            "createdAt": self.created_at,
            "lastUpdatedAt": self.last_updated_at or self.created_at,
            "ttlMs": self.ttl,
            "pollIntervalMs": POLL_INTERVAL_MS,
        }
        if self.result is not None:
            view["status"] = "completed"
            view["result"] = self.result.model_dump(by_alias=True, mode="json", exclude_none=True)
        elif self.question is not None:
            view["status"] = "input_required"
            view["inputRequests"] = {self.question.key: self.question.request}
        return view

    async def ask(self, form: types.ElicitRequestFormParams) -> str | None:
        """Put a question to the client (2026-07-28: in ``tasks/get``'s ``inputRequests``) and
        wait for its answer (``tasks/update``) as long as the task lives: None if none came,
        or the user declined."""
        request = types.ElicitRequest(params=form).model_dump(
            by_alias=True, mode="json", exclude_none=True
        )
        answer: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._put(request, answer, times=1)
        try:  # one deadline for the question, however often it is asked again
            return await asyncio.wait_for(answer, self.ttl / 1000)
        except TimeoutError:
            return None
        finally:
            self.question = None
            self.last_updated_at = _now()
            self.changed()

    def _put(self, request: JsonObject, answer: asyncio.Future[str | None], times: int) -> None:
        """The question outstanding under a new key: SEP-2663 has a client skip a key it has
        seen, so a question asked again needs one to be seen again."""
        self.asked += 1
        key = f"{questions.ANSWER_KEY}{self.asked}:{self.task_id}"
        self.question = _Question(key, request, answer, times)
        self.last_updated_at = _now()
        self.changed()

    def answer(self, responses: JsonObject) -> None:
        """The client's answer to the outstanding question, if ``responses`` holds it (an
        answer to anything else is ignored, as SEP-2663 says). Without the input (SEP-2322:
        an accepted form without it, a response of another kind) the question is asked again,
        up to ``questions.MAX_QUESTIONS`` times; past that, the model gets it."""
        question = self.question
        if question is None or question.key not in responses or question.answer.done():
            return
        text, missing = _answered(responses[question.key])
        if missing and question.times < questions.MAX_QUESTIONS:
            self._put(question.request, question.answer, question.times + 1)
        else:
            question.answer.set_result(text)

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
    """The tasks of one server, each run by an asyncio task of its own, each its owner's only:
    ``owner_of(ctx)`` names the client of a request, and a task of another owner answers as an
    id that never existed would. Bounded in total and per client (``MAX_TASKS``,
    ``MAX_TASKS_PER_OWNER``)."""

    def __init__(
        self,
        owner_of: Callable[[Ctx], str] = lambda _ctx: "",
        clock: Callable[[], float] = time.monotonic,
        *,
        connection: Mq9Connection | None = None,
        timeout: float = 10.0,
        resume: Resume | None = None,
        scope_missing: Callable[[Ctx, str], str | None] = lambda _ctx, _tool: None,
    ) -> None:
        self.tasks: OrderedDict[str, _Task] = OrderedDict()
        # the scope a request's token lacks to see a task running that tool (None: it holds it)
        self.scope_missing = scope_missing
        self.owner_of = owner_of
        self.clock = clock
        # (connection, task) of each open tasks/stream, and its client
        self._streams: dict[tuple[object, str], str] = {}
        self.connection = connection  # where the timelines are kept (None: nowhere)
        self.timeout = timeout
        self.resume = resume

    async def start(
        self,
        owner: str,
        run: Run,
        ttl: int | None,
        *,
        asks: bool = False,
        call: types.CallToolRequestParams | None = None,
    ) -> _Task | None:
        """Run ``run`` as a new task of ``owner`` (None: no room, see ``MAX_TASKS``); with
        ``asks`` its questions go to the client through the task (2026-07-28). ``call``: the
        tool call it runs, kept with its timeline for a server started again."""
        if not self._make_room(owner):
            return None
        ttl = min(ttl or DEFAULT_TTL_MS, MAX_TTL_MS)
        task = _Task(task_id=secrets.token_hex(16), ttl=ttl, owner=owner, started=self.clock())
        task.tool = call.name if call is not None else ""
        if self.connection is not None:
            task.log = TaskLog(self.connection, task.task_id, self.timeout)
            told = task_events.ToolCall(asks=asks)
            if call is not None:
                told["name"], told["arguments"] = call.name, call.arguments or {}
            try:
                await task.log.open(owner, told, ttl, task.created_at)
            except (Exception, TimeoutError) as exc:  # the store away: a task without events
                log.warning("task %s: no event timeline (%s)", task.task_id, exc)
                task.log = None
        self.tasks[task.task_id] = task
        task.changed()  # seq 0: working
        self._launch(task, run, asks)
        return task

    @staticmethod
    def _launch(task: _Task, run: Run, asks: bool) -> None:
        async def work() -> None:
            task_events.CURRENT.set(task.log)
            try:
                task.result = await run(task.ask if asks else None)
                task.status = "failed" if task.result.is_error else "completed"
            except asyncio.CancelledError:
                task.status = "cancelled"
                raise
            finally:
                task.last_updated_at = _now()
                task.changed(last=True)

        task.runner = asyncio.get_running_loop().create_task(work())

    async def _adopt(self, ctx: Ctx, task_id: str) -> _Task | None:
        """A task of the caller's that no process here holds, from its timeline in the store
        (a server started again): its state as the timeline last told it, and what is left of
        its work running here (``resume``), or, when none can be, a tool error saying so."""
        if self.connection is None:
            return None
        found = await TaskLog.load(self.connection, task_id, self.timeout)
        owner = self.owner_of(ctx)
        if found is None or found.owner != owner:
            return None
        ttl = found.ttl_ms or DEFAULT_TTL_MS
        if found.ended and _age(found.created_at) >= ttl / 1000:
            return None  # forgotten its TTL after it was made, as one held here would be
        if task_id in self.tasks:  # found meanwhile by another request
            return self.tasks[task_id]
        if not self._make_room(owner):
            raise MCPError(types.INTERNAL_ERROR, f"{MAX_TASKS} tasks are kept: try again later")
        task = _Task(task_id=task_id, ttl=ttl, owner=owner, started=self.clock(), log=found)
        task.tool = str(found.call.get("name", ""))
        task.created_at = found.created_at or task.created_at
        status = found.last.get(task_events.STATUS, {})
        task.shown = str(status.get("status", ""))
        self.tasks[task_id] = task
        if found.ended:
            result = status.get("result")
            if isinstance(result, dict):
                task.result = types.CallToolResult.model_validate(result)
                task.status = "failed" if task.result.is_error else "completed"
            else:
                task.status = "cancelled" if status.get("status") == "cancelled" else "failed"
            return task
        run = self.resume(ctx, found) if self.resume is not None else None
        log.info("task %s taken up from the store (%s)", task_id,
                 "resumed" if run else "not resumable")  # fmt: skip
        self._launch(task, run or _not_resumable, bool(found.call.get("asks")))
        return task

    def _make_room(self, owner: str) -> bool:
        """Forget finished tasks past their ttl, then, while ``owner``'s client or the server
        is at its limit, the oldest finished task already seen (the client's own first);
        whether there is room for one more of ``owner``'s."""
        now = self.clock()
        for task_id, task in list(self.tasks.items()):
            if task.status != "working" and now - task.started >= task.ttl / 1000:
                del self.tasks[task_id]
        client = client_of(owner)
        while True:
            own = [t for t in self.tasks.values() if client_of(t.owner) == client]
            if len(own) < MAX_TASKS_PER_OWNER and len(self.tasks) < MAX_TASKS:
                return True
            pool = own if len(own) >= MAX_TASKS_PER_OWNER else list(self.tasks.values())
            done = [t for t in pool if t.status != "working" and t.seen]
            done.sort(key=lambda t: (client_of(t.owner) != client, t.started))
            if not done:
                return False
            del self.tasks[done[0].task_id]

    async def find(self, ctx: Ctx, task_id: str) -> _Task:
        """The caller's task ``task_id`` (held here, else found in the store): another
        client's answers exactly as a missing one."""
        task = self.tasks.get(task_id)
        if task is None:
            task = await self._adopt(ctx, task_id)
        if task is None or task.owner != self.owner_of(ctx):
            raise MCPError(types.INVALID_PARAMS, f"no task {task_id[:64]!r}: it ended long ago")
        missing = self.scope_missing(ctx, task.tool)
        if missing is not None:  # one held here was refused before it came (scope_check.py)
            raise MCPError(
                types.INVALID_REQUEST,
                f"Forbidden: a {task.tool[:64]} task needs the scope {missing}, which your access "
                "token was not granted",
                {"error": "insufficient_scope", "scope": missing},
            )
        return task

    def tool_of(self, task_id: str) -> str | None:
        """The tool a task held here runs (None: none held here by that id)."""
        task = self.tasks.get(task_id)
        return task.tool if task is not None else None

    async def stream(self, ctx: Ctx, params: StreamTaskParams) -> JsonObject:
        """``tasks/stream`` (the draft SEP-2694): the task's events after ``after`` (none: from
        the earliest kept), then the live ones, each a ``notifications/tasks/event`` of this
        request; ``{}`` once the task ended and all were sent. At most one stream of a task
        per connection (-32602 for a second)."""
        _extension_era(ctx)  # a 2026-07-28 client without the extension: -32021
        task = await self.find(ctx, params.task_id)
        if task.log is None:  # ended before this server was started, or never stored
            found = None
            if self.connection is not None:
                found = await TaskLog.load(self.connection, task.task_id, self.timeout)
            if found is None:
                if params.after is not None or task.status == "working":
                    raise task_events.events_gone(task.task_id, 0)
                return {}
            task.log = found
        key = (_connection_of(ctx), task.task_id)
        if key in self._streams:
            raise MCPError(
                types.INVALID_PARAMS,
                f"a tasks/stream of task {task.task_id} is open on this connection: cancel it "
                "first",
            )
        client = client_of(task.owner)
        if sum(1 for c in self._streams.values() if c == client) >= MAX_STREAMS_PER_CLIENT:
            raise MCPError(
                types.INVALID_PARAMS,
                f"a client keeps at most {MAX_STREAMS_PER_CLIENT} tasks/stream requests open: "
                "cancel one",
            )
        if len(self._streams) >= MAX_STREAMS:
            raise MCPError(
                types.INTERNAL_ERROR, f"{MAX_STREAMS} tasks/stream requests are open: try later"
            )
        self._streams[key] = client
        task_log = task.log

        async def send(event: task_events.TaskEvent) -> None:
            note = _Notification(method=task_events.NOTIFICATION, params=dict(event))
            await ctx.session.send_notification(
                cast(types.ServerNotification, note), related_request_id=ctx.request_id
            )

        try:
            await task_events.stream(task_log, params.after, send, lambda: task.runner is not None)
            return {}
        finally:
            self._streams.pop(key, None)

    async def get(self, ctx: Ctx, params: types.GetTaskRequestParams) -> JsonObject:
        extension = _extension_era(ctx)  # first: it refuses a client without the extension
        task = await self.find(ctx, params.task_id)
        if extension:
            task.seen = task.seen or task.result is not None  # the result is in the answer
            return task.detailed()
        return _wire(task.view())

    async def result(self, ctx: Ctx, params: types.GetTaskPayloadRequestParams) -> JsonObject:
        _not_in_extension(ctx)
        task = await self.find(ctx, params.task_id)
        if task.runner is not None:
            await asyncio.wait({task.runner})
        if task.result is None:
            raise MCPError(types.INVALID_PARAMS, f"task {task.task_id} was cancelled")
        task.seen = True
        return task.result.model_dump(by_alias=True, mode="json", exclude_none=True)

    async def update(self, ctx: Ctx, params: UpdateTaskParams) -> JsonObject:
        """2026-07-28's answer to a task's input requests (an agent's question)."""
        if not _extension_era(ctx):
            raise MCPError(types.METHOD_NOT_FOUND, "Method not found", "tasks/update")
        (await self.find(ctx, params.task_id)).answer(params.input_responses)
        return {}

    async def cancel(self, ctx: Ctx, params: types.CancelTaskRequestParams) -> JsonObject:
        extension = _extension_era(ctx)
        task = await self.find(ctx, params.task_id)
        if extension:  # an acknowledgement, even of a task that ended meanwhile
            await self._stop(task)
            return {}
        if task.status != "working":
            raise MCPError(types.INVALID_PARAMS, f"task {task.task_id} is already {task.status}")
        await self._stop(task)
        task.seen = True  # nothing left to read: it may make room
        return _wire(task.view())

    @staticmethod
    async def _stop(task: _Task) -> None:
        if task.status == "working" and task.runner is not None:
            task.runner.cancel()
            await asyncio.wait({task.runner})

    async def list(self, ctx: Ctx, _params: types.PaginatedRequestParams | None) -> JsonObject:
        _not_in_extension(ctx)
        owner = self.owner_of(ctx)
        mine = [
            _wire(task.view())
            for task in self.tasks.values()
            if task.owner == owner and self.scope_missing(ctx, task.tool) is None
        ]
        return {"tasks": mine}


def _age(created_at: str) -> float:
    """Seconds since ``created_at`` (``_now``'s form); 0 for a time that does not read."""
    try:
        made = calendar.timegm(time.strptime(created_at[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return 0.0
    return max(0.0, time.time() - made)


def _connection_of(ctx: Ctx) -> object:
    """The connection a request came on, as SEP-2694 counts streams: over HTTP its MCP session
    (2025-11-25's ``Mcp-Session-Id``; a 2026-07-28 request, which has none, is its own), over
    stdio the one session."""
    headers = getattr(ctx.request, "headers", None)
    if headers is not None:
        return headers.get("mcp-session-id") or object()
    return id(ctx.session)


async def _not_resumable(_ask: questions.Ask | None) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=(
            "mq9-mcp was started again while this task ran, and its work cannot be taken up "
            "again safely (an agent call not yet made, say): list_calls shows what was sent"
        ))],
        is_error=True,
    )  # fmt: skip


class _Notification(BaseModel):
    """A notification the SDK's typed ones do not know (``notifications/tasks/event``)."""

    method: str
    params: dict[str, object]  # a TaskEvent


class StreamTaskParams(types.RequestParams):
    """``tasks/stream`` (draft SEP-2694): the task, and the last seq the client handled."""

    task_id: str
    after: StrictInt | None = Field(default=None, ge=0)


class UpdateTaskParams(types.RequestParams):
    """``tasks/update`` (2026-07-28): the client's answers to a task's input requests."""

    task_id: str
    input_responses: JsonObject = Field(default_factory=dict)


def _extension_era(ctx: Ctx) -> bool:
    """Whether ``ctx`` is a 2026-07-28 request, where Tasks are the extension's; one whose
    client did not declare the extension is refused, as SEP-2663 says (-32021)."""
    if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
        return False
    if not declared(ctx):
        raise MCPError(
            types.MISSING_REQUIRED_CLIENT_CAPABILITY,
            f"Missing required client capability: declare the {EXTENSION} extension",
            {"requiredCapabilities": {"extensions": {EXTENSION: {}}}},
        )
    return True


def _not_in_extension(ctx: Ctx) -> None:
    """``tasks/result`` and ``tasks/list`` are 2025-11-25's only: the extension has neither."""
    if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
        raise MCPError(types.METHOD_NOT_FOUND, "Method not found", ctx.method)


def declared(ctx: Ctx) -> bool:
    """Whether the client of this request declared the Tasks extension (2026-07-28: in the
    request's own ``_meta`` capabilities)."""
    return bool(ctx.session.check_client_capability(_DECLARED))


def _may_be_task(ctx: Ctx) -> bool:
    """Whether a tools/call may become a task: at 2025-11-25 when it asks for one (``task`` in
    its params); at 2026-07-28 when its client declared the extension (SEP-2663: the server
    decides, and the request's own ``task`` is ignored)."""
    if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
        return declared(ctx)
    return bool(ctx.params and ctx.params.get("task")) and offered(ctx.protocol_version)


def _call_params(ctx: Ctx) -> types.CallToolRequestParams | None:
    """The tools/call params; None when they are malformed (the SDK answers those, as without
    a task)."""
    try:
        return types.CallToolRequestParams.model_validate(ctx.params, by_name=False)
    except ValidationError:
        return None


def _wire(task: types.Task) -> JsonObject:
    # ttl is required, null meaning unlimited; the other unset fields are left out
    return {**task.model_dump(by_alias=True, mode="json", exclude_none=True), "ttl": task.ttl}


def capability() -> types.ServerTasksCapability:
    calls = types.TasksToolsCapability(call=types.TasksCallCapability())
    return types.ServerTasksCapability(
        list=types.TasksListCapability(),
        cancel=types.TasksCancelCapability(),
        requests=types.ServerTasksRequestsCapability(tools=calls),
    )


def extension_offered(protocol_version: str | None) -> bool:
    """Whether the Tasks extension is offered at this protocol version (2026-07-28)."""
    return protocol_version in MODERN_PROTOCOL_VERSIONS


def offered(protocol_version: str | None) -> bool:
    """Whether Tasks are offered at this protocol version (None: before it is negotiated)."""
    return protocol_version in (None, TASKS_VERSION)


def serve(
    server: Server,
    store: TaskStore,
    start_call: Callable[[Ctx, types.CallToolRequestParams], Run | None],
    wait_of: Callable[[types.CallToolRequestParams], float],
) -> None:
    """Add Tasks to ``server``: ``start_call(ctx, params)`` starts one tool call (a coroutine
    function of nothing giving its ``CallToolResult``), or gives None for a tool that is never a
    task; ``wait_of(params)``: how many seconds a call may wait. At 2026-07-28 the server
    decides, and only a call that may wait longer than a poll interval becomes a task: one
    answered sooner would only gain a round trip."""
    server.add_request_handler("tasks/get", types.GetTaskRequestParams, store.get)
    server.add_request_handler("tasks/result", types.GetTaskPayloadRequestParams, store.result)
    server.add_request_handler("tasks/update", UpdateTaskParams, store.update)
    server.add_request_handler("tasks/cancel", types.CancelTaskRequestParams, store.cancel)
    server.add_request_handler("tasks/list", types.PaginatedRequestParams, store.list)
    server.add_request_handler("tasks/stream", StreamTaskParams, store.stream)

    async def as_task(ctx: Ctx, call_next: CallNext) -> HandlerResult:
        if ctx.method != "tools/call" or not isinstance(ctx.params, dict):
            return await call_next(ctx)
        params = _call_params(ctx) if _may_be_task(ctx) else None
        if params is None:
            return await call_next(ctx)
        run = start_call(ctx, params.model_copy(update={"task": None}))
        if run is None:  # not a tool that waits: answered at once, as without a task
            return await call_next(ctx)
        owner = store.owner_of(ctx)
        if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:  # its questions: the model's
            ttl = params.task.ttl if params.task else None
            task = await store.start(owner, run, ttl, call=params)
            return {"task": _wire(task.view())} if task else await call_next(ctx)
        # the server decides: a call sent again with input (the answer to a question of ours)
        # is answered, and one that waits no longer than a poll would gains nothing as a task
        if params.input_responses or wait_of(params) <= POLL_INTERVAL_MS / 1000:
            return await call_next(ctx)
        task = await store.start(owner, run, None, asks=True, call=params)
        if task is None:  # no room: answered as without a task
            return await call_next(ctx)
        stamp = {types.SERVER_INFO_META_KEY: server.server_info_stamp}
        return {"resultType": "task", **task.detailed(), "_meta": stamp}

    server.middleware.append(as_task)
