"""mq9-mcp with one tool more, a long task that tells many events: ``test_event_ticker``
(``count`` ticks, ``interval_ms`` apart, each an event ``com.example.tick {"n": n}`` of its task's
timeline, then a result). Everything else is mq9-mcp's own: the task, its timeline in the mail
store, ``tasks/stream``, a server started again taking the task up from the store; the ticker
only says how to go on (``resume_call``: from the tick after the last one the timeline kept).

Run as mq9-mcp is, over HTTP, so a test can SIGKILL it and start it again on the same port and
broker: ``python -m tests.mcp.task_stream_server --server URL --port N`` (mq9-mcp's options).
``serve_in_thread`` serves it in the test's own process instead.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import uvicorn
from mcp import types

from mq9_mcp import task_events, tasks
from mq9_mcp.cli import broker_connection, build_parser, tool_policy
from mq9_mcp.http import create_http_app, uvicorn_config
from mq9_mcp.server import Mq9McpServer
from mq9_mcp.task_events import TaskLog
from testbed.ports import unclaimed_port
from testbed.support.waiting import until_sync

TICKER = "test_event_ticker"
TICK = "com.example.tick"
TOOL = types.Tool(
    name=TICKER,
    description="A long task: count ticks, interval_ms apart, each an event of its task.",
    input_schema={
        "type": "object",
        "properties": {"count": {"type": "integer"}, "interval_ms": {"type": "integer"}},
        "required": ["count", "interval_ms"],
    },
    execution=types.ToolExecution(task_support="optional"),
)


def ticker(arguments: dict[str, Any]) -> tasks.Run:
    """The ticker's work, from the tick after the last one its timeline kept."""
    count, interval = int(arguments["count"]), int(arguments["interval_ms"]) / 1000

    async def run(_ask: object) -> types.CallToolResult:
        timeline = task_events.CURRENT.get()
        start = timeline.last.get(TICK, {}).get("n", -1) + 1 if timeline else 0
        for n in range(start, count):
            await asyncio.sleep(interval)
            if timeline is not None:
                timeline.emit(TICK, {"n": n})
        return types.CallToolResult(content=[types.TextContent(type="text", text=f"{count}")])

    return run


class TickerServer(Mq9McpServer):
    """mq9-mcp with ``test_event_ticker`` among its tools, run as a task."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.task_names = {*self.task_names, TICKER}

    async def handle_list_tools(self, ctx: Any, params: Any) -> types.ListToolsResult:
        listed = await super().handle_list_tools(ctx, params)
        return types.ListToolsResult(tools=[*listed.tools, TOOL])

    async def handle_call_tool(self, ctx: Any, params: types.CallToolRequestParams) -> Any:
        if params.name != TICKER:
            return await super().handle_call_tool(ctx, params)
        return await ticker(params.arguments or {})(None)

    def wait_of(self, params: types.CallToolRequestParams) -> float:
        if params.name != TICKER:
            return super().wait_of(params)
        arguments = params.arguments or {}
        return int(arguments.get("count", 0)) * int(arguments.get("interval_ms", 0)) / 1000

    def start_call(self, ctx: Any, params: types.CallToolRequestParams) -> tasks.Run | None:
        if params.name != TICKER:
            return super().start_call(ctx, params)
        return ticker(params.arguments or {})

    def resume_call(self, ctx: Any, found: TaskLog) -> tasks.Run | None:
        if found.call.get("name") != TICKER:
            return super().resume_call(ctx, found)
        return ticker(found.call.get("arguments") or {})


def build(options: Sequence[str]) -> tuple[TickerServer, Any, Any]:
    """The server, its ASGI app and its broker connection, from mq9-mcp's own options."""
    parser = build_parser()
    args = parser.parse_args(["--transport", "http", *options])
    connection = broker_connection(args, parser, args.server, {})
    server = TickerServer(connection, tool_policy(args, parser), sessions_compete=True)
    return server, create_http_app(server, connection, host="127.0.0.1"), args


class _Uvicorn(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Iterator[None]:  # the test runner keeps its own handlers
        yield


@contextmanager
def serve_in_thread(*options: str) -> Iterator[str]:
    """``TickerServer`` over HTTP on a loopback port, in a thread; yields the /mcp URL."""
    _server, app, _args = build(options)
    port = unclaimed_port()
    served = _Uvicorn(uvicorn_config(app, "127.0.0.1", port))
    thread = threading.Thread(target=served.run, name="mq9-mcp-ticker", daemon=True)
    thread.start()
    try:
        until_sync(lambda: served.started, timeout=30, what="mq9-mcp with the ticker", every=0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        served.should_exit = True
        thread.join(timeout=30)


def main(argv: Sequence[str]) -> None:
    _server, app, args = build(argv)
    uvicorn.Server(uvicorn_config(app, "127.0.0.1", args.port)).run()


if __name__ == "__main__":
    main(sys.argv[1:])
