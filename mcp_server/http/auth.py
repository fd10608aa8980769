"""Who may use mq9-mcp over HTTP: a bearer token (the MCP SDK's bearer auth, asking
``BearerToken``), and, bound to a loopback address, only requests addressed to a loopback name
from no page or a loopback page (the SDK's DNS-rebinding protection), both checked before
anything reads a body."""

from __future__ import annotations

import hmac
import ipaddress

from mcp.server.auth.middleware.bearer_auth import BearerAuthBackend, RequireAuthMiddleware
from mcp.server.auth.provider import AccessToken
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

# On a refusal before the body is read: uvicorn would otherwise read (and drop) the rest of it to
# keep the connection, which costs as much as buffering it.
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


def require_bearer_token(app: ASGIApp, token: str) -> ASGIApp:
    """``app`` behind the SDK's bearer auth: every HTTP request without ``Authorization:
    Bearer <token>`` is answered 401 (whatever its path), and the SDK's session manager binds
    each session to the principal that opened it (one token: one principal, ``PRINCIPAL``)."""
    required = _Requests(RequireAuthMiddleware(app, required_scopes=[]), app)
    return AuthenticationMiddleware(required, backend=BearerAuthBackend(BearerToken(token)))


# The principal every holder of the token is, for the SDK's session binding: one token cannot
# tell its holders apart (the sessions' fair share and the owners of tasks do, owners.py).
PRINCIPAL = "mq9-mcp"


class BearerToken:
    """The SDK's ``TokenVerifier`` for the one token ``--auth-token`` names, compared in
    constant time. The SDK passes what follows the scheme (``Bearer``, in any case): the spaces
    around the token do not make it another (``owners.normalized_credentials`` reads it so)."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    async def verify_token(self, token: str) -> AccessToken | None:
        given = token.strip()
        if not hmac.compare_digest(given.encode(), self._token):
            return None
        return AccessToken(token=given, client_id=PRINCIPAL, scopes=[])


class _Requests:
    """HTTP requests (and websockets) go through ``guard``; the lifespan goes straight to
    ``app``: the SDK's ``RequireAuthMiddleware`` would answer it 401."""

    def __init__(self, guard: ASGIApp, app: ASGIApp) -> None:
        self.guard = guard
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await (self.guard if scope["type"] in ("http", "websocket") else self.app)(
            scope, receive, send
        )
