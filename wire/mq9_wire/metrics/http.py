"""Requests an HTTP server answers, counted around its ASGI app: by route and status
class with their duration, those open now (an MCP session's stream, an A2A subscription: the
connections), the JSON-RPC calls by method (and tool) read from the request's first body
chunk, and the A2A task states its answers carry.

Labels come from bounded sets only: a route is one the server names, a method or tool one of
``known`` (else ``other``), a state one of the A2A enum's names. Nothing here reads a whole
body or holds one: the first chunk is looked at as it passes, and of each answer chunk at most
``SCANNED`` bytes.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Collection
from typing import Any

from .extra import need_prometheus

ASGIApp = Callable[..., Any]
OTHER = "other"
SCANNED = 64 * 1024  # bytes of a chunk looked at for a method or a task's state
_STATE = re.compile(rb'"state"\s*:\s*"(TASK_STATE_[A-Z_]{1,32})"')
DURATION_BOUNDS = (0.005, 0.025, 0.1, 0.5, 1.0, 2.5, 10.0, 30.0, 120.0, 600.0)


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status <= 599 else OTHER


class HttpMetrics:
    """The families of one HTTP server, named ``<prefix>_...``, in ``registry``.

    ``route``: the route label of a request's path. ``known``: the JSON-RPC methods counted by
    name; ``tools``: for ``tools/call`` (MCP), the tool names counted by name (None: no tool
    label). ``task_states``: count the A2A task states answers carry."""

    def __init__(
        self,
        prefix: str,
        registry: Any,
        *,
        route: Callable[[str], str],
        known: Collection[str] = (),
        tools: Collection[str] | None = None,
        task_states: bool = False,
    ) -> None:
        prometheus = need_prometheus()
        self.route = route
        self.known, self.tools = frozenset(known), None if tools is None else frozenset(tools)
        self.requests = prometheus.Counter(
            f"{prefix}_http_requests", "HTTP requests answered, by route and status class",
            ["route", "status"], registry=registry,
        )  # fmt: skip
        self.duration = prometheus.Histogram(
            f"{prefix}_http_request_duration_seconds",
            "from a request's start to its answer's end (a stream: while it was open)",
            ["route"], buckets=DURATION_BOUNDS, registry=registry,
        )  # fmt: skip
        self.open = prometheus.Gauge(
            f"{prefix}_http_requests_open", "HTTP requests being answered now (open streams too)",
            registry=registry,
        )  # fmt: skip
        labels = ["method"] if self.tools is None else ["method", "tool"]
        self.calls = prometheus.Counter(
            f"{prefix}_rpc_calls", "JSON-RPC calls received, by method"
            + ("" if self.tools is None else " and tool (tools/call)"),
            labels, registry=registry,
        )  # fmt: skip
        self.states = None
        if task_states:
            self.states = prometheus.Counter(
                f"{prefix}_task_states", "A2A task states in the answers, by state",
                ["state"], registry=registry,
            )  # fmt: skip

    def wrap(self, app: ASGIApp) -> ASGIApp:
        async def metered(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            route = self.route(scope.get("path", ""))
            status = [0]
            first = [scope.get("method") == "POST"]
            started = time.perf_counter()
            self.open.inc()

            async def receiving() -> Any:
                message = await receive()
                if first[0] and message.get("type") == "http.request":
                    first[0] = False
                    self._called(message.get("body", b""), message.get("more_body", False))
                return message

            async def sending(message: dict[str, Any]) -> None:
                kind = message.get("type")
                if kind == "http.response.start":
                    status[0] = message.get("status", 0)
                elif kind == "http.response.body" and self.states is not None:
                    for found in _STATE.findall(message.get("body", b"")[:SCANNED]):
                        self.states.labels(found.decode()).inc()
                await send(message)

            try:
                await app(scope, receiving, sending)
            finally:
                self.open.dec()
                self.requests.labels(route, status_class(status[0])).inc()
                self.duration.labels(route).observe(time.perf_counter() - started)

        return metered

    def _called(self, body: bytes, more: bool) -> None:
        method, tool = OTHER, ""
        request = None
        if not more and len(body) <= SCANNED:
            try:
                request = json.loads(body)
            except (ValueError, RecursionError):
                request = None
        if isinstance(request, dict):
            named = request.get("method")
            if isinstance(named, str) and named in self.known:
                method = named
            params = request.get("params")
            if self.tools is not None and method == "tools/call" and isinstance(params, dict):
                name = params.get("name")
                tool = name if isinstance(name, str) and name in self.tools else OTHER
        elif isinstance(request, list):
            method = "batch"
        if self.tools is None:
            self.calls.labels(method).inc()
        else:
            self.calls.labels(method, tool).inc()
