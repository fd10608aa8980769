"""A served agent's own bookkeeping spends none of the idempotency keys its callers can fill
(#106 item 1): its task store, the newest state and the events it leaves with each caller go
with no key, so a caller's flood of tasks can never get the agent's writes refused, and a steady
load never meets the broker's per-identity bound however long it lasts (0 keys a task, where it
spent 3 to 6). Exactly once holds as before: a state sent again replaces its twin under its
key and is read once (numbered), a request handed out again after its task stopped resends the
stopped state only where its caller never got it (test_answer_sent_once.py)."""

from __future__ import annotations

import asyncio

import pytest

from mq9_platform import Mq9Client
from mq9_platform.a2a import mail as w
from mq9_platform.a2a.caller import AgentCaller
from mq9_platform.a2a.server import AgentServer, serve_agent
from testbed.support.a2a_support import asking, text_graph, text_io
from tests.platform.a2a.key_bounds_support import BoundedBroker

AGENT = "agent.keys"


async def test_a_task_spends_none_of_the_agents_keys(broker, client):
    """Tasks run to their end (working states included), read with GetTask, asked and
    answered: the broker holds no key of the agent's (before #106: 3 a quick task, 6 one that
    reported working)."""
    await client.mailbox_create(name=AGENT, ttl=0)
    caller = await AgentCaller(client, "agent.boss.keys").open()
    server = AgentServer(
        text_graph(str.upper), name=AGENT, client=client, worker="w1", working_after=0,
        **text_io(),
    )  # fmt: skip
    async with server:
        for n in range(4):
            done = await caller.call(AGENT, f"task {n}", wait=20)
            assert done.state == w.COMPLETED, done
            assert (await caller.check(done.task_id)).state == w.COMPLETED
    assert len(broker.engine.store.sent_keys) == 0


async def test_a_question_and_its_answer_spend_none_of_the_agents_keys(broker, client):
    await client.mailbox_create(name=AGENT, ttl=0)
    caller = await AgentCaller(client, "agent.boss.asks").open()
    server = AgentServer(text_graph(asking), name=AGENT, client=client, worker="w1", **text_io())
    async with server:
        asked = await caller.call(AGENT, "greet", wait=20)
        assert asked.state == w.INPUT_REQUIRED
        done = await caller.answer(asked.task_id, "French", wait=20)
        assert done.state == w.COMPLETED and done.view()["result"] == "greet in French"
    assert len(broker.engine.store.sent_keys) == 0


@pytest.mark.slow  # a dev broker process
async def test_a_flood_of_tasks_leaves_another_callers_call_answered(tmp_path):
    """Mallory (an agent of her own) sends the served agent four times as many tasks as its
    identity's keys would carry at 3 keys a task; carol's call, sent after them, completes,
    and so does every one of mallory's. Before #106 the agent's 12 keys were full after
    mallory's fourth task: its later writes were refused ("LimitReached ... you hold 12
    keys") and carol's call was never answered."""
    broker = BoundedBroker(tmp_path, "vault", "mallory", "carol", keys_each=12)
    try:
        async with (
            Mq9Client(broker.url, credential=broker.credentials["mallory"]) as mallory,
            Mq9Client(broker.url, credential=broker.credentials["carol"]) as carol,
        ):
            server = await serve_agent(
                text_graph(str.upper),
                name=AGENT,
                server=broker.url,
                client_options={"credential": broker.credentials["vault"]},
                worker="w1",
                **text_io(),
            )
            try:
                flood = await AgentCaller(mallory, "agent.mallory.calls").open()
                sent = [
                    await flood.submit(AGENT, w.send_request(w.message(f"x{n}"))) for n in range(16)
                ]
                calls = await AgentCaller(carol, "agent.carol.calls").open()
                done = await calls.call(AGENT, "hello", wait=30)
                assert done.state == w.COMPLETED, done
                assert done.view()["result"] == "HELLO"
                ended = await asyncio.gather(*(flood.check(t, wait=30) for t in sent))
                assert [e.state for e in ended] == [w.COMPLETED] * len(sent)
            finally:
                await server.stop()
    finally:
        broker.stop()
