"""Issue #116: local tokens stay local, and introspection is bounded. With ``--oauth-client-id``
beside ``--tokens-file`` and ``--auth-token``, mq9-mcp POSTed every tokens-file and static token
to the issuer's introspection endpoint before reading the file (the operator's secrets sent to a
third party), remembered no refusal (200 made-up tokens: 200 calls) and bounded nothing. Played
against a real authorization server (oidc-provider), its requests counted by path. Also: a
deleted tokens file kept every person in (the last table stayed); it now refuses, as an emptied
one does."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from mq9_mcp.http import introspection
from mq9_mcp.http.introspection import Introspected
from mq9_mcp.http.issuer import AuthorizationServer
from mq9_mcp.http.oauth import access_token
from mq9_mcp.http.tokens_file import TokensFile
from testbed.ports import unclaimed_port
from testbed.support.mcp_support import http_server
from tests.mcp.oauth.requests_seen import INTROSPECTION, record_requests, seen
from tests.mcp.oauth.support import client, running

ALICE, STATIC = "alice-" + "a" * 40, "static-" + "s" * 40
PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}


async def status_with(url: str, token: str) -> int:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http:
        return (await http.post(url, json=PING)).status_code


@pytest.mark.slow  # an authorization server and an mq9-mcp process
async def test_tokens_file_and_static_tokens_never_reach_the_introspection_endpoint(
    tmp_path, monkeypatch
):
    requests = record_requests(monkeypatch, tmp_path)
    tokens = tmp_path / "tokens"
    tokens.write_text(f"alice: {hashlib.sha256(ALICE.encode()).hexdigest()}\n")
    port = unclaimed_port()
    resource = f"http://127.0.0.1:{port}/mcp"
    clients = [client("opaque-carol"), client("mq9-mcp", grant_types=[])]
    with running(resource, clients) as authority, http_server(
        "--server", "memory://", "--oauth-issuer", authority.url, "--resource-url", resource,
        "--oauth-client-id", "mq9-mcp", "--tokens-file", str(tokens), "--auth-token", STATIC,
        port=port, MQ9_MCP_OAUTH_CLIENT_SECRET="mq9-mcp-secret",
    ) as url:  # fmt: skip
        at_start = seen(requests, INTROSPECTION)  # the start check's one question
        for _ in range(5):
            assert await status_with(url, ALICE) != 401
            assert await status_with(url, STATIC) != 401
        assert seen(requests, INTROSPECTION) == at_start
        # an opaque token of the issuer's is still asked about, once while it is remembered
        carol = authority.token("opaque-carol", "opaque-carol-secret", "mq9:read")
        for _ in range(3):
            assert await status_with(url, carol) != 401
        assert seen(requests, INTROSPECTION) == at_start + 1
        # a made-up token is asked about once: its refusal is remembered
        for _ in range(5):
            assert await status_with(url, "made-up-opaque-token") == 401
        assert seen(requests, INTROSPECTION) == at_start + 2


@pytest.mark.slow  # an mq9-mcp process
async def test_a_deleted_tokens_file_refuses_everyone(tmp_path, caplog):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"alice: {hashlib.sha256(ALICE.encode()).hexdigest()}\n")
    with http_server("--server", "memory://", "--tokens-file", str(tokens)) as url:
        assert await status_with(url, ALICE) != 401
        tokens.unlink()
        assert await status_with(url, ALICE) == 401
        tokens.write_text(f"alice: {hashlib.sha256(ALICE.encode()).hexdigest()}\n")
        assert await status_with(url, ALICE) != 401  # back: read again
    # and the log says so, once
    tokens = Path(tmp_path / "tokens2")
    tokens.write_text(f"alice: {hashlib.sha256(ALICE.encode()).hexdigest()}\n")
    verifier = TokensFile(tokens)
    tokens.unlink()
    with caplog.at_level(logging.WARNING, logger="mq9_mcp"):
        assert await verifier.verify_token(ALICE) is None
        assert await verifier.verify_token(ALICE) is None
    gone = [r for r in caplog.records if "is gone" in r.getMessage()]
    assert len(gone) == 1 and str(tokens) in gone[0].getMessage()


RESOURCE = "http://127.0.0.1:9/mcp"


def answering(claims: dict[str, Any], hang: asyncio.Event | None = None) -> Introspected:
    """An ``Introspected`` whose endpoint answers ``claims`` (counted in ``asked``)."""
    server = AuthorizationServer(issuer="https://as", resource=RESOURCE, client_id="mq9-mcp")
    verifier = Introspected(server, lambda t, c: access_token(t, c, RESOURCE))

    async def ask(token: str) -> dict[str, Any]:
        verifier.calls += 1
        if hang is not None:
            await hang.wait()
        return dict(claims)

    verifier._ask = ask  # type: ignore[method-assign]  # the endpoint, in process
    return verifier


def active(**changes: Any) -> dict[str, Any]:
    return {"active": True, "iss": "https://as", "aud": RESOURCE, "sub": "alice",
            "exp": time.time() + 300, "scope": "mq9:read", **changes}  # fmt: skip


@pytest.mark.parametrize("kind", ["refresh_token", "N_A", "DPoP"])
async def test_an_introspected_token_that_is_no_bearer_access_token_is_refused(kind):
    """A refresh token presented as a bearer is refused whatever its audience."""
    assert await answering(active(token_type=kind)).verify("t") is None
    assert await answering(active(cnf={"jkt": "x"})).verify("t") is None
    for taken in ("Bearer", "access_token", None):
        claims = active(token_type=taken) if taken else active()
        assert await answering(claims).verify("t") is not None, taken


async def test_introspection_calls_are_bounded_at_once_and_per_second(monkeypatch):
    monkeypatch.setattr(introspection, "PER_SECOND", 1000)
    hang = asyncio.Event()
    verifier = answering(active(), hang)
    waiting = [asyncio.create_task(verifier.verify(f"t{n}")) for n in range(introspection.AT_ONCE)]
    await asyncio.sleep(0.01)
    assert verifier.calls == introspection.AT_ONCE
    assert await verifier.verify("one-more") is None  # refused at once, not queued
    assert verifier.calls == introspection.AT_ONCE
    hang.set()
    assert all(await asyncio.gather(*waiting))
    monkeypatch.setattr(introspection, "PER_SECOND", 3)
    clock = [5000.0]
    verifier = answering(active(active=False))
    verifier.clock = lambda: clock[0]
    for n in range(5):
        await verifier.verify(f"made-up-{n}")
    assert verifier.calls == 3
    clock[0] += 1
    await verifier.verify("made-up-next-second")
    assert verifier.calls == 4
