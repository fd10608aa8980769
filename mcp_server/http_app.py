"""Streamable HTTP for the MCP server: one endpoint at ``/mcp``, a bearer token, loopback first.

Bound to a loopback address the server also checks ``Host`` and ``Origin`` (the SDK's
DNS-rebinding protection), so a web page in the user's browser cannot reach it. Bound anywhere
else it refuses to start without a token (``cli.py`` checks that); with a token every request
needs ``Authorization: Bearer <token>``. ``SessionLimits`` bounds the open sessions and their
idle time.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import inspect
import ipaddress
import json
import logging
import math
import os
import queue
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http import HTTPStatus
from types import FrameType
from typing import Any

import anyio
import h11
import uvicorn
from mcp import types
from mcp.server.lowlevel import Server
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp.types import INTERNAL_ERROR, INVALID_REQUEST, PARSE_ERROR
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from langchain_mq9.client.connection import Mq9Connection

from .server import bad_id_refusal, connect_early, leading_id, refusals

log = logging.getLogger("mcp_server")

MCP_PATH = "/mcp"

# Room for many MCP clients on one machine, while a flood stays small: about 60 KB a session.
DEFAULT_MAX_SESSIONS = 100
DEFAULT_SESSION_IDLE_TIMEOUT = 600.0

# The largest request body: a tool call carries at most a 1 MiB payload (the broker's SEND
# limit), which JSON escaping may make up to six times longer.
MAX_BODY_BYTES = 8 * 1024 * 1024
# How long a request's body, and a connection's request headers, may take to arrive.
BODY_SECONDS = 30.0
HEADER_SECONDS = 10.0
# Open connections at once: past this a new one is closed at once, well below the usual limit
# of 1024 file descriptors, so a flood of connections cannot starve the broker connection.
MAX_CONNECTIONS = 512
# On a refusal before the body is read: uvicorn would otherwise read (and drop) the rest of it to
# keep the connection, which for a 150 MB body costs as much as buffering it.
CLOSE = "close"
# How long a connection refused by a request's head stays open, its answer sent and nothing
# read: closed at once, a client repeating a refused 150 MB POST started over within a
# millisecond and had the server refuse ~2,000 a second (bench 9h); now each costs it a second.
# A slot is held no longer than a client that is slow to send its headers holds one anyway.
REFUSED_LINGER = 1.0
# A connection's kernel receive buffer (the kernel doubles it): a refused body's client can
# queue no more than this before the server closes, where Linux would otherwise let the buffer
# grow to net.ipv4.tcp_rmem's maximum (32 MiB here) for the server to copy and drop. An 8 MiB
# body still streams through it at loopback speed.
RECEIVE_BUFFER = 128 * 1024


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


@dataclass
class _Session:
    last: float  # the clock when a request for it last started or ended
    client: str = ""  # who opened it: the peer's address and the credentials it gave
    in_flight: int = 0  # requests being served, an open GET (SSE) stream included
    used: bool = False  # it has called a tool


class SessionLimits:
    """The ``/mcp`` endpoint: the SDK's session manager with at most ``max_sessions`` open
    sessions, each closed after ``idle_timeout`` seconds with no request in
    flight (an open GET stream counts as one, so a connected client is never idle).

    When full, a new session replaces the least recently active one that never called a tool.
    If all have called one, a newcomer from a client (peer address and credentials: every
    loopback client is one) holding fewer sessions than the client holding the most replaces
    that client's least recently active idle session; otherwise it is refused (503,
    Retry-After). So a flood mostly evicts its own empty sessions and gives slots up to other
    clients as they come, while sessions that did work keep working. Refusing outright would
    lock everyone out for the idle timeout; plain LRU eviction would let a flood evict everyone.
    """

    def __init__(
        self,
        manager: StreamableHTTPSessionManager,
        *,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        idle_timeout: float = DEFAULT_SESSION_IDLE_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be at least 1, got {max_sessions}")
        if not (math.isfinite(idle_timeout) and idle_timeout > 0):
            raise ValueError(
                f"idle_timeout must be a positive number of seconds, got {idle_timeout}"
            )
        # Closing a session the client did not end has no public API in the SDK: its transport
        # is terminated as a client's DELETE does, and the SDK then forgets it.
        if not isinstance(getattr(manager, "_server_instances", None), dict):
            raise RuntimeError(
                "this version of the mcp SDK keeps its HTTP sessions where mq9-mcp cannot close "
                "them: install mcp>=1.20,<2"
            )
        self.manager = manager
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self.clock = clock
        self.sessions: dict[str, _Session] = {}
        self.evicted = self.refused = 0
        self._lock = anyio.Lock()
        self._quiet_until = -math.inf

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        session_id = Headers(scope=scope).get(MCP_SESSION_ID_HEADER)
        if session_id is None:
            await self._open(scope, receive, send)
        elif session := self.sessions.get(session_id):
            await self._serve(session_id, session, scope, receive, send)
        else:  # a session that ended, or never was: the SDK answers 404
            await self.manager.handle_request(scope, receive, send)

    async def expire_idle(self) -> None:
        """Close every session idle for ``idle_timeout`` seconds or longer."""
        async with self._lock:
            await self._close_idle()

    async def expire_periodically(self) -> None:
        while True:
            await anyio.sleep(min(self.idle_timeout, 120) / 4)
            await self.expire_idle()

    async def _serve(
        self, session_id: str, session: _Session, scope: Scope, receive: Receive, send: Send
    ) -> None:
        statuses: list[int] = []
        # Marked before the SDK runs it, so a first tool call that waits long (a fetch with
        # max_wait_ms) already protects its session.
        session.used = session.used or scope.get("mq9.calls_tool", False)

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])
            await send(message)

        session.in_flight += 1
        session.last = self.clock()
        try:
            await self.manager.handle_request(scope, receive, watch)
        finally:
            session.in_flight -= 1
            session.last = self.clock()
        status = statuses[0] if statuses else 500
        if status == 404 or (scope["method"] == "DELETE" and status < 400):
            self.sessions.pop(session_id, None)  # ended, by the client or the SDK

    async def _open(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = _client_of(scope)
        async with self._lock:
            room = await self._make_room(self.max_sessions - 1, newcomer=client)
        if not room:
            await self._refuse(scope, receive, send)
            return

        async def register(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] < 400:
                session_id = Headers(raw=message["headers"]).get(MCP_SESSION_ID_HEADER)
                if session_id:
                    async with self._lock:
                        self.sessions[session_id] = _Session(last=self.clock(), client=client)
                        # Opening requests run side by side: whoever went past the limit
                        # meanwhile is evicted now (never the session just opened).
                        await self._make_room(self.max_sessions, keep=session_id)
            await send(message)

        await self.manager.handle_request(scope, receive, register)

    async def _close_idle(self) -> None:
        now = self.clock()
        for session_id, session in list(self.sessions.items()):
            if not session.in_flight and now - session.last >= self.idle_timeout:
                await self._close(session_id, "idle")

    async def _make_room(
        self, limit: int, *, keep: str | None = None, newcomer: str | None = None
    ) -> bool:
        """Close idle sessions, then the least recently active unused ones but ``keep``, then
        (for a ``newcomer`` client) idle ones of the client holding the most, while more than
        ``limit`` are open; whether at most ``limit`` are."""
        await self._close_idle()
        while len(self.sessions) > limit:
            unused = [(s.last, i) for i, s in self.sessions.items() if not s.used and i != keep]
            victim = min(unused)[1] if unused else self._fair_share(newcomer)
            if victim is None:
                return False
            await self._close(victim, "evicted")
            self.evicted += 1
            self._warn(f"{len(self.sessions) + 1} sessions open: evicting unused ones")
        return True

    def _fair_share(self, newcomer: str | None) -> str | None:
        """The least recently active idle session of the client holding the most sessions,
        when ``newcomer`` holds fewer than it even after joining; else None."""
        if newcomer is None:
            return None
        held = Counter(s.client for s in self.sessions.values())
        hog, most = held.most_common(1)[0]
        if held[newcomer] + 1 >= most:
            return None
        idle = [
            (s.last, i) for i, s in self.sessions.items() if s.client == hog and not s.in_flight
        ]
        return min(idle)[1] if idle else None

    async def _close(self, session_id: str, why: str) -> None:
        del self.sessions[session_id]
        transport = self.manager._server_instances.get(session_id)
        log.debug("closing HTTP session %s (%s)", session_id, why)
        if transport is not None:
            with anyio.CancelScope(shield=True):  # a half-closed session would linger
                await transport.terminate()

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.refused += 1
        self._warn(f"refused a new session: all {self.max_sessions} open sessions are in use")
        now = self.clock()
        ends = [s.last + self.idle_timeout - now for s in self.sessions.values() if not s.in_flight]
        retry = max(1, math.ceil(min(ends, default=self.idle_timeout)))
        text = (
            f"mq9-mcp is at its limit of {self.max_sessions} open sessions, all in use: retry "
            f"in {retry} s (a session closes after {self.idle_timeout:g} s without requests), "
            "or end sessions you no longer need with HTTP DELETE; the limits are the server's "
            "--max-sessions and --session-idle-timeout options"
        )
        body = {"jsonrpc": "2.0", "id": None, "error": {"code": INTERNAL_ERROR, "message": text}}
        response = JSONResponse(body, status_code=503, headers={"Retry-After": str(retry)})
        await response(scope, receive, send)

    def _warn(self, what: str) -> None:
        # A flood would log a line per request: one a minute says it.
        if self.clock() >= self._quiet_until:
            self._quiet_until = self.clock() + 60
            log.warning(
                "%s (--max-sessions %d; %d sessions evicted and %d refused so far)",
                what,
                self.max_sessions,
                self.evicted,
                self.refused,
            )


def _client_of(scope: Scope) -> str:
    """Who is asking: the peer's address and a digest of the credentials it gave."""
    peer = scope.get("client") or ("", 0)
    credentials = normalized_credentials(Headers(scope=scope).get("authorization", ""))
    return f"{peer[0]} {hashlib.sha256(credentials.encode()).hexdigest()[:12]}"


