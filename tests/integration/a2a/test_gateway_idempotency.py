"""A SendMessage under an ``Idempotency-Key`` reaches the agent once, per tenant (#101, as
a2aproject/A2A#1893 proposes): the header on the HTTP bindings, call metadata on gRPC, with
real a2a-sdk clients on loopback (``ClientCallContext.service_parameters``). The key works
without ``--once-per-message`` and beside it; another tenant's same key is its own task, and
through the key another tenant can neither take nor read the first one's task."""

from __future__ import annotations

import pytest
from a2a.client.client import ClientCallContext
from a2a.types.a2a_pb2 import (
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    TaskState,
)
from a2a.utils.errors import A2AError
from test_gateway_resent import a2a_client, requests_waiting

from testbed.support.a2a_support import asking, text_graph
from testbed.support.waiting import until
from tests.integration.a2a.test_gateway_grpc import grpc_gateway
from tests.langchain.a2a.test_gateway import ALICE, BOB, served, until_stopped

pytestmark = pytest.mark.slow  # serves HTTP and gRPC in process

BINDINGS = ["JSONRPC", "HTTP+JSON", "GRPC"]


def request(text: str, message_id: str) -> SendMessageRequest:
    msg = Message(message_id=message_id, role=Role.ROLE_USER, parts=[Part(text=text)])
    req = SendMessageRequest(message=msg)
    req.configuration.return_immediately = True
    return req


def keyed(key: str) -> ClientCallContext:
    return ClientCallContext(service_parameters={"Idempotency-Key": key})


async def sent(a2a, req: SendMessageRequest, key: str | None):
    context = keyed(key) if key is not None else None
    return [e async for e in a2a.send_message(req, context=context)][-1].task


@pytest.mark.parametrize("once_per_message", [False, True], ids=["key-alone", "beside-messageId"])
@pytest.mark.parametrize("binding", BINDINGS)
async def test_a_send_resent_under_one_key_reaches_the_agent_once_per_tenant(
    broker, client, binding, once_per_message
):
    """(On RobustMQ, which keeps no keys, the resent request waits twice in the agent's
    mailbox; the agent still runs the task once: the second finds it ended.)"""
    async with (
        grpc_gateway(client, once_per_message=once_per_message) as url,
        a2a_client(url, ALICE, binding) as alice,
        a2a_client(url, BOB, binding) as bob,
    ):
        first = await sent(alice, request("hello", "m-1"), "k-1")
        assert first.status.state == TaskState.TASK_STATE_SUBMITTED  # the agent is offline
        again = await sent(alice, request("hello", "m-1"), "k-1")  # the answer was lost
        assert again.id == first.id
        assert await requests_waiting(client) == broker.copies()
        # The key names the request, whatever the messageId: a new key is a new task
        other = await sent(alice, request("hello", "m-1"), "k-2")
        assert other.id != first.id
        # The same key with another request: refused, never the first one's task
        with pytest.raises(A2AError, match="used before with another request"):
            await sent(alice, request("goodbye", "m-9"), "k-1")
        # Bob's same key, same request: Bob's own task; it shows nothing of Alice's
        bobs = await sent(bob, request("hello", "m-1"), "k-1")
        assert bobs.id not in (first.id, other.id)
        with pytest.raises(A2AError, match="not found"):
            await bob.get_task(GetTaskRequest(id=first.id))
        # (nor subscribe to it, cursor or not: test_gateway_resume.py)
        # Alice's two keys, Bob's one
        assert await requests_waiting(client) == broker.copies() + 2

        async with served(client, text_graph(str.upper)):
            done = await until_stopped(alice, first.id)
            assert done.artifacts[0].parts[0].text == "HELLO"
            # Resent once it is done: the done task, and no second run
            late = await sent(alice, request("hello", "m-1"), "k-1")
            assert late.id == first.id and late.status.state == TaskState.TASK_STATE_COMPLETED
            await until_stopped(bob, bobs.id)
            await until_stopped(alice, other.id)
        same = await alice.get_task(GetTaskRequest(id=first.id))
        assert [m.role for m in same.history].count(Role.ROLE_USER) == 1


@pytest.mark.parametrize("binding", BINDINGS)
async def test_a_bad_key_is_refused_and_sends_nothing(client, binding):
    async with grpc_gateway(client) as url, a2a_client(url, ALICE, binding) as alice:
        for bad in ("x" * 256, "with space"):
            with pytest.raises(Exception, match="Idempotency-Key"):
                await sent(alice, request("hello", "m-1"), bad)
        assert await requests_waiting(client) == 0


@pytest.mark.parametrize("binding", BINDINGS)
async def test_an_answer_resent_under_one_key_is_taken_once(client, binding):
    """A message to an input-required task (its answer) under a key: resent, it answers the
    task as it goes on and the agent takes one answer; another answer under the key is refused;
    without a key, the resent answer is refused as before (the task takes no more answers)."""
    async with (
        grpc_gateway(client) as url,
        a2a_client(url, ALICE, binding) as alice,
        served(client, text_graph(asking)),
    ):
        first = await sent(alice, request("greet", "m-1"), None)
        asked = await until_stopped(alice, first.id)
        assert asked.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
        answer = request("French", "m-2")
        answer.message.task_id = first.id
        answer.message.context_id = asked.context_id
        await sent(alice, answer, "a-1")
        again = await sent(alice, answer, "a-1")  # the answer's answer was lost: sent again
        assert again.id == first.id

        async def completed():
            task = await alice.get_task(GetTaskRequest(id=first.id))
            return task if task.status.state == TaskState.TASK_STATE_COMPLETED else None

        done = await until(completed, timeout=20, what="the task completed", every=0.05)
        assert done.artifacts[0].parts[0].text == "greet in French"
        late = await sent(alice, answer, "a-1")
        assert late.status.state == TaskState.TASK_STATE_COMPLETED
        assert [m.role for m in late.history].count(Role.ROLE_USER) == 2
        other = request("German", "m-3")
        other.message.task_id = first.id
        other.message.context_id = asked.context_id
        with pytest.raises(A2AError, match="used before with another request"):
            await sent(alice, other, "a-1")
        with pytest.raises(A2AError, match="completed"):
            await sent(alice, answer, None)
