"""What a tool that is not there says: why it is off and how to turn it on, and which tools are.

Issue #35: with the call tools off, ``call_agent`` answered "this toolkit is read-only" (it was
not), and an unknown-tool answer listed the call tools as available.
"""

from __future__ import annotations

import pytest

from mq9_mcp.server import call_operation, tool_definitions
from mq9_platform import Mq9Client, OperationError, ToolPolicy
from mq9_platform.operations.catalog import DEFAULT_OPERATIONS, OPERATIONS, unknown_tool


async def test_a_call_tool_with_the_calls_off_says_so_and_how_to_turn_them_on():
    """Issue #35: the answer was "call_agent is not available: this toolkit is read-only"."""
    async with Mq9Client("memory://") as client:
        with pytest.raises(OperationError) as refused:
            await OPERATIONS["call_agent"].execute(
                client, {"agent": "a", "task": "t"}, ToolPolicy()
            )
    text = str(refused.value)
    assert "read-only" not in text
    assert "agent-call tools are off" in text and "calls=True" in text and "--calls" in text


async def test_a_read_only_toolkit_still_says_read_only():
    async with Mq9Client("memory://") as client:
        with pytest.raises(OperationError, match="this toolkit is read-only"):
            await OPERATIONS["send_message"].execute(
                client, {"mail_address": "a.b", "payload": "x"}, ToolPolicy(read_only=True)
            )


@pytest.mark.parametrize(
    "settings",
    [{}, {"read_only": True}, {"calls": True}, {"calls": True, "tool_prefix": "mq9_"}],
)
def test_an_unknown_tool_lists_exactly_the_tools_there_are(settings):
    """Issue #35: with the calls off, the list named call_agent, check_call and the rest."""
    policy = ToolPolicy(**settings)
    text = unknown_tool("send_mail", policy)
    listed = text.split(" are ", 1)[1].split(", ")
    assert "'send_mail'" in text
    assert listed == [tool.name for tool in tool_definitions(policy)]


async def test_the_mcp_answer_to_an_unknown_tool_names_only_available_tools():
    """Issue #35, on the MCP surface: no call tool is offered while they are off."""
    policy = ToolPolicy()
    result = await call_operation(None, policy, "send_mail", {})
    text = result.content[0].text
    assert result.is_error and "unknown tool 'send_mail'" in text
    assert "call_agent" not in text and all(name in text for name in DEFAULT_OPERATIONS)
