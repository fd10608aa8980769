"""Agent calls over mq9 (issue #24): a LangGraph graph served on its mailbox (langchain_mq9's
``AgentServer``, the LangGraph face of the platform's), called through the
call tools by a scripted model that emits real tool calls, over memory:// and a real
nats-server. Callees offline at send time, callers restarted, questions, cancels, failures,
bad input, and two replicas sharing 200 tasks."""

from __future__ import annotations

import asyncio
import json

import pytest
from langchain.agents import create_agent

from langchain_mq9 import Mq9Toolkit
from langchain_mq9.serving import AgentServer
from langchain_mq9.testing import ScriptedChatModel, call, tool_result
from mq9_platform.a2a import mail as w
from mq9_platform.a2a.caller import AgentCaller
from mq9_platform.a2a.store import TaskStore
from mq9_wire.protocol.errors import ConnectionLost
from testbed.support.a2a_support import Counting, asking, text_graph, text_io
from testbed.support.waiting import until
from tests.platform.a2a.calls_support import until_state

AGENT = "agent.upper"


def served(client, graph, **options) -> AgentServer:
    return AgentServer(graph, name=AGENT, client=client, worker="w1", **text_io() | options)


async def register_offline(client) -> None:
    """The agent's card and mailbox, as serve_agent leaves them, with nobody serving."""
    agent = AgentServer(text_graph(str.upper), name=AGENT, client=client)
    await client.mailbox_create(name=AGENT, ttl=0)
    await client.agent_register(agent.agent_card())


async def caller_agent(broker, steps, opened: list):
    toolkit = Mq9Toolkit(server=broker.url, agent_mailbox="agent.boss", calls=True)
    if broker.names is not None:  # a shared RobustMQ: the toolkit's client gets this test's names
        client = await broker.client().connect()  # a client= toolkit takes an open client
        opened.append(client)
        toolkit = Mq9Toolkit(client=client, agent_mailbox="agent.boss", calls=True)
    model = ScriptedChatModel(steps=steps)
    return toolkit, create_agent(model, toolkit.get_tools())


def tool_calls(state) -> list[str]:
    return [c["name"] for m in state["messages"] for c in getattr(m, "tool_calls", [])]


async def test_delegate_to_an_offline_agent_and_pick_up_the_result_after_a_restart(broker, client):
    await register_offline(client)
    opened: list = []  # clients a shared-RobustMQ run opens for the caller, closed at the end
    # 1. The caller delegates while the agent is offline: submitted, at once.
    toolkit, agent = await caller_agent(
        broker,
        [call("call_agent", agent=AGENT, task="summarize the report"), "Delegated."],
        opened,
    )
    state = await agent.ainvoke({"messages": [("user", "get the report summarized")]})
    sent = tool_result(state["messages"], "call_agent")
    assert sent["state"] == "submitted" and "check_call" in sent["next_step"]
    await toolkit.aclose()  # the caller's process ends

    # 2. The agent comes online and works through its mailbox.
    work = Counting()
    async with served(client, text_graph(work)):
        # 3. A new process of the caller (same agent_mailbox) finds the call and its result.
        toolkit, agent = await caller_agent(
            broker,
            [
                call("list_calls"),
                lambda m: call(
                    "check_call",
                    task_id=tool_result(m, "list_calls")["calls"][0]["task_id"],
                    wait_seconds=10,
                ),
                "Here it is.",
            ],
            opened,
        )
        state = await agent.ainvoke({"messages": [("user", "is my summary there?")]})
        await toolkit.aclose()
    for caller_client in opened:
        await caller_client.close()
    done = tool_result(state["messages"], "check_call")
    assert done["state"] == "completed" and done["result"] == "SUMMARIZE THE REPORT"
    assert done["task_id"] == sent["task_id"] and work.runs == {"summarize the report": 1}
    assert tool_calls(state) == ["list_calls", "check_call"]


