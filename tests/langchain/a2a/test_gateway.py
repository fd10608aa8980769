"""Calls in: a real a2a-sdk client (JSON-RPC over HTTP, on loopback) calls an mq9 agent through
the gateway while the agent is offline, gets the task's id at once, and the result once the
agent starts; a second tenant can neither get, list, answer nor cancel the first one's task;
a caller without a credential gets nothing."""

from __future__ import annotations

import asyncio
import contextlib
import secrets

import httpx
import pytest
from a2a.client import ClientConfig, ClientFactory
from a2a.client.card_resolver import A2ACardResolver
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    SubscribeToTaskRequest,
    TaskState,
)
from a2a.utils.errors import A2AError

from mq9_platform.a2a.gateway import API_KEY, API_KEY_HEADER, Tenants, gateway_app
from mq9_platform.a2a.server import AgentServer
from testbed.ports import unclaimed_port
from testbed.support.a2a_support import asking, text_graph, text_io
from testbed.support.waiting import until
from tests.platform.a2a.http_agents import serve_http

AGENT = "agent.echo"
ALICE, BOB = secrets.token_hex(16), secrets.token_hex(16)


@contextlib.asynccontextmanager
async def gateway(client, scheme: str = "bearer", **options):
    port = unclaimed_port()
    base = f"http://127.0.0.1:{port}"
    tenants = Tenants({"alice": ALICE, "bob": BOB}, scheme=scheme)
    app = await gateway_app(client, [AGENT], tenants=tenants, public_url=base, **options)
    async with serve_http(app, port):
        yield base + "/a2a/" + AGENT


@contextlib.asynccontextmanager
async def a2a_client(agent_url: str, token: str | None, *, streaming=False, scheme="bearer"):
    headers = {}
    if token is not None:
        headers = (
            {"Authorization": f"Bearer {token}"} if scheme == "bearer" else {API_KEY_HEADER: token}
        )
    async with httpx.AsyncClient(headers=headers, timeout=30) as http:
        card = await A2ACardResolver(http, agent_url).get_agent_card()
        config = ClientConfig(httpx_client=http, streaming=streaming, polling=not streaming)
        client = ClientFactory(config).create(card)
        yield client, card


def request(text: str, task_id: str = "") -> SendMessageRequest:
    msg = Message(message_id=secrets.token_hex(4), role=Role.ROLE_USER, parts=[Part(text=text)])
    if task_id:
        msg.task_id = task_id
    return SendMessageRequest(message=msg)


async def until_stopped(a2a, task_id: str):
    """The task once it is neither submitted nor working."""
    running = (TaskState.TASK_STATE_SUBMITTED, TaskState.TASK_STATE_WORKING)

    async def stopped():
        task = await a2a.get_task(GetTaskRequest(id=task_id))
        return task if task.status.state not in running else None

    return await until(stopped, timeout=20, what=f"task {task_id} stopped", every=0.05)


def served(client, graph) -> AgentServer:
    return AgentServer(graph, name=AGENT, client=client, worker="w1", **text_io())


async def test_an_offline_agent_is_called_through_the_gateway_and_answers_once_started(client):
    async with gateway(client) as url, a2a_client(url, ALICE) as (alice, card):
        assert card.supported_interfaces[0].url == url
        assert "bearer" in card.security_schemes
        events = [e async for e in alice.send_message(request("hello"))]
        submitted = events[-1].task
        assert submitted.status.state == TaskState.TASK_STATE_SUBMITTED and submitted.id
        assert "mq9" not in submitted.metadata  # our bookkeeping stays ours
        async with served(client, text_graph(str.upper)):
            done = await until_stopped(alice, submitted.id)
        assert done.status.state == TaskState.TASK_STATE_COMPLETED
        assert done.artifacts[0].parts[0].text == "HELLO"
        listed = await alice.list_tasks(ListTasksRequest())
        assert [t.id for t in listed.tasks] == [submitted.id]


async def test_a_stream_gives_the_task_id_at_once_and_the_result_when_the_agent_starts(client):
    async with (
        gateway(client) as url,
        a2a_client(url, ALICE, streaming=True) as (alice, _card),
    ):
        seen = []

        async def follow():
            async for event in alice.send_message(request("stream me")):
                seen.append(event.task)

        following = asyncio.create_task(follow())
        await until(lambda: seen, timeout=20, what="the first event", every=0.05)
        assert seen[0].status.state == TaskState.TASK_STATE_SUBMITTED  # before the agent runs
        async with served(client, text_graph(str.upper)):
            await asyncio.wait_for(following, 60)
        assert seen[-1].status.state == TaskState.TASK_STATE_COMPLETED
        assert seen[-1].artifacts[0].parts[0].text == "STREAM ME"


