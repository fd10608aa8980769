"""On a ``--credentials`` broker a task's owner is who the broker says sent it (#70): the
served agent reads the sender the broker writes on every stored message (``mq9-sender``),
never the reply mailbox a request names. Mallory, a raw NATS client holding her own valid
credential, knows the victim's task id and reply mailbox (the premise of the attacks found)
and writes ``mq9-sender: victim`` herself besides; each request she sends in the victim's name
(cancel, answer, push config, GetTask, ListTasks, a malformed one) changes nothing and leaves
nothing in the victim's reply mailbox, and the victim's own request of each kind still works.
The same for an HTTP tenant behind the gateway, which runs under an identity of its own.
Since the broker refuses a SEND naming a reply mailbox not its sender's, none of hers reaches
the agent (tests/langchain/a2a/test_reply_mailbox_is_the_senders.py has the attacks that closed).

Four credentials: the served agent ``vault``, the caller ``victim``, the gateway ``gw`` and
``mallory``. docs/security.md's "Agent calls" rows name these tests.
"""

from __future__ import annotations

import contextlib
import json
import secrets

import httpx
import pytest
from a2a.client import ClientConfig, ClientFactory
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    SubscribeToTaskRequest,
    TaskPushNotificationConfig,
    TaskState,
)
from a2a.utils.errors import A2AError

from mq9_platform import Mq9Client
from mq9_platform.a2a import mail as w
from mq9_platform.a2a.gateway import Tenants, gateway_app, reply_mailbox
from mq9_platform.a2a.sdk.transport import mq9_agent_card, register_mq9
from mq9_platform.a2a.store import latest
from mq9_wire import protocol as p
from mq9_wire.protocol.errors import InvalidAddress
from testbed.ports import unclaimed_port
from testbed.support.credentials_support import ask
from testbed.support.waiting import until
from tests.langchain.a2a.test_gateway import a2a_client, request, until_stopped
from tests.langchain.a2a.vault_world import AGENT, CALLER, World, world_fixture
from tests.platform.a2a.http_agents import serve_http
from tests.platform.a2a.push_support import Receiver, registered_jwks

pytestmark = pytest.mark.slow  # a dev broker process per test

TOKEN = "tok-" + "5" * 20
ALICE, BOB = secrets.token_hex(16), secrets.token_hex(16)


world = world_fixture(served=True, pushes=True, also=("gw",))


async def in_the_name_of(world: World, reply_to: str, method: str, task_id: str, body) -> None:
    """Mallory's request to the agent in another's name (its reply mailbox, and its sender
    written by her): the broker refuses it in one line, as a SEND naming a reply mailbox not
    its sender's (#70), so the agent never reads it (its own check stands behind that). Each
    test asked the agent once before: that request is done first (its answer reaches the caller
    before the agent notes it sent, #106, so the count may still be moving)."""
    before = await until(lambda: world.server.handled, timeout=20, what="the first request done")
    headers = {
        w.HEADER_METHOD: method,
        w.HEADER_REPLY_TO: reply_to,
        w.HEADER_TASK_ID: task_id,
        p.HEADER_SENDER: "victim",
        "MQ9-Sender ": "gw",  # another spelling a reader might take for it
        p.HEADER_PRIORITY: "critical",
    }
    payload = body if isinstance(body, bytes) else w.json_text(body).encode()
    said = await ask(world.mallory, "mallory", p.send_subject(AGENT), payload, headers=headers)
    assert said["error"].startswith("SEND refused: mq9-reply-to "), said
    assert world.server.handled == before


async def nothing_left_for(client: Mq9Client, reply: str, task_id: str) -> None:
    """No answer about ``task_id`` that the victim did not ask for sits in its reply mailbox."""
    assert await latest(client, reply, f"error.{task_id}") is None
    assert await latest(client, reply, f"answer.{task_id}") is None
    kinds = {m.header.get(w.HEADER_TYPE) for m in await client.query(reply)}
    assert "ListTasksResponse" not in kinds


async def test_the_broker_writes_the_sender_and_the_task_keeps_it(world):
    asked = await world.caller.call(AGENT, "greet", wait=20)
    assert asked.state == w.INPUT_REQUIRED
    [sent] = [m for m in await world.vault.query(AGENT)]
    assert sent.header[p.HEADER_SENDER] == "victim"
    assert asked.task["metadata"]["mq9"]["sender"] == "victim"


