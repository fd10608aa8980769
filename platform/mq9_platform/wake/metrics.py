"""``mq9-wake --metrics HOST:PORT``: wakes by target and outcome, their lag from the
oldest waiting message's arrival, the mailboxes watched and the broker connection, in
Prometheus' text format, with ``/healthz`` and ``/readyz``, on the operator's address.

Labels are the target kind (webhook, agent_server, command, callback) and the outcome
(delivered, set_aside): never a mailbox, a rule or a URL.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from mq9_wire.metrics import OperatorEndpoint, need_prometheus
from mq9_wire.metrics.probe import Probe, answering

from .rules import WakeRule
from .waker import Waker

PREFIX = "mq9_wake"
# Seconds from arrival to the wake delivered: an announced mailbox wakes within a second, a
# polled one within --poll, a rule's min_interval or quiet hours hold one for minutes or hours
LAG_BOUNDS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0)


class WakeMetrics:
    """What ``waker`` tells its ``on_wake`` hook, counted, and a registry holding it."""

    def __init__(self, waker: Waker) -> None:
        prometheus = need_prometheus()
        self.waker = waker
        self.registry = prometheus.CollectorRegistry(auto_describe=False)
        self.wakes = prometheus.Counter(
            f"{PREFIX}_wakes", "wakes tried, by target kind and outcome",
            ["target", "outcome"], registry=self.registry,
        )  # fmt: skip
        self.lag = prometheus.Histogram(
            f"{PREFIX}_lag_seconds",
            "from the oldest message a wake is for arriving to its delivery ending",
            ["target"], buckets=LAG_BOUNDS, registry=self.registry,
        )  # fmt: skip
        self.registry.register(_Held(waker))
        waker.on_wake = self.told

    def told(self, rule: WakeRule, outcome: str, lag: float) -> None:
        self.wakes.labels(rule.target, outcome).inc()
        self.lag.labels(rule.target).observe(lag)


class _Held:
    def __init__(self, waker: Waker) -> None:
        self.waker = waker

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        waker = self.waker
        yield GaugeMetricFamily(
            f"{PREFIX}_watched_mailboxes", "mailboxes with wake rules this waker watches",
            value=len(waker.watching),
        )  # fmt: skip
        yield GaugeMetricFamily(
            f"{PREFIX}_broker_connected", "1 while the waker's connection to the broker is up",
            value=int(waker.client.is_connected),
        )  # fmt: skip


def ready(waker: Waker) -> Probe:
    """Ready while a broker acknowledges the waker's write within a
    deadline (a wake is claimed with a write): a connection that is up to a cluster that lost
    its quorum, or to a nats-server with no broker behind it, wakes nobody."""
    return answering(lambda: waker.client)


def wake_endpoint(waker: Waker, host: str, port: int) -> OperatorEndpoint:
    """The operator's endpoint for ``waker`` (its hook set here); not started."""
    metrics = WakeMetrics(waker)
    return OperatorEndpoint(
        host, port, metrics.registry, ready(waker), ready_metric=f"{PREFIX}_ready"
    )
