"""Streamable HTTP for the MCP server: one endpoint at ``/mcp``, a bearer token, loopback first.

Bound to a loopback address the server also checks ``Host`` and ``Origin`` (the SDK's
DNS-rebinding protection), so a web page in the user's browser cannot reach it. Bound anywhere
else it refuses to start without a token (``cli.py`` checks that); with a token every request
needs ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import signal
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from types import FrameType

import anyio
import uvicorn
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from langchain_mq9.connection import Mq9Connection

from .server import connect_early

log = logging.getLogger("mcp_server")

MCP_PATH = "/mcp"


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


class BearerTokenMiddleware:
    """Answer 401 to every HTTP request that lacks ``Authorization: Bearer <token>``."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        if not token:
            raise ValueError("the bearer token must not be empty")
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
        scheme, _, credentials = Headers(scope=scope).get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            credentials.strip().encode(), self._token
        )


class _SessionEndpoint:
    """The ``/mcp`` route: hands every request to the SDK's session manager."""

    def __init__(self, manager: StreamableHTTPSessionManager) -> None:
        self.manager = manager

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.manager.handle_request(scope, receive, send)


def create_http_app(
    server: Server,
    connection: Mq9Connection,
    *,
    host: str = "127.0.0.1",
    auth_token: str | None = None,
) -> ASGIApp:
    """The ASGI app serving ``server`` over streamable HTTP at ``/mcp``.

    The app's lifespan opens the broker connection early and closes it at shutdown: one
    connection for every HTTP session.
    """
    manager = StreamableHTTPSessionManager(
        app=server,
        security_settings=loopback_security(host) if is_loopback(host) else None,
    )

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(connect_early, connection)
            try:
                async with manager.run():
                    yield
            finally:
                tasks.cancel_scope.cancel()
                with anyio.CancelScope(shield=True):
                    await connection.aclose()

    app: ASGIApp = Starlette(
        routes=[Route(MCP_PATH, endpoint=_SessionEndpoint(manager))], lifespan=lifespan
    )
    if auth_token:
        app = BearerTokenMiddleware(app, auth_token)
    return app


async def serve_http(app: ASGIApp, host: str, port: int) -> None:
    """Run ``app`` under uvicorn until SIGINT/SIGTERM; logging stays as the caller set it up."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,  # keep our stderr logging; uvicorn's default sends access logs to stdout
        lifespan="on",
        # Open SSE streams would otherwise hold a shutdown until their clients go away.
        timeout_graceful_shutdown=3,
    )
    await _Server(config).serve()


class _Server(uvicorn.Server):
    """uvicorn, except that after a graceful stop on SIGINT/SIGTERM it does not raise the signal
    again (uvicorn does, so SIGTERM ended the process with 143 and SIGINT with a
    KeyboardInterrupt): the process exits 0, as a stopped service should."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.should_exit:
            log.info("stopping (%s)", signal.Signals(sig).name)
        super().handle_exit(sig, frame)
