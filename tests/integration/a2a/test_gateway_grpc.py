"""The gateway's gRPC binding (#79): a real a2a-sdk client picks the card's GRPC interface and
calls an offline mq9 agent through it, with the tenants, tokens and store-and-forward of the
HTTP bindings: the task's id at once, the result once the agent starts, the same task seen over
JSON-RPC; another tenant finds nothing, a call without a credential is UNAUTHENTICATED, and a
stream follows a task to its end."""

from __future__ import annotations

import asyncio
import contextlib
import time

import grpc
import grpc.aio
import httpx
import pytest
from a2a.client import ClientConfig, ClientFactory
from a2a.client.card_resolver import A2ACardResolver
from a2a.types.a2a_pb2 import GetTaskRequest, ListTasksRequest, TaskState
from a2a.types.a2a_pb2_grpc import A2AServiceStub
from a2a.utils.errors import A2AError

from mq9_platform._http.tokens_file import digest_line
from mq9_platform.a2a.gateway import Tenants, gateway_app
from mq9_platform.a2a.gateway.grpc import serve_grpc
from testbed.ports import unclaimed_port
from testbed.support.a2a_support import text_graph
from tests.integration.a2a.test_gateway_cli import start
from tests.langchain.a2a.test_gateway import (
    AGENT,
    ALICE,
    BOB,
    a2a_client,
    request,
    served,
    until_stopped,
)
from tests.platform.a2a.http_agents import serve_http

pytestmark = pytest.mark.slow


class _Bearer:
    """The tenant's token on every call, as a gRPC client sends a credential (metadata)."""

    def __init__(self, token: str) -> None:
        self.pair = ("authorization", f"Bearer {token}")

    def _with(self, details):
        return details._replace(metadata=[*(details.metadata or ()), self.pair])


class _UnaryBearer(_Bearer, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, details, request):
        return await continuation(self._with(details), request)


class _StreamBearer(_Bearer, grpc.aio.UnaryStreamClientInterceptor):
    # grpc.aio files an interceptor under its first kind only: one object per kind
    async def intercept_unary_stream(self, continuation, details, request):
        return await continuation(self._with(details), request)


@contextlib.asynccontextmanager
async def grpc_gateway(client, **options):
    """The gateway's HTTP app and its gRPC server, both on loopback: the agent's URL."""
    port, grpc_port = unclaimed_port(), unclaimed_port()
    base = f"http://127.0.0.1:{port}"
    tenants = Tenants({"alice": ALICE, "bob": BOB})
    app = await gateway_app(
        client,
        [AGENT],
        tenants=tenants,
        public_url=base,
        grpc_url=f"127.0.0.1:{grpc_port}",
        **options,
    )
    server = await serve_grpc(app.handlers, tenants, f"127.0.0.1:{grpc_port}")
    try:
        async with serve_http(app, port):
            yield base + "/a2a/" + AGENT
    finally:
        await server.stop(1)


@contextlib.asynccontextmanager
async def grpc_client(agent_url: str, token: str, *, streaming=False):
    """An a2a-sdk client that may speak gRPC only: it takes the card's GRPC interface."""
    async with httpx.AsyncClient(timeout=30) as http:
        card = await A2ACardResolver(http, agent_url).get_agent_card()

    def channel(url: str):
        return grpc.aio.insecure_channel(
            url, interceptors=[_UnaryBearer(token), _StreamBearer(token)]
        )

    config = ClientConfig(
        streaming=streaming,
        polling=not streaming,
        supported_protocol_bindings=["GRPC"],
        grpc_channel_factory=channel,
    )
    yield ClientFactory(config).create(card), card


