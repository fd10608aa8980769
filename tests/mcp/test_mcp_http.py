"""The MCP server over streamable HTTP: a subprocess on a free loopback port, the official MCP
client, the bearer token and the Host/Origin checks."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx2 as httpx
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from mq9_mcp.http import guard as http_guard
from mq9_mcp.http import is_loopback
from mq9_mcp.server import mcp_policy
from mq9_platform import Mq9Client
from mq9_platform.operations.catalog import OPERATIONS, ToolPolicy
from testbed.support.mcp_support import (
    ACCEPT,
    INITIALIZE,
    REQUEST_TIMEOUT,
    ROOT,
    fails,
    http_server,
    ok,
    served_engine,
    server_env,
)

pytestmark = pytest.mark.slow

TOKEN = "test-token-5c1e0f"


@asynccontextmanager
async def http_session(
    url: str, token: str | None = None, worker: str | None = None
) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if worker:
        headers["Mq9-Worker"] = worker  # which competing worker this client is
    async with (
        httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(20, read=60)) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write, read_timeout_seconds=REQUEST_TIMEOUT) as session,
    ):
        await session.initialize()
        yield session


async def test_bearer_token_guards_every_request(nats_server):
    async with served_engine(nats_server.url), Mq9Client(nats_server.url) as observer:
        with http_server("--server", nats_server.url, "--auth-token", TOKEN) as url:
            async with httpx.AsyncClient(timeout=10) as raw:
                for headers in (
                    {},
                    {"Authorization": "Bearer wrong"},
                    {"Authorization": TOKEN},
                    {"Authorization": f"Basic {TOKEN}"},
                ):
                    refused = await raw.post(url, json=INITIALIZE, headers={**ACCEPT, **headers})
                    assert refused.status_code == 401, headers
                    assert refused.headers["www-authenticate"].startswith("Bearer")
                assert (await raw.get(url)).status_code == 401
                assert (await raw.get(url.removesuffix("/mcp") + "/other")).status_code == 401

                # The right token, but a page on another origin or a rebound host name: refused.
                auth = {**ACCEPT, "Authorization": f"Bearer {TOKEN}"}

                async def initialize(**headers: str) -> int:
                    response = await raw.post(url, json=INITIALIZE, headers={**auth, **headers})
                    return response.status_code

                assert await initialize(Origin="http://evil.example") == 403
                assert await initialize(Host="evil.example:80") == 421
                assert await initialize(Origin="http://localhost:3000") == 200

            async with http_session(url, TOKEN) as mcp:
                tools = (await mcp.list_tools()).tools
                # every operation but the opt-in agent-call tools (mq9-mcp --calls)
                assert [t.name for t in tools] == [
                    name for name, op in OPERATIONS.items() if op.allowed(ToolPolicy())
                ]
                served = mcp_policy(None)  # its waits capped (#107): the descriptions say so
                assert all(t.input_schema == OPERATIONS[t.name].input_schema(served) for t in tools)
                assert all(t.output_schema == OPERATIONS[t.name].output_schema for t in tools)
                await ok(mcp, "create_mailbox", name="web.inbox")
                await ok(mcp, "send_message", mail_address="web.inbox", payload="b")
                await ok(
                    mcp, "send_message", mail_address="web.inbox", payload="a", priority="critical"
                )
                fetched = await ok(mcp, "fetch_messages", mail_address="web.inbox")
                assert [m["payload"] for m in fetched["messages"]] == ["a", "b"]
                text = await fails(
                    mcp, "send_message", mail_address="web.inbox", payload="c", priority="high"
                )
                assert "'normal', 'urgent' or 'critical'" in text
            assert sorted(m.payload for m in await observer.query("web.inbox")) == [b"a", b"b"]


async def test_loopback_without_token_serves_workers_with_their_own_created_mailboxes():
    with http_server(
        "--server", "memory://", "--allowed-mailboxes", "shared", "--num-msgs", "1"
    ) as url:
        async with (
            http_session(url, worker="alice") as alice,
            http_session(url, worker="bob") as bob,
        ):
            await ok(alice, "create_mailbox", name="shared.board")
            private = (await ok(alice, "create_mailbox"))["mail_address"]
            await ok(alice, "send_message", mail_address=private, payload="mine")
            await ok(alice, "send_message", mail_address="shared.board", payload="hi")

            # One broker behind both sessions...
            board = await ok(bob, "query_messages", mail_address="shared.board")
            assert [m["payload"] for m in board["messages"]] == ["hi"]
            # ...but a mailbox Alice created is not opened up to Bob by the allow-list.
            text = await fails(bob, "query_messages", mail_address=private)
            assert "outside the mailboxes" in text
            mine = await ok(alice, "query_messages", mail_address=private)
            assert [m["payload"] for m in mine["messages"]] == ["mine"]

            # Two workers reading one group compete: no message for both,
            # and neither can ack what the other was handed.
            await ok(alice, "send_message", mail_address="shared.board", payload="ho")
            taken = [
                (await ok(who, "fetch_messages", mail_address="shared.board"))
                for who in (alice, bob)
            ]
            assert sorted(t["messages"][0]["payload"] for t in taken) == ["hi", "ho"]
            bobs = taken[1]["messages"][0]["msg_id"]
            text = await fails(alice, "ack_messages", mail_address="shared.board", msg_id=bobs)
            assert f"msg_id {bobs} is not waiting for an ack in shared.board" in text
            await ok(bob, "ack_messages", mail_address="shared.board", msg_id=bobs)


def test_non_loopback_host_without_token_refuses_to_start():
    # 192.0.2.1 (TEST-NET-1) is not loopback and not an address of this machine, so even a
    # server that wrongly went ahead could not listen on a public interface.
    process = subprocess.run(
        [sys.executable, "-m", "mq9_mcp", "--transport", "http", "--host", "192.0.2.1",
         "--port", "8123", "--server", "memory://"],
        cwd=ROOT, env=server_env(), capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert process.returncode == 2
    assert "192.0.2.1 is not a loopback address" in process.stderr
    assert "--auth-token" in process.stderr and "MQ9_MCP_TOKEN" in process.stderr
    assert process.stdout == ""


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True), ("::1", True),
     ("[::1]", True), ("0.0.0.0", False), ("::", False), ("192.168.1.5", False),
     ("example.com", False)],
)  # fmt: skip
def test_which_hosts_count_as_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_the_http_server_refuses_a_uvicorn_h11_or_mcp_it_was_not_written_for(monkeypatch):
    http_guard.check_versions()  # the installed ones
    installed = http_guard.version
    for package in ("uvicorn", "h11", "mcp"):

        def version(name: str, newer: str = package) -> str:
            return "3.0.0" if name == newer else installed(name)

        monkeypatch.setattr(http_guard, "version", version)
        with pytest.raises(RuntimeError, match=f"install {package}>="):
            http_guard.check_versions()
