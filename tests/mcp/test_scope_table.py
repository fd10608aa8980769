"""The scope table covers every MCP method mq9-mcp serves (issue #116): a method served but named
in no row would be gated only by a fallback, so a new one is seen here first; and the table is
read by the operation, whatever the server's --tool-prefix."""

from __future__ import annotations

import pytest
from mcp import types
from mcp.shared.exceptions import MCPError

from mq9_mcp.http.scopes import (
    ADMIN,
    BY_TASK,
    BY_TOOL,
    METHOD_SCOPES,
    OPEN,
    READ,
    needed_scope,
)
from mq9_mcp.server import create_server
from mq9_mcp.tasks import TaskStore
from mq9_platform.client.connection import Mq9Connection
from mq9_platform.operations.catalog import ToolPolicy


def served_methods(prefix: str = "") -> set[str]:
    server = create_server(Mq9Connection("memory://"), ToolPolicy(tool_prefix=prefix))
    # the SDK names no public list of the methods a server serves: its own table of them
    return set(server._request_handlers)


def test_every_served_method_has_a_scope_rule():
    served = served_methods()
    assert served - set(METHOD_SCOPES) == set(), "a served method with no row in METHOD_SCOPES"
    # and no row for a method not served (initialize is the SDK runner's, not a handler)
    assert set(METHOD_SCOPES) - served == {"initialize"}


def test_a_method_named_nowhere_needs_admin():
    assert needed_scope("mailboxes/everything", {})[0] == ADMIN


def test_only_lists_and_the_handshake_are_open():
    opened = {m for m, rule in METHOD_SCOPES.items() if rule == OPEN}
    assert {m for m in opened if not m.endswith("/list")} == {
        "initialize", "ping", "server/discover", "logging/setLevel"
    }  # fmt: skip
    for method in ("resources/read", "events/poll", "events/subscribe", "completion/complete"):
        assert needed_scope(method, {})[0] == READ, method
    assert METHOD_SCOPES["tools/call"] == BY_TOOL and METHOD_SCOPES["tasks/get"] == BY_TASK


def test_the_table_is_read_by_the_operation_under_a_tool_prefix():
    send = {"name": "mq9_send_message"}
    assert needed_scope("tools/call", send, "mq9_")[0] == "mq9:send"
    assert needed_scope("tools/call", {"name": "send_message"}, "mq9_")[0] == ADMIN  # no such
    tasks = {"t1": "mq9_call_agent"}
    assert needed_scope("tasks/get", {"taskId": "t1"}, "mq9_", tasks.get)[0] == "mq9:call"
    assert needed_scope("prompts/get", {"name": "handle_inbox"})[0] == READ


def test_listening_to_resources_is_a_read():
    named = {"notifications": {"resourceSubscriptions": ["mq9://mailbox/a"]}}
    assert needed_scope("subscriptions/listen", named)[0] == READ
    assert needed_scope("subscriptions/listen", {"notifications": {}})[0] == OPEN


async def test_a_task_taken_up_here_is_checked_for_its_tools_scope():
    """A task the HTTP check could not read the tool of (another replica's, one held before a
    restart) is checked once found: the same scope, in the JSON-RPC error's data."""
    missing = {"fetch_messages": "mq9:read"}
    store = TaskStore(scope_missing=lambda _ctx, tool: missing.get(tool))

    async def run(_ask: object) -> types.CallToolResult:
        return types.CallToolResult(content=[])

    call = types.CallToolRequestParams(name="fetch_messages", arguments={})
    task = await store.start("", run, None, call=call)
    assert task is not None and store.tool_of(task.task_id) == "fetch_messages"
    with pytest.raises(MCPError) as refused:
        await store.find(object(), task.task_id)
    assert refused.value.error.data == {"error": "insufficient_scope", "scope": "mq9:read"}
    missing.clear()  # a token holding it
    assert (await store.find(object(), task.task_id)) is task