async def test_a_cancel_in_the_callers_name_leaves_its_task_alone(world):
    asked = await world.caller.call(AGENT, "greet", wait=20)
    reply = world.caller.reply_mailbox
    await in_the_name_of(world, reply, w.CANCEL_TASK, asked.task_id, {"id": asked.task_id})
    # the agent's mailbox holds none of hers: the broker stored none
    inbox = await world.vault.query(AGENT)
    assert [m.header[p.HEADER_SENDER] for m in inbox] == ["victim"]
    still = await world.caller.check(asked.task_id)
    assert still.state == w.INPUT_REQUIRED and still.agent_error is None
    await nothing_left_for(world.victim, reply, asked.task_id)
    # the victim's own cancel does
    done = await world.caller.cancel(asked.task_id, wait=20)
    assert done.state == w.CANCELED


async def test_an_answer_in_the_callers_name_is_not_taken(world):
    asked = await world.caller.call(AGENT, "greet", wait=20)
    reply = world.caller.reply_mailbox
    answer = w.send_request(w.message("Klingon", task_id=asked.task_id))
    await in_the_name_of(world, reply, w.SEND, asked.task_id, answer)
    # and a new task under its id, and a malformed request naming it
    again = w.send_request(w.message("mine now"))
    await in_the_name_of(world, reply, w.SEND, asked.task_id, again)
    await in_the_name_of(world, reply, w.SEND, asked.task_id, b"not json")
    still = await world.caller.check(asked.task_id)
    assert still.state == w.INPUT_REQUIRED and still.agent_error is None
    await nothing_left_for(world.victim, reply, asked.task_id)
    done = await world.caller.answer(asked.task_id, "French", wait=20)
    assert done.state == w.COMPLETED and done.view()["result"] == "greet in French"
    assert "Klingon" not in json.dumps(done.task["history"])


async def test_get_and_list_in_the_callers_name_answer_nothing_there(world):
    asked = await world.caller.call(AGENT, "greet", wait=20)
    reply = world.caller.reply_mailbox
    await in_the_name_of(world, reply, w.GET_TASK, asked.task_id, {"id": asked.task_id})
    await nothing_left_for(world.victim, reply, asked.task_id)
    # ListTasks: the tasks of mallory-with-that-reply-mailbox, which are none
    await in_the_name_of(world, reply, w.LIST_TASKS, asked.task_id, {})
    kinds = [m.header.get(w.HEADER_TYPE) for m in await world.victim.query(reply)]
    listed = [
        json.loads(m.payload)
        for m in await world.victim.query(reply)
        if m.header.get(w.HEADER_TYPE) == "ListTasksResponse"
    ]
    assert all(found["tasks"] == [] for found in listed), kinds


async def test_a_push_config_in_the_callers_name_is_not_made(world):
    """The attack found: mallory's config on the victim's task, and the victim's completed
    result POSTed to her URL. Now her config is never made; the victim's own is, and gets it."""
    factory = ClientFactory(ClientConfig(supported_protocol_bindings=["mq9"], streaming=False))
    register_mq9(factory, world.victim, reply_mailbox=CALLER)
    a2a = factory.create(await mq9_agent_card(world.victim, AGENT))
    asked = await world.caller.call(AGENT, "greet", wait=20)
    reply = world.caller.reply_mailbox
    with Receiver() as hers, Receiver(await registered_jwks(world.victim, AGENT)) as theirs:
        config = {"taskId": asked.task_id, "url": hers.url, "token": TOKEN}
        await in_the_name_of(world, reply, w.CREATE_PUSH, asked.task_id, config)
        await in_the_name_of(world, reply, w.LIST_PUSH, asked.task_id, config)
        await nothing_left_for(world.victim, reply, asked.task_id)
        made = await a2a.create_task_push_notification_config(
            TaskPushNotificationConfig(task_id=asked.task_id, url=theirs.url, token=TOKEN + "x")
        )
        assert made.url == theirs.url
        done = await world.caller.answer(asked.task_id, "French", wait=20)
        assert done.state == w.COMPLETED
        pushed = await theirs.until(TOKEN + "x", w.COMPLETED)
        assert pushed[-1]["artifacts"][0]["parts"][0]["text"] == "greet in French"
        assert hers.requests == []


