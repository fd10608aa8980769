"""Every task ends in a state its caller sees (issue #34, item 3): a result or input larger than
the broker carries, JSON nested near Python's recursion limit, and a broker outage of any
length in the middle of a task. A graph runs once per request throughout."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.runnables import RunnableLambda

from mq9_platform import Mq9Client
from mq9_platform.a2a import mail as w
from mq9_platform.a2a.caller import AgentCaller
from mq9_platform.a2a.server import AgentServer, backoff
from mq9_platform.a2a.store import latest
from mq9_wire.protocol.errors import ConnectionLost
from testbed.nats_server import start_nats_server
from testbed.support.a2a_support import text_graph, text_io
from testbed.support.waiting import until
from tests.platform.a2a.calls_support import until_state

AGENT = "agent.big"


def nested(levels: int) -> str:
    return '{"a":' * levels + "1" + "}" * levels


class Runs:
    """A graph's work that counts its runs and answers ``answer(text)``."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.count = 0

    def __call__(self, text: str):
        self.count += 1
        return self.answer(text)


async def call(client, work: Runs, text: str, **options) -> tuple[dict, int]:
    graph = text_graph(work)
    async with AgentServer(graph, name=AGENT, client=client, worker="w1", **text_io() | options):
        caller = await AgentCaller(client, "agent.me.calls").open()
        done = await caller.call(AGENT, text, wait=20)
    return done.view(), work.count


async def test_a_result_larger_than_the_broker_carries_fails_the_task_saying_so(client):
    view, runs = await call(client, Runs(lambda text: "x" * 2_000_000), "make it big")
    assert view["state"] == "failed" and runs == 1
    assert (
        "completed state is" in view["reason"] and "more than the broker carries" in view["reason"]
    )


async def test_an_input_too_large_to_keep_with_its_result_fails_once(client):
    view, runs = await call(client, Runs(str.upper), "y" * 700_000)  # the request and its echo
    assert view["state"] == "failed" and runs == 1
    assert "more than the broker carries" in view["reason"]


@pytest.mark.parametrize("levels", [200, 980])
async def test_a_request_nested_deep_gets_a_rejected_answer(client, levels):
    """Nested past 32 levels: rejected saying so (JSON that Python's json cannot even read,
    as 980 levels may be on a deep stack, is rejected as no A2A JSON)."""
    work = Runs(str.upper)
    async with AgentServer(text_graph(work), name=AGENT, client=client, **text_io()):
        caller = await AgentCaller(client, "agent.me.calls").open()
        payload = '{"message":{"messageId":"1","role":"ROLE_USER","parts":[{"data":'
        payload += nested(levels) + "}]}}"
        headers = {w.HEADER_REPLY_TO: caller.reply_mailbox, w.HEADER_TASK_ID: "deep1"}
        await client.send(AGENT, payload, headers=headers)
        answer = await until(
            lambda: latest(client, caller.reply_mailbox, w.TASK_KEY + "deep1"),
            timeout=20,
            what="the answer to deep1",
            every=0.05,
        )
    assert answer is not None and w.task_state(answer) == w.REJECTED
    reason = w.status_text(answer)
    assert "nests deeper than 32 levels" in reason or "not A2A JSON" in reason
    assert levels > 900 or "nests deeper" in reason
    assert work.count == 0


async def test_a_result_nested_980_deep_fails_the_task(client):
    """A Runnable (no LangGraph checkpoint in between) returns data nested 980 deep: the
    completed state cannot be written as JSON, so the task fails saying so."""
    runs = []

    def deep(text: str) -> dict:
        runs.append(text)
        value: object = 1
        for _ in range(980):
            value = {"a": value}
        return value  # type: ignore[return-value]

    graph = RunnableLambda(deep)
    async with AgentServer(graph, name=AGENT, client=client, to_output=lambda r: r):
        caller = await AgentCaller(client, "agent.me.calls").open()
        done = await caller.call(AGENT, "deep", wait=20)
    assert done.state == w.FAILED and runs == ["deep"]
    assert "nested too deep to be written as JSON" in done.view()["reason"]


# -- outages -------------------------------------------------------------------------------------


def test_the_retry_schedule_lasts_as_long_as_the_broker_is_away():
    """``backoff`` grows to 10 s and stays there. From the 1024th try on (about three hours
    away) it raised OverflowError, which ended the wait and lost the finished result."""
    assert [backoff(attempt) for attempt in range(6)] == [0.2, 0.4, 0.8, 1.6, 3.2, 6.4]
    assert backoff(6) == backoff(1024) == backoff(10**6) == 10.0


