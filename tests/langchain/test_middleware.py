"""Agents built with create_agent: the inbox middleware brings the mail, human-in-the-loop reads
the tools' hints, and one toolkit serves runs that name different agents (docs/langchain.md).

Driven by the scripted model emitting real tool calls, over memory:// and the dev broker on a
real nats-server; the broker's state is read back after each run.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import ClassVar

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import HumanInTheLoopMiddleware
from langchain_core.messages import HumanMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from langchain_mq9 import Mq9InboxMiddleware, Mq9Toolkit
from langchain_mq9.middleware import INBOX_MESSAGE_NAME
from langchain_mq9.testing import ScriptedChatModel, call, calls, tool_result
from mq9_broker import BrokerEngine, drop_memory_broker, install_memory_broker
from mq9_platform.operations.views import DATA_NOTE

SUPPORT = "agent.support"


def inbox(messages) -> dict:
    """The newest mail the middleware brought, as the model reads it."""
    for message in reversed(messages):
        if isinstance(message, HumanMessage) and message.name == INBOX_MESSAGE_NAME:
            return json.loads(message.content.split("\n", 1)[1])
    raise LookupError("no mail in the conversation")


def answer_every_question(messages):
    """One send_message per question in the newest mail, to the reply_to it names."""
    questions = [m["payload"] for m in inbox(messages)["messages"]]
    return calls(
        *[
            ("send_message", {"mail_address": q["reply_to"], "payload": f"re: {q['question']}"})
            for q in questions
        ]
    )


def tool_names(state) -> list[str]:
    return [m.name for m in state["messages"] if isinstance(m, ToolMessage)]


async def unacked(client, address: str = SUPPORT) -> list[bytes]:
    """What the default group would hand out now (a FETCH with a group moves nothing)."""
    found = await client.fetch(address, group_name="default", max_wait_ms=0)
    return [m.payload for m in found]


async def send_question(client, text: str, reply_to: str = "user.ann") -> None:
    await client.send(SUPPORT, json.dumps({"question": text, "reply_to": reply_to}))


@pytest.fixture
async def mailboxes(client):
    await client.mailbox_create(name=SUPPORT)
    await client.mailbox_create(name="user.ann")
    return client


async def test_an_agent_answers_mail_that_arrived_while_it_was_idle(broker, mailboxes):
    client = mailboxes
    await send_question(client, "opening hours?")
    async with Mq9Toolkit(client=client, agent_mailbox=SUPPORT) as toolkit:
        middleware = Mq9InboxMiddleware(toolkit)
        agent = create_agent(
            ScriptedChatModel(steps=[answer_every_question, "Answered."]),
            toolkit.get_tools(),
            middleware=[middleware],
        )
        state = await agent.ainvoke({"messages": [("human", "Work on your mail.")]})

        mail = inbox(state["messages"])
        assert mail["count"] == 1 and mail["note"] == DATA_NOTE  # marked as data, as the tools do
        assert tool_names(state) == ["send_message"]  # the model never called fetch_messages
        assert [m.payload for m in await client.query("user.ann")] == [b"re: opening hours?"]
        assert await unacked(client) == []  # the run ended: the mail is acked

        # Nothing new: the next run brings nothing, and is not shown the old mail again.
        idle = create_agent(
            ScriptedChatModel(steps=["Nothing new."]),
            toolkit.get_tools(),
            middleware=[middleware],
        )
        state = await idle.ainvoke({"messages": [("human", "Anything else?")]})
        with pytest.raises(LookupError):
            inbox(state["messages"])


async def test_mail_is_not_lost_when_a_run_fails_halfway(broker, mailboxes):
    client = mailboxes
    await send_question(client, "refund?")

    def model_fails(messages):
        assert inbox(messages)["count"] == 1  # the mail was brought, then the run dies
        raise RuntimeError("the model's service is down")

    async with Mq9Toolkit(client=client, agent_mailbox=SUPPORT) as toolkit:
        middleware = Mq9InboxMiddleware(toolkit)
        failing = create_agent(
            ScriptedChatModel(steps=[model_fails]), toolkit.get_tools(), middleware=[middleware]
        )
        with pytest.raises(RuntimeError, match="service is down"):
            await failing.ainvoke({"messages": [("human", "Work on your mail.")]})
        assert await unacked(client) == [b'{"question": "refund?", "reply_to": "user.ann"}']

        # The same agent, run again: shown the mail again (its reader handed it out once).
        agent = create_agent(
            ScriptedChatModel(steps=[answer_every_question, "Answered."]),
            toolkit.get_tools(),
            middleware=[middleware],
        )
        await send_question(client, "invoice?")
        state = await agent.ainvoke({"messages": [("human", "Work on your mail.")]})
        questions = [m["payload"]["question"] for m in inbox(state["messages"])["messages"]]
        assert questions == ["refund?", "invoice?"]
        answers = [m.payload for m in await client.query("user.ann")]
        assert answers == [b"re: refund?", b"re: invoice?"]
        assert await unacked(client) == []


async def test_mail_left_by_a_failed_run_comes_to_the_restarted_agent(broker, mailboxes):
    client = mailboxes
    await send_question(client, "refund?")

    def model_fails(messages):
        raise RuntimeError("killed")

    async with Mq9Toolkit(client=client, agent_mailbox=SUPPORT) as toolkit:
        agent = create_agent(
            ScriptedChatModel(steps=[model_fails]),
            toolkit.get_tools(),
            middleware=[Mq9InboxMiddleware(toolkit)],
        )
        with pytest.raises(RuntimeError):
            await agent.ainvoke({"messages": [("human", "Work on your mail.")]})
    async with Mq9Toolkit(client=client, agent_mailbox=SUPPORT) as restarted:
        agent = create_agent(
            ScriptedChatModel(steps=[answer_every_question, "Answered."]),
            restarted.get_tools(),
            middleware=[Mq9InboxMiddleware(restarted)],
        )
        state = await agent.ainvoke({"messages": [("human", "Work on your mail.")]})
    assert inbox(state["messages"])["messages"][0]["payload"]["question"] == "refund?"
    assert [m.payload for m in await client.query("user.ann")] == [b"re: refund?"]
    assert await unacked(client) == []


async def test_mail_beyond_max_messages_comes_at_the_next_model_call(broker, mailboxes):
    client = mailboxes
    for n in range(3):
        await send_question(client, f"q{n}")
    seen = []

    def read(messages):
        seen.append([m["payload"]["question"] for m in inbox(messages)["messages"]])
        return call("query_messages", mail_address="user.ann")

    async with Mq9Toolkit(client=client, agent_mailbox=SUPPORT) as toolkit:
        agent = create_agent(
            ScriptedChatModel(steps=[read, read, "Read."]),
            toolkit.get_tools(),
            middleware=[Mq9InboxMiddleware(toolkit, max_messages=2)],
        )
        await agent.ainvoke({"messages": [("human", "Read your mail.")]})
    assert seen == [["q0", "q1"], ["q2"]]
    assert await unacked(client) == []


async def test_hitl_interrupts_before_delete_message_and_not_before_query_messages(
    broker, mailboxes
):
    client = mailboxes
    await send_question(client, "spam")
    async with Mq9Toolkit(client=client, agent_mailbox=SUPPORT) as toolkit:
        tools = toolkit.get_tools()
        # What the tools' metadata says, the hints MCP declares for the same operations.
        interrupt_on = {t.name: True for t in tools if t.metadata.get("destructiveHint")}
        assert interrupt_on == {"delete_message": True}
        agent = create_agent(
            ScriptedChatModel(
                steps=[
                    call("query_messages"),
                    lambda m: call(
                        "delete_message", msg_id=tool_result(m)["messages"][0]["msg_id"]
                    ),
                    "Deleted the spam.",
                ]
            ),
            tools,
            middleware=[HumanInTheLoopMiddleware(interrupt_on=interrupt_on)],
            checkpointer=InMemorySaver(),
        )
        thread = {"configurable": {"thread_id": "review"}}
        state = await agent.ainvoke({"messages": [("human", "Clean up.")]}, thread)

        [interrupt] = state["__interrupt__"]
        [request] = interrupt.value["action_requests"]
        assert request["name"] == "delete_message"
        assert tool_names(state) == ["query_messages"]  # ran without asking
        assert len(await client.query(SUPPORT)) == 1  # nothing deleted before the review

        state = await agent.ainvoke(Command(resume={"decisions": [{"type": "approve"}]}), thread)
        assert tool_names(state) == ["query_messages", "delete_message"]
        assert await client.query(SUPPORT) == []


@dataclass
class Who:
    agent_mailbox: str


async def test_one_toolkit_serves_two_threads_with_two_mailboxes_from_the_run_context(
    broker, client
):
    for name in ("agent.ann", "agent.bob"):
        await client.mailbox_create(name=name)
        await client.send(name, f"for {name}")
        await client.send(name, f"more for {name}")

    def fetch_then_ack(messages):
        fetched = tool_result(messages, "fetch_messages")
        return call("ack_messages", msg_id=fetched["messages"][0]["msg_id"])

    # One toolkit, no mailbox of its own: each run names its agent in its context.
    async with Mq9Toolkit(client=client, num_msgs=1) as toolkit:
        agent = create_agent(
            ScriptedChatModel(
                steps=[call("fetch_messages", max_wait_ms=0), fetch_then_ack, "Handled one."]
            ),
            toolkit.get_tools(),
            context_schema=Who,
            checkpointer=InMemorySaver(),
        )

        async def run(name: str) -> dict:
            thread = {"configurable": {"thread_id": name}}
            prompt = {"messages": [("human", "Handle one message.")]}
            return await agent.ainvoke(prompt, thread, context=Who(agent_mailbox=name))

        ann, bob = await asyncio.gather(run("agent.ann"), run("agent.bob"))

        for name, state in (("agent.ann", ann), ("agent.bob", bob)):
            assert tool_result(state["messages"], "fetch_messages")["messages"][0]["payload"] == (
                f"for {name}"
            )
            assert tool_result(state["messages"], "ack_messages")["confirmed"] == [0]
            assert await unacked(client, name) == [f"more for {name}".encode()]
        # The toolkit's own policy read nothing: each identity has its own.
        assert toolkit.policy.readings == {}


async def test_a_run_names_the_agent_in_its_config_too(broker, client):
    await client.mailbox_create(name="agent.cat")
    await client.send("agent.cat", "hello cat")
    async with Mq9Toolkit(client=client) as toolkit:
        fetch = next(t for t in toolkit.get_tools() if t.name == "fetch_messages")
        config = {"configurable": {"agent_mailbox": "agent.cat"}}
        result = await fetch.ainvoke({"max_wait_ms": 0}, config)
        assert json.loads(result)["messages"][0]["payload"] == "hello cat"
        with pytest.raises(ValueError, match=r"identity .* is refused: invalid mail_address"):
            await fetch.ainvoke({}, {"configurable": {"agent_mailbox": "Not An Address"}})


async def test_a_long_wait_says_so_on_the_stream(broker, client):
    await client.mailbox_create(name=SUPPORT)
    async with Mq9Toolkit(client=client, agent_mailbox=SUPPORT) as toolkit:
        agent = create_agent(
            ScriptedChatModel(steps=[call("fetch_messages", max_wait_ms=200), "Nothing came."]),
            toolkit.get_tools(),
        )
        prompt = {"messages": [("human", "Wait for mail.")]}
        events = [chunk async for chunk in agent.astream(prompt, stream_mode="custom")]
    assert [e["mq9"]["status"] for e in events] == ["waiting", "back"]
    assert events[0]["mq9"] == {"tool": "fetch_messages", "status": "waiting", "up_to_seconds": 0.2}


def test_the_middleware_refuses_a_read_only_toolkit():
    with pytest.raises(ValueError, match="not read_only"):
        Mq9InboxMiddleware(Mq9Toolkit(server="memory://middleware-ro", read_only=True))


def test_the_middleware_and_the_tools_work_from_sync_code_too():
    name = f"middleware{uuid.uuid4().hex}"
    install_memory_broker(name, BrokerEngine())
    dan = {"configurable": {"agent_mailbox": "agent.dan"}}  # the toolkit has no mailbox
    question = json.dumps({"question": "hi?", "reply_to": "user.ann"})
    try:
        with Mq9Toolkit(server=f"memory://{name}") as toolkit:
            tools = {t.name: t for t in toolkit.get_tools()}
            for box in ("agent.dan", "user.ann"):
                tools["create_mailbox"].invoke({"name": box})
            tools["send_message"].invoke({"mail_address": "agent.dan", "payload": question})
            agent = create_agent(
                ScriptedChatModel(steps=[answer_every_question, "Answered."]),
                toolkit.get_tools(),
                middleware=[Mq9InboxMiddleware(toolkit)],
            )
            agent.invoke({"messages": [("human", "Work on your mail.")]}, dan)

            answers = json.loads(tools["query_messages"].invoke({"mail_address": "user.ann"}))
            assert [m["payload"] for m in answers["messages"]] == ["re: hi?"]
        with Mq9Toolkit(server=f"memory://{name}", agent_mailbox="agent.dan") as restarted:
            fetch = next(t for t in restarted.get_tools() if t.name == "fetch_messages")
            assert json.loads(fetch.invoke({"max_wait_ms": 0}))["count"] == 0  # acked
    finally:
        drop_memory_broker(name)


class RecordingModel(ScriptedChatModel):
    """Keeps the descriptions of the tools each model call was bound with."""

    seen: ClassVar[list] = []

    def bind_tools(self, tools, **kwargs):
        RecordingModel.seen.append({t.name: t.args_schema for t in tools})
        return super().bind_tools(tools, **kwargs)


async def test_the_model_of_each_run_reads_its_own_mailbox_in_the_tools(broker, client):
    await client.mailbox_create(name="agent.ann")
    RecordingModel.seen = []
    async with Mq9Toolkit(client=client, agent_mailbox="agent.home") as toolkit:
        agent = create_agent(
            RecordingModel(steps=[call("fetch_messages"), "Nothing."]),
            toolkit.get_tools(),
            middleware=[Mq9InboxMiddleware(toolkit)],
            context_schema=Who,
        )
        state = await agent.ainvoke(
            {"messages": [("human", "Any mail?")]}, context=Who(agent_mailbox="agent.ann")
        )
    assert tool_result(state["messages"], "fetch_messages")["count"] == 0
    for schemas in RecordingModel.seen:  # each model call of the run
        described = schemas["fetch_messages"]["properties"]["mail_address"]["description"]
        assert described == "Default: 'agent.ann'."
    assert len(RecordingModel.seen) == 2


def test_one_toolkit_serves_two_threads_of_sync_code_at_once():
    name = f"middleware{uuid.uuid4().hex}"
    install_memory_broker(name, BrokerEngine())
    try:
        with Mq9Toolkit(server=f"memory://{name}") as toolkit:
            tools = {t.name: t for t in toolkit.get_tools()}
            for box in ("agent.ann", "agent.bob"):
                tools["create_mailbox"].invoke({"name": box})
                for n in range(3):
                    tools["send_message"].invoke({"mail_address": box, "payload": f"{box} {n}"})
            agent = create_agent(
                ScriptedChatModel(final="Read."),
                toolkit.get_tools(),
                middleware=[Mq9InboxMiddleware(toolkit, max_messages=1)],
                context_schema=Who,
            )

            def read_all(box: str) -> list[str]:
                got = []
                for _ in range(3):
                    state = agent.invoke({"messages": [("human", "Mail?")]}, context=Who(box))
                    got += [m["payload"] for m in inbox(state["messages"])["messages"]]
                return got

            with ThreadPoolExecutor(max_workers=2) as pool:
                ann, bob = pool.map(read_all, ["agent.ann", "agent.bob"])
        assert ann == [f"agent.ann {n}" for n in range(3)]
        assert bob == [f"agent.bob {n}" for n in range(3)]
    finally:
        drop_memory_broker(name)


async def test_a_run_may_name_only_a_mailbox_the_toolkits_allow_list_allows(broker, client):
    await client.mailbox_create(name="team.ann")
    await client.send("team.ann", "for ann")
    async with Mq9Toolkit(client=client, allowed_mailboxes=["team"]) as toolkit:
        fetch = next(t for t in toolkit.get_tools() if t.name == "fetch_messages")
        mine = await fetch.ainvoke({}, {"configurable": {"agent_mailbox": "team.ann"}})
        assert json.loads(mine)["messages"][0]["payload"] == "for ann"
        # Whoever calls a deployed graph may set its config: not a way around the allow-list.
        with pytest.raises(ValueError, match=r"agent\.boss is outside the mailboxes"):
            await fetch.ainvoke({}, {"configurable": {"agent_mailbox": "agent.boss"}})


# -- a run's identity only narrows (issue #52) ----------------------------------------------

ORDERS = "team.orders"  # shared: the billing service reads it with its group "billing"


@dataclass
class Caller:  # what a deployed graph's caller may put in the run's context
    group: str | None = None
    worker: str | None = None


async def billing_sees(client) -> list[bytes]:
    """What billing's consumer group would hand out now (a FETCH with a group moves nothing)."""
    found = await client.fetch(ORDERS, group_name="billing", deliver="earliest", max_wait_ms=0)
    return [m.payload for m in found]


