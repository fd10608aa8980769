"""mq9-mcp's MCP Server Card (SEP-2127, Final; the wire format is the extension repository
modelcontextprotocol/experimental-ext-server-card's ``schema.ts`` and ``docs/discovery.md``): a
JSON document a client or a directory reads before it connects, saying who the server is, where
its streamable HTTP endpoint is, which protocol revisions it speaks and how a caller
authenticates.

It is served at ``GET <streamable-http-url>/server-card`` (``/mcp/server-card``), the location
the extension reserves, without a token like the protected resource metadata: it holds nothing
that is not public, and a client must read it before it holds a token. The card is advisory (the
extension says clients prefer what the live connection says), so it is made from the very objects
the connection answers from (the tools ``tools/list`` lists, the scopes and issuer of the
protected resource metadata), never from a copy that could drift.

The extension keeps primitives out of the card's own fields (a live ``tools/list`` cannot go
stale); the tools, and the scope each needs, are in ``_meta`` under this project's namespace, for
a directory to show before anyone signs in: what ``tools/list`` answers a token of every scope.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from mcp import types
from mcp.types.version import SUPPORTED_PROTOCOL_VERSIONS
from starlette.types import ASGIApp, Receive, Scope, Send

from mq9_platform._version import __version__
from mq9_platform.operations.results import JsonObject

from .resource_server import ResourceServer
from .scopes import ALL_SCOPES, scope_for

SCHEMA = "https://static.modelcontextprotocol.io/schemas/v1/server-card.schema.json"
MEDIA_TYPE = "application/mcp-server-card+json"
SUFFIX = "/server-card"  # after the streamable HTTP endpoint's path (the reserved location)
NAME = "io.github.mq9-agents/mq9-mcp"  # reverse DNS of the repository, one slash
REPOSITORY = "https://github.com/mq9-agents/langchain-mq9"
DESCRIPTION = "Mailboxes, an agent registry and agent calls for LLM agents, over mq9"  # <= 100
# The card's own _meta keys: this project's namespace (the MCP-reserved prefixes are not ours)
TOOLS_KEY = "io.github.mq9-agents/tools"
AUTHORIZATION_KEY = "io.github.mq9-agents/authorization"
# The extension's CORS and caching headers: public, read-only metadata
CORS = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-methods", b"GET"),
    (b"access-control-allow-headers", b"Content-Type, If-None-Match"),
    (b"access-control-expose-headers", b"ETag"),
]
CACHE = (b"cache-control", b"public, max-age=3600")


@dataclass(frozen=True)
class Authorization:
    """How a caller of this server authenticates, as the card says it: ``issuer`` and
    ``resource`` where it is an OAuth resource server (its protected resource metadata at
    ``metadata_url``), else only whether a bearer token is needed at all."""

    token_needed: bool
    issuer: str | None = None
    resource: str | None = None
    metadata_url: str | None = None


def authorization_of(
    resource_server: ResourceServer | None, auth_token: str | None
) -> Authorization:
    """What the card says of authentication on a server started with these."""
    if resource_server is None:
        return Authorization(token_needed=bool(auth_token))
    return Authorization(
        True, resource_server.issuer, resource_server.resource, resource_server.metadata_url
    )


def card(
    tools: Sequence[types.Tool], prefix: str, authorization: Authorization, endpoint: str
) -> JsonObject:
    """The Server Card of a server listing ``tools`` (named with ``prefix``) at ``endpoint``."""
    remote: JsonObject = {
        "type": "streamable-http",
        "url": authorization.resource or endpoint,
        "supportedProtocolVersions": list(SUPPORTED_PROTOCOL_VERSIONS),
    }
    said: JsonObject = {"tokenNeeded": authorization.token_needed}
    if authorization.token_needed:
        how = (
            f"an OAuth access token from {authorization.issuer}"
            if authorization.issuer
            else "a token the operator gave you"
        )
        remote["headers"] = [{
            "name": "Authorization", "description": f"Bearer and {how}",
            "isRequired": True, "isSecret": True, "value": "Bearer {token}",
            "variables": {"token": {"description": how, "isRequired": True, "isSecret": True}},
        }]  # fmt: skip
    if authorization.issuer:
        said |= {
            "resource": authorization.resource,
            "resourceMetadata": authorization.metadata_url,
            "authorizationServers": [authorization.issuer],
            "scopesSupported": ALL_SCOPES,
        }
    listed = [{"name": t.name, "scope": scope_for(_operation(t.name, prefix))} for t in tools]
    return {
        "$schema": SCHEMA,
        "name": NAME,
        "version": __version__,
        "title": "mq9-mcp",
        "description": DESCRIPTION,
        "websiteUrl": f"{REPOSITORY}/blob/main/docs/mcp.md",
        "repository": {"url": REPOSITORY, "source": "github", "subfolder": "mcp_server"},
        "remotes": [remote],
        "_meta": {TOOLS_KEY: listed, AUTHORIZATION_KEY: said},
    }


class ServerCard:
    """``GET`` (and ``HEAD``, ``OPTIONS``) of ``<mcp_path>/server-card`` answered with the card,
    unauthenticated, with the extension's CORS, ``Cache-Control`` and ``ETag`` (a matching
    ``If-None-Match``: 304); every other request goes to ``app``."""

    def __init__(
        self,
        app: ASGIApp,
        mcp_path: str,
        tools: Sequence[types.Tool],
        prefix: str,
        authorization: Authorization,
    ) -> None:
        self.app = app
        self.path = mcp_path + SUFFIX
        self.mcp_path = mcp_path
        self.tools, self.prefix, self.authorization = tuple(tools), prefix, authorization

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") != self.path:
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "GET")
        if method == "OPTIONS":
            await _answer(send, 204, CORS)
            return
        if method not in ("GET", "HEAD"):
            await _answer(send, 405, [*CORS, (b"allow", b"GET, HEAD, OPTIONS")])
            return
        body = json.dumps(
            card(self.tools, self.prefix, self.authorization, self._endpoint(scope)),
            separators=(",", ":"),
        ).encode()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        headers = [*CORS, CACHE, (b"etag", etag.encode())]
        if etag in _header(scope, b"if-none-match").replace(" ", "").split(","):
            await _answer(send, 304, headers)
            return
        headers += [(b"content-type", MEDIA_TYPE.encode()),
                    (b"content-length", str(len(body)).encode())]  # fmt: skip
        await _answer(send, 200, headers, b"" if method == "HEAD" else body)

    def _endpoint(self, scope: Scope) -> str:
        """The streamable HTTP URL as this request reached it (a resource server's canonical
        URL takes its place in the card)."""
        host = _header(scope, b"host") or "localhost"
        return f"{scope.get('scheme', 'http')}://{host}{self.mcp_path}"


def _operation(tool: str, prefix: str) -> str:
    """The operation a tool stands for under the server's ``--tool-prefix`` (the scope table
    is by operation, whatever the prefix)."""
    return tool[len(prefix) :] if tool.startswith(prefix) else ""


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return ""


async def _answer(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes = b""
) -> None:
    if not any(k == b"content-length" for k, _ in headers):
        headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
