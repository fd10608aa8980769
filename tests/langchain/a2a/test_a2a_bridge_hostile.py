"""The bridge under attack. An HTTP A2A agent that lies (one task id for every call, a redirect
into the network, an answer too large, no JSON) costs its caller that call only; an HTTP client
of the gateway that sends too much gets a clear refusal, and nothing it names reaches another
tenant."""

from __future__ import annotations

import asyncio
import secrets

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from mq9_platform._http.hosts import HostPolicy
from mq9_platform.a2a import mail as w
from mq9_platform.a2a.caller import AgentCaller
from mq9_platform.a2a.gateway import MAX_BODY_BYTES
from mq9_platform.a2a.server import AgentServer
from testbed.support.a2a_support import text_graph, text_io
from tests.langchain.a2a.test_gateway import ALICE, gateway
from tests.platform.a2a.http_agents import serve_http

LOOPBACK = HostPolicy(["127.0.0.1"])


def liar(mode: str, hits: list[str]) -> Starlette:
    """A JSON-RPC endpoint at /rpc that answers each SendMessage as ``mode`` says."""

    async def rpc(request: Request) -> Response:
        body = await request.json()
        hits.append(body.get("method", ""))
        if mode == "redirect":
            return RedirectResponse("http://127.0.0.1:9/internal", status_code=307)
        if mode == "huge":
            return Response(b"x", headers={"content-length": str(50 * 1024 * 1024)})
        if mode == "endless":  # no length announced: a body that never stops coming

            async def body():
                while True:  # (each chunk waits its turn: the test shares this event loop)
                    await asyncio.sleep(0.001)
                    yield b" " * 65536

            return StreamingResponse(body(), media_type="application/json")
        if mode == "garbage":
            return Response(b"<html>not json</html>", media_type="text/html")
        text = body["params"]["message"]["parts"][0]["text"]
        task = {  # the same task id for every call ("same"), its answer the text in capitals
            "id": "same",
            "contextId": "ctx",
            "status": {"state": "TASK_STATE_COMPLETED"},
            "artifacts": [{"artifactId": "a", "parts": [{"text": text.upper()}]}],
        }
        result = {"task": task} if body["method"] == "SendMessage" else task
        return JSONResponse({"jsonrpc": "2.0", "id": body["id"], "result": result})

    return Starlette(routes=[Route("/rpc", rpc, methods=["POST"])])


def card(base: str) -> dict:
    return {"name": "liar", "supportedInterfaces": [{"url": base + "/rpc"}]}


@pytest.mark.slow  # over a second on a quiet machine (#89)
async def test_one_task_id_for_every_call_never_mixes_two_calls(client):
    hits: list[str] = []
    async with serve_http(liar("same-id", hits)) as base:
        caller = AgentCaller(client, "agent.me.calls", hosts=LOOPBACK)
        first = await caller.call_http(card(base), "first", wait=5)
        second = await caller.call_http(card(base), "second", wait=5)
        assert first.task_id != second.task_id
        assert (await caller.check(first.task_id)).view()["result"] == "FIRST"
        assert (await caller.check(second.task_id)).view()["result"] == "SECOND"


@pytest.mark.parametrize(
    ("mode", "why"),
    [("redirect", "307"), ("huge", "too large"), ("endless", "passed"), ("garbage", "")],
)
async def test_a_lying_agent_fails_its_own_call_only(client, mode, why):
    hits: list[str] = []
    async with serve_http(liar(mode, hits)) as base:
        caller = AgentCaller(client, "agent.me.calls", hosts=LOOPBACK)
        state = await caller.call_http(card(base), "hi", wait=5)
        assert state.state == w.FAILED
        assert "could not be reached" in state.view()["reason"] and why in state.view()["reason"]
        assert hits == ["SendMessage"]  # the redirect was not followed


async def test_a_gateway_body_over_the_limit_is_refused_unread(client):
    async with gateway(client) as url:
        headers = {"Authorization": f"Bearer {ALICE}", "A2A-Version": "1.0"}
        async with httpx.AsyncClient(headers=headers, timeout=30) as http:
            big = b"x" * (MAX_BODY_BYTES + 1)
            refused = await http.post(url, content=big)
            assert refused.status_code == 413

            async def chunks():  # no length: counted as it comes
                for _ in range(MAX_BODY_BYTES // 65536 + 2):
                    yield b"x" * 65536

            # read no further than the limit: the request ends in an error, not a task
            response = await http.post(url, content=chunks())
            assert "error" in response.json() and "result" not in response.json()


async def test_a_message_larger_than_the_broker_carries_is_refused_in_words(client):
    async with gateway(client) as url:
        headers = {"Authorization": f"Bearer {ALICE}", "A2A-Version": "1.0"}
        async with httpx.AsyncClient(headers=headers, timeout=30) as http:
            text = "y" * (MAX_BODY_BYTES - 4096)  # under the body limit, over max_payload
            message = {"messageId": "m", "role": "ROLE_USER", "parts": [{"text": text}]}
            body = {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "SendMessage",
                "params": {"message": message},
            }
            answer = (await http.post(url, json=body)).json()
            assert "more than the broker carries" in answer["error"]["message"]
        # the gateway goes on: a normal call still works
        async with AgentServer(
            text_graph(str.upper), name="agent.echo", client=client, **text_io()
        ):
            ok = {"messageId": "n", "role": "ROLE_USER", "parts": [{"text": "small"}]}
            body["params"] = {"message": ok}
            async with httpx.AsyncClient(headers=headers, timeout=60) as http:
                answer = (await http.post(url, json=body)).json()
            assert answer["result"]["task"]["artifacts"][0]["parts"][0]["text"] == "SMALL"


@pytest.mark.slow  # over a second on a quiet machine (#89)
@pytest.mark.parametrize("task_id", ["../../etc", "a" * 500, "", "mq9.calls.x", "😀"])
async def test_odd_task_ids_from_a_tenant_are_not_found(client, task_id):
    async with gateway(client) as url:
        headers = {"Authorization": f"Bearer {ALICE}", "A2A-Version": "1.0"}
        async with httpx.AsyncClient(headers=headers, timeout=30) as http:
            for method in ("GetTask", "CancelTask"):
                body = {"jsonrpc": "2.0", "id": secrets.token_hex(2), "method": method}
                body["params"] = {"id": task_id}
                answer = (await http.post(url, json=body)).json()
                assert "not found" in answer["error"]["message"], answer