@pytest.mark.slow  # a nats-server stopped and started again
@pytest.mark.parametrize("outage", [30, 120])
async def test_a_broker_outage_mid_task_delays_the_result_and_never_loses_it(
    restartable_nats, outage
):
    """nats-server goes away while the graph runs, for ``outage`` seconds of the agent's retry
    schedule (the old code gave up after 4 tries, about 25 s): the finished result waits in
    the agent and is written when the broker is back; the graph ran once. The schedule is
    injected, so the test waits the schedule's steps, not its seconds."""
    waited = [0.0]  # seconds the agent's schedule waited since the broker went away

    def retry_delay(attempt: int) -> float:
        waited[0] += backoff(attempt)
        return 0.01

    release = asyncio.Event()

    async def slow(text: str) -> str:
        await release.wait()
        return text.upper()

    work = Runs(slow)
    url = restartable_nats["url"]
    async with (
        Mq9Client(url, reconnect_delay=0.05) as agent,
        Mq9Client(url, reconnect_delay=0.05) as caller_client,
    ):
        server = AgentServer(text_graph(work), name=AGENT, client=agent, worker="w1",
                             retry_delay=retry_delay, **text_io())  # fmt: skip
        await server.start()
        try:
            caller = await AgentCaller(caller_client, "agent.me.calls").open()
            running = await caller.call(AGENT, "survive", wait=10)
            assert running.state == w.WORKING
            await asyncio.to_thread(restartable_nats["server"].stop)
            waited[0] = 0.0
            release.set()  # the graph finishes while the broker is away
            while waited[0] < outage:
                await asyncio.sleep(0.01)
            restartable_nats["server"] = await asyncio.to_thread(
                start_nats_server, "127.0.0.1", restartable_nats["port"]
            )
            done = await caller.check(running.task_id, wait=30)
        finally:
            await server.stop()
    assert done.state == w.COMPLETED and done.view()["result"] == "SURVIVE"
    assert work.count == 1 and waited[0] >= outage


async def test_a_reply_mailbox_that_is_gone_costs_its_copy_not_a_rerun(client):
    """The broker refuses the caller's copy for good (no such mailbox): the task still ends in
    the store, and the graph ran once (the whole request used to be tried 4 times)."""
    work = Runs(str.upper)
    async with AgentServer(text_graph(work), name=AGENT, client=client, **text_io()) as server:
        request = w.json_text(w.send_request(w.message("orphan")))
        headers = {w.HEADER_REPLY_TO: "nobody.home", w.HEADER_TASK_ID: "orphan1"}
        await client.send(AGENT, request, headers=headers)
        await until(lambda: server.handled >= 1, timeout=20, what="1 handled", every=0.05)
        kept = await server.store.get("orphan1")
    assert server.handled == 1 and work.count == 1
    assert w.task_state(kept) == w.COMPLETED and w.result_text(kept) == "ORPHAN"


async def test_a_request_that_takes_every_replica_down_fails_for_its_caller(client):
    """Issue #42 in serve_agent: a request whose replicas all die on it (here: stopped mid-run,
    the graph never ending) is set aside once past its retry budget; its caller then sees
    ``failed`` saying so, the request waits in the dead-letter mailbox, and the graph ran no
    more than the budget."""
    started = asyncio.Event()
    runs = []

    async def hangs(text: str) -> str:
        runs.append(text)
        started.set()
        await asyncio.Event().wait()  # a replica that dies on it: never a result
        return text

    options = {**text_io(), "reader_options": {"max_deliveries": 2}, "worker": "w1"}
    caller = await AgentCaller(client, "agent.me.calls").open()
    call_id = None
    for _ in range(2):  # two deliveries, each ending with its replica
        started.clear()
        server = AgentServer(text_graph(hangs), name=AGENT, client=client, **options)
        async with server:
            if call_id is None:
                call_id = (await caller.call(AGENT, "crash me", wait=0)).task_id
            await asyncio.wait_for(started.wait(), 20)
            await until_state(caller, call_id, w.WORKING)
    assert (await caller.check(call_id)).view()["state"] == "working"
    async with AgentServer(text_graph(hangs), name=AGENT, client=client, **options):
        done = await caller.check(call_id, wait=20)
    view = done.view()
    assert view["state"] == "failed", view
    assert "set this request aside after 2 deliveries" in view["reason"], view
    assert len(runs) == 2
    dead = await client.query(AGENT + ".dlq")
    assert len(dead) == 1 and w.HEADER_TASK_ID in dead[0].header


async def test_a_final_state_reaches_the_caller_only_once_it_is_stored(client):
    """The store refuses the task's completed state for a while (the broker fails that SEND):
    the caller must not see completed before the store has it, or a replica dying in between
    would leave the caller a result whose request runs again when redelivered."""
    stored = asyncio.Event()
    refused = []
    work = Runs(str.upper)
    server = AgentServer(text_graph(work), name=AGENT, client=client, worker="w1",
                         retry_delay=lambda attempt: 0.02, **text_io())  # fmt: skip
    put = server.store.put

    async def refusing_final_states(snapshot: dict) -> None:
        if w.task_state(snapshot) in w.STOPPED and not stored.is_set():
            refused.append(snapshot["id"])
            raise ConnectionLost("the store's SEND failed (played)")
        await put(snapshot)

    server.store.put = refusing_final_states
    async with server:
        caller = await AgentCaller(client, "agent.me.calls").open()
        call_id = (await caller.call(AGENT, "keep me", wait=0)).task_id
        await until(lambda: len(refused) >= 3, timeout=20, what="the store refusing it thrice")
        assert len(refused) >= 3
        assert (await caller.check(call_id)).state not in w.STOPPED
        stored.set()
        done = await caller.check(call_id, wait=20)
    assert done.view()["state"] == "completed" and done.view()["result"] == "KEEP ME"
    assert w.task_state(await server.store.get(call_id)) == w.COMPLETED and work.count == 1
