"""Streamable HTTP for the MCP server: one endpoint at ``/mcp``, a bearer token, loopback first.

Bound to a loopback address the server also checks ``Host`` and ``Origin`` (``auth.py``),
so a web page in the user's browser cannot reach it. Bound anywhere else it refuses to start
without a token (``cli.py`` checks that); with a token every request needs ``Authorization:
Bearer <token>``. ``sessions.py`` bounds the sessions, ``limits.py`` the bodies,
``guard.py`` the connections.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import FrameType

import anyio
import uvicorn
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import ASGIApp

from mq9_platform.client.connection import Mq9Connection

from ..server import Mq9McpServer, connect_early
from .auth import HostAndOrigin, is_loopback, loopback_security, require_bearer_token
from .guard import BoundedConnections, check_versions
from .limits import MAX_BODY_BYTES, UnreadableBodies
from .metrics import McpMetrics
from .resource_server import ResourceServer
from .scope_check import ScopeCheck
from .server_card import ServerCard, authorization_of
from .sessions import DEFAULT_MAX_SESSIONS, DEFAULT_SESSION_IDLE_TIMEOUT, SessionLimits
from .sse import RETRY_MS, PrimingEvents

log = logging.getLogger("mq9_mcp")

MCP_PATH = "/mcp"


def create_http_app(
    server: Server,
    connection: Mq9Connection,
    *,
    host: str = "127.0.0.1",
    auth_token: str | None = None,
    max_sessions: int = DEFAULT_MAX_SESSIONS,
    session_idle_timeout: float = DEFAULT_SESSION_IDLE_TIMEOUT,
    clock: Callable[[], float] = time.monotonic,
    metrics: McpMetrics | None = None,
    resource_server: ResourceServer | None = None,
) -> ASGIApp:
    """The ASGI app serving ``server`` over streamable HTTP at ``/mcp``.

    The app's lifespan opens the broker connection early and closes it at shutdown: one
    connection for every HTTP session. ``max_sessions`` and ``session_idle_timeout`` bound the
    sessions (see ``SessionLimits``, which the app's ``state.session_limits`` holds).
    ``metrics``: counts every request, outermost, and reads the sessions.
    ``resource_server``: tokens checked by its verifier (OAuth, a tokens file; the
    static ``auth_token`` among them), its metadata served, each request's scope checked.
    """
    check_versions()  # the connection guard's, before anything is served
    # The SDK's own session settings: its body limit is ours (one limit, answered by
    # UnreadableBodies as JSON-RPC before the SDK sees the body); its session limits are off,
    # SessionLimits keeps the sessions (fair share); priming events with their retry field.
    manager = StreamableHTTPSessionManager(
        app=server,
        event_store=PrimingEvents(),
        security_settings=loopback_security(host) if is_loopback(host) else None,
        retry_interval=RETRY_MS,
        session_idle_timeout=None,
        max_request_body_size=MAX_BODY_BYTES,
        max_sessions=None,
    )
    limits = SessionLimits(
        manager, max_sessions=max_sessions, idle_timeout=session_idle_timeout, clock=clock
    )

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(connect_early, connection)
            tasks.start_soon(limits.expire_periodically)
            try:
                async with manager.run():
                    yield
            finally:
                tasks.cancel_scope.cancel()
                with anyio.CancelScope(shield=True):
                    await connection.aclose()

    metadata_url = resource_server.metadata_url if resource_server else None
    checked: ASGIApp = limits
    if resource_server is not None and isinstance(server, Mq9McpServer):  # read by operation
        checked = ScopeCheck(limits, metadata_url, server.tool_prefix, server.task_tool)
    elif resource_server is not None:
        checked = ScopeCheck(limits, metadata_url)
    endpoint = UnreadableBodies(checked)
    starlette = Starlette(routes=[Route(MCP_PATH, endpoint=endpoint)], lifespan=lifespan)
    starlette.state.session_limits = limits
    app: ASGIApp = starlette
    if resource_server is not None:
        guarded = require_bearer_token(
            starlette, verifier=resource_server.verifier, metadata_url=metadata_url,
            hint=resource_server.hint(),
        )  # fmt: skip
        app = resource_server.protect(starlette, guarded)
    elif auth_token:
        app = require_bearer_token(starlette, auth_token)
    if isinstance(server, Mq9McpServer):  # its Server Card, beside the token check
        app = ServerCard(app, MCP_PATH, server.tools, server.policies.policy.tool_prefix,
                         authorization_of(resource_server, auth_token))  # fmt: skip
    app = HostAndOrigin(app, loopback_security(host)) if is_loopback(host) else app
    if metrics is not None:
        metrics.watch(limits)
        app = metrics.wrap(app)
    return app


async def serve_http(app: ASGIApp, host: str, port: int) -> None:
    """Run ``app`` under uvicorn until SIGINT/SIGTERM; logging stays as the caller set it up."""
    await _Server(uvicorn_config(app, host, port)).serve()


def uvicorn_config(app: ASGIApp, host: str, port: int) -> uvicorn.Config:
    """How mq9-mcp runs ``app`` under uvicorn (``serve_http``; the tests run it so too)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,  # keep our stderr logging; uvicorn's default sends access logs to stdout
        lifespan="on",
        # Open SSE streams would otherwise hold a shutdown until their clients go away.
        timeout_graceful_shutdown=3,
        http=BoundedConnections,
        # uvicorn believes X-Forwarded-For from 127.0.0.1 by default: any local client could
        # then name the peer address the sessions' fair share counts it by, a new one each time.
        proxy_headers=False,
    )


class _Server(uvicorn.Server):
    """uvicorn, saying which signal stopped it. After a graceful stop uvicorn raises the signal
    again; ``cli.main`` turns that into exit status 0."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.should_exit:
            log.info("stopping (%s)", signal.Signals(sig).name)
        super().handle_exit(sig, frame)
