"""One deadline per call (issue #70): an HTTP A2A agent or card URL that answers a byte at a
time (headers, body, or an event stream that never ends) holds a call, a check, a card read
or a card import no longer than its own deadline; the legitimate agent beside it still
answers. Every slow peer is a real loopback server (slow_peers.py) that drips every 0.2 s,
so a per-read timeout never fires: without the deadline each test would hang until its
guard (``asyncio.timeout``, a hang guard only, far above the deadlines; no timing asserted)."""

from __future__ import annotations

import asyncio
import re

import pytest

from mq9_platform._http.hosts import HostPolicy
from mq9_platform.a2a import mail as w
from mq9_platform.a2a.caller import AgentCaller
from mq9_platform.a2a.http import caller as http_caller
from mq9_platform.a2a.http.caller import AgentUnreachable, fetch_card
from mq9_platform.a2a.http.cards import CardImporter
from tests.platform.a2a.http_agents import a2a_http_agent
from tests.platform.a2a.slow_peers import card_of, dripping

pytestmark = pytest.mark.slow  # waits out real deadlines (a second each) of dripping peers

LOOPBACK = HostPolicy(["127.0.0.1"])
GUARD = 60  # seconds: a hang guard, never a measure


def within_a_second(reason: str) -> bool:
    """The words say a deadline of one second ran out: the time the request was given, the
    second set here less what the call spent before it on a busy machine (0.999 s, say)."""
    found = re.search(r"within ([0-9.]+) s", reason)
    return found is not None and 0 < float(found.group(1)) <= 1


@pytest.mark.parametrize(
    ("how", "streaming"),
    [("headers", True), ("headers", False), ("body", False), ("body", True), ("stream", True)],
)
async def test_a_call_to_an_agent_that_drips_ends_at_its_wait(client, how, streaming):
    async with dripping(how) as peer, a2a_http_agent() as (base, _executor):
        caller = AgentCaller(client, "agent.me.calls", hosts=LOOPBACK)
        async with asyncio.timeout(GUARD):
            held = await caller.call_http(card_of(peer.url, streaming=streaming), "hi", wait=1)
        assert held.state == w.FAILED, held.view()
        assert "had not answered within" in held.view()["reason"]
        assert within_a_second(held.view()["reason"])
        # the call is kept as any other: a check says the same
        assert (await caller.check(held.task_id)).state == w.FAILED
        # the honest agent beside it answers as before
        good = await fetch_card(base, LOOPBACK)
        done = await caller.call_http(good, "hi", wait=20)
        assert done.state == w.COMPLETED and done.view()["result"] == "HI"


async def test_a_call_that_does_not_wait_is_held_no_longer_than_one_request(client, monkeypatch):
    """wait=0: the send alone, within ``REQUEST_TIMEOUT`` in all (set to 1 s here)."""
    monkeypatch.setattr(http_caller, "REQUEST_TIMEOUT", 1.0)
    async with dripping("body") as peer:
        caller = AgentCaller(client, "agent.me.calls", hosts=LOOPBACK)
        async with asyncio.timeout(GUARD):
            held = await caller.call_http(card_of(peer.url, streaming=False), "hi")
        assert held.state == w.FAILED and within_a_second(held.view()["reason"])


async def test_a_stream_that_never_ends_is_followed_until_the_wait_then_checked(client):
    """The agent names its task, then sends nothing but keep-alives: the call returns at its
    wait with the task as the agent last said (working), not failed."""
    async with dripping("task-then-stream") as peer:
        caller = AgentCaller(client, "agent.me.calls", hosts=LOOPBACK)
        async with asyncio.timeout(GUARD):
            running = await caller.call_http(card_of(peer.url, streaming=True), "hi", wait=1)
        assert running.state == w.WORKING, running.view()
        assert "reason" not in running.view()


async def test_a_check_whose_get_task_drips_ends_at_its_wait(client, monkeypatch):
    """GetTask answered a byte at a time: a check returns at its wait with the task as kept
    (the wait was the caller's: no error of the agent's); a check that does not wait gives
    the request ``REQUEST_TIMEOUT`` (1 s here) and then says the agent did not answer."""
    async with dripping("task-then-drip") as peer:
        caller = AgentCaller(client, "agent.me.calls", hosts=LOOPBACK)
        async with asyncio.timeout(GUARD):
            sent = await caller.call_http(card_of(peer.url, streaming=False), "hi")
            assert sent.state == w.WORKING, sent.view()
            waited = await caller.check(sent.task_id, wait=1)
            assert waited.state == w.WORKING and "reason" not in waited.view()
            monkeypatch.setattr(http_caller, "REQUEST_TIMEOUT", 1.0)
            asked = await caller.check(sent.task_id)
        assert asked.state == w.WORKING
        assert "could not be asked" in asked.view()["reason"]
        assert within_a_second(asked.view()["reason"])


@pytest.mark.parametrize("how", ["headers", "body"])
async def test_a_card_sent_a_byte_at_a_time_is_given_up_at_its_deadline(how):
    async with dripping(how) as peer, a2a_http_agent() as (base, _executor):
        async with asyncio.timeout(GUARD):
            with pytest.raises(AgentUnreachable, match="had not sent its card within 1 s"):
                await fetch_card(peer.url, LOOPBACK, timeout=1)
        assert (await fetch_card(base, LOOPBACK))["name"] == "Shouter"


async def test_one_dripping_card_url_delays_only_its_own_import(client):
    """A refresh reads its URLs side by side, each within its own deadline: the good card after
    the dripping one is imported, and the dripping one counts a miss."""
    async with dripping("body") as peer, a2a_http_agent() as (base, _executor):
        importer = CardImporter(client, [peer.url, base], hosts=LOOPBACK, timeout=10)
        async with asyncio.timeout(GUARD):
            names = await importer.refresh()
        assert names == {base: "shouter"}
        assert importer.failures == {peer.url: 1}
        assert "within 10 s" in importer.errors[peer.url]
        found = [a for a in await client.agent_discover() if a.get("name") == "shouter"]
        assert found and found[0]["supportedInterfaces"][0]["url"].startswith(base)


async def test_call_agent_given_a_dripping_card_url_ends_at_its_wait(client, monkeypatch):
    """The tool a model holds: ``call_agent(agent=<card URL>, wait_seconds=1)`` reads the card
    within the call's wait, and says why it gave up; the honest agent's URL still works."""
    from langchain_mq9 import Mq9Toolkit

    monkeypatch.setenv("MQ9_A2A_ALLOW_HOSTS", "127.0.0.1")
    tool = Mq9Toolkit(client=client, tools=["call_agent"]).get_tools()[0]
    async with dripping("body") as peer, a2a_http_agent() as (base, _executor):
        async with asyncio.timeout(GUARD):
            said = await tool.ainvoke({"agent": peer.url, "task": "hi", "wait_seconds": 1})
        assert "no A2A card at" in str(said) and within_a_second(str(said)), said
        done = await tool.ainvoke({"agent": base, "task": "hi", "wait_seconds": 20})
        assert '"completed"' in str(done) and "HI" in str(done), done
