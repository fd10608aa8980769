"""HTTP peers on 127.0.0.1 that never finish answering: each sends what it sends a little at a
time, forever, so that only a deadline of the whole request ends a read of it (a per-read
timeout is reset by every byte). For the tests of calls out and card imports (issue #70)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

TASK = {"id": "remote-1", "contextId": "ctx-1", "status": {"state": "TASK_STATE_WORKING"}}


class Dripping:
    """How it answers each request (``how``):

    - ``headers``: the status line and headers a byte at a time;
    - ``body``: the headers at once (a Content-Length), the body a byte at a time;
    - ``stream``: an event stream's headers at once, then a comment line at a time, no event;
    - ``task-then-stream``: the same stream, its first event a working task, then comments;
    - ``task-then-drip``: a JSON-RPC answer naming a working task to the first request, and
      every later one (GetTask) answered as ``body``.
    """

    def __init__(self, how: str, every: float = 0.2) -> None:
        self.how = how
        self.every = every
        self.requests = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def _request(self, reader: asyncio.StreamReader) -> dict:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        body = await reader.readexactly(length) if length else b""
        try:
            found = json.loads(body) if body else {}
        except ValueError:
            found = {}
        return found if isinstance(found, dict) else {}

    async def _drip(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        for i in range(len(data)):
            writer.write(data[i : i + 1])
            await writer.drain()
            await asyncio.sleep(self.every)

    async def _forever(self, writer: asyncio.StreamWriter, line: bytes) -> None:
        while True:
            writer.write(line)
            await writer.drain()
            await asyncio.sleep(self.every)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            request = await self._request(reader)
            self.requests += 1
            how = self.how
            if how == "task-then-drip":
                if self.requests == 1:
                    answer = {"jsonrpc": "2.0", "id": request.get("id"), "result": {"task": TASK}}
                    body = json.dumps(answer).encode()
                    writer.write(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                        + f"content-length: {len(body)}\r\n\r\n".encode()
                        + body
                    )
                    await writer.drain()
                    return
                how = "body"
            if how == "headers":
                await self._drip(writer, b"HTTP/1.1 200 OK\r\nx-slow: " + b"a" * 10_000)
            elif how == "body":
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n")
                writer.write(b"content-length: 1000000\r\n\r\n")
                await self._drip(writer, b" " * 1_000_000)
            else:
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n")
                writer.write(b"cache-control: no-cache\r\n\r\n")
                if how == "task-then-stream":
                    event = {"jsonrpc": "2.0", "id": request.get("id"), "result": {"task": TASK}}
                    writer.write(b"data: " + json.dumps(event).encode() + b"\n\n")
                await self._forever(writer, b": still here\n\n")
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client gave up on it: what the tests wait for
        finally:
            self._writers.discard(writer)
            writer.close()

    async def __aenter__(self) -> Dripping:
        self._server = await asyncio.start_server(self._answer, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)


def card_of(base: str, *, streaming: bool) -> dict:
    """An A2A card (JSON) naming ``base``/rpc as its JSON-RPC interface."""
    return {
        "name": "Dripper",
        "supportedInterfaces": [
            {"url": base + "/rpc", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}
        ],
        "capabilities": {"streaming": streaming},
    }


@contextlib.asynccontextmanager
async def dripping(how: str, every: float = 0.2) -> AsyncIterator[Dripping]:
    async with Dripping(how, every) as peer:
        yield peer
