"""Issue #116: a signing key the authorization server retires stops working, and an
authorization server that hangs stalls nobody whose key is known. Played against a real one
(oidc-provider, tests/mcp/oauth/) and mq9-mcp over HTTP. Before, PyJWKClient kept each key id
it had answered, with no expiry, until the process stopped (a token signed with a retired key
was taken 307 s after its removal); and each unknown key id made a 10 s JWKS fetch in a worker
thread under one lock, so 60 made-up key ids left alice's request unanswered until the
authorization server came back."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

import httpx2 as httpx
import pytest

from mq9_mcp.http.jwks import DEADLINE_S
from testbed.ports import unclaimed_port
from testbed.support.mcp_support import http_server
from testbed.support.waiting import until
from tests.mcp.oauth.requests_seen import JWKS, record_requests, seen
from tests.mcp.oauth.support import client, running

pytestmark = pytest.mark.slow  # an authorization server and an mq9-mcp process each

CLIENTS = [client("alice")]
PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}


async def status_with(url: str, token: str, timeout: float = 30) -> int:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http:
        return (await http.post(url, json=PING, timeout=timeout)).status_code


async def test_a_retired_signing_key_is_refused_once_the_jwks_is_read_again(tmp_path, monkeypatch):
    requests = record_requests(monkeypatch, tmp_path)
    port = unclaimed_port()
    resource = f"http://127.0.0.1:{port}/mcp"
    with running(resource, CLIENTS) as authority, http_server(
        "--server", "memory://", "--oauth-issuer", authority.url, "--resource-url", resource,
        "--oauth-jwks-max-age", "2", "--oauth-jwks-cooldown", "1", port=port,
    ) as url:  # fmt: skip
        old_token = authority.token("alice", "alice-secret", "mq9:read")
        assert await status_with(url, old_token) != 401
        retired = authority.key
        reads = seen(requests, JWKS)
        authority.rotate("k2")  # k1 gone from the JWKS; its private key in a thief's hands

        def stolen() -> str:  # signed after the retirement, as alice, with every scope
            return authority.forge(key=retired, headers={"kid": "k1"}, sub="alice")

        async def refused() -> bool:
            return await status_with(url, stolen()) == 401

        # read again within the bound (2 s here): before, k1 stayed until the process stopped
        await until(refused, timeout=15, what="a token signed with the retired key refused")
        assert seen(requests, JWKS) > reads
        assert await status_with(url, old_token) == 401
        assert await status_with(url, authority.token("alice", "alice-secret", "mq9:read")) != 401


async def test_a_hung_authorization_server_delays_no_known_key(tmp_path, monkeypatch):
    """The authorization server stopped (SIGSTOP): made-up key ids start one JWKS fetch, which
    hangs until its deadline; alice, whose key is known, is answered while it still hangs."""
    requests = record_requests(monkeypatch, tmp_path)
    port = unclaimed_port()
    resource = f"http://127.0.0.1:{port}/mcp"
    with running(resource, CLIENTS) as authority, http_server(
        "--server", "memory://", "--oauth-issuer", authority.url, "--resource-url", resource,
        "--oauth-jwks-cooldown", "0", port=port,
    ) as url:  # fmt: skip
        alice = authority.token("alice", "alice-secret", "mq9:read")
        assert await status_with(url, alice) != 401
        reads = seen(requests, JWKS)
        assert authority.process is not None
        os.kill(authority.process.pid, signal.SIGSTOP)
        stack = contextlib.AsyncExitStack()
        try:
            made_up = [authority.forge(headers={"kid": f"made-up-{n}"}) for n in range(60)]
            # one client, 60 connections: the strangers arrive together, not one by one
            limits = httpx.Limits(max_connections=len(made_up))
            crowd = await stack.enter_async_context(httpx.AsyncClient(limits=limits, timeout=30))

            async def stranger(token: str) -> int:
                headers = {"Authorization": f"Bearer {token}"}
                return (await crowd.post(url, json=PING, headers=headers)).status_code

            strangers = [asyncio.create_task(stranger(t)) for t in made_up]
            # the strangers' requests reach the server and one starts the hung fetch
            await asyncio.sleep(0.5)
            assert not any(s.done() for s in strangers), "the fetch did not hang"
            # within the fetch's deadline: before, alice queued behind the strangers' fetches
            assert await status_with(url, alice, timeout=DEADLINE_S) != 401
            # answered while the strangers still wait on the fetch (its deadline not passed)
            assert not all(s.done() for s in strangers)
        finally:
            os.kill(authority.process.pid, signal.SIGCONT)
        async with stack:
            assert set(await asyncio.gather(*strangers)) == {401}
        # a fetch at a time, not one per made-up key id (before: 60)
        assert seen(requests, JWKS) - reads <= 5
