"""mq9-mcp through the OpenAI Agents SDK's own MCP client (``agents.mcp``): its tools converted
as an Agent gets them (strict JSON schemas), each call through the function tool's
``on_invoke_tool`` (what a run calls when the model picks the tool), with the SDK's default
5 s ``client_session_timeout_seconds``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from agents import Agent, RunContextWrapper
from agents.mcp import MCPServer, MCPServerStdio, MCPServerStreamableHttp, MCPUtil
from agents.tool_context import ToolContext

from tests.integration.neighbours.lane import (
    STDIO_CWD,
    TOOLS,
    TRANSPORTS,
    a_long_wait_answers,
    answer_of,
    make_the_calls,
    mq9_mcp,
    stdio_command,
    stdio_env,
)

pytestmark = pytest.mark.slow


@asynccontextmanager
async def connected(transport: str, nats_url: str) -> AsyncIterator[MCPServer]:
    """The SDK's MCP server object for mq9-mcp, with every setting left at its default."""
    async with mq9_mcp(transport, nats_url) as url:
        if url is None:
            command, args = stdio_command(nats_url)
            params = {"command": command, "args": args, "env": stdio_env(), "cwd": STDIO_CWD}
            server: MCPServer = MCPServerStdio(params=params)
        else:
            server = MCPServerStreamableHttp(params={"url": url})
        async with server:
            yield server


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_openai_agents_lists_converts_strict_and_calls(nats_server, transport):
    async with connected(transport, nats_server.url) as server:
        agent = Agent(name="coordinator", mcp_servers=[server])
        tools = await MCPUtil.get_all_function_tools(
            [server], convert_schemas_to_strict=True, run_context=RunContextWrapper(None),
            agent=agent,
        )  # fmt: skip
        assert sorted(tool.name for tool in tools) == TOOLS
        # the SDK falls back to a non-strict schema, quietly, where strict conversion fails
        assert [tool.name for tool in tools if not tool.strict_json_schema] == []
        by_name = {tool.name: tool for tool in tools}

        async def call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
            text = json.dumps(arguments)
            context = ToolContext(None, tool_name=name, tool_call_id="call-1", tool_arguments=text)
            output = await by_name[name].on_invoke_tool(context, text)
            return answer_of(output["text"] if isinstance(output, dict) else str(output))

        await make_the_calls(call, f"openaiagents.{transport}")
        await a_long_wait_answers(call, f"openaiagents.{transport}")