async def test_a_resubscribe_follows_a_task_sent_while_the_agent_was_offline(client):
    async with (
        gateway(client) as url,
        a2a_client(url, ALICE) as (sender, _card),
        a2a_client(url, ALICE, streaming=True) as (follower, _card2),
    ):
        task = [e async for e in sender.send_message(request("later"))][-1].task
        seen = []

        async def follow():
            async for event in follower.subscribe(SubscribeToTaskRequest(id=task.id)):
                seen.append(event.task)

        following = asyncio.create_task(follow())
        async with served(client, text_graph(str.upper)):
            await asyncio.wait_for(following, 60)
        assert seen[-1].status.state == TaskState.TASK_STATE_COMPLETED
        assert seen[-1].artifacts[0].parts[0].text == "LATER"
    async with gateway(client) as url, a2a_client(url, BOB, streaming=True) as (bob, _card):
        with pytest.raises(A2AError, match="not found"):  # another tenant follows nothing
            [e async for e in bob.subscribe(SubscribeToTaskRequest(id=task.id))]


async def test_input_required_is_answered_through_the_gateway(client):
    async with (
        gateway(client) as url,
        a2a_client(url, ALICE) as (alice, _card),
        served(client, text_graph(asking)),
    ):
        first = [e async for e in alice.send_message(request("greet"))][-1].task
        asked = await until_stopped(alice, first.id)
        assert asked.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
        assert asked.status.message.parts[0].text == "Which language?"
        msg = request("French", task_id=first.id)
        msg.message.context_id = asked.context_id
        [e async for e in alice.send_message(msg)]

        async def completed():
            task = await alice.get_task(GetTaskRequest(id=first.id))
            return task if task.status.state == TaskState.TASK_STATE_COMPLETED else None

        done = await until(completed, timeout=20, what="the task completed", every=0.05)
        assert done.artifacts[0].parts[0].text == "greet in French"


@pytest.mark.slow  # over a second on a quiet machine (#89)
async def test_a_second_tenant_can_neither_get_list_answer_nor_cancel_anothers_task(client):
    async with (
        gateway(client) as url,
        a2a_client(url, ALICE) as (alice, _card),
        a2a_client(url, BOB) as (bob, _card2),
    ):
        task = [e async for e in alice.send_message(request("mine"))][-1].task
        with pytest.raises(A2AError, match="not found"):
            await bob.get_task(GetTaskRequest(id=task.id))
        assert list((await bob.list_tasks(ListTasksRequest())).tasks) == []
        with pytest.raises(A2AError, match="not found"):
            await bob.cancel_task(CancelTaskRequest(id=task.id))
        with pytest.raises(A2AError, match="not found"):
            [e async for e in bob.send_message(request("hijack", task_id=task.id))]
        # Alice's task is untouched: still hers, still waiting for the agent
        kept = await alice.get_task(GetTaskRequest(id=task.id))
        assert kept.status.state == TaskState.TASK_STATE_SUBMITTED
        canceled = await alice.cancel_task(CancelTaskRequest(id=task.id))
        assert canceled.id == task.id


# ids named, not drawn from ALICE (a fresh token each run): parallel workers collect the same
@pytest.mark.parametrize(
    "token",
    [None, "", "wrong-token-wrong-token", "Basic " + ALICE],
    ids=["none", "empty", "wrong", "basic-alice"],
)
async def test_no_credential_no_call(client, token):
    async with gateway(client) as url:
        headers = {"Authorization": token} if token and token.startswith("Basic") else {}
        if token and not token.startswith("Basic"):
            headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(headers=headers, timeout=30) as http:
            card = await http.get(url + "/.well-known/agent-card.json")
            assert card.status_code == 200  # the card is public: it says how to authenticate
            body = {"jsonrpc": "2.0", "id": 1, "method": "ListTasks", "params": {}}
            refused = await http.post(url, json=body)
            assert refused.status_code == 401 and "Bearer" in refused.headers["www-authenticate"]


async def test_api_key_tenants(client):
    async with gateway(client, scheme=API_KEY) as url:
        async with a2a_client(url, BOB, scheme=API_KEY) as (bob, card):
            assert "api-key" in card.security_schemes
            task = [e async for e in bob.send_message(request("key"))][-1].task
            assert task.status.state == TaskState.TASK_STATE_SUBMITTED
        async with a2a_client(url, BOB) as (as_bearer, _card):  # the wrong scheme
            with pytest.raises(A2AError):
                await as_bearer.list_tasks(ListTasksRequest())


def test_tenants_refuse_weak_or_odd_configuration():
    with pytest.raises(ValueError, match="at least one"):
        Tenants({})
    with pytest.raises(ValueError, match="shorter than 16"):
        Tenants({"a": "short"})
    with pytest.raises(ValueError, match="tenant name"):
        Tenants({"a b": ALICE})


async def test_a_broker_that_is_gone_is_said_in_words(broker):
    """The gateway's mq9 connection closed under it: each request gets an A2A error that
    says so (not an empty internal error), and the server goes on."""
    gone = await broker.client().connect()
    async with gateway(gone) as url:
        await gone.close()
        headers = {"Authorization": f"Bearer {ALICE}", "A2A-Version": "1.0"}
        async with httpx.AsyncClient(headers=headers, timeout=30) as http:
            for method, params in (("ListTasks", {}), ("GetTask", {"id": "t1"})):
                body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
                answer = (await http.post(url, json=body)).json()
                assert "mq9 broker" in answer["error"]["message"], answer
