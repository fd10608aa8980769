"""call_agent sends once per tool call (issue #90): the same tool call run again (a LangGraph
replay, a retry) is the same task, its request left in the agent's mailbox once; a new call is
a new task. The agent is offline (registered, its mailbox made, nothing serving it), so what
reached it is what waits in its mailbox."""

from __future__ import annotations

from langchain_mq9 import Mq9Toolkit
from langchain_mq9.a2a import wire as w
from langchain_mq9.a2a.server import AgentServer
from langchain_mq9.testing import call
from tests.support.a2a_support import text_graph

AGENT = "agent.offline"


async def offline_agent(client) -> None:
    await client.mailbox_create(name=AGENT, ttl=0)
    await client.agent_register(
        AgentServer(text_graph(str.upper), name=AGENT, client=client).agent_card()
    )


async def waiting(client) -> list:
    return [m for m in await client.query(AGENT, limit=100) if m.header.get(w.HEADER_METHOD)]


async def test_the_same_call_agent_call_twice_is_one_task_sent_once(broker):
    async with broker.client() as client:
        await offline_agent(client)
        async with Mq9Toolkit(server=broker.url, calls=True, agent_mailbox="agent.boss") as kit:
            tool = next(t for t in kit.get_tools() if t.name == "call_agent")
            [tool_call] = call("call_agent", agent=AGENT, task="shout this").tool_calls
            first = await tool.ainvoke({**tool_call, "type": "tool_call"})
            again = await tool.ainvoke({**tool_call, "type": "tool_call"})
            assert first.status != "error", first.content
            assert again.artifact.task_id == first.artifact.task_id
            assert len(await waiting(client)) == 1
            [new_call] = call("call_agent", agent=AGENT, task="shout this").tool_calls
            other = await tool.ainvoke({**new_call, "type": "tool_call"})
            assert other.artifact.task_id != first.artifact.task_id
            assert len(await waiting(client)) == 2
            listed = await next(t for t in kit.get_tools() if t.name == "list_calls").ainvoke({})
            assert '"count":2' in listed.replace(" ", "") or listed.count("task_id") == 2