async def test_an_offline_agent_is_called_over_grpc_and_tenants_stay_apart(client):
    async with (
        grpc_gateway(client) as url,
        grpc_client(url, ALICE) as (alice, card),
        grpc_client(url, BOB) as (bob, _card),
        a2a_client(url, ALICE) as (alice_jsonrpc, _card2),
    ):
        [grpc_interface] = [i for i in card.supported_interfaces if i.protocol_binding == "GRPC"]
        assert grpc_interface.tenant == AGENT  # one gRPC server: the agent is named per call
        submitted = [e async for e in alice.send_message(request("hello"))][-1].task
        assert submitted.status.state == TaskState.TASK_STATE_SUBMITTED  # the agent is offline
        async with served(client, text_graph(str.upper)):
            done = await until_stopped(alice, submitted.id)
        assert done.artifacts[0].parts[0].text == "HELLO"
        # the same task over JSON-RPC: one store behind every binding
        same = await alice_jsonrpc.get_task(GetTaskRequest(id=submitted.id))
        assert same.status.state == TaskState.TASK_STATE_COMPLETED
        with pytest.raises(A2AError, match="not found"):  # Bob's gRPC call finds no such task
            await bob.get_task(GetTaskRequest(id=submitted.id))
        assert list((await bob.list_tasks(ListTasksRequest())).tasks) == []

        # a call with no credential, and one with a wrong one: refused before anything is read
        address = grpc_interface.url
        async with grpc.aio.insecure_channel(address) as channel:
            stub = A2AServiceStub(channel)
            for metadata in ((), (("authorization", "Bearer " + "x" * 32),)):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.GetTask(GetTaskRequest(id=submitted.id), metadata=metadata)
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.aio.AioRpcError) as unknown:
                await stub.GetTask(
                    GetTaskRequest(id=submitted.id, tenant="agent.other"),
                    metadata=(("authorization", f"Bearer {ALICE}"),),
                )
            assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
            # another major version of A2A: UNIMPLEMENTED, as A2A 1.0 section 5.4 maps it
            with pytest.raises(grpc.aio.AioRpcError) as version:
                await stub.GetTask(
                    GetTaskRequest(id=submitted.id),
                    metadata=(("authorization", f"Bearer {ALICE}"), ("a2a-version", "99.0")),
                )
            assert version.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_a_grpc_stream_follows_the_task_to_its_end(client):
    async with grpc_gateway(client) as url, grpc_client(url, ALICE, streaming=True) as (alice, _):
        seen = []

        async def follow():
            async for event in alice.send_message(request("stream me")):
                seen.append(event.task)

        following = asyncio.create_task(follow())
        async with asyncio.timeout(30):  # a hang guard: the submitted state comes at once
            while not seen:
                await asyncio.sleep(0.05)
        assert seen[0].status.state == TaskState.TASK_STATE_SUBMITTED  # before the agent runs
        async with served(client, text_graph(str.upper)):
            await asyncio.wait_for(following, 60)
        assert seen[-1].status.state == TaskState.TASK_STATE_COMPLETED
        assert seen[-1].artifacts[0].parts[0].text == "STREAM ME"


async def test_the_gateway_process_serves_grpc_with_grpc_listen(nats_broker, tmp_path):
    tokens = tmp_path / "tokens.json"
    tokens.write_text(digest_line("alice", ALICE) + "\n")
    port, grpc_port = unclaimed_port(), unclaimed_port()
    process = start(
        [
            "--server", nats_broker.url, "--agent", AGENT, "--listen", f"127.0.0.1:{port}",
            "--tokens-file", str(tokens), "--grpc-listen", f"127.0.0.1:{grpc_port}",
        ]
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/a2a/{AGENT}"
    try:
        deadline = time.monotonic() + 60  # a hang guard: the process imports a2a-sdk
        while True:
            try:
                async with grpc_client(url, ALICE) as (alice, card):
                    break
            except Exception:
                assert process.poll() is None, process.communicate()[1].decode()
                assert time.monotonic() < deadline, "the gateway never served its card"
                await asyncio.sleep(0.2)
        assert [i.url for i in card.supported_interfaces if i.protocol_binding == "GRPC"] == [
            f"127.0.0.1:{grpc_port}"
        ]
        async with grpc_client(url, ALICE) as (alice, _card):
            task = [e async for e in alice.send_message(request("by grpc"))][-1].task
            async with nats_broker.client() as client, served(client, text_graph(str.upper)):
                done = await until_stopped(alice, task.id)
        assert done.artifacts[0].parts[0].text == "BY GRPC"
    finally:
        process.terminate()
        process.wait(15)
