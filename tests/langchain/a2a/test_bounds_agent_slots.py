"""A served agent's graphs running at once (``max_concurrency``) are the agent's, in all
(docs/security-broker.md "Whose bound it is", #106): one caller's long task holding every slot
leaves another caller's call waiting its turn in the agent's mailbox, never refused, its
state answered meanwhile, and completed once a slot frees. On memory:// and a real
nats-server (the ``client`` fixture)."""

from __future__ import annotations

import asyncio

from mq9_platform.a2a import mail as w
from mq9_platform.a2a.caller import AgentCaller
from mq9_platform.a2a.server import AgentServer
from testbed.support.a2a_support import text_graph, text_io
from tests.platform.a2a.calls_support import until_state

AGENT = "agent.slots"
WAIT = 30.0  # seconds: a hang guard on a busy machine, never a timing assertion


async def test_a_callers_task_holding_every_slot_leaves_anothers_call_queued_and_answered(client):
    release, running = asyncio.Event(), asyncio.Event()

    async def work(text: str) -> str:
        if text == "mallory's long task":
            running.set()
            await release.wait()
        return text.upper()

    agent = AgentServer(
        text_graph(work), name=AGENT, client=client, worker="w1", max_concurrency=1, **text_io()
    )
    async with agent:
        mallory = await AgentCaller(client, "agent.mallory.calls").open()
        carol = await AgentCaller(client, "agent.carol.calls").open()
        hers = await mallory.call(AGENT, "mallory's long task")
        await asyncio.wait_for(running.wait(), WAIT)
        await until_state(mallory, hers.task_id, w.WORKING)
        mine = await carol.call(AGENT, "carol")
        # every slot is mallory's: carol's call waits its turn, and is answered as waiting
        assert (await carol.check(mine.task_id)).state == w.SUBMITTED
        release.set()
        done = await until_state(carol, mine.task_id, w.COMPLETED)
        assert done.view()["result"] == "CAROL"
        await until_state(mallory, hers.task_id, w.COMPLETED)
