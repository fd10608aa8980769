"""A tool call sends once, however often LangGraph runs it (issue #90).

``send_message`` keys its SEND by the tool call (its id, within the run's thread and checkpoint
namespace) unless the model gives ``idempotency_key``: a graph with a checkpointer that is
interrupted after its tools node sent and then resumed replays that node with the same tool
calls, a node's ``RetryPolicy`` runs it again, and either way the broker stores one message. A
new tool call is a new message. The agents are driven by ``ScriptedChatModel`` emitting real
tool calls, on both brokers (the ``broker`` fixture).
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode
from langgraph.types import Command, RetryPolicy, interrupt

from langchain_mq9 import Mq9Toolkit
from langchain_mq9.testing import ScriptedChatModel, call, calls
from testbed.support.waiting import until

INBOX = "agent.inbox.once"
WAIT = 30  # a bound for a send on its way (a busy machine's), not a measured time


class Crash(Exception):
    """The tools node dies after the send, as a process would (RetryPolicy runs it again)."""


def crash_once() -> Any:
    crashed: list[bool] = []

    @tool
    def flaky(note: str) -> str:
        """Something that fails the first time."""
        if not crashed:
            crashed.append(True)
            raise Crash("the tools node died after sending")
        return "ok"

    return flaky


def graph(model: ScriptedChatModel, tools: list, **node: Any) -> Any:
    """An agent as a StateGraph: the model, then one tools node running every call of its turn
    (LangGraph's ToolNode), until the model answers in words."""
    bound = model.bind_tools(tools)

    async def agent(state: MessagesState) -> dict:
        return {"messages": [await bound.ainvoke(state["messages"])]}

    def route(state: MessagesState) -> str:
        last = state["messages"][-1]
        return "tools" if isinstance(last, AIMessage) and last.tool_calls else END

    built = StateGraph(MessagesState)
    built.add_node("agent", agent)
    built.add_node("tools", ToolNode(tools, handle_tool_errors=False), **node)
    built.add_edge(START, "agent")
    built.add_conditional_edges("agent", route, ["tools", END])
    built.add_edge("tools", "agent")
    return built.compile(checkpointer=InMemorySaver())


def copies(broker) -> int:
    """What a send run twice under one key stores: once on a broker that keeps keys, twice on
    RobustMQ, which keeps none (the client does not send it the key)."""
    return broker.copies()


async def stored(broker, address: str = INBOX) -> list:
    async with broker.client() as client:
        return await client.query(address, limit=100)


async def made_inbox(broker) -> None:
    async with broker.client() as client:
        await client.mailbox_create(name=INBOX, ttl=0)


def ask_the_user_once_sent(broker) -> Any:
    """``ask_the_user``, asking once the send beside it in the tools node is stored: the
    ToolNode runs a turn's calls at once, and an interrupt raised first cuts a send still on
    its way (CI met it: nothing sent in the first run, nothing for the resume to replay)."""

    @tool
    async def ask_the_user(question: str) -> str:
        """Ask the user and wait for the answer."""
        await until(lambda: stored(broker), timeout=WAIT, what="the send stored")
        return str(interrupt(question))

    return ask_the_user


async def test_a_graph_resumed_after_its_tools_node_sent_stores_one_message(broker):
    await made_inbox(broker)
    model = ScriptedChatModel(
        steps=[
            calls(
                ("send_message", {"mail_address": INBOX, "payload": "the report is ready"}),
                ("ask_the_user", {"question": "anything else?"}),
            ),
            "Sent.",
        ]
    )
    async with Mq9Toolkit(server=broker.url) as kit:
        app = graph(model, [*kit.get_tools(), ask_the_user_once_sent(broker)])
        config = {"configurable": {"thread_id": "thread-1"}}
        first = await app.ainvoke({"messages": [("user", "tell the team")]}, config)
        assert "__interrupt__" in first  # the tools node sent, then stopped at the question
        assert len(await stored(broker)) == 1
        # The resume runs the tools node again, send_message included, with the same call
        await app.ainvoke(Command(resume="no"), config)
    messages = await stored(broker)
    # (RobustMQ keeps no keys: there the replay sends again, as docs/langchain.md says)
    assert [m.payload for m in messages] == [b"the report is ready"] * copies(broker)


async def test_a_tools_node_run_again_by_its_retry_policy_stores_one_message(broker):
    await made_inbox(broker)
    model = ScriptedChatModel(
        steps=[
            calls(
                ("send_message", {"mail_address": INBOX, "payload": "once"}),
                ("flaky", {"note": "x"}),
            ),
            "Sent.",
        ]
    )
    retry = RetryPolicy(max_attempts=2, initial_interval=0.0, jitter=False, retry_on=Crash)
    async with Mq9Toolkit(server=broker.url) as kit:
        app = graph(model, [*kit.get_tools(), crash_once()], retry_policy=retry)
        await app.ainvoke(
            {"messages": [("user", "go")]}, {"configurable": {"thread_id": "thread-2"}}
        )
    assert [m.payload for m in await stored(broker)] == [b"once"] * copies(broker)


async def test_outside_a_graph_a_models_reused_call_id_is_never_merged(broker):
    """#98 item 4: outside a LangGraph graph nothing replays a tool call, and a model may
    number its ids (``call_0`` each answer, as ScriptedChatModel and several local models do):
    two agents' calls, and one agent's two answers, each store their message and are told so
    truly."""
    await made_inbox(broker)
    [tool_call] = call("send_message", mail_address=INBOX, payload="hello").tool_calls
    tool_call = {**tool_call, "id": "call_0", "type": "tool_call"}
    answers = []
    async with (
        Mq9Toolkit(server=broker.url, agent_mailbox="agent.one") as one,
        Mq9Toolkit(server=broker.url, agent_mailbox="agent.two") as two,
    ):
        for kit in (one, two, one):  # two agents, then the first one's next answer
            send = next(t for t in kit.get_tools() if t.name == "send_message")
            answers.append(await send.ainvoke(tool_call))
    assert len({a.artifact for a in answers}) == 3, [a.artifact for a in answers]
    assert all(a.status != "error" for a in answers)
    assert [m.payload for m in await stored(broker)] == [b"hello"] * 3


async def test_two_agents_in_one_thread_numbering_their_calls_alike_send_apart(broker):
    """In graphs with a checkpointer, two agents that share a thread id and whose models number
    their calls alike: a key names its agent, so each stores its message."""
    await made_inbox(broker)
    [tool_call] = call("send_message", mail_address=INBOX, payload="per agent").tool_calls
    tool_call = {**tool_call, "id": "call_0"}
    for agent in ("agent.one", "agent.two"):
        async with Mq9Toolkit(server=broker.url, agent_mailbox=agent) as kit:
            script = ScriptedChatModel(steps=[AIMessage("", tool_calls=[tool_call]), "Sent."])
            app = graph(script, kit.get_tools())
            await app.ainvoke(
                {"messages": [("user", "go")]}, {"configurable": {"thread_id": "shared"}}
            )
    assert len(await stored(broker)) == 2


async def test_the_same_call_in_two_threads_is_two_messages(broker):
    """A call id is one model answer's: two runs (threads) of one script are two sends."""
    await made_inbox(broker)
    [tool_call] = call("send_message", mail_address=INBOX, payload="per thread").tool_calls
    async with Mq9Toolkit(server=broker.url) as kit:
        app = graph(ScriptedChatModel(steps=[AIMessage("", tool_calls=[tool_call]), "Sent."]),
                    kit.get_tools())  # fmt: skip
        for thread in ("a", "b"):
            await app.ainvoke(
                {"messages": [("user", "go")]}, {"configurable": {"thread_id": thread}}
            )
    assert len(await stored(broker)) == 2


async def test_a_key_the_model_gives_keys_its_retries_across_calls(broker):
    """Two tool calls carrying one idempotency_key (a model retrying what it thinks failed)
    store one message."""
    await made_inbox(broker)
    async with Mq9Toolkit(server=broker.url) as kit:
        send = next(t for t in kit.get_tools() if t.name == "send_message")
        args = {"mail_address": INBOX, "payload": "keyed", "idempotency_key": "report-42"}
        answers = []
        for _ in range(2):
            [tool_call] = call("send_message", **args).tool_calls
            answers.append((await send.ainvoke({**tool_call, "type": "tool_call"})).artifact)
        assert (answers[0] == answers[1]) is broker.keeps_keys
    assert [m.payload for m in await stored(broker)] == [b"keyed"] * copies(broker)


async def test_a_plain_invoke_without_a_tool_call_sends_each_time(broker):
    """No tool call, no key: code calling the tool with bare arguments sends every time."""
    await made_inbox(broker)
    async with Mq9Toolkit(server=broker.url) as kit:
        send = next(t for t in kit.get_tools() if t.name == "send_message")
        for _ in range(2):
            await send.ainvoke({"mail_address": INBOX, "payload": "plain"})
    assert len(await stored(broker)) == 2


@pytest.mark.parametrize("key", ["x" * 65])
async def test_a_key_too_long_is_one_line_to_the_model(broker, key):
    async with Mq9Toolkit(server=broker.url) as kit:
        send = next(t for t in kit.get_tools() if t.name == "send_message")
        [tool_call] = call(
            "send_message", mail_address=INBOX, payload="x", idempotency_key=key
        ).tool_calls
        answer = await send.ainvoke({**tool_call, "type": "tool_call"})
    assert answer.status == "error"
    assert "idempotency_key" in answer.content and "\n" not in answer.content.strip()
