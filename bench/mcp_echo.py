"""The MCP baseline: one trivial ``echo`` tool served over stdio by the same MCP SDK (its
low-level ``Server``, as ``mcp_server`` uses), with send_message's input schema.

    python -m bench.mcp_echo
"""

from __future__ import annotations

import json
from typing import Any

import anyio
from mcp import types
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

from langchain_mq9.operations import SendMessageInput


def create_echo_server() -> Server:
    server: Server = Server("bench-echo")
    tool = types.Tool(
        name="echo",
        description="Return the arguments as they came.",
        inputSchema=SendMessageInput.model_json_schema(),
    )

    @server.list_tools()
    async def list_tools() -> list[types.Tool]:
        return [tool]

    @server.call_tool(validate_input=False)
    async def call_tool(name: str, arguments: dict[str, Any] | None) -> types.CallToolResult:
        text = json.dumps(arguments or {}, separators=(",", ":"))
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)])

    return server


async def main() -> None:
    server = create_echo_server()
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main)
