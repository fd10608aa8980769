"""``mq9-a2a-gateway --metrics HOST:PORT``: the gateway's HTTP requests by route and
status, the A2A calls by method, the task states its answers carry, the requests open (streams
included) and its broker connection, with ``/healthz`` and ``/readyz`` (listening, and a
broker acknowledges a write), on the operator's address, never on the port the tenants reach.
No label names an agent or a tenant."""

from __future__ import annotations

from collections.abc import Callable

from mq9_wire.metrics import OperatorEndpoint, need_prometheus
from mq9_wire.metrics.http import ASGIApp, HttpMetrics
from mq9_wire.metrics.probe import answering

from ...client.client import Mq9Client
from ...client.key_shares import KeyShares, KeySharesCollector

PREFIX = "mq9_gateway"
# A2A 1.0's JSON-RPC methods (a2a-sdk's dispatcher): counted by name, anything else as other
METHODS = (
    "SendMessage", "SendStreamingMessage", "GetTask", "ListTasks", "CancelTask",
    "SubscribeToTask", "CreateTaskPushNotificationConfig", "GetTaskPushNotificationConfig",
    "ListTaskPushNotificationConfigs", "DeleteTaskPushNotificationConfig",
    "GetExtendedAgentCard",
)  # fmt: skip


def route_of(path: str) -> str:
    """``card`` (an agent's card), ``rpc`` (its JSON-RPC endpoint), ``rest`` (HTTP+JSON) or
    ``other``: never the agent's name."""
    if not path.startswith("/a2a/"):
        return "other"
    rest = path[len("/a2a/") :]
    if "/.well-known/" in rest:
        return "card"
    return "rpc" if "/" not in rest.rstrip("/") else "rest"


def gateway_metrics(
    client: Mq9Client,
    host: str,
    port: int,
    serving: Callable[[], bool],
    key_shares: KeyShares | None = None,
) -> tuple[Callable[[ASGIApp], ASGIApp], OperatorEndpoint]:
    """What wraps the gateway's app, and the operator's endpoint (not started). ``serving``:
    whether the HTTP server listens; ``key_shares``: the tenants' keys, whose
    refusals are counted (no label names the tenant)."""
    prometheus = need_prometheus()
    registry = prometheus.CollectorRegistry(auto_describe=False)
    http = HttpMetrics(PREFIX, registry, route=route_of, known=METHODS, task_states=True)
    connected = prometheus.Gauge(
        f"{PREFIX}_broker_connected", "1 while the gateway's connection to the broker is up",
        registry=registry,
    )  # fmt: skip
    connected.set_function(lambda: int(client.is_connected))

    if key_shares is not None:  # the tenants' keys held, and those refused
        registry.register(KeySharesCollector(key_shares, PREFIX))

    answers = answering(lambda: client)

    async def ready() -> str | None:
        """Listening, and a broker acknowledges the gateway's write within a deadline
        (every call it takes writes a task and a message)."""
        if not serving():
            return "the HTTP server is not listening yet"
        return await answers()

    endpoint = OperatorEndpoint(host, port, registry, ready, ready_metric=f"{PREFIX}_ready")
    return http.wrap, endpoint
