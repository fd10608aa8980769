"""``tool_prefix`` (issue #26): every tool name, and every mention of a tool in what the model
reads (descriptions, argument descriptions, next steps, error hints), gets the prefix, on the
LangChain tools and on mq9-mcp as a real MCP client lists and calls them."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from pydantic import ValidationError

from langchain_mq9 import Mq9Toolkit
from mq9_platform.operations.catalog import OPERATIONS
from mq9_platform.operations.config import ToolConfig
from testbed.support.mcp_support import fails, ok, stdio_session

PREFIX = "mq9_"
# A tool's bare name, as a word (a prefixed one, mq9_send_message, does not match).
BARE = re.compile(r"\b(?:" + "|".join(OPERATIONS) + r")\b")


def call(tool, **args):
    message = tool.invoke({"name": tool.name, "args": args, "id": "call_1", "type": "tool_call"})
    return message.status, message.content


def test_langchain_tools_carry_the_prefix_everywhere_the_model_reads():
    kit = Mq9Toolkit(
        server=f"memory://prefix{uuid.uuid4().hex}",
        tools=list(OPERATIONS),
        agent_mailbox="agent.me",
        tool_prefix=PREFIX,
    )
    tools = {tool.name: tool for tool in kit.get_tools()}
    assert list(tools) == [PREFIX + name for name in OPERATIONS]
    read = " ".join(t.description + json.dumps(t.args_schema) for t in tools.values())
    assert "mq9_agent_discover" in read and "mq9_check_call" in read
    assert BARE.findall(read) == []

    status, text = call(tools["mq9_create_mailbox"], name="team.box")
    assert status == "success"
    assert "fetch_messages(mail_address='team.box')" in text
    assert BARE.findall(json.loads(text)["next_step"]) == []
    status, text = call(tools["mq9_fetch_messages"], max_wait_ms=0)
    assert status == "error" and "call mq9_agent_register first" in text
    status, text = call(tools["mq9_send_message"], mail_address="nobody.here", payload="hi")
    assert status == "error" and "with mq9_agent_discover" in text and not BARE.findall(text)
    kit.close()


def test_the_default_is_no_prefix_and_a_bad_one_is_refused():
    kit = Mq9Toolkit(server="memory://", tools=["send_message"])
    assert [t.name for t in kit.get_tools()] == ["send_message"]
    for bad in ("mq9 ", "mq9.", "x" * 49):
        with pytest.raises(ValidationError, match="tool_prefix"):
            ToolConfig(tool_prefix=bad)


@pytest.mark.slow  # over a second on a quiet machine (#89)
async def test_an_mcp_client_lists_and_calls_the_prefixed_tools():
    kit = Mq9Toolkit(server="memory://", tools=list(OPERATIONS), tool_prefix=PREFIX)
    described = {t.name: t.description for t in kit.get_tools()}
    async with stdio_session("--server", "memory://", "--calls", "--tool-prefix", PREFIX) as mcp:
        listed = (await mcp.list_tools()).tools
        assert {t.name: t.description for t in listed} == described
        assert BARE.findall(json.dumps([t.model_dump(mode="json") for t in listed])) == []

        created = await ok(mcp, "mq9_create_mailbox", name="team.box")
        assert created["next_step"].endswith("mq9_fetch_messages(mail_address='team.box').")
        refused = await fails(mcp, "send_message", mail_address="team.box", payload="x")
        assert "unknown tool 'send_message'" in refused and "mq9_send_message" in refused
        missing = await fails(mcp, "mq9_send_message", mail_address="nobody.here", payload="x")
        assert "with mq9_agent_discover" in missing


def test_mq9_mcp_refuses_a_bad_prefix_naming_the_flag(capsys):
    from mq9_mcp.cli import build_parser, tool_config

    parser = build_parser()
    with pytest.raises(SystemExit):
        tool_config(parser.parse_args(["--tool-prefix", "my tools"]), parser)
    assert "--tool-prefix: tool_prefix 'my tools'" in capsys.readouterr().err


def test_mq9_mcp_instructions_name_the_prefixed_tools():
    from mq9_mcp.server import create_server
    from mq9_platform.client.connection import Mq9Connection
    from mq9_platform.operations.policy import ToolPolicy

    server = create_server(Mq9Connection("memory://"), ToolPolicy(tool_prefix=PREFIX))
    assert "mq9_agent_register" in server.instructions
    assert BARE.findall(server.instructions) == []
