"""The MCP server seen from LangChain: its tools loaded by LangChain's own MCP client
(``langchain.mcp.MCPAdapter``, on FastMCP) into a LangGraph agent over stdio and over HTTP, and
the MCP and LangChain surfaces talking to each other over one real broker."""

from __future__ import annotations

import asyncio
import json
import sys
import warnings
from contextlib import contextmanager
from typing import Any

import pytest
from fastmcp.client.transports import StdioTransport
from langchain.agents import create_agent
from langchain_core._api import LangChainBetaWarning
from langchain_core.messages import AIMessage, ToolMessage

from langchain_mq9 import Mq9Toolkit
from langchain_mq9.testing import ScriptedChatModel, call
from mq9_platform import GroupReader, Mq9Client
from mq9_platform.operations.catalog import OPERATIONS, ToolPolicy
from testbed.support.mcp_support import (
    ROOT,
    http_server,
    ok,
    served_engine,
    server_env,
    stdio_session,
)

pytestmark = pytest.mark.slow


def structured(messages: list[Any], tool: str | None = None) -> dict[str, Any]:
    """The newest tool result's structured content (what the MCP server returned)."""
    message = next(
        m for m in reversed(messages) if isinstance(m, ToolMessage) and tool in (None, m.name)
    )
    assert message.status == "success", message.content
    return message.artifact["structured_content"]


async def answer_tasks(client: Mq9Client, mailbox: str) -> None:
    """A worker agent outside the graph: answers each task at its reply_to address. An empty
    FETCH waits its whole max_wait_ms, so a short one is a poll."""
    reader = GroupReader(client, mailbox, "workers")
    while True:
        for message in await reader.fetch(max_wait_ms=100):
            task = message.json()
            await client.send(
                task["reply_to"],
                {"correlation_id": task["correlation_id"], "summary": "Q3 revenue rose 12%"},
            )
            await reader.done(message.msg_id)


with warnings.catch_warnings():  # the namespace says it is in beta, once per process
    warnings.simplefilter("ignore", LangChainBetaWarning)
    from langchain.mcp import MCPAdapter


# langchain.mcp's client gives a tool call as long as it takes: its operator lets mq9-mcp wait
# the 10 s this agent asks for its reply (by default a call waits 3 s, #107)
WAITS = ("--wait-cap-ms", "10000")


@contextmanager
def mq9_mcp(transport: str, broker: str) -> Any:
    """What LangChain's MCP client connects to: mq9-mcp over stdio (it starts the process), or
    the URL of one serving HTTP."""
    if transport == "stdio":
        yield StdioTransport(
            command=sys.executable,
            args=["-m", "mq9_mcp", "--server", broker, *WAITS],
            env=server_env(),
            cwd=str(ROOT),
        )
        return
    with http_server("--server", broker, *WAITS) as url:
        yield url


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_langgraph_agent_uses_the_mcp_tools(nats_server, transport):
    model = ScriptedChatModel(
        steps=[
            call("agent_register", name="agent.coordinator", capabilities="plans reports"),
            call("agent_discover", query="summarizes"),
            lambda messages: call(
                "send_message",
                mail_address=structured(messages)["agents"][0]["mailbox"],
                payload={
                    "task": "summarize q3.pdf",
                    "reply_to": "agent.coordinator",
                    "correlation_id": "c-1",
                },
                priority="high",
            ),
            # The tool error says which priorities exist; the "model" corrects its call.
            lambda messages: call(
                "send_message",
                **{**messages[-2].tool_calls[0]["args"], "priority": "urgent"},
            ),
            call("fetch_messages", mail_address="agent.coordinator", max_wait_ms=10000),
            lambda messages: call(
                "ack_messages",
                mail_address="agent.coordinator",
                msg_id=structured(messages)["messages"][-1]["msg_id"],
            ),
            lambda messages: (
                "Summary: "
                + structured(messages, "fetch_messages")["messages"][0]["payload"]["summary"]
            ),
        ]
    )

    async with served_engine(nats_server.url), Mq9Client(nats_server.url) as worker:
        await worker.mailbox_create(name="agent.summarizer")
        await worker.agent_register(
            {"name": "agent.summarizer", "mailbox": "agent.summarizer",
             "description": "summarizes long documents"}
        )  # fmt: skip
        answering = asyncio.create_task(answer_tasks(worker, "agent.summarizer"))

        async def run_agent() -> dict[str, Any]:
            with mq9_mcp(transport, nats_server.url) as target:
                async with MCPAdapter(target) as adapter:
                    tools = await adapter.list_tools()
                    # The model gets the same schemas through MCP as through the toolkit.
                    assert {t.name: t.args_schema for t in tools} == {
                        name: op.input_schema(ToolPolicy(wait_cap_ms=int(WAITS[1])))
                        for name, op in OPERATIONS.items()
                        if op.allowed(ToolPolicy())  # the call tools need mq9-mcp --calls
                    }
                    hints = tools[0].metadata["mcp"]["tool"]["annotations"]
                    assert hints["destructive_hint"] is False
                    agent = create_agent(model, tools)
                    return await agent.ainvoke(
                        {"messages": [("user", "Get the Q3 report summarized.")]}
                    )

        try:
            # The client's session (start, connect, list tools) has no timeout of its own:
            # bound the whole of it, so a stuck server fails the test instead of hanging CI.
            state = await asyncio.wait_for(run_agent(), timeout=90)
        finally:
            answering.cancel()
            await asyncio.gather(answering, return_exceptions=True)

        messages = state["messages"]
        assert messages[-1].content == "Summary: Q3 revenue rose 12%"
        refused = [m for m in messages if isinstance(m, ToolMessage) and m.status == "error"]
        assert len(refused) == 1 and "'normal', 'urgent' or 'critical'" in refused[0].text
        assert sum(isinstance(m, AIMessage) and bool(m.tool_calls) for m in messages) == 6

        # What the agent did is on the broker.
        (card,) = await worker.agent_discover(text="plans reports")
        assert card["mailbox"] == "agent.coordinator"
        (task,) = await worker.query("agent.summarizer")
        assert task.priority.value == "urgent"
        assert task.json() == {"task": "summarize q3.pdf", "reply_to": "agent.coordinator",
                               "correlation_id": "c-1"}  # fmt: skip
        (reply,) = await worker.query("agent.coordinator")
        assert reply.json()["correlation_id"] == "c-1"
        # The coordinator acked the reply: its group has nothing left to hand out.
        assert await worker.fetch("agent.coordinator", group_name="default", max_wait_ms=0) == []


