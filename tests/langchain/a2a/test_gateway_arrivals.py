"""A call through the gateway is carried by arrivals, not by polls, where the broker announces
them: with every poll interval set to an hour, the served agent must read the request because
it arrived and the gateway must read the answer because it arrived, or the call could not
finish. On memory:// (the engine tells this process) and on nats-server with the bundled
broker announcing (``mq9-dev-broker --announce``). Where nothing is announced (RobustMQ), both
sides poll; forged announcements cost no more looks than polling does."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import httpx
import nats
import pytest
from a2a.client import ClientConfig, ClientFactory
from a2a.client.card_resolver import A2ACardResolver
from a2a.types.a2a_pb2 import TaskState

from mq9_broker import (
    BrokerEngine,
    drop_memory_broker,
    install_memory_broker,
    serve_on_nats,
)
from mq9_platform import Mq9Client
from mq9_platform.a2a import arrivals as arrivals_module
from mq9_platform.a2a import mail as w
from mq9_platform.a2a import server as server_module
from mq9_platform.a2a.arrivals import Arrivals
from mq9_platform.a2a.caller import AgentCaller
from mq9_platform.a2a.server import AgentServer
from mq9_platform.a2a.store import latest
from testbed.support.a2a_support import text_graph, text_io
from testbed.support.robustmq_shaped import RobustMQShapedListener
from tests.langchain.a2a.test_gateway import AGENT, ALICE, gateway
from tests.langchain.a2a.test_gateway import request as a2a_request

HOUR = 3600.0


@pytest.fixture
def no_polls(monkeypatch):
    """Every look that no arrival prompts is an hour away."""
    monkeypatch.setattr(arrivals_module, "POLL_SECONDS", HOUR)
    monkeypatch.setattr(arrivals_module, "SWEEP_SECONDS", HOUR)
    monkeypatch.setattr(server_module, "FETCH_WAIT_MS", int(HOUR * 1000))


@contextlib.asynccontextmanager
async def blocking_client(agent_url: str):
    """An a2a-sdk client whose SendMessage waits for the task to stop (no polling of its own)."""
    headers = {"Authorization": f"Bearer {ALICE}"}
    async with httpx.AsyncClient(headers=headers, timeout=120) as http:
        card = await A2ACardResolver(http, agent_url).get_agent_card()
        config = ClientConfig(httpx_client=http, streaming=False, polling=False)
        yield ClientFactory(config).create(card)


@contextlib.asynccontextmanager
async def announcing(kind: str, nats_url: str | None):
    """A URL of the bundled broker that announces arrivals: memory://, or served on nats."""
    engine = BrokerEngine()
    if kind == "memory":
        name = f"arrivals{uuid.uuid4().hex}"
        install_memory_broker(name, engine)
        try:
            yield f"memory://{name}"
        finally:
            drop_memory_broker(name)
        return
    assert nats_url is not None
    connection = await nats.connect(nats_url)
    service = await serve_on_nats(engine, connection, announce=True)
    try:
        yield nats_url
    finally:
        await service.stop()
        await connection.close()


@contextlib.asynccontextmanager
async def served_upper(kind: str, request, **options):
    """An agent answering in capitals on a broker that announces arrivals, and a second client
    of that broker (the caller's); ``options``: the ``AgentServer``'s."""
    nats_url = request.getfixturevalue("nats_server").url if kind == "nats" else None
    async with (
        announcing(kind, nats_url) as url,
        Mq9Client(url) as agent_client,
        Mq9Client(url) as other,
    ):
        agent = AgentServer(
            text_graph(str.upper),
            name=AGENT,
            client=agent_client,
            worker="w1",
            **text_io() | options,
        )
        async with agent:
            yield agent, other


@pytest.mark.parametrize("kind", ["memory", pytest.param("nats", marks=pytest.mark.slow)])
async def test_the_agent_and_the_gateway_wake_at_arrivals_not_polls(kind, no_polls, request):
    async with (
        served_upper(kind, request) as (agent, gateway_client),
        gateway(gateway_client, send_wait=60) as agent_url,
        blocking_client(agent_url) as alice,
    ):
        await asyncio.sleep(0)  # the agent's reader is waiting (its first look found none)
        for text in ("first", "second"):  # the second after both sides went back to wait
            events = [e async for e in alice.send_message(a2a_request(text))]
            done = events[-1].task
            assert done.status.state == TaskState.TASK_STATE_COMPLETED, done.status
            assert done.artifacts[0].parts[0].text == text.upper()
    assert agent.arrivals.heard


@pytest.mark.parametrize("kind", ["memory", pytest.param("nats", marks=pytest.mark.slow)])
async def test_a_waiting_call_agent_wakes_at_the_answer_not_a_poll(kind, no_polls, request):
    """call_agent's wait (AgentCaller.check) reads the answer because it arrived: with every
    poll an hour away, a call that waits could not finish otherwise."""
    async with served_upper(kind, request) as (_agent, caller_client):
        caller = await AgentCaller(caller_client, "agent.me.calls").open()
        for text in ("first", "second"):
            done = await caller.call(AGENT, text, wait=30)
            assert done.state == w.COMPLETED, done.view()
            assert done.view()["result"] == text.upper()


async def test_without_announcements_both_sides_poll():
    """On a RobustMQ-shaped listener no announcement is listened for: the poll interval holds."""
    async with (
        RobustMQShapedListener(BrokerEngine()) as listener,
        Mq9Client(listener.url) as client,
    ):
        arrivals = await Arrivals(client).start()
        assert arrivals._unsubscribe is None
        assert arrivals.interval == arrivals_module.POLL_SECONDS
        await arrivals.stop()