@pytest.mark.parametrize("where", ["configurable", "context"])
async def test_a_caller_cannot_widen_the_run_to_another_services_group(broker, client, where):
    await client.mailbox_create(name=ORDERS)
    orders = [f"order {n}".encode() for n in range(3)]
    for order in orders:
        await client.send(ORDERS, order)
    options = {"agent_mailbox": ORDERS, "allowed_mailboxes": ["team"], "default_group": "helper"}
    async with Mq9Toolkit(client=client, **options) as toolkit:
        # The hostile caller's script: read billing's group, then ack all of it.
        model = ScriptedChatModel(
            steps=[call("fetch_messages"), call("ack_messages", msg_id=2), "Took them."]
        )
        agent = create_agent(
            model,
            toolkit.get_tools(),
            middleware=[Mq9InboxMiddleware(toolkit)],
            context_schema=Caller,
        )
        run = {"messages": [("human", "Any orders?")]}
        if where == "configurable":
            given = {"config": {"configurable": {"group": "billing"}}}
        else:
            given = {"context": Caller(group="billing")}
        with pytest.raises(ValueError, match="group 'billing' is not one this toolkit lets"):
            await agent.ainvoke(run, **given)
        with pytest.raises(ValueError, match="worker 'billing-1' is not one"):
            await agent.ainvoke(run, context=Caller(worker="billing-1"))
        assert len(toolkit.policy.runs) == 0  # no identity was made for the caller
    assert await billing_sees(client) == orders  # billing's reader still gets every order


