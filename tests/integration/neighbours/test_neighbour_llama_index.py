"""mq9-mcp through LlamaIndex's MCP tools (llama-index-tools-mcp: ``BasicMCPClient`` and
``McpToolSpec``): its FunctionTools converted as LlamaIndex hands them to OpenAI
(``to_openai_tool``, where each optional argument reads "value or null"), each call through
``FunctionTool.acall`` (what a LlamaIndex agent calls with the model's arguments). Its client opens
a session for every call: over stdio every call is a new mq9-mcp process, so a fetch and its ack
are made by two processes (issue #107: the ack still lists what stays unacknowledged)."""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.tools.mcp import BasicMCPClient, McpToolSpec

from tests.integration.neighbours.lane import (
    TOOLS,
    TRANSPORTS,
    make_the_calls,
    mq9_mcp,
    refused_enums,
    stdio_command,
    stdio_env,
)

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_llama_index_lists_converts_and_calls(nats_server, transport):
    async with mq9_mcp(transport, nats_server.url) as url:
        if url is None:
            command, args = stdio_command(nats_server.url)
            client = BasicMCPClient(command, args=args, env=stdio_env())
        else:
            client = BasicMCPClient(url)
        tools = await McpToolSpec(client).to_tool_list_async()
        assert sorted(tool.metadata.name for tool in tools) == TOOLS
        for tool in tools:
            function = tool.metadata.to_openai_tool()["function"]
            assert function["name"] == tool.metadata.name and function["parameters"]["properties"]
            assert refused_enums(function, tool.metadata.name) == []
        by_name = {tool.metadata.name: tool for tool in tools}

        async def call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
            output = await by_name[name].acall(**arguments)
            assert not output.raw_output.is_error, output.content
            return output.raw_output.structured_content

        await make_the_calls(call, f"llamaindex.{transport}")
