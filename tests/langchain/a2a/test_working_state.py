"""When a served agent reports ``working`` (server.py, ``working_after``): a run that ends within
it reports its end only (no ``working`` kept and delivered: 2 broker requests, and a look of the
caller's, saved); a longer one shows ``working`` while it runs. Each state the server keeps is
seen where it keeps it (its task store's ``put``, then the real broker)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mq9_platform.a2a import mail as w
from mq9_platform.a2a.caller import AgentCaller
from mq9_platform.a2a.server import WORKING_AFTER, AgentServer
from testbed.support.a2a_support import text_graph, text_io
from tests.platform.a2a.calls_support import until_state

AGENT = "agent.upper"
GUARD = 60.0  # seconds: a guard against a hang, never a measure


def served(client, graph, **options) -> tuple[AgentServer, list[str]]:
    """The agent, and the states its server keeps, in order."""
    agent = AgentServer(graph, name=AGENT, client=client, worker="w1", **text_io() | options)
    kept: list[str] = []
    put = agent.store.put

    async def keeping(snapshot: dict[str, Any]) -> None:
        kept.append(w.task_state(snapshot))
        await put(snapshot)

    agent.store.put = keeping  # type: ignore[method-assign]
    return agent, kept


async def test_a_run_that_ends_within_working_after_reports_its_end_only(client):
    """An answer at once (a graph run takes several loop turns, so no count of turns would
    tell): ``completed`` is the only state kept and delivered."""
    agent, kept = served(client, text_graph(str.upper), working_after=GUARD)
    async with agent:
        caller = await AgentCaller(client, "agent.boss.calls").open()
        done = await caller.call(AGENT, "quick", wait=GUARD)
        assert done.state == w.COMPLETED and done.view().get("result") == "QUICK", done.view()
    assert kept == [w.COMPLETED]


async def test_a_run_longer_than_working_after_shows_working_while_it_runs(client):
    go_on = asyncio.Event()

    async def slow(text: str) -> str:
        await go_on.wait()  # until the caller has seen the task working
        return text.upper()

    agent, kept = served(client, text_graph(slow), working_after=0)
    async with agent:
        caller = await AgentCaller(client, "agent.boss.calls").open()
        sent = await caller.call(AGENT, "slow")
        await until_state(caller, sent.task_id, w.WORKING)
        go_on.set()
        done = await caller.check(sent.task_id, wait=GUARD)
        assert done.state == w.COMPLETED and done.view().get("result") == "SLOW", done.view()
    assert kept == [w.WORKING, w.COMPLETED]


async def test_a_cancel_before_working_after_is_kept_and_told_by_the_run(client):
    """A run canceled before any state of it is kept: its end keeps ``canceled`` in the store
    and tells the caller, who never hears "canceled before it started" of a run that began."""
    started = asyncio.Event()

    async def endless(text: str) -> str:
        started.set()
        await asyncio.Event().wait()  # until canceled
        return text

    agent, kept = served(client, text_graph(endless), working_after=GUARD)
    async with agent:
        caller = await AgentCaller(client, "agent.boss.calls").open()
        sent = await caller.call(AGENT, "endless")
        await asyncio.wait_for(started.wait(), GUARD)
        canceled = await caller.cancel(sent.task_id, wait=GUARD)
        assert canceled.state == w.CANCELED, canceled.view()
        assert "before it started" not in str(canceled.view()), canceled.view()
        stored = await agent.store.get(sent.task_id)
        assert stored is not None and w.task_state(stored) == w.CANCELED, stored
    assert kept == [w.CANCELED]


@pytest.mark.parametrize("seconds", [-1.0, float("nan")])
async def test_working_after_is_seconds(client, seconds):
    with pytest.raises(ValueError, match="working_after is seconds"):
        AgentServer(text_graph(str.upper), name=AGENT, client=client, working_after=seconds)


def test_the_default_is_a_tenth_of_a_second():
    """Short beside a model's answer (seconds): ``working`` shows that much later at most."""
    assert WORKING_AFTER == 0.1
