"""mq9-mcp through LangChain's own MCP client (``langchain.mcp.MCPAdapter``, on FastMCP): its
LangChain tools converted for OpenAI's strict mode (``convert_to_openai_tool``) and for Gemini
(langchain-google-genai's declarations), each call as a tool call that ``create_agent``'s tool
node makes (``tool.ainvoke`` of a ToolCall: the answer's structured content is its artifact).
tests/integration/mcp/test_mcp_langchain.py drives the same client inside an agent."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from fastmcp.client.transports import StdioTransport
from langchain_core._api import LangChainBetaWarning
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_google_genai._function_utils import convert_to_genai_function_declarations

from tests.integration.neighbours.lane import (
    STDIO_CWD,
    TOOLS,
    TRANSPORTS,
    make_the_calls,
    mq9_mcp,
    refused_enums,
    stdio_command,
    stdio_env,
)

with warnings.catch_warnings():  # the namespace says it is in beta, once per process
    warnings.simplefilter("ignore", LangChainBetaWarning)
    from langchain.mcp import MCPAdapter

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_langchain_mcp_lists_converts_and_calls(nats_server, transport):
    async with mq9_mcp(transport, nats_server.url) as url:
        if url is None:
            command, args = stdio_command(nats_server.url)
            target: Any = StdioTransport(command, args, env=stdio_env(), cwd=STDIO_CWD)
        else:
            target = url
        async with MCPAdapter(target) as mq9:
            tools = await mq9.list_tools()
            assert sorted(tool.name for tool in tools) == TOOLS
            for tool in tools:
                strict = convert_to_openai_tool(tool, strict=True)["function"]
                assert strict["strict"] is True
                assert set(strict["parameters"]["required"]) == set(tool.args_schema["properties"])
            [gemini] = convert_to_genai_function_declarations(tools)
            assert refused_enums(gemini.model_dump(mode="json", exclude_none=True)) == []
            by_name = {tool.name: tool for tool in tools}

            async def call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
                message = await by_name[name].ainvoke(
                    {"type": "tool_call", "name": name, "args": arguments, "id": "call-1"}
                )
                assert message.status == "success", message.content
                return message.artifact["structured_content"]

            await make_the_calls(call, f"langchainmcp.{transport}")
