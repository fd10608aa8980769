"""The MCP SDK's own client OAuth (``mcp.client.auth.OAuthClientProvider``) against mq9-mcp and
a real authorization server on loopback (oidc-provider, tests/mcp/oauth/; issue #112): from a
bare 401 it discovers the Protected Resource Metadata, then the AS's metadata, registers
itself (RFC 7591), runs the authorization code grant with PKCE (the user's consent given
headlessly, by following the AS's redirects), gets a token for mq9-mcp's URL (RFC 8707) and
calls a tool; once its token expires it refreshes it, without asking the user again."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from urllib.parse import parse_qs, urljoin, urlparse

import httpx2 as httpx
import jwt
import pytest
from mcp import ClientSession
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)

from testbed.ports import unclaimed_port
from tests.mcp.oauth.support import AuthorizationServer
from tests.support.mcp_support import http_server, result_data
from tests.support.waiting import until

pytestmark = pytest.mark.slow  # an authorization server and an mq9-mcp process

REDIRECT = "http://127.0.0.1:1/callback"  # never listened on: the test reads the redirect
TTL = 3  # the AS's access token lifetime, s: short, so the refresh is played


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[AuthorizationServer, str]]:
    port = unclaimed_port()
    resource = f"http://127.0.0.1:{port}/mcp"
    authority = AuthorizationServer(resource, [], ttl=TTL).start()
    try:
        with http_server("--server", "memory://", "--oauth-issuer", authority.url,
                         "--resource-url", resource, port=port) as url:  # fmt: skip
            yield authority, url
    finally:
        authority.stop()


class Memory:
    """The SDK's ``TokenStorage``, in memory, counting what it is given."""

    def __init__(self) -> None:
        self.tokens: list[OAuthToken] = []
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens[-1] if self.tokens else None

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens.append(tokens)

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


class HeadlessUser:
    """The user at the browser: opens the authorization URL as ``login_hint`` and follows the
    AS's redirects (its login and consent answered by the test's interaction routes) until
    it redirects to the client; the code and state come from there."""

    def __init__(self, login: str) -> None:
        self.login = login
        self.opened: list[str] = []
        self.result: AuthorizationCodeResult | None = None

    async def redirect(self, authorization_url: str) -> None:
        self.opened.append(authorization_url)
        url = f"{authorization_url}&login_hint={self.login}"
        async with httpx.AsyncClient() as browser:  # its cookie jar is the browser's session
            for _ in range(10):
                answer = await browser.get(url)
                assert answer.status_code in (302, 303), answer.text
                url = urljoin(url, answer.headers["location"])
                if url.startswith(REDIRECT):
                    query = {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}
                    assert "code" in query, query
                    self.result = AuthorizationCodeResult(
                        code=query["code"], state=query.get("state"), iss=query.get("iss")
                    )
                    return
        raise AssertionError(f"no redirect to the client from {authorization_url}")

    async def callback(self) -> AuthorizationCodeResult:
        assert self.result is not None
        return self.result


@contextlib.asynccontextmanager
async def signed_in(url: str, user: HeadlessUser, storage: Memory) -> AsyncIterator[ClientSession]:
    metadata = OAuthClientMetadata(
        client_name="mq9 oauth test", redirect_uris=[REDIRECT],
        grant_types=["authorization_code", "refresh_token"], response_types=["code"],
        token_endpoint_auth_method="none",
    )  # fmt: skip
    auth = OAuthClientProvider(url, metadata, storage, user.redirect, user.callback)
    async with (
        httpx.AsyncClient(auth=auth, timeout=httpx.Timeout(20, read=60)) as http,
        streamable_http_client(url, http_client=http) as (read, write, *_),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def test_oauth_mcp_sdk_client_discovers_registers_and_calls_with_pkce(served):
    authority, url = served
    user, storage = HeadlessUser("alice"), Memory()
    async with signed_in(url, user, storage) as session:
        box = result_data(await session.call_tool("create_mailbox", {}))["mail_address"]
        assert box
    assert storage.client is not None and storage.client.client_id  # registered (RFC 7591)
    [opened] = user.opened
    assert "code_challenge_method=S256" in opened and "resource=" in opened
    claims = jwt.decode(storage.tokens[-1].access_token, options={"verify_signature": False})
    assert claims["aud"] == url and claims["iss"] == authority.url and claims["sub"] == "alice"


async def test_oauth_mcp_sdk_client_refreshes_an_expired_token(served):
    _, url = served
    user, storage = HeadlessUser("bob"), Memory()
    async with signed_in(url, user, storage) as session:
        await session.call_tool("create_mailbox", {})
        first = storage.tokens[-1]
        assert first.refresh_token
        expiry = jwt.decode(first.access_token, options={"verify_signature": False})["exp"]
        await until(lambda: time.time() > expiry + 1, timeout=TTL + 10, what="the token expired")
        result_data(await session.call_tool("create_mailbox", {}))
    assert len(user.opened) == 1  # the user was not asked again
    assert storage.tokens[-1].access_token != first.access_token
