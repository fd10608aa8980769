"""Helpers for the MCP server tests: a broker engine served on the test's nats-server, and the
server under test started as a real subprocess over stdio or streamable HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx2 as httpx
import nats
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client

from mq9_broker import BrokerEngine, serve_on_nats
from testbed.ports import unclaimed_port
from testbed.support.processes import end_process
from testbed.support.waiting import until_sync

ROOT = Path(__file__).resolve().parents[2]

# Every MCP request a test makes is bounded by this.
REQUEST_TIMEOUT = 20.0  # seconds

# A raw client's first request, and the Accept header streamable HTTP requires.
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"},
    },
}
ACCEPT = {"Accept": "application/json, text/event-stream"}
# The two protocol eras, and the Tasks extension a 2026-07-28 client declares.
LEGACY, MODERN = "2025-11-25", "2026-07-28"
EXTENSION = "io.modelcontextprotocol/tasks"

# The variables the server reads; a developer's own settings must not leak into a test.
_SERVER_ENV = (
    "MQ9_SERVER", "NATS_URL", "MQ9_USER", "NATS_USER", "MQ9_PASSWORD", "NATS_PASSWORD",
    "MQ9_TOKEN", "NATS_TOKEN", "MQ9_CREDS", "NATS_CREDS", "MQ9_MCP_TOKEN", "MQ9_CREDENTIAL",
    "MQ9_CREDENTIAL_FILE",
)  # fmt: skip


def server_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SERVER_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def stdio_parameters(*args: str, **env: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "mq9_mcp", *args],
        env=server_env(**env),
        cwd=str(ROOT),
    )


# The model's load is waited for this long at most (it is read once per process).
MODEL_LOAD_SECONDS = 120


@asynccontextmanager
async def served_engine(nats_url: str) -> AsyncIterator[BrokerEngine]:
    """A fresh broker engine answering mq9 requests on ``nats_url`` until the block ends, its
    embedding model loaded first, as ``Broker`` loads it at start (``load_model_soon``): an
    engine that has not loads it inside the first REGISTER, whose answer an agent's client
    waits for only its request timeout (5 s), and a cold load takes longer on a busy machine
    (9 s measured at a load average of 12)."""
    engine = BrokerEngine()
    connection = await nats.connect(nats_url)
    service = await serve_on_nats(engine, connection)
    try:
        async with asyncio.timeout(MODEL_LOAD_SECONDS):
            await asyncio.wrap_future(engine.load_model_soon())
        yield engine
    finally:
        await service.stop()
        await connection.close()


@asynccontextmanager
async def stdio_session(*args: str, **env: str) -> AsyncIterator[ClientSession]:
    """``python -m mq9_mcp ARGS`` over stdio, initialized; the process ends with the block."""
    async with (
        stdio_client(stdio_parameters(*args, **env)) as (read, write),
        ClientSession(read, write, read_timeout_seconds=REQUEST_TIMEOUT) as session,
    ):
        await session.initialize()
        yield session


@contextmanager
def http_server(*args: str, port: int | None = None, **env: str) -> Iterator[str]:
    """``python -m mq9_mcp --transport http`` on 127.0.0.1; yields the /mcp URL once the
    port accepts connections, and stops the process afterwards."""
    port = port or unclaimed_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mq9_mcp", "--transport", "http", "--host", "127.0.0.1",
         "--port", str(port), *args],
        cwd=ROOT,
        env=server_env(**env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:

        def listening() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"mq9-mcp exited early: {process.stderr.read().decode()}")
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True

        what = f"mq9-mcp listening on {port}"
        until_sync(listening, timeout=20, what=what, every=0.05, ignoring=(OSError,))
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        end_process(process)


async def ok(session: ClientSession, tool: str, /, **args: Any) -> dict[str, Any]:
    """Call a tool that must succeed; its structured content."""
    return result_data(await session.call_tool(tool, args))


async def fails(session: ClientSession, tool: str, /, **args: Any) -> str:
    """Call a tool that must fail; its error text."""
    return error_text(await session.call_tool(tool, args))


def result_data(result: types.CallToolResult) -> dict[str, Any]:
    """A successful call's structured content, after checking the text says the same."""
    assert not result.is_error, result_text(result)
    data = json.loads(result_text(result))
    assert data == result.structured_content
    return data


