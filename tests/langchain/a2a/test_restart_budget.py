"""A request that takes its replica down is charged alone (issue #52): ``serve_agent``
restarted 8 times around one stuck request sets that request aside, failing its caller, and
runs the 2 requests queued behind it (their graphs never ran before), whose callers get their
results. Each restart is a real one: the server is stopped while the stuck graph runs, and a
new one is started on the mailbox. Over ``memory://`` and the dev broker on a nats-server."""

from __future__ import annotations

import asyncio

from mq9_platform.a2a import mail as w
from mq9_platform.a2a.caller import AgentCaller
from mq9_platform.a2a.server import AgentServer
from mq9_platform.groups.dead_letters import DEFAULT_MAX_DELIVERIES
from testbed.support.a2a_support import text_graph, text_io

AGENT = "agent.billing"
WAIT = 20  # a bound for what takes well under a second here


async def test_a_stuck_request_restarted_around_fails_alone(client):
    await client.mailbox_create(name=AGENT, ttl=0)
    caller = await AgentCaller(client, "agent.boss.calls").open()
    stuck = await caller.call(AGENT, "stuck")
    behind = [await caller.call(AGENT, f"order {i}") for i in range(2)]
    ran: list[str] = []
    stuck_runs = asyncio.Event()

    async def work(text: str) -> str:
        ran.append(text)
        if text == "stuck":
            stuck_runs.set()
            await asyncio.Event().wait()  # never returns: its replica is restarted around it
        return text.upper()

    def replica() -> AgentServer:
        graph = text_graph(work)
        options = {"worker": "w1", "max_concurrency": 1, **text_io()}
        return AgentServer(graph, name=AGENT, client=client, **options)

    for _restart in range(DEFAULT_MAX_DELIVERIES):
        stuck_runs.clear()
        server = await replica().start()
        await asyncio.wait_for(stuck_runs.wait(), WAIT)
        await server.stop()  # the replica goes down while the stuck request runs
    assert ran == ["stuck"] * DEFAULT_MAX_DELIVERIES  # the two behind it never ran

    async with replica():
        for call in behind:
            done = await caller.check(call.task_id, wait=WAIT)
            assert done.state == w.COMPLETED, done
        failed = await caller.check(stuck.task_id, wait=WAIT)
    assert failed.state == w.FAILED, failed.view()
    assert "after 8 deliveries" in str(failed.view())
    assert sorted(ran[DEFAULT_MAX_DELIVERIES:]) == ["order 0", "order 1"]
