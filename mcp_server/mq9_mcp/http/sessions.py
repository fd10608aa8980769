"""Bounds on mq9-mcp's HTTP sessions: how many are open, how long one may idle, and who gives
way when they are all taken (``SessionLimits``)."""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import anyio
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.types import INTERNAL_ERROR
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import Message, Receive, Scope, Send

from ..owners import client_identity

log = logging.getLogger("mq9_mcp")

# Room for many MCP clients on one machine, while a flood stays small (what a session holds:
# docs/mcp-http.md, "The HTTP edge").
DEFAULT_MAX_SESSIONS = 100
DEFAULT_SESSION_IDLE_TIMEOUT = 600.0


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
    If all have called one, a newcomer from a client (a principal; without one, the peer
    address and credentials: every loopback client is one) holding none, or fewer sessions
    than the client holding the most even after joining, replaces the least recently active
    idle session of a client holding the most; otherwise it is refused (503, Retry-After). So a
    flood mostly evicts its own empty sessions and gives slots up to other clients as they
    come, while sessions that did work keep working. Refusing outright would
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
        # is terminated as a client's DELETE does, and the SDK then forgets it (the versions
        # this was written for: guard.SUPPORTED, checked before the server starts)
        if not isinstance(getattr(manager, "_server_instances", None), dict):
            raise RuntimeError(
                "this version of the mcp SDK keeps its HTTP sessions where mq9-mcp cannot close "
                "them: install mcp>=2.3,<3"
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
        client = client_identity(scope)
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
        """The least recently active idle session of a client holding the most sessions, when
        ``newcomer`` holds fewer than it even after joining, or holds none at all; else None.

        A client holding none may take even the last session of a client holding one: every
        principal is a client, and principals can cost nothing (an identity provider's open
        registration), so a crowd of them each holding one session would otherwise lock every
        newcomer out for the idle timeout. An idle session holds nothing its client's next
        one lacks (what the tools remember is the client's, ``owners.py``): its client opens
        another, as the MCP transport has a client do on a 404."""
        if newcomer is None:
            return None
        held = Counter(s.client for s in self.sessions.values())
        most = max(held.values())
        mine = held[newcomer]
        if mine and mine + 1 >= most:
            return None
        idle = [
            (s.last, i)
            for i, s in self.sessions.items()
            if held[s.client] == most and not s.in_flight
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
