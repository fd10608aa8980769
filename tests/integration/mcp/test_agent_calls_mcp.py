"""The call tools in mq9-mcp (--calls): a waiting call_agent sends MCP progress notifications
with the task's state when the client gave a progressToken."""

from __future__ import annotations

import asyncio

import pytest

from langchain_mq9.serving import AgentServer
from mq9_platform import Mq9Client
from testbed.support.a2a_support import text_graph, text_io
from testbed.support.mcp_support import fails, ok, served_engine, stdio_session

pytestmark = pytest.mark.slow


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


async def test_a_read_only_session_reads_calls_and_creates_no_mailbox(nats_server):
    """mq9-mcp --read-only --calls: list_calls and check_call answer, and nothing is created
    (each session used to make a never-expiring reply mailbox)."""
    async with served_engine(nats_server.url) as engine:
        before = set(engine.mailboxes)
        for pinned in ((), ("--agent-mailbox", "agent.me")):
            async with stdio_session(
                "--server", nats_server.url, "--read-only", "--calls", *pinned
            ) as mcp:
                names = {tool.name for tool in (await mcp.list_tools()).tools}
                assert {"check_call", "list_calls"} <= names and "call_agent" not in names
                assert (await ok(mcp, "list_calls"))["count"] == 0
                assert "no call with task id t1" in await fails(mcp, "check_call", task_id="t1")
        assert set(engine.mailboxes) == before