async def test_a_question_goes_back_to_the_caller_and_the_answer_resumes_the_graph(client):
    async with served(client, text_graph(asking)):
        caller = await AgentCaller(client, "agent.boss.calls").open()
        asked = await caller.call(AGENT, "greet", wait=10)
        assert asked.state == w.INPUT_REQUIRED and asked.view()["question"] == "Which language?"
        done = await caller.answer(asked.task_id, "French", wait=10)
    assert done.state == w.COMPLETED and done.view()["result"] == "greet in French"
    # The same LangGraph thread: the task's contextId.
    assert done.context_id == asked.context_id == done.task["contextId"]
    assert [m["role"] for m in done.task["history"]] == ["ROLE_USER", "ROLE_USER"]


async def test_cancel_stops_the_running_graph(client):
    started, finished = asyncio.Event(), asyncio.Event()

    async def slow(text: str) -> str:
        started.set()
        await asyncio.sleep(60)
        finished.set()
        return text

    async with served(client, text_graph(slow)):
        caller = await AgentCaller(client, "agent.boss.calls").open()
        running = await caller.call(AGENT, "long job")
        await asyncio.wait_for(started.wait(), 10)
        canceled = await caller.cancel(running.task_id, wait=10)
        assert canceled.state == w.CANCELED, canceled
        store = await TaskStore(client, AGENT).get(running.task_id)
        assert w.task_state(store) == w.CANCELED
    assert not finished.is_set()


async def test_a_cancel_sent_while_the_agent_is_offline_keeps_the_task_from_running(client):
    await register_offline(client)
    caller = await AgentCaller(client, "agent.boss.calls").open()
    queued = await caller.call(AGENT, "never")
    pending = await caller.cancel(queued.task_id)
    assert pending.view()["cancel_pending"] is True and pending.state == w.SUBMITTED
    work = Counting()
    async with served(client, text_graph(work)):
        after = await caller.check(queued.task_id, wait=10)
    assert after.state == w.CANCELED and work.runs == {}


async def test_a_failing_graph_fails_the_task_with_its_error_text(client):
    def broken(text: str) -> str:
        raise RuntimeError(f"no model for {text!r}")

    async with served(client, text_graph(broken)) as server:
        caller = await AgentCaller(client, "agent.boss.calls").open()
        failed = await caller.call(AGENT, "x", wait=10)
        assert failed.state == w.FAILED
        assert failed.view()["reason"] == "RuntimeError: no model for 'x'"
        again = await caller.call(AGENT, "y", wait=10)  # the loop goes on
        assert again.state == w.FAILED
        # the server counts a request once its answer went out: the caller may hear first
        await until(lambda: server.handled >= 2, timeout=10, what="2 handled", every=0.05)
        assert server.handled == 2


async def test_bad_input_gets_a_clear_answer_and_the_loop_survives(client):
    async with served(client, text_graph(str.upper)) as server:
        caller = await AgentCaller(client, "agent.boss.calls").open()
        reply = caller.reply_mailbox

        async def raw(payload, **headers) -> None:
            await client.send(AGENT, payload, headers={w.HEADER_REPLY_TO: reply, **headers})

        await raw("summarize this, please", **{w.HEADER_TASK_ID: "bad1"})  # not JSON
        await raw('{"text": "hi"}', **{w.HEADER_TASK_ID: "bad2"})  # JSON, not A2A
        await raw('{"message": {}}', **{w.HEADER_METHOD: "Frobnicate", w.HEADER_TASK_ID: "bad3"})
        await client.send(AGENT, "no reply address at all")  # nobody to answer: dropped
        answer = w.send_request(w.message("yes", task_id="nosuchtask"))
        await raw(w.json_text(answer), **{w.HEADER_TASK_ID: "nosuchtask"})
        await raw(w.json_text({"id": "gone"}), **{w.HEADER_METHOD: w.GET_TASK})
        good = await caller.call(AGENT, "still there?", wait=10)
        assert good.state == w.COMPLETED and good.view()["result"] == "STILL THERE?"
        # the requests are handled in any order: wait for all seven
        await until(lambda: server.handled >= 7, timeout=20, what="7 handled", every=0.1)

    answers = {
        key: json.loads((await client.query(reply, key=key))[-1].payload)
        for key in ("task.bad1", "task.bad2", "task.bad3", "error.nosuchtask", "error.gone")
    }

    def kept(key: str) -> dict:
        return answers[key]

    for key in ("task.bad1", "task.bad2"):
        assert w.task_state(kept(key)) == w.REJECTED
    assert "not A2A JSON" in w.status_text(kept("task.bad1"))
    assert "needs a message object" in w.status_text(kept("task.bad2"))
    assert "unknown mq9-a2a-method 'Frobnicate'" in w.status_text(kept("task.bad3"))
    assert kept("error.nosuchtask")["error"]["message"] == "task nosuchtask not found"
    assert kept("error.gone")["error"]["message"] == "task gone not found"


