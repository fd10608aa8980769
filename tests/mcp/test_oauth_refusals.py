"""Issues #116 and #117: what a 401 of mq9-mcp's OAuth resource server says, against a real
authorization server (oidc-provider, tests/mcp/oauth/) over HTTP. Before, every refused token
got "the bearer token is wrong" (an expired one too, not logged at info), a request with no
credentials got ``error="invalid_token"`` (RFC 6750 section 3.1: no error code then), and a
token 20 s past its expiry was refused although the docs forgive 30 s of clock skew (the SDK's
bearer middleware checked ``expires_at`` without the leeway)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx2 as httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from mq9_mcp.http.issuer import LEEWAY_S
from mq9_mcp.http.oauth import access_token
from testbed.ports import unclaimed_port
from testbed.support.mcp_support import http_server
from tests.mcp.oauth.support import AuthorizationServer, client, running

pytestmark = pytest.mark.slow  # an authorization server and an mq9-mcp process

PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[AuthorizationServer, str]]:
    port = unclaimed_port()
    resource = f"http://127.0.0.1:{port}/mcp"
    with running(resource, [client("alice")]) as authority, http_server(
        "--server", "memory://", "--oauth-issuer", authority.url, "--resource-url", resource,
        port=port,
    ) as url:  # fmt: skip
        yield authority, url


async def ping(url: str, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(headers=headers) as http:
        return await http.post(url, json=PING)


@pytest.mark.parametrize("given", [{}, {"Authorization": "Basic YWxpY2U6cHc="}])
async def test_a_request_without_credentials_gets_no_error_code(served, given):
    _, url = served
    answer = await ping(url, given)
    assert answer.status_code == 401
    challenge = answer.headers["www-authenticate"]
    assert challenge.startswith("Bearer ") and "resource_metadata=" in challenge
    assert "error=" not in challenge and "error_description=" not in challenge, challenge
    assert "error" not in answer.json()["error"].get("data", {}), answer.text


def now() -> int:
    return int(time.time())


REASONS = {
    "expired": (lambda a: a.forge(exp=now() - 3600, iat=now() - 7200), "has expired"),
    "audience": (lambda a: a.forge(aud="http://127.0.0.1:1/mcp"), "another audience"),
    "issuer": (lambda a: a.forge(iss="http://127.0.0.1:1"), "another issuer"),
    "signature": (
        lambda a: a.forge(key=rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        "signature does not verify",
    ),
}


async def test_a_refusal_says_why_in_the_401(served):
    authority, url = served
    said = {}
    for case, (make, words) in REASONS.items():
        token = make(authority)
        answer = await ping(url, {"Authorization": f"Bearer {token}"})
        assert answer.status_code == 401, case
        data = answer.json()["error"]["data"]
        assert data["error"] == "invalid_token" and words in data["error_description"], data
        challenge = answer.headers["www-authenticate"]
        assert 'error="invalid_token"' in challenge and words in challenge, challenge
        assert token not in answer.text and token not in challenge
        said[case] = data["error_description"]
    assert len(set(said.values())) == len(REASONS), said  # four reasons, told apart


async def test_a_token_within_the_documented_clock_skew_is_taken(served):
    authority, url = served
    late = authority.forge(exp=now() - 20, iat=now() - 320)  # 20 s past, within the 30 s
    assert (await ping(url, {"Authorization": f"Bearer {late}"})).status_code != 401
    gone = authority.forge(exp=now() - LEEWAY_S - 5, iat=now() - 320)
    assert (await ping(url, {"Authorization": f"Bearer {gone}"})).status_code == 401


def test_an_access_tokens_expiry_carries_the_leeway_for_the_sdk():
    """The SDK's bearer middleware refuses past ``expires_at``: it must be the claim's ``exp``
    plus the leeway, for introspected tokens as for JWTs (both go through ``access_token``)."""
    checked = access_token("t", {"exp": 1000, "sub": "alice", "iss": "i"}, "http://r/mcp")
    assert checked.expires_at == 1000 + LEEWAY_S


async def test_with_the_static_token_alone_a_request_without_one_gets_a_bare_challenge():
    """No metadata URL and no error code leave the challenge its scheme alone: ``Bearer``, no
    trailing space (an HTTP server refuses to send a header value ending in one)."""
    with http_server("--server", "memory://", "--auth-token", "s" * 40) as url:
        answer = await ping(url, {})
        assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
        wrong = await ping(url, {"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
