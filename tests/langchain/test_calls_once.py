"""call_agent sends once per tool call (issue #90): the same tool call run again by LangGraph (a
replay, a node's RetryPolicy) is the same task, its request left in the agent's mailbox once; a
new call is a new task, and so is every call outside a graph, where nothing replays a call and
a model's ids may repeat (#98). The agent is offline (registered, its mailbox made, nothing
serving it), so what reached it is what waits in its mailbox."""

from __future__ import annotations

from langgraph.types import RetryPolicy

from langchain_mq9 import Mq9Toolkit
from langchain_mq9.serving import AgentServer
from langchain_mq9.testing import ScriptedChatModel, call, calls
from mq9_platform.a2a import mail as w
from testbed.support.a2a_support import text_graph
from tests.langchain.test_sends_once import Crash, copies, crash_once, graph

AGENT = "agent.offline"


async def offline_agent(client) -> None:
    await client.mailbox_create(name=AGENT, ttl=0)
    await client.agent_register(
        AgentServer(text_graph(str.upper), name=AGENT, client=client).agent_card()
    )


async def waiting(client) -> list:
    return [m for m in await client.query(AGENT, limit=100) if m.header.get(w.HEADER_METHOD)]


async def test_a_call_run_again_by_its_graph_is_one_task_and_a_new_call_another(broker):
    async with broker.client() as client:
        await offline_agent(client)
        async with Mq9Toolkit(server=broker.url, calls=True, agent_mailbox="agent.boss") as kit:
            model = ScriptedChatModel(
                steps=[
                    calls(("call_agent", {"agent": AGENT, "task": "shout this"}),
                          ("flaky", {"note": "x"})),
                    "Asked.",
                ]
            )  # fmt: skip
            retry = RetryPolicy(max_attempts=2, initial_interval=0.0, jitter=False, retry_on=Crash)
            app = graph(model, [*kit.get_tools(), crash_once()], retry_policy=retry)
            await app.ainvoke(
                {"messages": [("user", "go")]}, {"configurable": {"thread_id": "calls-1"}}
            )
            # the node ran twice: one task (RobustMQ keeps no keys: its request left twice)
            assert len(await waiting(client)) == copies(broker)
            tool = next(t for t in kit.get_tools() if t.name == "call_agent")
            [tool_call] = call("call_agent", agent=AGENT, task="shout this").tool_calls
            first = await tool.ainvoke({**tool_call, "type": "tool_call"})
            again = await tool.ainvoke({**tool_call, "type": "tool_call"})  # outside a graph
            assert first.status != "error", first.content
            assert again.artifact.task_id != first.artifact.task_id
            assert len(await waiting(client)) == copies(broker) + 2
            listed = await next(t for t in kit.get_tools() if t.name == "list_calls").ainvoke({})
            assert '"count":3' in listed.replace(" ", "") or listed.count("task_id") == 3