@pytest.mark.slow
@pytest.mark.parametrize("tasks", [200])
async def test_two_replicas_share_the_tasks_and_each_runs_once(broker, tasks):
    """Competing replicas (consumer group, one worker name each): every task completes, and
    none runs twice."""
    work = Counting()
    graph = text_graph(work)
    async with broker.client() as one, broker.client() as two, broker.client() as caller_client:
        replicas = [
            AgentServer(graph, name=AGENT, client=c, worker=f"replica-{i}", **text_io())
            for i, c in enumerate((one, two))
        ]
        for replica in replicas:
            await replica.start()
        try:
            caller = await AgentCaller(caller_client, "agent.boss.calls").open()
            ids = [
                await caller.submit(AGENT, w.send_request(w.message(f"t{i}"))) for i in range(tasks)
            ]
            # one deadline for them all (a bound on a busy machine, not a measured time)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 300
            states = [
                await caller.check(task_id, wait=max(deadline - loop.time(), 0.0))
                for task_id in ids
            ]
        finally:
            for replica in replicas:
                await replica.stop()
    assert [s.state for s in states] == [w.COMPLETED] * tasks
    assert [s.view()["result"] for s in states] == [f"T{i}" for i in range(tasks)]
    assert work.runs == {f"t{i}": 1 for i in range(tasks)}
    assert all(r.handled > 0 for r in replicas), [r.handled for r in replicas]


async def test_a_cancel_gets_through_while_every_slot_is_busy(client):
    started: list[str] = []
    running = asyncio.Event()

    async def slow(text: str) -> str:
        started.append(text)
        running.set()
        await asyncio.sleep(60)
        return text

    async with served(client, text_graph(slow), max_concurrency=1):
        caller = await AgentCaller(client, "agent.boss.calls").open()
        busy = await caller.call(AGENT, "first")
        waiting = await caller.call(AGENT, "second")
        await asyncio.wait_for(running.wait(), 10)
        await until_state(caller, busy.task_id, w.WORKING)
        canceled = await caller.cancel(waiting.task_id, wait=10)
        assert canceled.state == w.CANCELED
        assert (await caller.cancel(busy.task_id, wait=10)).state == w.CANCELED
    assert started == ["first"]


async def test_a_call_keeps_its_record_when_only_the_record_failed(client):
    """Once the reply mailbox is there, a call's record and its request go out together: a
    record whose SEND failed while the request went through is written again (without it the
    caller could not find its own call)."""
    caller = await AgentCaller(client, "agent.boss.calls").open()
    write = caller._write_record
    failed: list[str] = []

    async def failing_once(record: dict) -> None:
        if not failed:
            failed.append(record["taskId"])
            raise ConnectionLost("the record's SEND failed (played)")
        await write(record)

    caller._write_record = failing_once
    work = Counting()
    async with served(client, text_graph(work)):
        done = await caller.call(AGENT, "hello", wait=20)
    assert failed == [done.task_id]
    assert done.state == w.COMPLETED and done.view()["result"] == "HELLO"
    assert [c.task_id for c in await caller.calls()] == [done.task_id] and work.runs["hello"] == 1
