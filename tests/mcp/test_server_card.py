"""mq9-mcp's MCP Server Card (issue #117; SEP-2127, Final, whose wire format is the extension
repository modelcontextprotocol/experimental-ext-server-card): served at
``<streamable-http-url>/server-card`` without a token, in the card's media type, with the
extension's CORS, caching and ETag; its tools are what ``tools/list`` answers a real MCP client
holding every scope, and its authorization is what the protected resource metadata says, against
a real authorization server (oidc-provider). Every test here fails on c38a8fd8, which served no
card (its ``/mcp/server-card`` was 401 or 404)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx2 as httpx
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from testbed.ports import unclaimed_port
from testbed.support.mcp_support import http_server
from tests.mcp.oauth.support import AuthorizationServer, client, running

pytestmark = pytest.mark.slow  # an authorization server and mq9-mcp processes

MEDIA_TYPE = "application/mcp-server-card+json"
SCHEMA = "https://static.modelcontextprotocol.io/schemas/v1/server-card.schema.json"
# schema.ts's patterns and bounds (the extension repository at 8924e086)
NAME = re.compile(r"^[a-zA-Z0-9.-]+/[a-zA-Z0-9._-]+$")
REMOTE_URL = re.compile(r"^(https?://[^\s]+|\{[a-zA-Z_][a-zA-Z0-9_]*\}[^\s]*)$")


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[AuthorizationServer, str]]:
    port = unclaimed_port()
    resource = f"http://127.0.0.1:{port}/mcp"
    with running(resource, [client("alice")]) as authority, http_server(
        "--server", "memory://", "--oauth-issuer", authority.url, "--resource-url", resource,
        port=port,
    ) as url:  # fmt: skip
        yield authority, url


def _in_shape(card: dict) -> None:
    """The card against schema.ts's required fields and bounds."""
    assert card["$schema"] == SCHEMA
    assert NAME.match(card["name"]) and 3 <= len(card["name"]) <= 200, card["name"]
    assert card["version"] and len(card["version"]) <= 255
    assert 1 <= len(card["description"]) <= 100
    for remote in card["remotes"]:
        assert remote["type"] in ("streamable-http", "sse")
        assert REMOTE_URL.match(remote["url"]), remote


async def test_the_server_card_is_served_unauthenticated_with_cors_and_etag(served):
    _, url = served
    async with httpx.AsyncClient(timeout=20) as http:
        answer = await http.get(url + "/server-card", headers={"Accept": MEDIA_TYPE})
        assert answer.status_code == 200, answer.text  # no token: like the PRM
        assert answer.headers["content-type"] == MEDIA_TYPE
        assert answer.headers["access-control-allow-origin"] == "*"
        assert "ETag" in answer.headers["access-control-expose-headers"]
        assert answer.headers["cache-control"].startswith("public")
        card = answer.json()
        _in_shape(card)
        [remote] = card["remotes"]
        assert remote == {**remote, "type": "streamable-http", "url": url}
        assert "2026-07-28" in remote["supportedProtocolVersions"]
        [header] = remote["headers"]
        assert header["name"] == "Authorization" and header["isSecret"] and header["isRequired"]
        again = await http.get(url + "/server-card",
                               headers={"If-None-Match": answer.headers["etag"]})  # fmt: skip
        assert again.status_code == 304 and again.content == b""
        preflight = await http.options(url + "/server-card")
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-methods"] == "GET"
        assert (await http.post(url + "/server-card")).status_code == 405
        # the endpoint itself still wants a token
        assert (await http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
                ).status_code == 401  # fmt: skip


async def test_the_cards_tools_are_tools_list_and_its_authorization_the_prm(served):
    authority, url = served
    token = authority.token("alice", "alice-secret", "mq9:admin")
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(20, read=60)) as http:
        async with (
            streamable_http_client(url, http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            initialized = await session.initialize()
            listed = (await session.list_tools()).tools
        card = (await http.get(url + "/server-card")).json()
        metadata = (
            await http.get(url.replace("/mcp", "/.well-known/oauth-protected-resource/mcp"))
        ).json()
    assert card["version"] == initialized.server_info.version  # what the connection says
    meta = card["_meta"]
    tools = meta["io.github.mq9-agents/tools"]
    assert [t["name"] for t in tools] == [t.name for t in listed]
    scopes = {t["name"]: t["scope"] for t in tools}
    assert scopes["query_messages"] == "mq9:read" and scopes["send_message"] == "mq9:send"
    assert set(scopes.values()) <= set(metadata["scopes_supported"])
    said = meta["io.github.mq9-agents/authorization"]
    assert said["tokenNeeded"] is True
    assert said["resource"] == metadata["resource"] == url
    assert said["authorizationServers"] == metadata["authorization_servers"] == [authority.url]
    assert said["scopesSupported"] == metadata["scopes_supported"]
    assert said["resourceMetadata"].endswith("/.well-known/oauth-protected-resource/mcp")


async def test_a_server_without_tokens_says_none_is_needed_and_follows_its_tool_prefix():
    with http_server("--server", "memory://", "--tool-prefix", "mq9_") as url:
        async with httpx.AsyncClient(timeout=20) as http:
            card = (await http.get(url + "/server-card")).json()
    _in_shape(card)
    assert card["_meta"]["io.github.mq9-agents/authorization"] == {"tokenNeeded": False}
    assert "headers" not in card["remotes"][0]
    tools = {t["name"]: t["scope"] for t in card["_meta"]["io.github.mq9-agents/tools"]}
    # the scope is read by the operation, whatever the prefix
    assert tools["mq9_query_messages"] == "mq9:read"
