"""One local client cannot hold or exhaust mq9-mcp's HTTP server (#35): a huge body is refused
while it is read (before any of it is buffered whole, and before that when the Host or Origin is
wrong), connections that never finish their headers are closed, and open connections are
bounded. The app runs under uvicorn in this process on 127.0.0.1, as ``serve_http`` runs it;
the hostile client writes raw bytes on sockets."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import pytest
import uvicorn
from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from mq9_mcp.http import app as http_app
from mq9_mcp.http import guard as http_guard
from mq9_mcp.http import limits as http_limits
from mq9_mcp.server import create_server
from mq9_platform.client.connection import Mq9Connection
from testbed.ports import unclaimed_port
from testbed.support.mcp_support import ACCEPT, INITIALIZE
from testbed.support.waiting import until

MB = 1024 * 1024


class _Uvicorn(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Iterator[None]:  # the test runner keeps its own handlers
        yield


@asynccontextmanager
async def served(reached: list[str] | None = None) -> AsyncIterator[int]:
    """mq9-mcp's HTTP app on a free loopback port, with serve_http's connection handling;
    ``reached`` collects the Host of each HTTP request that gets as far as the app."""
    connection = Mq9Connection("memory://")
    app = http_app.create_http_app(create_server(connection, sessions_compete=True), connection)

    async def recording(scope: Scope, receive: Receive, send: Send) -> None:
        if reached is not None and scope["type"] == "http":
            reached.append(Headers(scope=scope).get("host", ""))
        await app(scope, receive, send)

    port = unclaimed_port()
    server = _Uvicorn(http_app.uvicorn_config(recording, "127.0.0.1", port))
    task = asyncio.create_task(server.serve())
    try:

        def started() -> bool:
            assert not task.done(), "uvicorn stopped while starting"
            return server.started

        await until(started, timeout=30, what="uvicorn started", every=0.01)
        yield port
    finally:
        server.should_exit = True
        await task


async def status_of(reader: asyncio.StreamReader) -> int:
    line = await asyncio.wait_for(reader.readline(), 20)
    assert line.startswith(b"HTTP/1.1 "), line
    return int(line.split()[1])


def head(port: int, host: str = "", extra: str = "") -> bytes:
    return (
        f"POST /mcp HTTP/1.1\r\nHost: {host or f'127.0.0.1:{port}'}\r\n"
        "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
        f"{extra}\r\n"
    ).encode()


async def send_until_answered(port: int, head_bytes: bytes, limit_mb: int) -> tuple[int, int]:
    """Send ``head_bytes`` then a body 1 MB at a time (up to ``limit_mb``) until the server
    answers; the status and how many MB it had been sent by then."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head_bytes)
        chunk = b"x" * MB
        sent = 0
        answered = asyncio.ensure_future(status_of(reader))
        while not answered.done() and sent < limit_mb:
            frame = chunk if b"chunked" not in head_bytes else b"%x\r\n%s\r\n" % (MB, chunk)
            writer.write(frame)
            try:
                await writer.drain()
            except ConnectionError:
                break
            sent += 1
            await asyncio.sleep(0)
        return await answered, sent
    finally:
        writer.close()


async def honest_request(port: int) -> int:
    import httpx2

    async with httpx2.AsyncClient(timeout=20) as http:
        url = f"http://127.0.0.1:{port}/mcp"
        return (await http.post(url, json=INITIALIZE, headers=ACCEPT)).status_code


async def test_a_huge_body_to_a_wrong_host_is_refused_before_it_is_read():
    async with served() as port:
        length = f"Content-Length: {150 * MB}\r\n"
        status, sent = await send_until_answered(port, head(port, "evil.example", length), 150)
        assert status == 421 and sent < 150  # answered while the body was still coming
        status, sent = await send_until_answered(
            port, head(port, extra=f"Origin: http://evil.example\r\n{length}"), 150
        )
        assert status == 403 and sent < 150
        assert await honest_request(port) == 200


