"""A close has one deadline: a NATS server that stops reading (its buffers full) holds
nats-py's own close for ever, flushing what is pending and waiting for the socket to close.
``close_within`` drops the socket past its bound, and ``Mq9Client.close`` is bounded by it.
The server here is a real socket on loopback that answers the handshake, then reads nothing."""

from __future__ import annotations

import asyncio
import json

import pytest

from mq9_platform import Mq9Client
from mq9_platform.client import transport
from mq9_wire.nats_floor.guard import GuardedClient, close_within
from mq9_wire.protocol.errors import RequestTimeout

WAIT = 60  # seconds: a hang guard, never a timing assertion
BLOCK = b"x" * 1_000_000


class DeafServer:
    """Says INFO, answers the first PING, then never reads again."""

    def __init__(self) -> None:
        self.writers: list[asyncio.StreamWriter] = []
        self.serving: list[asyncio.Task[None]] = []
        self.stopped_reading = asyncio.Event()

    async def __aenter__(self) -> DeafServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"nats://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        for task in self.serving:
            task.cancel()
        await asyncio.gather(*self.serving, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        self.serving.append(asyncio.current_task())  # type: ignore[arg-type]
        info = {"server_id": "deaf", "proto": 1, "headers": True, "max_payload": 8 << 20}
        writer.write(b"INFO " + json.dumps(info).encode() + b"\r\n")
        seen = b""
        while b"PING\r\n" not in seen:
            chunk = await reader.read(4096)
            if not chunk:
                return
            seen += chunk
        writer.write(b"PONG\r\n")
        await writer.drain()
        self.stopped_reading.set()
        await asyncio.Event().wait()  # reads nothing more: what the client writes piles up


async def fill(connection: GuardedClient) -> None:
    """Publish more than the sockets' buffers hold. (nats-py's publish waits for its flusher
    once more than its ``pending_size`` is queued, swallowing a cancel meanwhile: the
    connections here queue up to PENDING, so no publish waits.)"""
    for _ in range(32):
        await connection.publish("deaf.subject", BLOCK)


PENDING = 256 << 20


async def test_a_server_that_stops_reading_cannot_hold_a_close_past_its_bound():
    async with DeafServer() as server:
        connection = GuardedClient()
        await connection.connect(
            server.url, allow_reconnect=False, connect_timeout=WAIT, pending_size=PENDING
        )
        await asyncio.wait_for(server.stopped_reading.wait(), WAIT)
        await asyncio.wait_for(fill(connection), WAIT)
        finished = await asyncio.wait_for(close_within(connection, 0.5), WAIT)
        assert finished is False  # it had to be dropped
        assert connection.is_closed


async def test_a_close_in_time_says_so():
    async with DeafServer() as server:
        connection = GuardedClient()
        await connection.connect(
            server.url, allow_reconnect=False, connect_timeout=WAIT, pending_size=PENDING
        )
        assert await asyncio.wait_for(close_within(connection, WAIT), WAIT)
        assert await close_within(connection, WAIT)  # closed already: nothing to wait for


@pytest.mark.slow  # over a second on a quiet machine (#89)
async def test_requests_and_the_close_keep_their_bounds_when_the_server_stops_reading(
    monkeypatch: pytest.MonkeyPatch,
):
    """More than nats-py's pending size queued, its publish waits for the flusher, for ever
    here, swallowing the cancel that would end the wait: each request still ends at its
    timeout, and the client's close at its bound."""
    monkeypatch.setattr(transport, "CLOSE_WITHIN", 0.5)
    async with DeafServer() as server:
        client = Mq9Client(server.url, request_timeout=0.5)
        await client.connect()
        sending = [asyncio.ensure_future(client.send("deaf.box", "x" * 500_000)) for _ in range(64)]
        done, waiting = await asyncio.wait(sending, timeout=WAIT)
        assert not waiting
        assert all(isinstance(task.exception(), RequestTimeout) for task in done)
        await asyncio.wait_for(client.close(), WAIT)
        assert not client.is_connected
