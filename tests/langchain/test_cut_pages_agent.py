"""An agent pages through a mailbox whose broker cuts every answer to its answer size (200,000
bytes here: six messages of 30 KB fill one), calling exactly the next page each query_messages
answer names: it reads every message, in msg_id order, each once, and no answer tells it there
is no more before the last (tests/integration/operations/test_cut_answers.py: the same on a
nats-server)."""

from __future__ import annotations

import json
import re

from langchain.agents import create_agent
from langchain_core.messages import ToolMessage

from langchain_mq9 import Mq9Toolkit
from langchain_mq9.testing import ScriptedChatModel, call, tool_result
from testbed.brokers import start_broker, stop_broker

BIG = "x" * 30_000
# 33 messages, a few critical and urgent among the normal
PLAN = ["normal"] * 12 + ["critical"] * 3 + ["normal"] * 12 + ["urgent"] + ["normal"] * 5


def page_on(messages):
    """The model's turn: the next page the last answer names, or done when it names none."""
    step = tool_result(messages, "query_messages").get("next_step") or ""
    found = re.search(r"next page query_messages\(from_id=(\d+)\)", step)
    return call("query_messages", from_id=int(found[1])) if found else "Read them all."


async def test_an_agent_reads_every_message_of_a_cut_mailbox_page_by_page():
    broker, handle = await start_broker("memory", None, max_answer=200_000)
    try:
        async with broker.client() as client:
            await client.mailbox_create(name="agent.me")
            sent = [
                await client.send("agent.me", f"{n:03d}{BIG}", priority=p)
                for n, p in enumerate(PLAN)
            ]
            async with Mq9Toolkit(client=client, agent_mailbox="agent.me") as kit:
                model = ScriptedChatModel(steps=[call("query_messages")] + [page_on] * 40)
                agent = create_agent(model, kit.get_tools())
                state = await agent.ainvoke(
                    {"messages": [("human", "Read all your mail.")]}, {"recursion_limit": 100}
                )
    finally:
        await stop_broker(broker, handle)
    answers = [json.loads(m.content) for m in state["messages"] if isinstance(m, ToolMessage)]
    seen = [m["msg_id"] for answer in answers for m in answer["messages"]]
    assert seen == sent
    assert all("More follow" in a["next_step"] for a in answers[:-1])
    assert state["messages"][-1].content == "Read them all."
