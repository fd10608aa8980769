"""The server middleware that keeps each principal's mailboxes its own (``mailbox_owners``) on
every method that reads one: ``tools/call`` (query, fetch, ack, delete; run as a task too),
``resources/read`` and ``resources/subscribe``, ``subscriptions/listen``, ``events/poll``,
``events/stream`` and ``events/subscribe`` (webhooks), and ``completion/complete`` (no other
principal's mailbox is offered). A create's success records its creator. One place before the
handlers, so a method added later that names a mailbox is added here once, not checked in each.

A request naming no principal of its own (stdio, the one static token) passes untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote

from mcp import types
from mcp.server.context import CallNext, HandlerResult
from mcp.server.context import ServerRequestContext as Ctx
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel

from mq9_platform.operations.catalog import Operation

from . import events
from .mailbox_owners import OWN_PREFIXES, MailboxOwners
from .owners import principal_of
from .resources import INBOX_PROMPT, MAILBOX

# The tools that read, take, confirm or remove what a mailbox holds, or wake on its mail
READS = frozenset(
    {"query_messages", "fetch_messages", "ack_messages", "delete_message", "wake_rule"}
)
# The tools whose success made a mailbox: its creator is recorded
CLAIMS = frozenset({"create_mailbox", "agent_register"})
EVENT_METHODS = frozenset({"events/poll", "events/stream", "events/subscribe"})


def refusal_text(address: str) -> str:
    return (
        f"mailbox {address[:200]!r} belongs to another agent: this server lets each "
        "principal read, fetch, ack and delete only in the mailboxes it created and those the "
        "operator shares (--shared-mailboxes); sending to it is open"
    )


class OwnerBoundary:
    """The middleware; ``operation_of(tool name)``: the catalog operation a tool stands for."""

    def __init__(
        self, owners: MailboxOwners, operation_of: Callable[[str], Operation | None]
    ) -> None:
        self.owners = owners
        self.operation_of = operation_of

    async def __call__(self, ctx: Ctx, call_next: CallNext) -> HandlerResult:
        owners = self.owners
        scope = getattr(ctx.request, "scope", None)
        principal = principal_of(scope) if scope is not None else None
        params = dict(ctx.params) if isinstance(ctx.params, Mapping) else {}
        if principal is None:
            return await call_next(ctx)
        if ctx.method == "tools/call":
            return await _tool_call(owners, self.operation_of, principal, params, ctx, call_next)
        for address in _read_addresses(ctx.method, params):
            if not await owners.may_read(principal, address):
                raise _refused(ctx.method, address)
        result = await call_next(ctx)
        if ctx.method == "completion/complete":
            return await _own_completions(owners, principal, params, result)
        return result


async def _tool_call(
    owners: MailboxOwners,
    operation_of: Callable[[str], Operation | None],
    principal: str,
    params: dict[str, object],
    ctx: Ctx,
    call_next: CallNext,
) -> HandlerResult:
    name = params.get("name")
    operation = operation_of(name) if isinstance(name, str) else None
    arguments = params.get("arguments") if isinstance(params.get("arguments"), dict) else {}
    assert isinstance(arguments, dict)
    if operation is None:
        return await call_next(ctx)
    address = _target(operation.name, arguments, owners.agent_mailbox)
    if address is not None and address.startswith(OWN_PREFIXES) and operation.name not in READS:
        return _tool_refused(f"mailbox {address[:200]!r} holds mq9-mcp's own records")
    reads = operation.name in READS and address is not None
    if reads and address is not None and not await owners.may_read(principal, address):
        if "task" in params:  # a task-augmented call expects a task or an error
            raise MCPError(types.INVALID_PARAMS, refusal_text(address))
        return _tool_refused(refusal_text(address))
    if operation.name not in CLAIMS:
        return await call_next(ctx)
    ttl = arguments.get("ttl", 0) if operation.name == "create_mailbox" else 0
    ttl = ttl if isinstance(ttl, int) and ttl >= 0 else 0
    if address is not None:  # a name of the caller's: its record made first (mailbox_owners)
        await owners.prepare(address, ttl)
    result = await call_next(ctx)
    made = _made(result, operation.name)
    if made is not None:
        await owners.claim(principal, made, ttl)
    return result


def _target(operation: str, arguments: dict[str, object], agent_mailbox: str | None) -> str | None:
    """The mailbox a tool call names (its own when it leaves it empty)."""
    if operation == "agent_register":
        value = agent_mailbox or arguments.get("name")
    elif operation == "create_mailbox":
        value = arguments.get("name")
    else:
        value = arguments.get("mail_address") or (agent_mailbox if operation in READS else None)
    return value if isinstance(value, str) and value else None


def _made(result: HandlerResult, operation: str) -> str | None:
    """The mailbox a successful create made (``agent_register``: only when it made one)."""
    answer = _plain(result)
    if answer.get("isError") or not isinstance(answer.get("structuredContent"), dict):
        return None
    content = answer["structuredContent"]
    if operation == "agent_register" and content.get("mailbox_created") is not True:
        return None
    made = content.get("mail_address")
    return made if isinstance(made, str) and made else None


def _plain(result: HandlerResult) -> dict[str, Any]:
    """A handler's answer as JSON (the SDK's handlers answer with a model or its dict)."""
    if isinstance(result, BaseModel):
        return result.model_dump(by_alias=True, exclude_none=True)
    return result if isinstance(result, dict) else {}


def _read_addresses(method: str, params: dict[str, object]) -> list[str]:
    """The mailboxes a request other than a tool call reads."""
    if method in ("resources/read", "resources/subscribe"):
        uris = [params.get("uri")]
    elif method == "subscriptions/listen":
        notifications = params.get("notifications")
        listed = (
            notifications.get("resourceSubscriptions") if isinstance(notifications, dict) else None
        )
        uris = list(listed) if isinstance(listed, list) else []
    elif method in EVENT_METHODS:
        arguments = params.get("arguments")
        address = arguments.get("mail_address") if isinstance(arguments, dict) else None
        return [address] if isinstance(address, str) and address else []
    else:
        return []
    return [
        unquote(uri[len(MAILBOX) :])
        for uri in uris
        if isinstance(uri, str) and uri.startswith(MAILBOX) and len(uri) > len(MAILBOX)
    ]


def _refused(method: str, address: str) -> MCPError:
    if method in EVENT_METHODS:
        return events.event_error(events.FORBIDDEN_CODE, events.FORBIDDEN, refusal_text(address))
    return MCPError(types.INVALID_PARAMS, refusal_text(address), {"reason": "forbidden"})


def _tool_refused(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)


async def _own_completions(
    owners: MailboxOwners, principal: str, params: dict[str, Any], result: HandlerResult
) -> HandlerResult:
    """A mailbox completion holding only the mailboxes this principal may read."""
    ref, argument = params.get("ref") or {}, params.get("argument") or {}
    mailbox_ref = ref.get("uri") == MAILBOX + "{mail_address}" or ref.get("name") == INBOX_PROMPT
    completion = _plain(result).get("completion")
    values = completion.get("values") if isinstance(completion, dict) else None
    if argument.get("name") != "mail_address" or not mailbox_ref or not isinstance(values, list):
        return result
    kept = [v for v in values if isinstance(v, str) and await owners.may_read(principal, v)]
    if len(kept) == len(values):
        return result
    return types.CompleteResult(
        completion=types.Completion(values=kept, total=len(kept), has_more=False)
    )
