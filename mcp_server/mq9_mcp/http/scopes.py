"""What each OAuth scope lets a principal do, in two tables read together (docs/mcp-oauth.md):
``SCOPE_TOOLS``, the operations each scope runs, and ``METHOD_SCOPES``, what each
MCP method needs. A token is good for what its scopes name through every method, not only
``tools/call``: reading a mailbox as a resource or as events is still reading it. A principal
with a static token or a tokens file's line holds every scope."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

# What each scope lets a principal do, by operation (the catalog's name: a tool's name without
# the server's --tool-prefix). mq9:admin is every operation; an operation named in no row
# (agent_register, agent_unregister, agent_report, wake_rule) needs mq9:admin.
SCOPE_TOOLS: dict[str, frozenset[str]] = {
    "mq9:read": frozenset({
        "agent_discover", "fetch_messages", "ack_messages", "query_messages", "check_call",
        "list_calls",
    }),
    "mq9:send": frozenset({"create_mailbox", "send_message", "delete_message"}),
    "mq9:call": frozenset({"call_agent", "answer_call", "cancel_call"}),
    "mq9:admin": frozenset(),
}  # fmt: skip
ADMIN = "mq9:admin"
READ = "mq9:read"
ALL_SCOPES = list(SCOPE_TOOLS)

# How a method's scope is found where it is not one scope for every request:
OPEN = ""  # nothing of the broker's: any token (the lists are cut to what it may use)
BY_TOOL = "the tool's"  # tools/call: the scope of the operation its tool stands for
BY_TASK = "the task's tool's"  # tasks/*: the scope of the tool the task runs
BY_LISTENED = "mq9:read if it names resources"  # subscriptions/listen: a watch is a read
BY_PROMPT = "the prompt's operations'"  # prompts/get: what the prompt has the model call

# What each MCP method needs. A method served but named here nowhere needs mq9:admin (and a test
# enumerates the served methods against this table), so none is added ungated.
METHOD_SCOPES: dict[str, str] = {
    "initialize": OPEN, "ping": OPEN, "server/discover": OPEN, "logging/setLevel": OPEN,
    # the lists: open, each cut to what the token may use (tools, prompts, resources, tasks)
    "tools/list": OPEN, "prompts/list": OPEN, "resources/list": OPEN,
    "resources/templates/list": OPEN, "events/list": OPEN, "tasks/list": OPEN,
    "tools/call": BY_TOOL,
    # a mailbox resource is query_messages, an agent resource agent_discover: both read
    "resources/read": READ, "resources/subscribe": READ, "resources/unsubscribe": READ,
    "subscriptions/listen": BY_LISTENED,
    # events are a mailbox's arrivals, payloads and all
    "events/poll": READ, "events/stream": READ, "events/subscribe": READ,
    "events/unsubscribe": READ,
    # completes mailbox addresses and agent names
    "completion/complete": READ, "prompts/get": BY_PROMPT,
    "tasks/get": BY_TASK, "tasks/result": BY_TASK, "tasks/update": BY_TASK,
    "tasks/cancel": BY_TASK, "tasks/stream": BY_TASK,
}  # fmt: skip
# The prompts by name, and the operations each stands for (resources.INBOX_PROMPT)
PROMPT_OPERATIONS: dict[str, tuple[str, ...]] = {"handle_inbox": ("fetch_messages", "ack_messages")}


def scope_for(operation: str) -> str:
    """The scope an operation needs (``SCOPE_TOOLS``)."""
    return next((scope for scope, tools in SCOPE_TOOLS.items() if operation in tools), ADMIN)


def may_call(scopes: list[str], operation: str) -> bool:
    return ADMIN in scopes or scope_for(operation) in scopes


def holds(scopes: list[str], scope: str) -> bool:
    """Whether ``scopes`` grant ``scope`` (mq9:admin grants every one; OPEN needs none)."""
    return scope == OPEN or ADMIN in scopes or scope in scopes


def prompt_scope(name: str) -> str:
    """The scope a prompt needs: that of the operations it has the model call (one scope for
    all, else mq9:admin); an unknown prompt, mq9:read (its error names the prompts)."""
    if name not in PROMPT_OPERATIONS:
        return READ
    needed = {scope_for(operation) for operation in PROMPT_OPERATIONS[name]}
    return needed.pop() if len(needed) == 1 else ADMIN


def operation_of(tool: str, prefix: str) -> str:
    """The operation a tool name stands for under the server's ``--tool-prefix`` (a name
    without the prefix stands for none: it needs mq9:admin, the scope of an unknown one)."""
    return tool[len(prefix) :] if tool.startswith(prefix) else ""


def needed_scope(
    method: str,
    params: Mapping[str, Any],
    prefix: str = "",
    task_tool: Callable[[str], str | None] = lambda _task: None,
) -> tuple[str, str]:
    """The scope a request needs (``OPEN``: none) and what it is needed for, in words;
    ``prefix``: the server's --tool-prefix, ``task_tool(task_id)``: the tool a task held here
    runs (None: not held here, checked once it is taken up)."""
    rule = METHOD_SCOPES.get(method, ADMIN)
    if rule == BY_TOOL:
        tool = params.get("name")
        tool = tool if isinstance(tool, str) else ""
        return scope_for(operation_of(tool, prefix)), f"calling {tool[:64]}"
    if rule == BY_TASK:
        task = params.get("taskId")
        tool = task_tool(task) if isinstance(task, str) else None
        if tool is None:
            return OPEN, method
        return scope_for(operation_of(tool, prefix)), f"{method} of a {tool[:64]} task"
    if rule == BY_PROMPT:
        name = params.get("name")
        name = name if isinstance(name, str) else ""
        return prompt_scope(name), f"the prompt {name[:64]}"
    if rule == BY_LISTENED:
        notifications = params.get("notifications")
        named = isinstance(notifications, dict) and notifications.get("resourceSubscriptions")
        return (READ if named else OPEN), f"{method} to resources"
    return rule, method
