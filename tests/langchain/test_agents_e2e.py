"""Two LangGraph agents talking through mq9 mailboxes, driven by a scripted tool-calling model.

The worker registers; the orchestrator discovers it, creates a private reply mailbox and sends a
task with reply_to; the worker fetches it, replies and acks; the orchestrator fetches the reply.
Runs over memory:// and over a real nats-server, and asserts on the broker's state.
"""

from __future__ import annotations

import json

from langchain.agents import create_agent
from langchain_core.messages import ToolMessage
from langgraph.checkpoint.memory import InMemorySaver

from langchain_mq9 import Mq9Toolkit
from langchain_mq9.testing import ScriptedChatModel, call, tool_result

DOCUMENT = "mq9 gives every agent a persistent mailbox; messages wait until fetched."


def worker_script() -> list:
    def reply(messages):
        task = tool_result(messages, "fetch_messages")["messages"][0]["payload"]
        summary = {"correlation_id": task["correlation_id"], "summary": task["document"][:24]}
        return call("send_message", mail_address=task["reply_to"], payload=summary)

    def ack(messages):
        fetched = tool_result(messages, "fetch_messages")
        return call(
            "ack_messages",
            mail_address="agent.summarizer",
            msg_id=fetched["messages"][-1]["msg_id"],
        )

    return [
        call(
            "agent_register",
            name="agent.summarizer",
            capabilities="summarizes documents and reports",
        ),
        "Registered and ready.",
        call("fetch_messages", mail_address="agent.summarizer", max_wait_ms=0),
        reply,
        ack,
        "Task done and acknowledged.",
    ]


def orchestrator_script() -> list:
    def delegate(messages):
        worker = tool_result(messages, "agent_discover")["agents"][0]["mailbox"]
        reply_to = tool_result(messages, "create_mailbox")["mail_address"]
        task = {
            "task": "summarize",
            "document": DOCUMENT,
            "reply_to": reply_to,
            "correlation_id": "c-1",
        }
        return call("send_message", mail_address=worker, payload=task, priority="urgent")

    def collect(messages):
        reply_to = tool_result(messages, "create_mailbox")["mail_address"]
        return call("fetch_messages", mail_address=reply_to, max_wait_ms=5000)

    def report(messages):
        answer = tool_result(messages, "fetch_messages")["messages"][0]["payload"]
        return f"The worker says: {answer['summary']}"

    return [
        call("agent_discover", query="summarize a report"),
        call("create_mailbox", ttl=600),
        delegate,
        "Delegated; I will check for the answer later.",
        collect,
        report,
    ]


def tool_errors(state) -> list[str]:
    return [
        m.content for m in state["messages"] if isinstance(m, ToolMessage) and m.status == "error"
    ]


async def test_orchestrator_delegates_to_a_discovered_worker_and_gets_the_reply(broker):
    build = create_agent  # LangChain 1.x's agent, with its middleware
    async with (
        Mq9Toolkit(server=broker.url) as worker_kit,
        Mq9Toolkit(server=broker.url) as boss_kit,
    ):
        worker = build(
            ScriptedChatModel(steps=worker_script()),
            worker_kit.get_tools(),
            checkpointer=InMemorySaver(),
        )
        boss = build(
            ScriptedChatModel(steps=orchestrator_script()),
            boss_kit.get_tools(),
            checkpointer=InMemorySaver(),
        )
        worker_thread = {"configurable": {"thread_id": "worker"}}
        boss_thread = {"configurable": {"thread_id": "boss"}}

        state = await worker.ainvoke({"messages": [("human", "Register yourself.")]}, worker_thread)
        assert not tool_errors(state)
        assert "agent.summarizer" in broker.engine.mailboxes  # created by agent_register

        state = await boss.ainvoke(
            {"messages": [("human", "Get this document summarized.")]}, boss_thread
        )
        assert not tool_errors(state)
        reply_to = tool_result(state["messages"], "create_mailbox")["mail_address"]
        task = broker.engine.mailboxes["agent.summarizer"].messages[0]
        assert task.priority.value == "urgent"
        assert json.loads(task.payload)["reply_to"] == reply_to

        # The worker was offline while the task arrived; it comes back and handles it.
        state = await worker.ainvoke({"messages": [("human", "Check your inbox.")]}, worker_thread)
        assert not tool_errors(state)

        state = await boss.ainvoke({"messages": [("human", "Any answer?")]}, boss_thread)
        assert not tool_errors(state)
        assert state["messages"][-1].content == f"The worker says: {DOCUMENT[:24]}"

    # Broker state: the reply sits in the private mailbox, and the worker's group acked the task.
    [reply] = broker.engine.mailboxes[reply_to].messages.values()
    assert json.loads(reply.payload) == {"correlation_id": "c-1", "summary": DOCUMENT[:24]}
    async with broker.client() as client:
        assert await client.fetch("agent.summarizer", group_name="default", max_wait_ms=0) == []
        assert len(await client.query("agent.summarizer")) == 1  # acked, still stored
        [card] = await client.agent_discover(text="summarizes")
        assert card["mailbox"] == "agent.summarizer"


async def test_tool_errors_reach_the_model_and_the_graph_keeps_going(broker):
    async with broker.client() as client:
        await client.mailbox_create(name="team.greeter")
        await client.agent_register(
            {"name": "greeter", "mailbox": "team.greeter", "description": "greets people"}
        )
    script = [
        call("send_message", mail_address="greeter", payload="hello", priority="high"),
        call("send_message", mail_address="greeter", payload="hello"),
        # The error says where addresses come from: the model looks the agent up.
        call("agent_discover", query="greeter"),
        lambda messages: call(
            "send_message",
            mail_address=tool_result(messages, "agent_discover")["agents"][0]["mailbox"],
            payload="hello",
        ),
        "Sent after fixing my mistakes.",
    ]
    async with broker.client() as client, Mq9Toolkit(client=client) as kit:
        agent = create_agent(ScriptedChatModel(steps=script), kit.get_tools())
        state = await agent.ainvoke({"messages": [("human", "Say hello to the greeter")]})
    errors = tool_errors(state)
    assert len(errors) == 2
    assert "priority" in errors[0] and "'critical'" in errors[0]
    assert "mailbox 'greeter' does not exist" in errors[1]
    assert "TTL ran out) — no agent reads this address" in errors[1]
    assert "agent_discover" in errors[1] and "do not create it" in errors[1]
    assert state["messages"][-1].content == "Sent after fixing my mistakes."
    assert "greeter" not in broker.engine.mailboxes  # nothing was created at the guess
    assert [m.payload for m in broker.engine.mailboxes["team.greeter"].messages.values()] == [
        b"hello"
    ]