async def test_forged_announcements_cost_no_more_looks_than_polling(monkeypatch):
    """A peer flooding announcements of a mailbox wakes its waiter a few times in a row at
    most; then the waiter waits its poll time, announcements or not."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(arrivals_module.asyncio, "sleep", sleep)
    arrivals = Arrivals(None)
    with arrivals.bell("mailbox.a") as bell:
        for _ in range(arrivals_module.IDLE_WAKES + 1):
            arrivals._arrived(arrivals_module.digest("mailbox.a"))  # forged: nothing there
            await asyncio.wait_for(bell.wait(HOUR), 30)  # a hang guard only
        assert not slept  # woken each time so far
        arrivals._arrived(arrivals_module.digest("mailbox.a"))
        await asyncio.wait_for(bell.wait(HOUR), 30)
        assert slept == [arrivals_module.POLL_SECONDS]  # this wait took its poll time
        arrivals._arrived(arrivals_module.digest("mailbox.a"))
        await asyncio.wait_for(bell.wait(HOUR, found=True), 30)  # mail found: woken again
        assert slept == [arrivals_module.POLL_SECONDS]


class StallsAfterSending(Mq9Client):
    """A caller's client whose process stalls right after a request leaves for the agent, until
    the agent has answered: every announcement of the answer reaches it before its send
    returns (what a busy machine does now and then: issue #70, 1 s calls in 1 of 30-100)."""

    async def send(self, mail_address, payload, **options):
        msg_id = await super().send(mail_address, payload, **options)
        headers = options.get("headers") or {}
        if headers.get(w.HEADER_METHOD) == w.SEND:
            key = w.TASK_KEY + headers[w.HEADER_TASK_ID]
            async with asyncio.timeout(30):  # a hang guard only
                while True:
                    answer = await latest(self, headers[w.HEADER_REPLY_TO], key)
                    if answer is not None and w.task_state(answer) in w.STOPPED:
                        break
                    await asyncio.sleep(0.01)
        return msg_id


@contextlib.asynccontextmanager
async def upper_with_stalling_caller(kind: str, request):
    """``served_upper``, the second client stalling after each request (``StallsAfterSending``)."""
    nats_url = request.getfixturevalue("nats_server").url if kind == "nats" else None
    async with (
        announcing(kind, nats_url) as url,
        Mq9Client(url) as agent_client,
        StallsAfterSending(url) as stalling,
    ):
        agent = AgentServer(
            text_graph(str.upper), name=AGENT, client=agent_client, worker="w1", **text_io()
        )
        async with agent:
            yield stalling


@pytest.mark.parametrize("kind", ["memory", pytest.param("nats", marks=pytest.mark.slow)])
async def test_an_answer_announced_before_the_send_returns_is_seen(kind, no_polls, request):
    """The race of issue #70: the agent answers (and the broker announces it) while the
    gateway's send has not returned yet. The gateway listens from before the request leaves,
    so that announcement wakes it: with every poll an hour away, the call ends only so."""
    async with (
        upper_with_stalling_caller(kind, request) as gateway_client,
        gateway(gateway_client, send_wait=60) as agent_url,
        blocking_client(agent_url) as alice,
    ):
        for text in ("first", "second"):
            async with asyncio.timeout(30):  # a hang guard: the bug waits an hour
                events = [e async for e in alice.send_message(a2a_request(text))]
            done = events[-1].task
            assert done.status.state == TaskState.TASK_STATE_COMPLETED, done.status
            assert done.artifacts[0].parts[0].text == text.upper()


class StallsInItsFirstLook(Mq9Client):
    """A caller's client whose first look at a task finds nothing, and returns only once the
    agent has answered: the answer is stored (and announced) between a look that missed it and
    the wait after that look."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stalled: set[str] = set()

    async def query(self, mail_address, *, key=None, **options):
        found = await super().query(mail_address, key=key, **options)
        if found or not key or not key.startswith(w.TASK_KEY) or key in self.stalled:
            return found
        self.stalled.add(key)
        async with asyncio.timeout(30):  # a hang guard only
            while True:
                answer = await latest(self, mail_address, key)
                if answer is not None and w.task_state(answer) in w.STOPPED:
                    return found  # what the look saw: nothing yet
                await asyncio.sleep(0.01)


@pytest.mark.parametrize("kind", ["memory", pytest.param("nats", marks=pytest.mark.slow)])
async def test_a_waiting_call_agent_hears_an_answer_stored_during_its_first_look(
    kind, no_polls, request
):
    """The same race for ``AgentCaller.check`` (call_agent's wait): it listens from before its
    first look, so an answer stored while that look was under way wakes the wait after it."""
    nats_url = request.getfixturevalue("nats_server").url if kind == "nats" else None
    async with (
        announcing(kind, nats_url) as url,
        Mq9Client(url) as agent_client,
        StallsInItsFirstLook(url) as caller_client,
    ):
        agent = AgentServer(
            text_graph(str.upper), name=AGENT, client=agent_client, worker="w1", **text_io()
        )
        async with agent:
            caller = await AgentCaller(caller_client, "agent.me.calls").open()
            for text in ("first", "second"):
                async with asyncio.timeout(30):  # a hang guard: the bug waits an hour
                    done = await caller.call(AGENT, text, wait=HOUR)
                assert done.state == w.COMPLETED, done.view()
                assert done.view()["result"] == text.upper()