def result_text(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


def error_text(result: types.CallToolResult) -> str:
    """An error call's text (and a check that it is one)."""
    assert result.is_error, f"expected an error, got {result_text(result)}"
    return result_text(result)


class RawStdio:
    """``python -m mq9_mcp ARGS`` (by default ``--server memory://``) with its stdin and
    stdout as raw lines."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mq9_mcp", *(args or ("--server", "memory://"))],
            cwd=ROOT,
            env=server_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )

    @classmethod
    def initialized(cls) -> RawStdio:
        raw = cls()
        raw.send(json.dumps(INITIALIZE))
        assert raw.answer()["id"] == 1
        raw.send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        return raw

    def send(self, line: str | bytes) -> None:
        self.process.stdin.write(line if isinstance(line, bytes) else line.encode() + b"\n")
        self.process.stdin.flush()

    def answer(self, timeout: float = 20) -> dict:
        """The next line the server writes (bounded: a missing answer fails, never hangs)."""
        box: list[bytes] = []
        reader = threading.Thread(target=lambda: box.append(self.process.stdout.readline()))
        reader.daemon = True
        reader.start()
        reader.join(timeout)
        assert box and box[0], "no answer"
        return json.loads(box[0])

    def close(self) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()


class Peer:
    """One client of the server, driven request by request: in ``era``, with its worker name."""

    def __init__(self, http: httpx.AsyncClient, url: str, era: str, worker: str) -> None:
        self.http, self.url, self.era, self.worker = http, url, era, worker
        self.session = ""
        self.ids = iter(range(1, 10**6))

    def headers(self, worker: str | None = None) -> dict[str, str]:
        headers = {**ACCEPT, "mcp-protocol-version": self.era, "mq9-worker": worker or self.worker}
        return {**headers, "mcp-session-id": self.session} if self.session else headers

    async def open(self) -> Peer:
        if self.era == LEGACY:
            opening = await self.rpc("initialize", protocolVersion=LEGACY, capabilities={},
                                     clientInfo={"name": self.worker, "version": "1"})  # fmt: skip
            assert "result" in opening, opening
            note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
            await self.http.post(self.url, json=note, headers=self.headers())
        return self

    async def rpc(self, method: str, *, worker: str | None = None, **params: Any) -> dict:
        """The JSON-RPC answer to one request (2026-07-28: its capabilities in ``_meta``)."""
        if self.era == MODERN:
            params["_meta"] = {
                types.PROTOCOL_VERSION_META_KEY: MODERN,
                types.CLIENT_INFO_META_KEY: {"name": self.worker, "version": "1"},
                types.CLIENT_CAPABILITIES_META_KEY: {"extensions": {EXTENSION: {}}},
            }
        message = {"jsonrpc": "2.0", "id": next(self.ids), "method": method, "params": params}
        headers = self.headers(worker)
        if self.era == MODERN:  # 2026-07-28 names the method (and tool, uri) in headers too
            headers["mcp-method"] = method
            named = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
            headers.update({"mcp-name": params[named[method]]} if method in named else {})
        response = await self.http.post(self.url, json=message, headers=headers)
        if method == "initialize":
            self.session = response.headers.get("mcp-session-id", "")
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        data = [line[5:] for line in response.text.splitlines() if line.startswith("data:")]
        return json.loads([d for d in data if d.strip()][-1])

    async def call(self, tool: str, *, task: bool = False, **arguments: Any) -> dict:
        params: dict[str, Any] = {"name": tool, "arguments": arguments}
        if task and self.era == LEGACY:
            params["task"] = {"ttl": 600_000}
        return await self.rpc("tools/call", **params)

    async def data(self, tool: str, **arguments: Any) -> dict:
        result = (await self.call(tool, **arguments))["result"]
        assert not result.get("isError"), result
        return result["structuredContent"]


class Updates:
    """The resources/updated notifications a 2025-11-25 client got."""

    def __init__(self) -> None:
        self.uris: asyncio.Queue[str] = asyncio.Queue()

    async def __call__(self, message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            await self.uris.put(str(message.params.uri))

    async def next(self) -> str:
        return await asyncio.wait_for(self.uris.get(), 10)