@contextlib.asynccontextmanager
async def credentialed_gateway(world: World):
    """The gateway under its own identity ``gw``, serving the vault to tenants alice and bob."""
    async with Mq9Client(world.broker.url, credential=world.broker.credentials["gw"]) as gw:
        port = unclaimed_port()
        base = f"http://127.0.0.1:{port}"
        tenants = Tenants({"alice": ALICE, "bob": BOB})
        app = await gateway_app(gw, [AGENT], tenants=tenants, public_url=base)
        async with serve_http(app, port):
            yield base + "/a2a/" + AGENT


def tenant_reply_mailbox(tenant: str) -> str:
    """Where the gateway ``gw`` keeps a tenant's tasks: a name only ``gw`` may make."""
    return w.caller_address(reply_mailbox(f"{w.CALLS_ROOT}{w.digest('gw')}.gateway", tenant))


async def test_the_gateway_starts_under_its_own_identity_and_keeps_tenants_apart(world):
    """It used to fail to start ("CREATE refused: mailbox 'agent.vault' belongs to another
    agent"): it made every agent's mailbox. Now it makes none but its tenants' reply mailboxes,
    which nobody else may make first; bob and mallory reach none of alice's tasks."""
    said = await ask(
        world.mallory, "mallory", p.MAILBOX_CREATE, {"name": tenant_reply_mailbox("alice")}
    )
    assert "refused" in said["error"], said
    async with credentialed_gateway(world) as url, a2a_client(url, ALICE) as (alice, _):
        events = [e async for e in alice.send_message(request("greet"))]
        task_id = events[-1].task.id
        asked = await until_stopped(alice, task_id)
        assert asked.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
        async with a2a_client(url, BOB, streaming=True) as (bob, _):
            with pytest.raises(A2AError, match="not found"):
                await bob.get_task(GetTaskRequest(id=task_id))
            with pytest.raises(A2AError, match="not found"):
                await bob.cancel_task(CancelTaskRequest(id=task_id))
            with pytest.raises(A2AError, match="not found"):
                [_ async for _ in bob.subscribe(SubscribeToTaskRequest(id=task_id))]
            assert not (await bob.list_tasks(ListTasksRequest())).tasks
        # mallory, over mq9, in alice's tenant's name (and the gateway's, written by her)
        reply = tenant_reply_mailbox("alice")
        await in_the_name_of(world, reply, w.CANCEL_TASK, task_id, {"id": task_id})
        answer = w.send_request(w.message("Klingon", task_id=task_id))
        await in_the_name_of(world, reply, w.SEND, task_id, answer)
        still = await alice.get_task(GetTaskRequest(id=task_id))
        assert still.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
        # alice answers her task, and cancels another of hers
        msg = request("French", task_id=task_id)
        msg.message.context_id = asked.context_id
        [_ async for _ in alice.send_message(msg)]

        async def completed():
            task = await alice.get_task(GetTaskRequest(id=task_id))
            return task if task.status.state == TaskState.TASK_STATE_COMPLETED else None

        done = await until(completed, timeout=20, what="the task completed", every=0.05)
        assert done.artifacts[0].parts[0].text == "greet in French"
        events = [e async for e in alice.send_message(request("greet"))]
        second = events[-1].task.id
        await until_stopped(alice, second)
        canceled = await alice.cancel_task(CancelTaskRequest(id=second))
        assert canceled.status.state == TaskState.TASK_STATE_CANCELED


async def test_a_body_over_the_limit_from_a_tenant_of_the_credentialed_gateway_is_413(world):
    async with credentialed_gateway(world) as url:
        headers = {"Authorization": f"Bearer {ALICE}", "A2A-Version": "1.0"}
        async with httpx.AsyncClient(headers=headers, timeout=30) as http:
            refused = await http.post(url, content=b"x" * (3 * 1024 * 1024))
            assert refused.status_code == 413


async def test_a_gateway_name_that_makes_no_address_is_said_at_the_start(world):
    async with Mq9Client(world.broker.url, credential=world.broker.credentials["gw"]) as gw:
        with pytest.raises(InvalidAddress, match="has an empty segment"):
            await gateway_app(
                gw, [AGENT], tenants=Tenants({"alice": ALICE}), public_url="http://x",
                gateway="two..dots",
            )  # fmt: skip
