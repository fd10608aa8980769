"""What a server tells its operator: metrics in Prometheus' text format, ``/healthz``
(alive) and ``/readyz`` (ready to serve), on an address of the operator's choosing
(``--metrics HOST:PORT``), never on a port a tenant reaches.

Each server (``mq9-dev-broker``, ``mq9-wake``, ``mq9-a2a-gateway``, ``mq9-mcp`` over HTTP, the
console) fills a registry of its own and serves it with ``OperatorEndpoint``. The broker's
counting on its hot path is its own (``mq9_broker.serving.meter``); ``prometheus-client`` (the
``metrics`` extra) is imported only when metrics are asked for. docs/broker-watching.md#watching-it
"""

from __future__ import annotations

from .endpoint import OperatorEndpoint, Ready, operator_address
from .extra import EXTRA, MetricsUnavailable, need_prometheus

__all__ = [
    "EXTRA",
    "MetricsUnavailable",
    "OperatorEndpoint",
    "Ready",
    "need_prometheus",
    "operator_address",
]
