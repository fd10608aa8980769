"""An agent's tools carry its trace (issue #44): the toolkit's send_message, called by a model
in a run under a span, sync or async, stores the run's context with the message; the inbox
middleware reads a message under a receive span linked to its send."""

from __future__ import annotations

import asyncio

from langchain.agents import create_agent

from langchain_mq9 import Mq9InboxMiddleware, Mq9Toolkit
from langchain_mq9.testing import ScriptedChatModel, call

INBOX = "agent.writer"


def sent_in(message, span) -> bool:
    return message.header["traceparent"].split("-")[1] == f"{span.get_span_context().trace_id:032x}"


async def test_a_tool_call_carries_the_runs_trace_async(client, spans, tracer):
    await client.mailbox_create(name=INBOX)
    model = ScriptedChatModel(steps=[call("send_message", mail_address=INBOX, payload="hi"), "ok"])
    agent = create_agent(model, Mq9Toolkit(client=client).get_tools())
    with tracer.start_as_current_span("agent run") as run:
        await agent.ainvoke({"messages": [("user", "tell the writer")]})
    [held] = await client.query(INBOX)
    assert sent_in(held, run)


async def test_a_tool_call_carries_the_runs_trace_sync(broker, client, spans, tracer):
    """A sync run (its own thread; the tools' calls go to the toolkit's background loop)."""
    await client.mailbox_create(name=INBOX)
    steps = [call("send_message", mail_address=INBOX, payload="hi"), "ok"]
    with Mq9Toolkit(server=broker.url) as kit:
        agent = create_agent(ScriptedChatModel(steps=steps), kit.get_tools())

        def run_agent():
            with tracer.start_as_current_span("agent run") as run:
                agent.invoke({"messages": [("user", "tell the writer")]})
            return run

        run = await asyncio.to_thread(run_agent)
    [held] = await client.query(INBOX)
    assert sent_in(held, run)


async def test_the_inbox_middleware_reads_under_a_span_linked_to_the_send(client, spans, tracer):
    await client.mailbox_create(name=INBOX)
    with tracer.start_as_current_span("planner") as planner:
        await client.send(INBOX, "summarize the report")
    kit = Mq9Toolkit(client=client, agent_mailbox=INBOX)
    agent = create_agent(
        ScriptedChatModel(steps=["done"]), kit.get_tools(), middleware=[Mq9InboxMiddleware(kit)]
    )
    with tracer.start_as_current_span("writer run") as run:
        await agent.ainvoke({"messages": [("user", "work through your inbox")]})
    receive = next(s for s in spans.get_finished_spans() if s.name == f"receive {INBOX}")
    assert receive.context.trace_id == run.get_span_context().trace_id
    assert [link.context.trace_id for link in receive.links] == [
        planner.get_span_context().trace_id
    ]
