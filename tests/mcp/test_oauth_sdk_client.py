"""The MCP SDK's own client OAuth (``mcp.client.auth.OAuthClientProvider``, unchanged: only
its documented extension points, a ``TokenStorage`` and the redirect and callback handlers, are
the test's) against mq9-mcp and a real authorization server on loopback (oidc-provider,
tests/mcp/oauth/, set up as docs/mcp-oauth.md "What the identity provider must allow" says; issues
#112 and #117). From a bare 401 it discovers the Protected Resource Metadata, then the AS's
metadata; it registers by a Client ID Metadata Document (MCP's preferred registration) or by
RFC 7591 registration; it runs the authorization code grant with PKCE (the user's consent given
headlessly, by following the AS's redirects) for mq9-mcp's URL (RFC 8707), calls tools, and
refreshes its token without asking the user again.

Least privilege (#117): the 401's challenge names the scopes of a first sign-in, which the
SDK's scope selection reads before the metadata's ``scopes_supported``, so the first token holds
no mq9:admin (the client once asked for every advertised scope, and every person who signed in
held mq9:admin); a call that needs mq9:admin is answered 403 ``insufficient_scope`` and the
SDK asks the user again for it then (a step-up), under the same registration."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
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
from testbed.support.mcp_support import http_server, result_data
from testbed.support.waiting import until
from tests.mcp.oauth.support import AuthorizationServer, ClientMetadataDocuments

pytestmark = pytest.mark.slow  # an authorization server and an mq9-mcp process

REDIRECT = "http://127.0.0.1:1/callback"  # never listened on: the test reads the redirect
TTL = 3  # the AS's access token lifetime, s: short, so the refresh is played
FIRST_SIGN_IN = {"mq9:read", "mq9:send"}
GRANTS = ["authorization_code", "refresh_token"]


@dataclass
class Served:
    authority: AuthorizationServer
    url: str
    documents: ClientMetadataDocuments


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    port = unclaimed_port()
    resource = f"http://127.0.0.1:{port}/mcp"
    with ClientMetadataDocuments(tmp_path_factory.mktemp("cimd")) as documents:
        env = {"NODE_EXTRA_CA_CERTS": str(documents.ca_file), "CIMD_ORIGIN": documents.origin}
        authority = AuthorizationServer(resource, [], ttl=TTL, env=env).start()
        try:
            with http_server("--server", "memory://", "--oauth-issuer", authority.url,
                             "--resource-url", resource, port=port) as url:  # fmt: skip
                yield Served(authority, url, documents)
        finally:
            authority.stop()


class Memory:
    """The SDK's ``TokenStorage``, in memory, keeping every token it is given."""

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

    def asked(self, index: int) -> set[str]:
        """The scopes the client asked the user for in its ``index``-th authorization."""
        return set(parse_qs(urlparse(self.opened[index]).query)["scope"][0].split())


