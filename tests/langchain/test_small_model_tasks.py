"""Three tasks users give, played by a scripted model that follows the tools literally.

The offline stand-in for a mid-size open model: it takes the first plausible tool (the one whose
description shares the most words with the task), fills arguments with the task's own words,
follows the first tool an error hint names, and trusts "best match first". Nothing in its script
knows the answer: the tools' descriptions, schemas and error hints lead it, and each test checks
on the broker that the task really got done.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage

from langchain_mq9 import Mq9Toolkit
from langchain_mq9.testing import ScriptedChatModel, call, tool_result
from mq9_broker import memory_broker
from mq9_platform import Mq9Client

ME = "agent.me"
AGENTS = [  # (name, mailbox, what its card says)
    ("billing", "finance.billing", "Billing agent: invoices, payment reminders and refunds."),
    ("support", "support.desk", "Resolves customer support tickets about outages and bugs."),
    ("translator", "lang.translator", "Japanese translation service, English to Japanese."),
]


@pytest.fixture
async def world():
    """A broker whose registry holds three agents, and the user's agent's toolkit."""
    url = f"memory://tasks{uuid.uuid4().hex}"
    async with Mq9Client(url) as client:
        for name, mailbox, description in AGENTS:
            await client.mailbox_create(name=mailbox)
            await client.agent_register(
                {"name": name, "mailbox": mailbox, "description": description}
            )
        async with Mq9Toolkit(server=url, agent_mailbox=ME) as kit:
            register = {t.name: t for t in kit.get_tools()}["agent_register"]
            await register.ainvoke({"capabilities": "plans work for the user"})
            yield client, kit, memory_broker(url.removeprefix("memory://"))


# -- the literal reader ------------------------------------------------------------------------

WORD = re.compile(r"[a-z]+")


def words(text: str) -> set[str]:
    return {w for w in WORD.findall(text.lower()) if len(w) > 3}


def first_plausible_tool(tools: list, task: str) -> Any:
    """The tool whose description shares the most words with the task; the first on a tie."""
    return max(tools, key=lambda t: len(words(t.description) & words(task)))


def fill(tool: Any, text: str) -> dict[str, Any]:
    """Arguments a literal reader gives: every required one, a string ones with the task's
    words, or the example its description quotes; nothing it may leave out."""
    schema = tool.args_schema
    args: dict[str, Any] = {}
    for name in schema.get("required", ()):
        example = re.search(r"e\.g\. '([^']+)'", schema["properties"][name].get("description", ""))
        args[name] = example.group(1) if example else text
    if not args:  # no required argument: the first string one takes the task's words
        first = next(n for n, s in schema["properties"].items() if s["type"] == "string")
        if "mail_address" not in first:
            args[first] = text
    return args


def hinted_tool(messages: list[BaseMessage], tools: list) -> Any:
    """The first tool the newest error's hint (after the dash) names."""
    error = next(m for m in reversed(messages) if isinstance(m, ToolMessage))
    assert error.status == "error", error.content
    hint = error.content.split(" — ", 1)[-1]
    named = [(hint.find(t.name), t) for t in tools if t.name in hint]
    assert named, f"the hint names no tool: {hint}"
    return min(named, key=lambda found: found[0])[1]


def calls_made(state: dict) -> list[tuple[str, dict]]:
    return [
        (c["name"], c["args"])
        for m in state["messages"]
        if isinstance(m, AIMessage)
        for c in m.tool_calls
    ]


def errors(state: dict) -> list[str]:
    return [
        m.content for m in state["messages"] if isinstance(m, ToolMessage) and m.status == "error"
    ]


# -- 1: "tell the billing agent the invoice is overdue, urgently" ------------------------------


