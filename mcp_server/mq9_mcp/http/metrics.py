"""``mq9-mcp --transport http --metrics HOST:PORT``: MCP's HTTP requests by route and
status, JSON-RPC calls by method and tool (the catalog's names, else ``other``), the open
requests (event streams included) and sessions (open, evicted, refused), with ``/healthz`` and
``/readyz`` (a broker acknowledges a write), on the operator's address, apart
from ``/mcp``'s port."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from mq9_platform.client.connection import Mq9Connection
from mq9_platform.operations.catalog import OPERATIONS
from mq9_wire.metrics import OperatorEndpoint, need_prometheus
from mq9_wire.metrics.http import ASGIApp, HttpMetrics
from mq9_wire.metrics.probe import Probe, broker_writes

from .sessions import SessionLimits

PREFIX = "mq9_mcp"
# MCP's methods a client sends (the 2025-11 revision's and the SDK 2.x's): counted by name
METHODS = (
    "initialize", "ping", "tools/list", "tools/call", "resources/list", "resources/read",
    "resources/templates/list", "resources/subscribe", "resources/unsubscribe", "prompts/list",
    "prompts/get", "completion/complete", "logging/setLevel", "tasks/get", "tasks/result",
    "tasks/list", "tasks/cancel", "events/subscribe", "events/unsubscribe",
    "notifications/initialized", "notifications/cancelled", "notifications/roots/list_changed",
)  # fmt: skip


def route_of(path: str) -> str:
    return "mcp" if path.rstrip("/") == "/mcp" else "other"


class McpMetrics:
    """The registry a scrape reads; ``wrap`` the app (outermost), ``watch`` its sessions."""

    def __init__(self) -> None:
        prometheus = need_prometheus()
        self.registry = prometheus.CollectorRegistry(auto_describe=False)
        self.http = HttpMetrics(
            PREFIX, self.registry, route=route_of, known=METHODS, tools=tuple(OPERATIONS)
        )
        self.limits: SessionLimits | None = None
        self.registry.register(self)

    def wrap(self, app: ASGIApp) -> ASGIApp:
        return self.http.wrap(app)

    def watch(self, limits: SessionLimits) -> None:
        self.limits = limits

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        limits = self.limits
        if limits is None:
            return
        yield GaugeMetricFamily(
            f"{PREFIX}_sessions", "MCP sessions open", value=len(limits.sessions)
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_sessions_max", "the most MCP sessions open at once (--max-sessions)",
            value=limits.max_sessions,
        )  # fmt: skip
        ended = CounterMetricFamily(
            f"{PREFIX}_sessions_turned_away", "sessions evicted for a newcomer, or newcomers "
            "refused (503), when full", labels=["how"],
        )  # fmt: skip
        ended.add_metric(["evicted"], limits.evicted)
        ended.add_metric(["refused"], limits.refused)
        yield ended


def mcp_endpoint(metrics: McpMetrics, connection: Mq9Connection, host: str, port: int) -> Any:
    """The operator's endpoint (not started): ready while a broker acknowledges a write
    within a deadline (a connection that is up says only that a nats-server is
    there; a cluster that lost its quorum answers reads and takes no write, and
    most tools write)."""

    async def ask() -> str | None:
        try:
            return (await connection.run(broker_writes)).why_not_ready
        except Exception as exc:
            return f"the broker is not reachable: {type(exc).__name__}"

    probe = Probe(ask)
    return OperatorEndpoint(host, port, metrics.registry, probe, ready_metric=f"{PREFIX}_ready")