@contextlib.asynccontextmanager
async def signed_in(
    url: str, user: HeadlessUser, storage: Memory, *, client_id_url: str | None = None,
    registrations: list[bytes] | None = None,
) -> AsyncIterator[ClientSession]:  # fmt: skip
    metadata = OAuthClientMetadata(
        client_name="mq9 oauth test", redirect_uris=[REDIRECT], grant_types=GRANTS,
        response_types=["code"], token_endpoint_auth_method="none",
    )  # fmt: skip
    auth = OAuthClientProvider(
        url, metadata, storage, user.redirect, user.callback, client_metadata_url=client_id_url
    )

    async def seen(request: httpx.Request) -> None:  # what the client registers with
        if registrations is not None and request.url.path == "/reg":
            registrations.append(request.content)

    async with (
        httpx.AsyncClient(
            auth=auth, timeout=httpx.Timeout(20, read=60), event_hooks={"request": [seen]}
        ) as http,
        streamable_http_client(url, http_client=http) as (read, write, *_),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def claims(token: OAuthToken) -> dict:
    return jwt.decode(token.access_token, options={"verify_signature": False})


def scopes(token: OAuthToken) -> set[str]:
    return set(claims(token).get("scope", "").split())


async def test_oauth_mcp_sdk_client_signs_in_by_metadata_document_with_least_privilege(served):
    """Issue #117: discovery, a Client ID Metadata Document, PKCE, calls, a refresh and a
    step-up; the first token (and its refresh) holds no mq9:admin, the step-up's does."""
    client_id = served.documents.publish("/clients/mq9-test.json", {
        "client_name": "mq9 oauth test", "redirect_uris": [REDIRECT], "grant_types": GRANTS,
        "response_types": ["code"], "token_endpoint_auth_method": "none",
    })  # fmt: skip
    user, storage = HeadlessUser("carol"), Memory()
    async with signed_in(served.url, user, storage, client_id_url=client_id) as session:
        box = result_data(await session.call_tool("create_mailbox", {}))["mail_address"]
        result_data(await session.call_tool("send_message", {"mail_address": box, "payload": "hi"}))
        first = storage.tokens[-1]
        assert scopes(first) == FIRST_SIGN_IN and first.refresh_token
        expiry = claims(first)["exp"]
        await until(lambda: time.time() > expiry + 1, timeout=TTL + 10, what="the token expired")
        fetched = result_data(await session.call_tool("fetch_messages", {"mail_address": box}))
        assert [message["payload"] for message in fetched["messages"]] == ["hi"]
        refreshed = storage.tokens[-1]
        assert refreshed.access_token != first.access_token  # refreshed, the user not asked
        assert len(user.opened) == 1 and scopes(refreshed) == FIRST_SIGN_IN
        register = {"name": "carol.agent", "capabilities": "answers carol's questions"}
        result_data(await session.call_tool("agent_register", register))  # needs mq9:admin
    assert storage.client is not None and storage.client.client_id == client_id
    assert "/clients/mq9-test.json" in served.documents.fetched  # the AS read the document
    assert "code_challenge_method=S256" in user.opened[0] and "resource=" in user.opened[0]
    assert user.asked(0) == FIRST_SIGN_IN | {"offline_access"}
    assert len(user.opened) == 2 and "mq9:admin" in user.asked(1)  # asked again, for it
    assert "mq9:admin" in scopes(storage.tokens[-1])
    assert claims(storage.tokens[-1])["sub"] == "carol"


async def test_oauth_mcp_sdk_client_registers_dynamically_for_a_first_sign_in(served):
    """Issue #117: without a metadata document the SDK registers (RFC 7591) asking for the
    challenge's scopes and offline_access, which the AS allows; the token is for mq9-mcp and
    holds no mq9:admin until a call needs it, asked for under the same registration."""
    user, storage, registrations = HeadlessUser("alice"), Memory(), []
    async with signed_in(served.url, user, storage, registrations=registrations) as session:
        box = result_data(await session.call_tool("create_mailbox", {}))["mail_address"]
        assert box
        first = storage.tokens[-1]
        assert scopes(first) == FIRST_SIGN_IN
        await session.call_tool("agent_register", {"name": "alice.agent", "capabilities": "x"})
    [registered] = registrations  # one registration, kept through the step-up
    assert set(json.loads(registered)["scope"].split()) == FIRST_SIGN_IN | {"offline_access"}
    assert storage.client is not None and storage.client.client_id
    assert "code_challenge_method=S256" in user.opened[0] and "resource=" in user.opened[0]
    found = claims(first)
    assert found["aud"] == served.url and found["iss"] == served.authority.url
    assert found["sub"] == "alice"
    assert len(user.opened) == 2 and "mq9:admin" in scopes(storage.tokens[-1])


async def test_oauth_401_challenge_names_the_first_sign_in_scopes(served):
    """Issue #117: the scopes a client asks for first are the challenge's (MCP's scope
    selection reads it before the metadata's ``scopes_supported``, which lists mq9:admin)."""
    async with httpx.AsyncClient() as http:
        answer = await http.post(served.url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert answer.status_code == 401
    challenge = answer.headers["www-authenticate"]
    assert challenge.startswith("Bearer ") and 'scope="mq9:read mq9:send"' in challenge
    assert "resource_metadata=" in challenge
