"""The mq9 operation catalog as MCP tools, over one broker connection per process.

Nothing here is per tool: all comes from ``langchain_mq9.operations.OPERATIONS``, so the MCP
tools are the LangChain tools under another protocol (the same descriptions and input schemas,
byte for byte). Every failure a model can act on (bad arguments, a missing mailbox, a broker that
is down) comes back as a tool result with ``isError`` set and words saying what to do.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import signal
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from itertools import count
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
from mcp import types
from mcp.server.lowlevel import Server
from mcp.shared.message import SessionMessage
from pydantic import ValidationError

from langchain_mq9 import __version__
from langchain_mq9.call_tools import CALL_PROGRESS
from langchain_mq9.connection import Mq9Connection
from langchain_mq9.data_views import DATA_NOTE
from langchain_mq9.operations import (
    OPERATIONS,
    Operation,
    OperationError,
    ToolPolicy,
    prefixed,
    unknown_tool,
)
from langchain_mq9.protocol import Mq9Error
from langchain_mq9.redaction import redact
from langchain_mq9.tool_errors import explain, explain_validation

log = logging.getLogger("mcp_server")

SERVER_NAME = "mq9"

INSTRUCTIONS = (
    "Persistent mailboxes and an agent registry over mq9. Register with agent_register, find "
    "other agents with agent_discover, send work with send_message (put a reply_to mailbox in "
    "a JSON payload to get an answer), look with query_messages, take what to handle with "
    "fetch_messages (max_wait_ms to wait for a reply) and confirm it with ack_messages. "
    + DATA_NOTE
)

# The broker connection retries briefly, then gives up, and the next tool call opens it again.
# nats-py uses the same settings for the first connect, so long retries would leave a tool call
# hanging for their whole duration while the broker is down; short ones answer in about a second.
RECONNECT_ATTEMPTS = 2
RECONNECT_DELAY = 0.5

# Beyond the request timeout (and a fetch's own wait): room for connecting first.
CALL_GRACE_SECONDS = 5.0


def tool_annotations(operation: Operation) -> types.ToolAnnotations:
    """The catalog's hints (``Operation.hints``: only those that differ from MCP's defaults)."""
    return types.ToolAnnotations(**operation.hints)


def tool_definitions(policy: ToolPolicy) -> list[types.Tool]:
    """Every catalog operation the policy allows (a read-only server lists only readers), as
    the toolkit with ``policy`` describes it."""
    return [
        types.Tool(
            name=policy.tool_name(op.name),
            title=op.title,
            description=op.describe(policy),
            inputSchema=op.input_schema(policy),
            outputSchema=op.output_schema,
            annotations=tool_annotations(op),
        )
        for op in OPERATIONS.values()
        if op.allowed(policy)
    ]


def error_result(text: str) -> types.CallToolResult:
    # Connection errors name the broker URL, which may carry a password: never show it.
    text = redact(text)
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], isError=True)


async def call_operation(
    connection: Mq9Connection, policy: ToolPolicy, name: str, arguments: dict[str, Any] | None
) -> types.CallToolResult:
    """Run one tool call; every outcome, good or bad, is a ``CallToolResult``."""
    prefix = policy.tool_prefix
    operation = OPERATIONS.get(name[len(prefix) :]) if name.startswith(prefix) else None
    if operation is None:
        return error_result(unknown_tool(name, policy))
    try:
        args = operation.input_model.model_validate(arguments or {})
    except ValidationError as exc:
        return error_result(explain_validation(exc))
    limit = connection.request_timeout + operation.wait_seconds(args) + CALL_GRACE_SECONDS
    try:
        with anyio.fail_after(limit):
            outcome = await connection.run(lambda client: operation.execute(client, args, policy))
    except (OperationError, Mq9Error) as exc:  # Mq9Error: raised outside the operation
        log.info("%s failed: %s", name, redact(str(exc)))
        return error_result(explain(exc) if isinstance(exc, Mq9Error) else str(exc))
    except TimeoutError:
        log.warning("%s did not finish within %gs", name, limit)
        return error_result(
            f"the mq9 call did not finish within {limit:g}s: the broker is unreachable or "
            "overloaded; try again shortly"
        )
    except Exception as exc:  # a bug: report it, keep serving
        log.exception("%s crashed", name)
        return error_result(f"internal error in the mq9 MCP server while running {name}: {exc!r}")
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=outcome.text())],
        structuredContent=outcome.content,
    )


def create_server(
    connection: Mq9Connection, policy: ToolPolicy | None = None, *, sessions_compete: bool = False
) -> Server:
    """An MCP server (the SDK's low-level ``Server``) whose tools are the mq9 operations.

    ``connection`` is shared by every session (one per stdio process, one per HTTP client);
    each session gets ``policy.session()``: the same rules, its own state, so a mailbox one
    client creates is not opened to another by ``allowed_mailboxes``. With ``sessions_compete``
    (HTTP) sessions reading one consumer group are competing workers, each named the policy's
    worker name (or ``mcp``) plus a random suffix: neither gets or acks a message the other
    holds, and what a session that went away held is taken over after the lease
    (docs/groups.md). A stdio server is the group's one reader, or ``--worker NAME``.
    """
    policy = policy or ToolPolicy()

    @asynccontextmanager
    async def session_policy(_: Server) -> AsyncIterator[ToolPolicy]:
        # The SDK enters this once per session (server.run), not once per process.
        if sessions_compete:
            yield policy.session(worker=f"{policy.worker or 'mcp'}-{secrets.token_hex(4)}")
        else:
            yield policy.session()

    instructions = prefixed(INSTRUCTIONS, policy)
    server: Server = Server(
        SERVER_NAME, version=__version__, instructions=instructions, lifespan=session_policy
    )
    tools = tool_definitions(policy)

    @server.list_tools()
    async def list_tools() -> list[types.Tool]:
        return tools

    # The pydantic models validate the arguments (in call_operation), not jsonschema: they give
    # the same wording as the LangChain tools and accept what those accept.
    @server.call_tool(validate_input=False)
    async def call_tool(name: str, arguments: dict[str, Any] | None) -> types.CallToolResult:
        context = server.request_context
        token = CALL_PROGRESS.set(progress_reporter(context))
        try:
            return await call_operation(connection, context.lifespan_context, name, arguments)
        finally:
            CALL_PROGRESS.reset(token)

    return server


def progress_reporter(context: Any) -> Any:
    """For a tool call whose client sent a progressToken: a callback that tells it each state
    a waiting agent call goes through (MCP progress notifications); else None."""
    progress_token = getattr(getattr(context, "meta", None), "progressToken", None)
    if progress_token is None:
        return None
    steps = count(1)

    async def report(view: dict[str, Any]) -> None:
        text = f"{view.get('agent')}: task {view.get('task_id')} is {view.get('state')}"
        with suppress(Exception):  # a client gone meanwhile: the call still answers
            await context.session.send_progress_notification(
                progress_token, next(steps), message=text, related_request_id=context.request_id
            )

    return report


async def serve_stdio(server: Server, connection: Mq9Connection) -> None:
    """Serve one MCP session over stdin/stdout until the client closes stdin, or until SIGINT
    (Ctrl-C) or SIGTERM, which end it cleanly (the broker connection is closed either way)."""
    from mcp.server.stdio import stdio_server

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(connect_early, connection)
        tasks.start_soon(_stop_on_signals, tasks.cancel_scope)
        try:
            stdin: Any = _StdinLines(anyio.lowlevel.current_token())
            async with stdio_server(stdin=stdin) as (read_stream, write_stream):
                stdin.answer_on = write_stream
                await server.run(read_stream, write_stream, server.create_initialization_options())
        finally:
            tasks.cancel_scope.cancel()
            with anyio.CancelScope(shield=True):
                await connection.aclose()


async def _stop_on_signals(scope: anyio.CancelScope) -> None:
    try:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.info("stopping (%s)", signal.Signals(signum).name)
                scope.cancel()
                return
    except NotImplementedError:  # Windows: Ctrl-C still raises KeyboardInterrupt
        return


class _StdinLines:
    """The lines of stdin (fd 0) for the SDK's ``stdio_server``, read by a daemon thread with
    ``os.read``: a signal need not wait for a line, and no lock holds up an exiting interpreter.

    Only lines the SDK can read reach it. A request among the others that carries an id is
    answered here (``refusals``, on ``answer_on``), so its client never waits for ever; a line
    that is not JSON-RPC at all (a person typing at a terminal) is dropped with a one-line
    warning instead of reaching the SDK, which would log a traceback."""

    def __init__(self, token: Any) -> None:
        self._send, self._receive = anyio.create_memory_object_stream[bytes](16)
        self._token = token
        self.answer_on: Any = None  # the session's write stream, once it is open
        threading.Thread(target=self._read, name="mq9-mcp stdin", daemon=True).start()

    def _read(self) -> None:
        pending = b""
        with suppress(Exception):  # the event loop is gone, or stdin is unreadable: stop reading
            while chunk := os.read(0, 65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    anyio.from_thread.run(self._send.send, line, token=self._token)
            if pending:
                anyio.from_thread.run(self._send.send, pending, token=self._token)
        with suppress(Exception):
            anyio.from_thread.run_sync(self._send.close, token=self._token)

    async def __aiter__(self) -> AsyncIterator[str]:
        async with self._receive:
            async for raw in self._receive:
                line = raw.decode("utf-8", errors="replace")
                if not line.strip():
                    continue
                try:
                    types.JSONRPCMessage.model_validate_json(line)
                except ValidationError as exc:
                    answers = refusals(line, exc)
                    if not answers:
                        shown = line.strip()
                        shown = shown if len(shown) <= 60 else shown[:57] + "..."
                        log.warning(
                            "ignored a line on stdin that is not an MCP (JSON-RPC) message: "
                            "%r; mq9-mcp is meant to be started by an MCP client",
                            shown,
                        )
                    for answer in answers:
                        log.info("refused a JSON-RPC request: %s", answer.error.message)
                        await self.answer_on.send(SessionMessage(types.JSONRPCMessage(answer)))
                    continue
                yield line


def refusals(line: str, problem: Exception) -> list[types.JSONRPCError]:
    """The JSON-RPC errors owed for a line the SDK cannot read (a batch, a missing ``method``,
    another ``jsonrpc`` version, params that are not an object, a lone surrogate, nesting past
    its limit): one per request in it that carries an id (JSON-RPC 2.0: every request with an
    id gets an answer). None for a line with no id to answer (a notification, a response, or no
    JSON at all)."""
    try:
        value = json.loads(line)
    except RecursionError:  # nested past Python's limit: its id is still near the start
        found = leading_id(line)
        why = "the request is nested too deeply"
        return [] if found is None else [_refusal(found, types.INVALID_REQUEST, why)]
    except ValueError:
        return []
    if isinstance(value, list):
        why = "JSON-RPC batches are not supported (MCP): send one message per line"
        return [_refusal(item["id"], types.INVALID_REQUEST, why) for item in value if _has_id(item)]
    if not _has_id(value):
        return []
    if value.get("jsonrpc") != "2.0":
        return [_refusal(value["id"], types.INVALID_REQUEST, 'jsonrpc must be "2.0"')]
    if not isinstance(value.get("method"), str):
        return [_refusal(value["id"], types.INVALID_REQUEST, "the request has no method")]
    if not isinstance(value.get("params", {}), dict):
        return [_refusal(value["id"], types.INVALID_PARAMS, "params must be an object")]
    detail = str(problem).splitlines()
    text = next((d.strip() for d in detail[1:] if d.strip()), "cannot be read")
    if "surrogate" in line or "\\ud" in line.lower():
        text = "text holds a lone surrogate (half of a character): it is not valid UTF-8"
    return [_refusal(value["id"], types.INVALID_PARAMS, f"invalid params: {text[:200]}")]


# The id of a request written in the usual order (jsonrpc, id, method, params): found without
# parsing, for a text too deep to parse.
_LEADING_ID = re.compile(r'\s*\{\s*(?:"jsonrpc"\s*:\s*"[^"]*"\s*,\s*)?"id"\s*:\s*(-?\d+|"[^"\\]*")')


def leading_id(text: str) -> int | str | None:
    """The id at the start of a JSON-RPC request's text, read without parsing it."""
    found = _LEADING_ID.match(text)
    return None if found is None else json.loads(found.group(1))


def _has_id(item: Any) -> bool:
    """A request with an id to answer (not a notification, and not a response)."""
    if not isinstance(item, dict) or "result" in item or "error" in item:
        return False
    return isinstance(item.get("id"), (int, str)) and not isinstance(item.get("id"), bool)


def _refusal(request_id: Any, code: int, message: str) -> types.JSONRPCError:
    return types.JSONRPCError(
        jsonrpc="2.0", id=request_id, error=types.ErrorData(code=code, message=message)
    )


async def connect_early(connection: Mq9Connection) -> None:
    """Open the broker connection at start, so the log says at once whether it is reachable;
    a failure is only logged (tool calls open the connection again and report it themselves)."""
    where = redact(connection.server)
    try:
        with anyio.fail_after(connection.request_timeout + CALL_GRACE_SECONDS):
            await connection.run(lambda _client: anyio.lowlevel.checkpoint())
    except (Mq9Error, TimeoutError) as exc:
        text = explain(exc) if isinstance(exc, Mq9Error) else "timed out"
        log.warning(
            "mq9 broker at %s not reachable yet (%s); tool calls will retry", where, redact(text)
        )
    else:
        log.info("connected to the mq9 broker at %s", where)
