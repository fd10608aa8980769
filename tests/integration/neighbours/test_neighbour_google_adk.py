"""mq9-mcp through Google ADK's own MCP client (``google.adk.tools.mcp_tool.McpToolset``): its
tools' Gemini function declarations, both ways ADK builds them (the JSON schema as
``parameters_json_schema``, its default; ``_to_gemini_schema`` without the feature), and each call
through ``McpTool.run_async`` (what ADK's flow calls when the model picks the tool) with a real
``ToolContext``, on ADK's default timeouts (a stdio session's reads: 5 s)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from google.adk.agents import LlmAgent
from google.adk.agents.invocation_context import InvocationContext
from google.adk.features import FeatureName, is_feature_enabled, override_feature_enabled
from google.adk.sessions import InMemorySessionService
from google.adk.tools.mcp_tool import (
    McpToolset,
    StdioConnectionParams,
    StreamableHTTPConnectionParams,
)
from google.adk.tools.tool_context import ToolContext
from mcp import StdioServerParameters

from tests.integration.neighbours.lane import (
    STDIO_CWD,
    TOOLS,
    TRANSPORTS,
    a_long_wait_answers,
    make_the_calls,
    mq9_mcp,
    refused_enums,
    stdio_command,
    stdio_env,
)

pytestmark = pytest.mark.slow

JSON_SCHEMA = FeatureName.JSON_SCHEMA_FOR_FUNC_DECL


@asynccontextmanager
async def toolset(transport: str, nats_url: str) -> AsyncIterator[McpToolset]:
    async with mq9_mcp(transport, nats_url) as url:
        if url is None:
            command, args = stdio_command(nats_url)
            server = StdioServerParameters(command=command, args=args, env=stdio_env(),
                                           cwd=STDIO_CWD)  # fmt: skip
            params: Any = StdioConnectionParams(server_params=server)
        else:
            params = StreamableHTTPConnectionParams(url=url)
        mq9 = McpToolset(connection_params=params, errlog=sys.stderr)
        try:
            yield mq9
        finally:
            await mq9.close()


def declarations(tools: list[Any], json_schema: bool) -> dict[str, dict[str, Any]]:
    """Each tool's FunctionDeclaration as ADK builds it for Gemini, dumped."""
    was = is_feature_enabled(JSON_SCHEMA)
    override_feature_enabled(JSON_SCHEMA, json_schema)
    try:
        return {
            tool.name: tool._get_declaration().model_dump(mode="json", exclude_none=True)
            for tool in tools
        }
    finally:
        override_feature_enabled(JSON_SCHEMA, was)


async def tool_context(mq9: McpToolset) -> ToolContext:
    """The context ADK's flow hands a tool: an invocation of an agent holding the toolset."""
    sessions = InMemorySessionService()
    session = await sessions.create_session(app_name="neighbours", user_id="user")
    agent = LlmAgent(name="coordinator", model="gemini-2.5-flash", tools=[mq9])
    invocation = InvocationContext(
        session_service=sessions, invocation_id="invocation-1", agent=agent, session=session
    )
    return ToolContext(invocation, function_call_id="call-1")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_google_adk_lists_declares_for_gemini_and_calls(nats_server, transport):
    async with toolset(transport, nats_server.url) as mq9:
        tools = await mq9.get_tools()
        assert sorted(tool.name for tool in tools) == TOOLS
        for json_schema in (True, False):
            for name, declaration in declarations(tools, json_schema).items():
                assert refused_enums(declaration, name) == []
                schema = declaration.get("parameters_json_schema", declaration.get("parameters"))
                assert schema and schema["properties"], declaration
        by_name = {tool.name: tool for tool in tools}
        context = await tool_context(mq9)

        async def call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
            result = await by_name[name].run_async(args=arguments, tool_context=context)
            assert not result.get("isError") and "error" not in result, result
            return result["structuredContent"]

        await make_the_calls(call, f"adk.{transport}")
        if transport == "stdio":  # over HTTP ADK waits 300 s (sse_read_timeout)
            await a_long_wait_answers(call, f"adk.{transport}")