async def test_a_run_may_name_a_group_the_toolkit_lists(broker, client):
    await client.mailbox_create(name=ORDERS)
    await client.send(ORDERS, "order 0")
    options = {"agent_mailbox": ORDERS, "run_groups": "night,audit", "run_workers": ["w1"]}
    async with Mq9Toolkit(client=client, **options) as toolkit:
        fetch = next(t for t in toolkit.get_tools() if t.name == "fetch_messages")
        config = {"configurable": {"group": "night", "worker": "w1"}}
        result = json.loads(await fetch.ainvoke({"max_wait_ms": 0}, config))
        assert [m["payload"] for m in result["messages"]] == ["order 0"]
        [night] = toolkit.policy.runs
        assert (night.default_group, night.worker) == ("night", "w1")
        # The toolkit's own group and worker are no widening either.
        own = {"configurable": {"group": "default"}}
        assert json.loads(await fetch.ainvoke({"max_wait_ms": 0}, own))["count"] == 1
    assert await billing_sees(client) == [b"order 0"]


# -- the inbox within the answer budget (issue #52) ------------------------------------------


def injections(messages) -> list[HumanMessage]:
    return [m for m in messages if isinstance(m, HumanMessage) and m.name == INBOX_MESSAGE_NAME]


async def test_a_co_agents_large_mail_reaches_the_model_within_the_budget(broker, mailboxes):
    client = mailboxes
    for n in range(20):  # each within every per-part limit, each read as ~33,000 characters
        await client.send(
            SUPPORT,
            "\x01" * 4000,
            key=f"{n}" + '"' * 3990,
            tags=['"' * 100 + str(t) for t in range(40)],
            priority="critical",
        )
    await send_question(client, "refund?")  # a real question behind them
    async with Mq9Toolkit(client=client, agent_mailbox=SUPPORT) as toolkit:
        middleware = Mq9InboxMiddleware(toolkit, max_messages=25)
        steps = [call("agent_discover", query=""), "Done."]  # two model calls a run
        shown: list[dict] = []
        for _ in range(2):  # the run, then the next
            agent = create_agent(
                ScriptedChatModel(steps=steps), toolkit.get_tools(), middleware=[middleware]
            )
            state = await agent.ainvoke({"messages": [("human", "Work on your mail.")]})
            brought = injections(state["messages"])
            assert all(len(m.content) <= 9000 for m in brought)  # as the model reads it
            shown += [json.loads(m.content.split("\n", 1)[1]) for m in brought]
            if len(shown) == 2:  # what did not fit in the first run waits, unacked
                first = [v["msg_id"] for mail in shown for v in mail["messages"]]
                left = [m.msg_id for m in await client.fetch(SUPPORT, group_name="default")]
                assert sorted(first + left) == list(range(21))
    ids = [v["msg_id"] for mail in shown for v in mail["messages"]]
    assert sorted(ids) == list(range(21))  # each shown once, none hidden for good
    assert "more did not fit here: they come with your next model call" in shown[0]["next_step"]
    cut = [v for mail in shown for v in mail["messages"] if "truncated" in v]
    assert len(cut) == 20 and all("payload cut from 4000 to" in v["truncated"] for v in cut)
    assert "query_messages(from_id=<its msg_id>, limit=1)" in shown[0]["next_step"]
    question = next(v for mail in shown for v in mail["messages"] if v["msg_id"] == 20)
    assert question["payload"] == {"question": "refund?", "reply_to": "user.ann"}  # whole
    assert await unacked(client) == []  # each run acked what it was shown
