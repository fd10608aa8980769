"""A body over the gateway's limit gets HTTP 413 however it is sent (#70): with a length that
says so (refused before any of it is read), and chunked, without a length (refused once past
the limit, never read to its end: it used to get HTTP 200 with an empty -32603 error after all
64 MiB were read). A body that never finishes arriving gets 408 at its deadline. The client
writes raw bytes on a socket, as an attacker would; a request within the limit still works."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets

import httpx
import pytest

from mq9_platform.a2a.gateway import app as gw
from mq9_platform.a2a.server import AgentServer
from testbed.ports import unclaimed_port
from testbed.support.a2a_support import text_graph, text_io
from tests.platform.a2a.http_agents import serve_http

AGENT = "agent.echo"
TOKEN = secrets.token_hex(16)
MB = 1024 * 1024
ANSWER_WAIT = 30.0  # seconds: a guard against a hang, never a measure


@contextlib.asynccontextmanager
async def gateway(client):
    port = unclaimed_port()
    base = f"http://127.0.0.1:{port}"
    tenants = gw.Tenants({"alice": TOKEN})
    app = await gw.gateway_app(client, [AGENT], tenants=tenants, public_url=base)
    async with serve_http(app, port):
        yield port


def head(port: int, extra: str) -> bytes:
    return (
        f"POST /a2a/{AGENT} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
        f"A2A-Version: 1.0\r\n{extra}\r\n"
    ).encode()


async def status_line(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    line = await asyncio.wait_for(reader.readline(), ANSWER_WAIT)
    assert line.startswith(b"HTTP/1.1 "), line
    rest = b""
    with contextlib.suppress(ConnectionError):  # the gateway may reset what it did not read
        while b"larger than" not in rest and b"did not arrive" not in rest:
            more = await asyncio.wait_for(reader.read(4096), ANSWER_WAIT)
            if not more:
                break
            rest += more
    return int(line.split()[1]), rest


async def send_until_answered(port: int, extra: str, chunked: bool) -> tuple[int, bytes, int]:
    """The head, then a body 1 MB at a time (64 MB at most) until the gateway answers: its
    status, the start of what it said, and how many MB had been written by then."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head(port, extra))
        answered = asyncio.ensure_future(status_line(reader))
        sent = 0
        while not answered.done() and sent < 64:
            chunk = b"x" * MB
            try:
                writer.write(b"%x\r\n%s\r\n" % (MB, chunk) if chunked else chunk)
                await writer.drain()
            except ConnectionError:
                break  # the gateway closed the connection: its answer is read below
            sent += 1
            await asyncio.sleep(0)
        status, said = await answered
        return status, said, sent
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_a_declared_length_over_the_limit_is_refused_unread(client):
    async with gateway(client) as port:
        status, said, sent = await send_until_answered(
            port, f"Content-Length: {64 * MB}\r\n", chunked=False
        )
        assert status == 413, said
        assert sent < 16, sent  # answered while the body was still coming
        # in words, where the client reads the answer (httpx sends the whole body first)
        headers = {"Authorization": f"Bearer {TOKEN}", "A2A-Version": "1.0"}
        async with httpx.AsyncClient(headers=headers, timeout=30) as http:
            url = f"http://127.0.0.1:{port}/a2a/{AGENT}"
            refused = await http.post(url, content=b"x" * (gw.MAX_BODY_BYTES + 1))
        assert refused.status_code == 413
        assert f"larger than {gw.MAX_BODY_BYTES} bytes" in refused.json()["error"]


async def test_a_chunked_body_over_the_limit_is_refused_once_past_it(client):
    """The attack found: a 64 MiB chunked body, all read, then HTTP 200 and an empty -32603."""
    async with gateway(client) as port:
        status, said, sent = await send_until_answered(
            port, "Transfer-Encoding: chunked\r\n", chunked=True
        )
        assert status == 413, said
        # what was written by then includes what the sockets' buffers took meanwhile
        assert sent < 4 * gw.MAX_BODY_BYTES // MB + 8, sent


async def test_a_body_that_never_finishes_gets_408_at_its_deadline(client, monkeypatch):
    monkeypatch.setattr(gw, "BODY_SECONDS", 0.5)
    async with gateway(client) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(head(port, "Content-Length: 1000\r\n") + b'{"jsonrpc"')
            await writer.drain()
            status, said = await status_line(reader)  # nothing more is sent
            assert status == 408 and b"did not arrive" in said
        finally:
            writer.close()


async def test_requests_within_the_limit_still_work_chunked_or_not(client):
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "SendMessage",
        "params": {"message": {"messageId": "m", "role": "ROLE_USER", "parts": [{"text": "hi"}]}},
    }
    headers = {"Authorization": f"Bearer {TOKEN}", "A2A-Version": "1.0"}
    async with (
        gateway(client) as port,
        AgentServer(text_graph(str.upper), name=AGENT, client=client, **text_io()),
        httpx.AsyncClient(headers=headers, timeout=60) as http,
    ):
        url = f"http://127.0.0.1:{port}/a2a/{AGENT}"
        answer = (await http.post(url, json=body)).json()
        assert answer["result"]["task"]["artifacts"][0]["parts"][0]["text"] == "HI"
        raw = json.dumps({**body, "id": 2}).encode()

        async def chunks():  # no length: the gateway reads it as it comes
            for i in range(0, len(raw), 7):
                yield raw[i : i + 7]

        answer = (await http.post(url, content=chunks())).json()
        assert answer["result"]["task"]["artifacts"][0]["parts"][0]["text"] == "HI"


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_a_card_read_and_other_methods_are_not_held_by_the_body_reader(client, method):
    async with gateway(client) as port, httpx.AsyncClient(timeout=30) as http:
        card = f"http://127.0.0.1:{port}/a2a/{AGENT}/.well-known/agent-card.json"
        if method == "GET":
            assert (await http.get(card)).status_code == 200
        else:
            answer = await http.request(method, card, headers={"Authorization": f"Bearer {TOKEN}"})
            assert answer.status_code in (404, 405)