async def test_a_huge_body_is_refused_while_it_is_read():
    async with served() as port:
        # declared too long: refused at once
        length = f"Content-Length: {150 * MB}\r\n"
        status, sent = await send_until_answered(port, head(port, extra=length), 150)
        assert status == 413 and sent < 150
        # not declared (chunked): refused once past the limit, not after the whole of it (what
        # the client wrote by then includes what the sockets' buffers took meanwhile)
        chunked = "Transfer-Encoding: chunked\r\n"
        status, sent = await send_until_answered(port, head(port, extra=chunked), 150)
        assert status == 413 and sent < 4 * http_limits.MAX_BODY_BYTES // MB, sent
        assert await honest_request(port) == 200


async def test_connections_that_never_finish_their_headers_are_closed(monkeypatch):
    monkeypatch.setattr(http_guard, "HEADER_SECONDS", 0.3)
    async with served() as port:
        slow = [await asyncio.open_connection("127.0.0.1", port) for _ in range(30)]
        for _, writer in slow:
            writer.write(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1")  # and never the rest
        assert await honest_request(port) == 200
        # each is closed by the server: its reader sees the end (bounded: never a hang)
        ends = await asyncio.wait_for(asyncio.gather(*(r.read() for r, _ in slow)), 20)
        assert ends == [b""] * 30
        for _, writer in slow:
            writer.close()


async def test_open_connections_are_bounded(monkeypatch):
    monkeypatch.setattr(http_guard, "MAX_CONNECTIONS", 5)
    async with served() as port:
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(5)]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), 20) == b""  # closed at once
        writer.close()
        for _, other in held:
            other.close()
        await asyncio.sleep(0)


async def test_a_request_refused_by_its_head_never_reaches_the_app():
    """Refusing a wrong Host, a wrong Origin or a declared length over the limit takes the
    request's head alone: it is answered and its connection closed before the app runs (a
    client repeating it costs no more than the connection, bench 9h)."""
    reached: list[str] = []
    async with served(reached) as port:
        length = f"Content-Length: {150 * MB}\r\n"
        attempts = [
            (head(port, "evil.example", length), 421, b"Invalid Host header"),
            (head(port, extra=f"Origin: http://evil.example\r\n{length}"), 403, b"Origin"),
            (head(port, extra=length), 413, b"over %d bytes" % http_limits.MAX_BODY_BYTES),
        ]
        for request, status, text in attempts:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            # some of the body, all read with the head (more, left unread, resets the connection)
            writer.write(request + b"x" * 1024)
            assert await status_of(reader) == status
            answer = await asyncio.wait_for(reader.read(), 20)  # then closed: the end
            assert b"connection: close" in answer.lower() and text in answer, answer
            writer.close()
        assert reached == []
        assert await honest_request(port) == 200
        assert reached == [f"127.0.0.1:{port}"]


async def test_an_honest_client_is_answered_while_another_keeps_posting_huge_bodies():
    async with served() as port:
        refusals = 0
        refused = asyncio.Event()

        async def attack() -> None:
            nonlocal refusals
            request = head(port, "evil.example", f"Content-Length: {150 * MB}\r\n")
            while True:
                status, _ = await send_until_answered(port, request, 150)
                assert status == 421
                refusals += 1
                refused.set()

        attacker = asyncio.create_task(attack())
        try:
            await asyncio.wait_for(refused.wait(), 20)
            for _ in range(5):
                assert await honest_request(port) == 200
            assert not attacker.done()  # still attacking
        finally:
            attacker.cancel()
        assert refusals >= 1


async def test_refused_connections_leave_no_descriptor_open(monkeypatch):
    """A refused connection lingers (``REFUSED_LINGER``), then the server closes its socket on
    a thread of its own (the kernel's reset of a refused body's connection is slow): every one
    is closed all the same."""
    monkeypatch.setattr(http_guard, "REFUSED_LINGER", 0.05)

    def open_descriptors() -> int:
        return len(os.listdir("/proc/self/fd"))

    async with served() as port:
        assert await honest_request(port) == 200
        before = open_descriptors()
        request = head(port, "evil.example", f"Content-Length: {150 * MB}\r\n")
        for _ in range(20):
            assert (await send_until_answered(port, request, 150))[0] == 421
        for _ in range(500):  # the closing thread catches up within moments
            if open_descriptors() <= before:
                break
            await asyncio.sleep(0.01)
        assert open_descriptors() <= before


pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::ResourceWarning")]
