"""Who may use mq9-mcp over HTTP: a bearer token, and, bound to a loopback address, only
requests addressed to a loopback name from no page or a loopback page (the SDK's DNS-rebinding
protection), checked before anything reads a body."""

from __future__ import annotations

import hmac
import ipaddress

from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from ..owners import normalized_credentials

# On a refusal before the body is read: uvicorn would otherwise read (and drop) the rest of it to
# keep the connection, which for a 150 MB body costs as much as buffering it.
CLOSE = "close"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IPs (``127.0.0.0/8``, ``::1``); ``0.0.0.0`` is not."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # another host name: it may resolve anywhere


def loopback_security(host: str) -> TransportSecuritySettings:
    """Accept only requests addressed to a loopback name, from no page or a loopback page."""
    names = {"127.0.0.1", "localhost", "[::1]", f"[{host}]" if ":" in host else host}
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[f"{name}:*" for name in sorted(names)],
        allowed_origins=[f"http://{name}:*" for name in sorted(names)],
    )


class HostAndOrigin:
    """Refuse a request addressed to another host name (421) or sent by a page on another
    origin (403) before anything else reads it, its body included (the SDK checks only once
    the body is read)."""

    def __init__(self, app: ASGIApp, settings: TransportSecuritySettings) -> None:
        self.app = app
        self.check = TransportSecurityMiddleware(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refused = await self.check.validate_request(Request(scope), is_post=False)
            if refused is not None:
                refused.headers["Connection"] = CLOSE  # and read none of the body
                await refused(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BearerTokenMiddleware:
    """Answer 401 to every HTTP request that lacks ``Authorization: Bearer <token>``."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and not self._authorized(scope):
            response = JSONResponse(
                {
                    "error": "unauthorized",
                    "error_description": "this MCP server needs Authorization: Bearer <token>",
                },
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="mq9-mcp"'},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        given = normalized_credentials(Headers(scope=scope).get("authorization", ""))
        scheme, _, credentials = given.partition(" ")
        return scheme == "bearer" and hmac.compare_digest(credentials.encode(), self._token)
