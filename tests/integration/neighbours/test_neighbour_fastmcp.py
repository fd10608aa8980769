"""mq9-mcp through FastMCP's client (``fastmcp.Client``, which Pydantic AI and ``langchain.mcp``
are built on): the tools it lists are the catalog's, and each call goes through
``Client.call_tool`` (FastMCP waits without a timeout by default: ``Client(timeout=...)``)."""

from __future__ import annotations

from typing import Any

import pytest
from fastmcp import Client
from fastmcp.client.transports import StdioTransport

from tests.integration.neighbours.lane import (
    STDIO_CWD,
    TOOLS,
    TRANSPORTS,
    make_the_calls,
    mq9_mcp,
    stdio_command,
    stdio_env,
)

pytestmark = pytest.mark.slow

MAILBOX_TOOLS = ["fetch_messages", "query_messages", "wake_rule"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_fastmcp_lists_and_calls(nats_server, transport):
    async with mq9_mcp(transport, nats_server.url) as url:
        if url is None:
            command, args = stdio_command(nats_server.url)
            target: Any = StdioTransport(command, args, env=stdio_env(), cwd=STDIO_CWD)
        else:
            target = url
        async with Client(target) as mq9:
            listed = {tool.name: tool.input_schema for tool in await mq9.list_tools()}
            assert sorted(listed) == TOOLS
            assert all(listed[name]["required"] == ["mail_address"] for name in MAILBOX_TOOLS)

            async def call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
                result = await mq9.call_tool(name, arguments, raise_on_error=False)
                assert not result.is_error, result.content
                return result.structured_content

            await make_the_calls(call, f"fastmcp.{transport}")
