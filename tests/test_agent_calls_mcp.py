"""The call tools in mq9-mcp (--calls): a waiting call_agent sends MCP progress notifications
with the task's state when the client gave a progressToken."""

from __future__ import annotations

import asyncio

from a2a_support import text_graph, text_io
from mcp_support import ok, served_engine, stdio_session

from langchain_mq9 import Mq9Client
from langchain_mq9.agent_server import AgentServer


async def test_a_waiting_call_reports_its_states_as_mcp_progress(nats_server):
    reported_working = asyncio.Event()

    async def slow(text: str) -> str:  # finishes only once the client was told it works
        await asyncio.wait_for(reported_working.wait(), 20)
        return text.upper()

    async with (
        served_engine(nats_server.url),
        Mq9Client(nats_server.url) as client,
        AgentServer(text_graph(slow), name="agent.upper", client=client, **text_io()),
        stdio_session("--server", nats_server.url, "--calls", "--agent-mailbox", "agent.me") as mcp,
    ):
        seen: list[tuple[float, str | None]] = []

        async def progress(done: float, total: float | None, message: str | None) -> None:
            seen.append((done, message))
            if message and message.endswith(" is working"):
                reported_working.set()

        result = await mcp.call_tool(
            "call_agent",
            {"agent": "agent.upper", "task": "hello", "wait_seconds": 20},
            progress_callback=progress,
        )
        assert not result.is_error, result.content
        assert result.structured_content["state"] == "completed"
        assert result.structured_content["result"] == "HELLO"
        listed = await ok(mcp, "list_calls")
        assert [c["state"] for c in listed["calls"]] == ["completed"]
    states = [message.rsplit(" is ", 1)[1] for _, message in seen]
    assert states[-1] == "completed" and "working" in states, seen
    assert [done for done, _ in seen] == list(range(1, len(seen) + 1))