def normalized_credentials(authorization: str) -> str:
    """The Authorization header as the token check reads it: the scheme's case and the spaces
    around the credentials do not make ``Bearer T`` another client than ``bearer  T``."""
    scheme, _, credentials = authorization.strip().partition(" ")
    return f"{scheme.lower()} {credentials.strip()}"


class UnreadableBodies:
    """A POST whose body is not UTF-8, or is nested past what Python's json reads, is answered
    400 with a JSON-RPC parse error (with the request's id when it can be read), as the SDK
    answers other JSON it cannot parse; reaching the SDK it was a 500 (issue #22). Other POSTs
    go on with ``scope["mq9.calls_tool"]`` saying whether they call a tool (SessionLimits)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        try:
            body = await read_body(scope, receive, self.max_body_bytes)
        except ClientDisconnect:
            return
        except BodyRefused as refused:
            reply = body_refusal(str(refused))
            response = JSONResponse(reply, refused.status, headers={"Connection": CLOSE})
            await response(scope, receive, send)
            return
        value, problem = _parse(body)
        if problem is not None:
            found = leading_id(body.decode("utf-8", "replace"))
            error = {"code": PARSE_ERROR, "message": f"Parse error: {problem}"}
            reply = {"jsonrpc": "2.0", "id": found, "error": error}
            await JSONResponse(reply, status_code=400)(scope, receive, send)
            return
        unreadable = unreadable_request(body, value)
        if unreadable is not None:
            await JSONResponse(unreadable, status_code=400)(scope, receive, send)
            return
        scope["mq9.calls_tool"] = isinstance(value, dict) and value.get("method") == "tools/call"
        replay: Iterator[Message] = iter([{"type": "http.request", "body": body}])

        async def again() -> Message:
            return next(replay, None) or await receive()

        await self.app(scope, again, send)


def unreadable_request(body: bytes, value: Any) -> dict[str, Any] | None:
    """The JSON-RPC error owed for a request that is JSON but that the SDK cannot read (a lone
    surrogate in a text, an id that is neither a string nor an integer: the SDK would take that
    one for a notification and never answer), as the stdio server answers it; else None."""
    if not isinstance(value, dict):
        return None  # a batch, or no object: the SDK answers it
    text = body.decode("utf-8")
    answers = bad_id_refusal(text)
    if not answers:
        try:
            types.jsonrpc_message_adapter.validate_json(body, by_name=False)
        except ValidationError as exc:
            answers = refusals(text, exc)
    return answers[0].model_dump(by_alias=True, mode="json") if answers else None


def body_refusal(text: str) -> dict[str, Any]:
    """The JSON-RPC answer to a body refused before it was read whole."""
    return {"jsonrpc": "2.0", "id": None, "error": {"code": INVALID_REQUEST, "message": text}}


def too_long(limit: int) -> dict[str, Any]:
    return body_refusal(f"the request body is over {limit} bytes")


class BodyRefused(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """A request's body, refused while it is read (never buffered whole first) when it is over
    ``limit`` bytes (413) or takes over ``BODY_SECONDS`` to arrive (408): one client cannot
    fill the server's memory or hold a request open by sending slowly."""
    declared = Headers(scope=scope).get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyRefused(413, f"the request body is over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    with anyio.move_on_after(BODY_SECONDS) as deadline:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyRefused(413, f"the request body is over {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
    assert deadline.cancelled_caught
    raise BodyRefused(408, f"the request body did not arrive within {BODY_SECONDS:g} s")


def _parse(body: bytes) -> tuple[Any, str | None]:
    """The JSON in ``body``, and why the SDK could not read it (None if it can, or if it answers
    the error itself)."""
    try:
        return json.loads(body.decode("utf-8")), None
    except UnicodeDecodeError:
        return None, "the body is not UTF-8"
    except RecursionError:
        return None, "the body is nested too deeply"
    except ValueError:  # the SDK's own parse error answers it
        return None, None


def create_http_app(
    server: Server,
    connection: Mq9Connection,
    *,
    host: str = "127.0.0.1",
    auth_token: str | None = None,
    max_sessions: int = DEFAULT_MAX_SESSIONS,
    session_idle_timeout: float = DEFAULT_SESSION_IDLE_TIMEOUT,
    clock: Callable[[], float] = time.monotonic,
) -> ASGIApp:
    """The ASGI app serving ``server`` over streamable HTTP at ``/mcp``.

    The app's lifespan opens the broker connection early and closes it at shutdown: one
    connection for every HTTP session. ``max_sessions`` and ``session_idle_timeout`` bound the
    sessions (see ``SessionLimits``, which the app's ``state.session_limits`` holds).
    """
    # SDK versions with limits of their own (10,000 sessions, 30 minutes) would override ours.
    accepted = inspect.signature(StreamableHTTPSessionManager).parameters
    limits_of_its_own = ("max_sessions", "session_idle_timeout")
    no_sdk_limits: dict[str, Any] = {k: None for k in limits_of_its_own if k in accepted}
    manager = StreamableHTTPSessionManager(
        app=server,
        security_settings=loopback_security(host) if is_loopback(host) else None,
        **no_sdk_limits,
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

    endpoint = UnreadableBodies(limits)
    starlette = Starlette(routes=[Route(MCP_PATH, endpoint=endpoint)], lifespan=lifespan)
    starlette.state.session_limits = limits
    app: ASGIApp = BearerTokenMiddleware(starlette, auth_token) if auth_token else starlette
    return HostAndOrigin(app, loopback_security(host)) if is_loopback(host) else app


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


class BoundedConnections(H11Protocol):
    """uvicorn's HTTP/1.1 connection, closed when its request headers have not all arrived
    ``HEADER_SECONDS`` after it opened or its last response ended, and refused outright while
    ``MAX_CONNECTIONS`` are open: connections that never finish their headers cannot pile up
    to the file descriptor limit. A request its head alone refuses (``refusal_by_head``) is
    answered here, with the connection closed, before any of its body is read or the app runs:
    a client repeating one costs the server little more than the connection."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.conn = _ScreenedConnection(self, config.h11_max_incomplete_event_size)
        self.security = _early_security(config.host)
        self.refused = False  # answered by refuse_early, which h11 never saw

    def refuse_early(self, request: h11.Request) -> bool:
        """Answer ``request`` and end its side of the connection, if its head alone refuses it:
        the client gets the whole answer, nothing more of its body is read, and the connection
        closes ``REFUSED_LINGER`` seconds later."""
        refusal = refusal_by_head(self.security, list(request.headers), MAX_BODY_BYTES)
        if refusal is None:
            return False
        self.refused = True
        self.transport.write(refusal)
        self.transport.write_eof()
        self.flow.pause_reading()
        self.loop.call_later(REFUSED_LINGER, self.transport.close)
        return True

    def shutdown(self) -> None:
        if self.refused:  # uvicorn's would tell h11 of a close while it awaits an answer
            self.transport.close()
        else:
            super().shutdown()

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:  # see RECEIVE_BUFFER
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        if len(self.connections) > MAX_CONNECTIONS:
            log.warning("refused a connection: %d are open", MAX_CONNECTIONS)
            transport.close()
            return
        self._arm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        deadline = getattr(self, "_header_deadline", None)
        if deadline is not None:
            deadline.cancel()
        super().connection_lost(exc)
        self._close_off_the_loop()

    def _close_off_the_loop(self) -> None:
        """Have the socket's last close happen on a worker thread: closing a connection whose
        client still had megabytes on the way (a refused body) makes the kernel drop them and
        reset it, about 0.4 ms the event loop would otherwise spend on each. asyncio closes its
        own descriptor right after ``connection_lost``; this duplicate is closed after that."""
        sock = self.transport.get_extra_info("socket")
        if sock is None or sock.fileno() < 0:
            return
        try:
            duplicate = os.dup(sock.fileno())
        except OSError:  # at the descriptor limit: asyncio's close on the loop does it all
            return
        self.loop.call_soon(_CLOSER.close, duplicate)

    def _arm_header_deadline(self) -> None:
        deadline = getattr(self, "_header_deadline", None)
        if deadline is not None:
            deadline.cancel()
        self._header_deadline = self.loop.call_later(HEADER_SECONDS, self._headers_overdue)

    def _headers_overdue(self) -> None:
        # IDLE: the client has not finished a request's headers since the deadline was armed.
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            log.debug("closed a connection whose request headers took over %gs", HEADER_SECONDS)
            self.transport.close()


@functools.cache
def _early_security(host: str) -> TransportSecurityMiddleware | None:
    """The Host and Origin check ``create_http_app`` puts in front of the app, for ``host``."""
    return TransportSecurityMiddleware(loopback_security(host)) if is_loopback(host) else None


class _Closer:
    """Closes descriptors on a daemon thread of its own: the event loop only queues them (an
    executor's future would wake the loop once more for each)."""

    def __init__(self) -> None:
        self.descriptors: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.thread: threading.Thread | None = None

    def close(self, descriptor: int) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="mq9-mcp-closer", daemon=True)
            self.thread.start()
        self.descriptors.put(descriptor)

    def _run(self) -> None:
        while True:
            os.close(self.descriptors.get())


_CLOSER = _Closer()


class _ScreenedConnection(h11.Connection):
    """h11's server side, showing each request's head to its connection first: a request the
    connection refuses is never handed on, and ``NEED_DATA`` ends uvicorn's reading."""

    def __init__(self, protocol: BoundedConnections, largest_head: int | None) -> None:
        sizes = {} if largest_head is None else {"max_incomplete_event_size": largest_head}
        super().__init__(h11.SERVER, **sizes)
        self.protocol = protocol

    def next_event(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        event = super().next_event()
        if isinstance(event, h11.Request) and self.protocol.refuse_early(event):
            return h11.NEED_DATA
        return event


def refusal_by_head(
    security: TransportSecurityMiddleware | None, headers: list[tuple[bytes, bytes]], limit: int
) -> bytes | None:
    """The whole HTTP answer refusing a request by its head (``HostAndOrigin``'s wrong Host or
    Origin, then ``read_body``'s declared length over ``limit``), with ``Connection: close``;
    None when the head is acceptable, or when the SDK's check does not decide at once."""
    if security is not None:
        check = security.validate_request(Request({"type": "http", "headers": headers}))
        try:
            check.send(None)  # it awaits nothing: it decides at once
        except StopIteration as decided:
            if decided.value is not None:
                return _written(decided.value)
        else:  # a version that awaits something: the app's HostAndOrigin decides
            check.close()
    declared = Headers(raw=headers).get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return _written(JSONResponse(too_long(limit), 413))
    return None


def _written(response: Response) -> bytes:
    """``response`` as the bytes on the wire, closing the connection."""
    head = [f"HTTP/1.1 {response.status_code} {HTTPStatus(response.status_code).phrase}"]
    head += [f"{name.decode()}: {value.decode()}" for name, value in response.raw_headers]
    return "\r\n".join([*head, "connection: close", "", ""]).encode() + bytes(response.body)


class _Server(uvicorn.Server):
    """uvicorn, saying which signal stopped it. After a graceful stop uvicorn raises the signal
    again; ``cli.main`` turns that into exit status 0."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.should_exit:
            log.info("stopping (%s)", signal.Signals(sig).name)
        super().handle_exit(sig, frame)
