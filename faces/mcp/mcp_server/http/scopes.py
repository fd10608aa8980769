"""What each OAuth scope lets a principal do, in one table (issue #112; docs/mcp.md
"Serving many people"). A principal with a static token or a tokens file's line holds them all."""

from __future__ import annotations

# What each scope lets a principal do, by tool (the one table; docs/mcp.md "Serving many
# people"). mq9:admin is every tool; a tool named in no row (agent_register, agent_unregister,
# agent_report, wake_rule) needs mq9:admin.
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
ALL_SCOPES = list(SCOPE_TOOLS)


def scope_for(tool: str) -> str:
    """The scope a tool call needs (``SCOPE_TOOLS``)."""
    return next((scope for scope, tools in SCOPE_TOOLS.items() if tool in tools), ADMIN)


def may_call(scopes: list[str], tool: str) -> bool:
    return ADMIN in scopes or scope_for(tool) in scopes
