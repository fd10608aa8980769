"""Calls out: our caller (the call tools' engine) reaches a real a2a-sdk HTTP A2A agent on
loopback: completed, failed, input-required answered, canceled; the call kept in the reply
mailbox as a call over mq9 is; and nothing goes to a host the allow-list does not name."""

from __future__ import annotations

import asyncio

import pytest
from http_agents import a2a_http_agent

from mq9_platform._http.hosts import HostPolicy
from mq9_platform.a2a import mail as w
from mq9_platform.a2a.caller import AgentCaller, CallError
from mq9_platform.a2a.http.caller import fetch_card

LOOPBACK = HostPolicy(["127.0.0.1"])


@pytest.mark.slow  # over a second on a quiet machine (#89)
@pytest.mark.parametrize("streaming", [True, False])
async def test_an_http_agent_completes_fails_asks_and_is_canceled(client, streaming):
    async with a2a_http_agent(streaming=streaming) as (base, executor):
        card = await fetch_card(base, LOOPBACK)
        caller = AgentCaller(client, "agent.me.calls", hosts=LOOPBACK)
        done = await caller.call_http(card, "hi", wait=20)
        assert done.state == w.COMPLETED and done.view()["result"] == "HI"
        assert done.transport == "http" and done.agent == "Shouter"

        failed = await caller.call_http(card, "fail", wait=20)
        assert failed.state == w.FAILED and "cannot shout that" in failed.view()["reason"]

        asked = await caller.call_http(card, "ask", wait=20)
        assert asked.state == w.INPUT_REQUIRED and asked.view()["question"] == "How loud?"
        answered = await caller.answer(asked.task_id, "very", wait=20)
        assert answered.state == w.COMPLETED and answered.view()["result"] == "VERY"

        running = await caller.call_http(card, "wait")  # wait=0: back at once
        assert running.state in (w.SUBMITTED, w.WORKING)
        await asyncio.wait_for(executor.running.wait(), 20)
        canceled = await caller.cancel(running.task_id, wait=20)
        assert canceled.state == w.CANCELED

        # Kept in the reply mailbox like any call: a new caller of the same name finds them
        again = AgentCaller(client, "agent.me.calls", hosts=LOOPBACK)
        states = {c.task_id: c.state for c in await again.calls()}
        assert states[done.task_id] == w.COMPLETED and states[running.task_id] == w.CANCELED
        assert (await again.check(answered.task_id)).view()["result"] == "VERY"


async def test_a_call_started_without_waiting_is_picked_up_by_check(client):
    async with a2a_http_agent() as (base, _executor):
        card = await fetch_card(base, LOOPBACK)
        caller = AgentCaller(client, "agent.me.calls", hosts=LOOPBACK)
        started = await caller.call_http(card, "later")
        done = await caller.check(started.task_id, wait=20)
        assert done.state == w.COMPLETED and done.view()["result"] == "LATER"


async def test_an_agent_that_is_gone_leaves_the_call_failed_saying_why(client):
    async with a2a_http_agent() as (base, _executor):
        card = await fetch_card(base, LOOPBACK)
    caller = AgentCaller(client, "agent.me.calls", hosts=LOOPBACK)
    state = await caller.call_http(card, "hi", wait=5)
    assert state.state == w.FAILED
    assert "could not be reached" in state.view()["reason"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/rpc",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.8/rpc",
        "http://[::1]:9/rpc",
        "http://localhost:9/rpc",
        "http://0.0.0.0:9/rpc",
        "http://[::ffff:127.0.0.1]:9/rpc",
        "http://2130706433:9/rpc",  # 127.0.0.1 written as one number
        "http://127.1:9/rpc",
        "file:///etc/passwd",
    ],
)
async def test_a_card_pointing_inside_the_network_is_refused(client, url):
    """A card anyone registered names the interface: with '*' allowed, a public host would
    be reached, but no private, loopback or link-local one (SSRF), and no other scheme."""
    card = {
        "name": "evil",
        "supportedInterfaces": [{"url": url, "protocolBinding": "JSONRPC"}],
    }
    caller = AgentCaller(client, "agent.me.calls", hosts=HostPolicy(["*"]))
    if not url.startswith("http"):
        with pytest.raises(CallError, match="no HTTP A2A interface"):
            await caller.call_http(card, "hi")
        return
    state = await caller.call_http(card, "hi", wait=5)
    assert state.state == w.FAILED
    assert "non-public address" in state.view()["reason"]


async def test_without_an_allow_list_no_http_call_goes_out(client):
    async with a2a_http_agent() as (base, executor):
        card = await fetch_card(base, LOOPBACK)
        caller = AgentCaller(client, "agent.me.calls", hosts=HostPolicy())
        state = await caller.call_http(card, "hi", wait=5)
        assert state.state == w.FAILED and "MQ9_A2A_ALLOW_HOSTS" in state.view()["reason"]
        assert not executor.running.is_set()


async def test_a_host_allowed_by_name_is_reached_at_the_address_checked(client):
    """``localhost`` named in the allow-list: the request goes to an address the check saw
    (tried in order, ::1 then 127.0.0.1 where both resolve), its Host header still the name."""
    async with a2a_http_agent() as (base, _executor):
        card = await fetch_card(base, LOOPBACK)
        named = base.replace("127.0.0.1", "localhost")
        card["supportedInterfaces"][0]["url"] = named + "/rpc"
        caller = AgentCaller(client, "agent.me.calls", hosts=HostPolicy(["localhost"]))
        done = await caller.call_http(card, "by name", wait=20)
        assert done.state == w.COMPLETED and done.view()["result"] == "BY NAME"
