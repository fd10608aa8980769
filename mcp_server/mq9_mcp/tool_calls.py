"""One MCP tool call, from the catalog's operation to its ``CallToolResult``: the tools listed
(``tool_definitions``, the policy mq9-mcp serves them under), the call run within its bound
(``call_operation``), its one log line (``logged_call``), its errors as tool results and its
progress notifications. ``server.py``'s ``Mq9McpServer`` runs each request's call through these;
they are re-exported there, where callers found them.

Nothing here is per tool: all comes from ``mq9_platform.operations.catalog.OPERATIONS``. Every
failure a model can act on (bad arguments, a missing mailbox, a broker that is down) comes back
as a tool result with ``isError`` set and words saying what to do.
"""

from __future__ import annotations

import logging
import time
from contextlib import suppress
from itertools import count
from typing import Any

import anyio
from mcp import types
from mcp.server.context import ServerRequestContext as Ctx  # one request's, to each handler
from pydantic import ValidationError

from mq9_platform.client.connection import Mq9Connection
from mq9_platform.client.key_shares import NamingKeys
from mq9_platform.operations.catalog import (
    OPERATIONS,
    Operation,
    OperationError,
    ToolPolicy,
    unknown_tool,
)
from mq9_platform.operations.config import MCP_WAIT_CAP_MS
from mq9_platform.operations.context import CallView, Progress
from mq9_platform.operations.errors import explain, explain_validation
from mq9_wire.nats_floor.redaction import redact
from mq9_wire.protocol import clipped
from mq9_wire.protocol.errors import Mq9Error

log = logging.getLogger("mq9_mcp")

# Beyond the request timeout (and a fetch's own wait): room for connecting first.
CALL_GRACE_SECONDS = 5.0


def tool_annotations(operation: Operation) -> types.ToolAnnotations:
    """The catalog's hints (``Operation.hints``: only those that differ from MCP's defaults)."""
    return types.ToolAnnotations.model_validate(operation.hints)


def mcp_policy(policy: ToolPolicy | None) -> ToolPolicy:
    """``policy`` as mq9-mcp serves it: a tool call waits at most ``MCP_WAIT_CAP_MS`` unless its
    operator said how long (``--wait-cap-ms``), so it answers before a client gives up on it
    (openai-agents' and google-adk's MCP clients after 5 s by default)."""
    policy = policy or ToolPolicy()
    if policy.config.wait_cap_ms is None:
        return policy.session(wait_cap_ms=MCP_WAIT_CAP_MS)
    return policy


def tool_definitions(policy: ToolPolicy) -> list[types.Tool]:
    """Every catalog operation the policy allows (a read-only server lists only readers), as
    the toolkit with ``policy`` describes it."""
    return [
        types.Tool(
            name=policy.tool_name(op.name),
            title=op.title,
            description=op.describe(policy),
            input_schema=op.input_schema(policy),
            output_schema=op.output_schema,
            annotations=tool_annotations(op),
        )
        for op in OPERATIONS.values()
        if op.allowed(policy)
    ]


def error_result(text: str) -> types.CallToolResult:
    # Connection errors name the broker URL, which may carry a password: never show it.
    text = redact(text)
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)


def operation_named(policy: ToolPolicy, name: str) -> Operation | None:
    """The catalog operation a tool name (with the policy's prefix) stands for."""
    prefix = policy.tool_prefix
    return OPERATIONS.get(name[len(prefix) :]) if name.startswith(prefix) else None


async def call_operation(
    connection: Mq9Connection,
    policy: ToolPolicy,
    name: str,
    arguments: dict[str, Any] | None,
    progress: Progress | None = None,
    wait_cap_ms: int | None = None,
    naming: tuple[str, int] | None = None,
) -> types.CallToolResult:
    """Run one tool call (``progress``: where a waiting agent call reports its states;
    ``wait_cap_ms``: the most it waits, None: the policy's; ``naming``: the caller and share
    its keyed sends name to the broker, ``NamingKeys``); every outcome, good or bad, is a
    ``CallToolResult``."""
    operation = operation_named(policy, name)
    if operation is None:
        return error_result(unknown_tool(name, policy))
    try:
        args = operation.input_model.model_validate(arguments or {})
    except ValidationError as exc:
        return error_result(explain_validation(exc))
    waits = operation.wait_seconds(args, policy, wait_cap_ms)
    limit = connection.request_timeout + waits + CALL_GRACE_SECONDS
    try:
        with anyio.fail_after(limit):
            outcome = await connection.run(
                lambda client: operation.execute(
                    NamingKeys(client, *naming) if naming else client,
                    args, policy, progress=progress, wait_cap_ms=wait_cap_ms,
                )
            )  # fmt: skip
    except (OperationError, Mq9Error) as exc:  # Mq9Error: raised outside the operation
        log.debug("%s failed: %s", name, redact(str(exc)))
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
        structured_content=outcome.content,
    )


def call_wait(
    policy: ToolPolicy, params: types.CallToolRequestParams, cap_ms: int | None = None
) -> float:
    """How many seconds this tool call may wait (``max_wait_ms``, ``wait_seconds``, up to
    ``cap_ms``, None: the policy's cap): 0 for an unknown tool or wrong arguments (their error
    comes at once)."""
    operation = operation_named(policy, params.name)
    if operation is None:
        return 0.0
    try:
        args = operation.input_model.model_validate(params.arguments or {})
    except ValidationError:
        return 0.0
    return operation.wait_seconds(args, policy, cap_ms)


def arguments_valid(operation: Operation, arguments: dict[str, Any] | None) -> bool:
    """Whether ``arguments`` are the operation's (else the call is answered their error and
    carries nothing: it spends no key)."""
    try:
        operation.input_model.model_validate(arguments or {})
    except ValidationError:
        return False
    return True


# The argument that says which mailbox (or agent) a call is about, in the order looked for.
_TARGETS = ("mail_address", "name", "agent")


async def logged_call(
    connection: Mq9Connection,
    policy: ToolPolicy,
    params: types.CallToolRequestParams,
    request_id: Any = None,
    progress: Progress | None = None,
    wait_cap_ms: int | None = None,
    naming: tuple[str, int] | None = None,
) -> types.CallToolResult:
    """``call_operation``, and one log line at info for it: the tool, the mailbox or agent it
    is about, the outcome and the duration (never a payload or a secret); debug adds the
    request id."""
    started = time.perf_counter()
    result = await call_operation(
        connection, policy, params.name, params.arguments, progress, wait_cap_ms, naming
    )
    arguments = params.arguments or {}
    target = next((arguments[k] for k in _TARGETS if isinstance(arguments.get(k), str)), "-")
    took = (time.perf_counter() - started) * 1000
    line = "tool %s mailbox=%r outcome=%s %.0fms"
    values: list[Any] = [clipped(params.name, 64), clipped(target, 80)]
    values += ["error" if result.is_error else "ok", took]
    if log.isEnabledFor(logging.DEBUG):
        line += " request=%s"
        values.append(request_id)
    log.info(line, *values)
    return result


def progress_reporter(context: Ctx) -> Progress | None:
    """For a tool call whose client sent a progressToken: a callback that tells it each state
    a waiting agent call goes through (MCP progress notifications); else None."""
    if (context.meta or {}).get("progress_token") is None:
        return None
    steps = count(1)

    async def report(view: CallView) -> None:
        text = f"{view.get('agent')}: task {view.get('task_id')} is {view.get('state')}"
        with suppress(Exception):  # a client gone meanwhile: the call still answers
            await context.session.report_progress(next(steps), message=text)

    return report
