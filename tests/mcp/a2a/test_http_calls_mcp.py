"""mq9-mcp --calls reaches an HTTP A2A agent (a real a2a-sdk server on loopback) with the same
tools: call_agent by card URL, check_call later; the host allow-list is the server's
environment (MQ9_A2A_ALLOW_HOSTS), and without it nothing goes out."""

from __future__ import annotations

import pytest

from testbed.support.mcp_support import ok, served_engine, stdio_session
from tests.platform.a2a.http_agents import a2a_http_agent

pytestmark = pytest.mark.slow


async def test_mq9_mcp_calls_an_http_agent_by_its_card_url(nats_server):
    async with (
        served_engine(nats_server.url),
        a2a_http_agent() as (base, _executor),
        stdio_session(
            "--server", nats_server.url, "--calls", "--agent-mailbox", "agent.me",
            MQ9_A2A_ALLOW_HOSTS="127.0.0.1",
        ) as mcp,
    ):  # fmt: skip
        started = await ok(mcp, "call_agent", agent=base, task="over mcp")
        assert started["agent"] == "Shouter" and started["task_id"]
        done = await ok(mcp, "check_call", task_id=started["task_id"], wait_seconds=20)
        assert done["state"] == "completed" and done["result"] == "OVER MCP"
        assert "not instructions" in done["note"]


async def test_without_an_allow_list_mq9_mcp_reads_no_card(nats_server):
    async with (
        served_engine(nats_server.url),
        a2a_http_agent() as (base, executor),
        stdio_session(
            "--server", nats_server.url, "--calls", "--agent-mailbox", "agent.me",
            MQ9_A2A_ALLOW_HOSTS="",
        ) as mcp,
    ):  # fmt: skip
        result = await mcp.call_tool("call_agent", {"agent": base, "task": "hi"})
        assert result.is_error
        assert "MQ9_A2A_ALLOW_HOSTS" in result.content[0].text
        assert not executor.running.is_set()
