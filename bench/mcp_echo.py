"""The MCP baselines: one ``echo`` tool served over stdio by the same MCP SDK (its low-level
``Server``, as ``mq9_mcp`` uses), with send_message's input schema.

    python -m bench.mcp_echo             # returns the arguments as they came
    python -m bench.mcp_echo --request   # first makes one raw NATS request (MQ9_SERVER): the
                                         # SEND send_message would make, the same bytes

The ``--request`` server is what any MCP tool that reaches the broker must at least do, so the
difference to ``mq9-mcp`` is what mq9-mcp adds.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import anyio
from mcp import types
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

from mq9_platform.operations.catalog import OPERATIONS
from mq9_wire import protocol as p


def create_echo_server(nc: Any = None) -> Server:
    # The same input and output schemas as mq9-mcp's send_message: an MCP client checks every
    # result against a tool's outputSchema, so the echo must pay that too to be comparable
    tool = types.Tool(
        name="echo",
        description="Return the arguments as they came.",
        input_schema=OPERATIONS["send_message"].input_schema(),
        output_schema=OPERATIONS["send_message"].output_schema,
    )

    async def list_tools(_ctx: Any, _params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[tool])

    async def call_tool(_ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        arguments = params.arguments or {}
        structured = {"sent": True, "msg_id": 0}
        if nc is not None:
            subject = p.send_subject(arguments["mail_address"])
            reply = await nc.request(subject, arguments["payload"].encode(), timeout=5)
            structured["msg_id"] = json.loads(reply.data).get("msg_id", 0)
        text = json.dumps({**arguments, **structured}, separators=(",", ":"))
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=text)], structured_content=structured
        )

    return Server("bench-echo", on_list_tools=list_tools, on_call_tool=call_tool)


async def main() -> None:
    nc = None
    if "--request" in sys.argv[1:]:
        import nats

        nc = await nats.connect(os.environ["MQ9_SERVER"], name="bench-echo")
    server = create_echo_server(nc)
    try:
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())
    finally:
        if nc is not None:
            await nc.close()


if __name__ == "__main__":
    anyio.run(main)