async def test_telling_the_billing_agent_reaches_its_mailbox_not_a_new_one(world):
    client, kit, engine = world
    tools = kit.get_tools()
    task = "Tell the billing agent the invoice is overdue, urgently."
    send = {"payload": "The invoice is overdue.", "priority": "urgent"}

    def follow_the_hint(messages):
        tool = hinted_tool(messages, tools)
        return call(tool.name, **fill(tool, "billing"))

    def send_again(messages):
        found = tool_result(messages)
        address = found["agents"][0]["mailbox"] if "agents" in found else found["mail_address"]
        return call("send_message", mail_address=address, **send)

    model = ScriptedChatModel(
        steps=[
            # A small model's guess at the address: the word the user used.
            call("send_message", mail_address="billing", **send),
            follow_the_hint,
            send_again,
            "Done: I told the billing agent, urgently.",
        ]
    )
    state = await create_agent(model, tools).ainvoke({"messages": [("user", task)]})

    assert [name for name, _ in calls_made(state)] == [
        "send_message", "agent_discover", "send_message",
    ]  # fmt: skip
    assert len(errors(state)) == 1 and "agent_discover" in errors(state)[0]
    [delivered] = await client.query("finance.billing")
    assert (delivered.text(), delivered.priority.value) == ("The invoice is overdue.", "urgent")
    assert "billing" not in engine.mailboxes  # no mailbox nobody reads was created


# -- 2: "check whether anyone replied to me" ---------------------------------------------------


async def test_checking_for_replies_finds_them_in_the_own_mailbox_and_takes_nothing(world):
    client, kit, engine = world
    await client.send(ME, {"correlation_id": "invoice-7", "answer": "paid yesterday"})
    tools = kit.get_tools()
    task = "Check whether anyone replied to me."

    def check(messages):
        tool = first_plausible_tool(tools, task)
        return call(tool.name, **fill(tool, task))

    def answer(messages):
        found = tool_result(messages)
        if not found.get("count"):
            return "Nobody replied yet."
        return "Yes: " + "; ".join(json.dumps(m["payload"]) for m in found["messages"])

    model = ScriptedChatModel(steps=[check, answer])
    state = await create_agent(model, tools).ainvoke({"messages": [("user", task)]})

    assert not errors(state)
    assert "paid yesterday" in state["messages"][-1].content
    [(tool, args)] = calls_made(state)
    assert (tool, args) == ("query_messages", {})  # its own mailbox, without naming it
    # A check takes nothing: no group read, and the reply is still there to be handled.
    assert engine.offsets == {} and f"{ME}.claims" not in engine.mailboxes
    handled = await {t.name: t for t in tools}["fetch_messages"].ainvoke({"max_wait_ms": 0})
    assert json.loads(handled)["messages"][0]["payload"]["answer"] == "paid yesterday"


# -- 3: "find someone who can translate Japanese" ----------------------------------------------


async def test_finding_a_translator_from_plain_words(world):
    _, kit, _ = world
    tools = kit.get_tools()
    task = "Find someone who can translate Japanese."

    def search(messages):
        tool = first_plausible_tool(tools, task)
        return call(tool.name, **fill(tool, "translate Japanese"))

    def answer(messages):
        best = tool_result(messages)["agents"][0]  # "best match first"
        return f"{best['name']} can: {best['description']} Its mailbox is {best['mailbox']}."

    model = ScriptedChatModel(steps=[search, answer])
    state = await create_agent(model, tools).ainvoke({"messages": [("user", task)]})

    assert not errors(state)
    assert calls_made(state) == [("agent_discover", {"query": "translate Japanese"})]
    assert state["messages"][-1].content.endswith("Its mailbox is lang.translator.")


# -- and the ack a small model might make up ---------------------------------------------------


async def test_an_ack_of_a_made_up_msg_id_is_refused_with_what_to_fetch_first(world):
    client, kit, engine = world
    await client.send(ME, "work")
    tools = {t.name: t for t in kit.get_tools()}
    refused = await tools["ack_messages"].ainvoke(
        {"name": "ack_messages", "args": {"msg_id": 7}, "id": "1", "type": "tool_call"}
    )
    assert refused.status == "error"
    assert "Call fetch_messages() first and ack a msg_id it returned" in refused.content
    assert engine.offsets == {}  # nothing confirmed on the broker
