"""mq9-mcp carries the MCP client's trace (issue #44): the MCP SDK continues it for each
``tools/call`` (from the request's ``_meta``), and the message a tool sends stores it."""

from __future__ import annotations

from mcp import Client

from mq9_mcp.server import create_server
from mq9_platform.client.connection import Mq9Connection
from testbed.support.mcp_support import ok

INBOX = "agent.writer"


async def test_a_tool_call_over_mcp_carries_the_clients_trace(broker, client, spans, tracer):
    await client.mailbox_create(name=INBOX)
    connection = Mq9Connection(broker.url)
    try:
        async with Client(create_server(connection), read_timeout_seconds=20) as mcp:
            with tracer.start_as_current_span("MCP client's task") as task:
                await ok(mcp, "send_message", mail_address=INBOX, payload="hi")
    finally:
        await connection.aclose()
    [held] = await client.query(INBOX)
    trace_id = f"{task.get_span_context().trace_id:032x}"
    assert held.header["traceparent"].split("-")[1] == trace_id
    send = next(s for s in spans.get_finished_spans() if s.name == f"send {INBOX}")
    assert send.context.trace_id == task.get_span_context().trace_id
