"""A SendMessage sent again answers its task (issue #90): an A2A client that lost the answer to
a SendMessage sends it again, with the same messageId; the gateway answers the task the first
one made, and the agent gets the request once. Over each binding (JSON-RPC, HTTP+JSON, gRPC),
with real a2a-sdk clients on loopback. Another tenant's same messageId is a task of its own;
the same messageId with another message is refused in one line."""

from __future__ import annotations

import contextlib

import grpc.aio
import httpx
import pytest
from a2a.client import ClientConfig, ClientFactory
from a2a.client.card_resolver import A2ACardResolver
from a2a.types.a2a_pb2 import (
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    TaskState,
)
from a2a.utils.errors import A2AError

from mq9_platform.a2a import mail as w
from testbed.support.a2a_support import text_graph
from tests.integration.a2a.test_gateway_grpc import _StreamBearer, _UnaryBearer, grpc_gateway
from tests.langchain.a2a.test_gateway import AGENT, ALICE, BOB, served, until_stopped

pytestmark = pytest.mark.slow  # serves HTTP and gRPC in process

BINDINGS = ["JSONRPC", "HTTP+JSON", "GRPC"]


@contextlib.asynccontextmanager
async def a2a_client(agent_url: str, token: str, binding: str):
    """An a2a-sdk client that speaks ``binding`` only, with ``token`` as its credential."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers, timeout=30) as http:
        card = await A2ACardResolver(http, agent_url).get_agent_card()

        def channel(url: str):
            return grpc.aio.insecure_channel(
                url, interceptors=[_UnaryBearer(token), _StreamBearer(token)]
            )

        config = ClientConfig(
            httpx_client=http,
            streaming=False,
            polling=True,
            supported_protocol_bindings=[binding],
            grpc_channel_factory=channel,
        )
        yield ClientFactory(config).create(card)


def request(text: str, message_id: str) -> SendMessageRequest:
    msg = Message(message_id=message_id, role=Role.ROLE_USER, parts=[Part(text=text)])
    return SendMessageRequest(message=msg)


async def sent(a2a, req: SendMessageRequest):
    return [e async for e in a2a.send_message(req)][-1].task


async def requests_waiting(client) -> int:
    """The requests left in the agent's mailbox (none is taken while it is offline)."""
    return len([m for m in await client.query(AGENT, limit=100) if m.header.get(w.HEADER_METHOD)])


@pytest.mark.parametrize("binding", BINDINGS)
async def test_a_resent_message_answers_its_task_and_reaches_the_agent_once(
    broker, client, binding
):
    """(On RobustMQ, which keeps no keys, the resent request waits twice in the agent's
    mailbox; the agent still runs the task once: the second finds it ended.)"""
    async with (
        grpc_gateway(client, once_per_message=True) as url,
        a2a_client(url, ALICE, binding) as alice,
        a2a_client(url, BOB, binding) as bob,
    ):
        first = await sent(alice, request("hello", "m-1"))
        assert first.status.state == TaskState.TASK_STATE_SUBMITTED  # the agent is offline
        again = await sent(alice, request("hello", "m-1"))  # the answer was lost: sent again
        assert again.id == first.id and again.context_id == first.context_id
        assert await requests_waiting(client) == broker.copies()
        # Bob's message of the same id is Bob's own task
        bobs = await sent(bob, request("hello", "m-1"))
        assert bobs.id != first.id
        assert await requests_waiting(client) == broker.copies() + 1
        # The same id with another message: refused, never the first one's task
        with pytest.raises(A2AError, match="sent before with another request"):
            await sent(alice, request("goodbye", "m-1"))
        assert await requests_waiting(client) == broker.copies() + 1

        async with served(client, text_graph(str.upper)):
            done = await until_stopped(alice, first.id)
            assert done.artifacts[0].parts[0].text == "HELLO"
            # Sent again once it is done: the done task, and no second run
            late = await sent(alice, request("hello", "m-1"))
            assert late.id == first.id and late.status.state == TaskState.TASK_STATE_COMPLETED
            assert await until_stopped(bob, bobs.id)
        same = await alice.get_task(GetTaskRequest(id=first.id))
        assert [m.role for m in same.history].count(Role.ROLE_USER) == 1