async def test_mcp_and_langchain_surfaces_talk_both_ways(nats_server):
    async with (
        served_engine(nats_server.url),
        Mq9Toolkit(server=nats_server.url, tools=list(OPERATIONS)) as toolkit,
        stdio_session("--server", nats_server.url) as mcp,
    ):
        lc = {tool.name: tool for tool in toolkit.get_tools()}

        async def lc_call(tool: str, /, **args: Any) -> dict[str, Any]:
            return json.loads(await lc[tool].ainvoke(args))

        async def mcp_call(tool: str, /, **args: Any) -> dict[str, Any]:
            return await ok(mcp, tool, **args)

        # LangChain -> MCP
        await mcp_call("create_mailbox", name="mcp.inbox")
        await lc_call("send_message", mail_address="mcp.inbox", payload={"from": "langchain"},
                      priority="critical")  # fmt: skip
        await lc_call("send_message", mail_address="mcp.inbox", payload="later")
        got = await mcp_call("fetch_messages", mail_address="mcp.inbox")
        assert [m["payload"] for m in got["messages"]] == [{"from": "langchain"}, "later"]
        last = got["messages"][-1]["msg_id"]
        await mcp_call("ack_messages", mail_address="mcp.inbox", msg_id=last)
        assert (await lc_call("fetch_messages", mail_address="mcp.inbox"))["count"] == 0

        # MCP -> LangChain
        await lc_call("create_mailbox", name="lc.inbox")
        await mcp_call("send_message", mail_address="lc.inbox", payload="hello from mcp",
                       key="greeting", tags=["hello"])  # fmt: skip
        got = await lc_call("fetch_messages", mail_address="lc.inbox")
        assert [(m["payload"], m["key"], m["tags"]) for m in got["messages"]] == [
            ("hello from mcp", "greeting", ["hello"])
        ]

        # The registry is shared too.
        await lc_call("agent_register", name="agent.lc", capabilities="answers in haiku")
        found = await mcp_call("agent_discover", query="haiku")
        assert [a["mailbox"] for a in found["agents"]] == ["agent.lc"]

        # Same operation, same broker, same answer from both surfaces.
        for name, args in [("query_messages", {"mail_address": "lc.inbox"}),
                           ("agent_discover", {"query": "haiku"})]:  # fmt: skip
            assert await lc_call(name, **args) == await mcp_call(name, **args)


async def test_a_missing_or_wrong_token_is_said_so_to_a_langchain_user():
    """The 401's body is a JSON-RPC error (``http/auth.py``), whose message the MCP client
    under ``langchain.mcp`` raises: words saying what is wrong, not "Server returned an error
    response"; the header and status stay the SDK's bearer auth's."""
    from fastmcp.client.transports import StreamableHttpTransport
    from mcp.shared.exceptions import MCPError

    token = "s" * 40
    with http_server("--server", "memory://", "--auth-token", token) as url:
        said = {}
        for case, headers in {
            "no bearer token was sent": {},
            "the bearer token is wrong": {"Authorization": "Bearer nope"},
            "is not 'Bearer <token>'": {"Authorization": token},
        }.items():
            with pytest.raises(MCPError) as refused:
                async with MCPAdapter(StreamableHttpTransport(url, headers=headers)) as mq9:
                    await mq9.list_tools()
            said[case] = str(refused.value)
        for case, text in said.items():
            assert case in text and "--auth-token" in text, text
        right = {"Authorization": f"Bearer {token}"}
        async with MCPAdapter(StreamableHttpTransport(url, headers=right)) as mq9:
            assert len(await mq9.list_tools()) == len(tool_names())


def tool_names() -> list[str]:
    return [name for name, op in OPERATIONS.items() if op.allowed(ToolPolicy())]
