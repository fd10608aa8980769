"""Who may use mq9-mcp over HTTP: a bearer token (the MCP SDK's bearer auth, asking
``BearerToken``), and, bound to a loopback address, only requests addressed to a loopback name
from no page or a loopback page (the SDK's DNS-rebinding protection), both checked before
anything reads a body."""

from __future__ import annotations

import hmac
import ipaddress
import json
import re

from mcp.server.auth.middleware.bearer_auth import BearerAuthBackend, RequireAuthMiddleware
from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp.types import INVALID_REQUEST
from pydantic import AnyHttpUrl
from starlette.datastructures import Headers
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .refusals import refusal
from .scopes import ALL_SCOPES

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


def require_bearer_token(
    app: ASGIApp,
    token: str | None = None,
    *,
    verifier: TokenVerifier | None = None,
    metadata_url: str | None = None,
    hint: str | None = None,
) -> ASGIApp:
    """``app`` behind the SDK's bearer auth: every HTTP request without ``Authorization:
    Bearer <token>`` is answered 401 (whatever its path), and the SDK's session manager binds
    each session to the principal that opened it (one token: one principal, ``PRINCIPAL``).
    ``verifier`` checks tokens instead of the one ``token``: an OAuth resource
    server's (``oauth.py``), a tokens file's; ``metadata_url`` is then named in the 401's
    ``WWW-Authenticate`` (RFC 9728) with the scopes of a first sign-in (``FIRST_SIGN_IN``);
    the verifier checks the token's audience itself."""
    checks: TokenVerifier = verifier if verifier is not None else BearerToken(token or "")
    url = AnyHttpUrl(metadata_url) if metadata_url else None
    required = RequireAuthMiddleware(app, required_scopes=[], resource_metadata_url=url)
    scope = " ".join(FIRST_SIGN_IN) if metadata_url else None
    guarded = _Requests(_InWords(required, hint or TOKEN_HINT, scope), app)
    return AuthenticationMiddleware(guarded, backend=BearerAuthBackend(checks))


TOKEN_HINT = "the token it was started with (--auth-token or MQ9_MCP_TOKEN)"

# What an OAuth 401 asks a client to request (RFC 6750's ``scope``): an MCP client's scope
# selection reads the challenge before the metadata's ``scopes_supported``, so a first sign-in
# asks for what a person's mailboxes need, never mq9:admin; a call that needs more is answered
# 403 ``insufficient_scope`` naming its scope, and the client asks the person for it then.
FIRST_SIGN_IN = ("mq9:read", "mq9:send")


class _InWords:
    """The SDK's 401, its ``WWW-Authenticate`` header kept, with a JSON-RPC error for a body
    that says what was wrong: an MCP client shows a JSON-RPC error's message to its user
    (the MCP SDK's client, under LangChain's ``langchain.mcp`` too), where the SDK's OAuth
    body reached them as "Server returned an error response". The OAuth fields ride in the
    error's data."""

    def __init__(self, app: ASGIApp, hint: str = "", scope: str | None = None) -> None:
        self.app = app
        self.hint = hint
        self.scope = scope

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refused = False

        async def reworded(message: Message) -> None:
            nonlocal refused
            if message["type"] == "http.response.start" and message["status"] == 401:
                refused = True
                headers = [(k, _reasoned(scope, self._challenge(v))
                            if k.lower() == b"www-authenticate" else v)
                           for k, v in message.get("headers", [])
                           if k.lower() not in (b"content-length", b"content-type")]  # fmt: skip
                body = _refusal_body(scope, self.hint)
                headers += [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]  # fmt: skip
                await send({**message, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
            if not refused:  # the SDK's own body of a 401 is dropped: ours went
                await send(message)

        await self.app(scope, receive, reworded)

    def _challenge(self, value: bytes) -> bytes:
        """The SDK's challenge with the scopes to request added (it names none)."""
        if self.scope is None or b"scope=" in value:
            return value
        return value + f', scope="{self.scope}"'.encode()


def _refusal_body(scope: Scope, hint: str) -> bytes:
    why, error = _why_refused(scope)
    text = (
        f"Unauthorized: {why}. This mq9-mcp server needs 'Authorization: Bearer <token>' on "
        f"every request, {hint}"
    )
    # no error code for a request with no credentials (RFC 6750 section 3.1)
    oauth = {"error": error, "error_description": why} if error else {}
    error_body = {"code": INVALID_REQUEST, "message": text, **({"data": oauth} if oauth else {})}
    return json.dumps({"jsonrpc": "2.0", "id": None, "error": error_body}).encode()


def _why_refused(scope: Scope) -> tuple[str, str | None]:
    """What was wrong with a refused request's credentials, and its RFC 6750 error code (None:
    it carried none, or in a scheme this server does not take, which is none)."""
    given = Headers(scope=scope).get("authorization", "")
    scheme, _, credentials = given.strip().partition(" ")
    if not given.strip():
        return "no bearer token was sent", None
    if scheme.lower() != "bearer":
        return "the Authorization header is not 'Bearer <token>'", None
    if not credentials.strip():
        return "the Authorization header is not 'Bearer <token>'", "invalid_request"
    return refusal() or "the bearer token is wrong", "invalid_token"


_PARAM = re.compile(rb'\s*([A-Za-z_]+)="((?:[^"\\]|\\.)*)"\s*,?')


def _reasoned(scope: Scope, challenge: bytes) -> bytes:
    """The SDK's ``WWW-Authenticate: Bearer ...`` (which always says ``invalid_token``,
    "Authentication required") with the refusal's own error and words, and with neither for a
    request that carried no credentials (RFC 6750 section 3.1); its other parameters kept."""
    scheme, _, rest = challenge.partition(b" ")
    why, error = _why_refused(scope)
    params = [(m[1], m[2]) for m in _PARAM.finditer(rest) if m[1] not in _ERROR_PARAMS]
    if error:
        said = re.sub(r'[^ -~]|["\\]', "'", why)[:300].encode()
        params = [(b"error", error.encode()), (b"error_description", said), *params]
    said = b", ".join(k + b'="' + v + b'"' for k, v in params)
    return scheme + b" " + said if said else scheme  # (a header value ends in no space)


_ERROR_PARAMS = (b"error", b"error_description", b"error_uri")


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
        return AccessToken(token=given, client_id=PRINCIPAL, scopes=list(ALL_SCOPES))


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
