"""``mq9-dev-broker --metrics HOST:PORT``: what the broker answers and holds, in
Prometheus' text format, with ``/healthz`` and ``/readyz``, on the operator's address. This
module is the endpoint: the broker's request meter, when it is ready, and what a scrape reads
first; the figures it exports are read in ``broker_figures.py`` (the broker's) and
``servers_watched.py`` (the nats-servers', ``--nats-monitor``).

On ``--store jetstream``, ``/readyz`` is ready only when the store acknowledged a write within
its deadline. The store's writes: ``store_writes_answered`` is
the write ``/readyz`` made, apart from the survey (reads, answered by a cluster that lost its
quorum).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from mq9_wire.metrics import OperatorEndpoint, need_prometheus
from mq9_wire.metrics.probe import ANSWER_WITHIN

from ..broker import Broker
from ..engine.engine import COMMANDS
from ..serving.meter import RequestMeter
from ..storage.jetstream.survey_state import PROBE_FRESH, StoreSurvey
from .broker_figures import (
    DEAD_LETTER_SEGMENT,
    PREFIX,
    WALK_LIMIT,
    BrokerCollector,
    HeldFigures,
    is_dead_letters,
)
from .servers_watched import NATS_PREFIX, SERVERS_KEPT, ServersWatched


def command_label(subject: str) -> str:
    """``$mq9.AI.MSG.SEND.`` -> ``SEND``: the command's last word."""
    return subject.rstrip(".").rsplit(".", 1)[-1]


def broker_meter() -> RequestMeter:
    """A meter for every command of the engine's table."""
    return RequestMeter({subject: command_label(subject) for subject in COMMANDS})


def ready(broker: Broker) -> str | None:
    """None when the broker serves, connected; else why not, in one line. (Every store writes
    a change before the request's answer: nothing the broker said is held unwritten.)"""
    engine = broker.engine
    if engine is None or not broker.serving:
        return "not serving (starting or stopped)"
    up, opened = broker.connections
    if up < opened:
        return f"{opened - up} of its {opened} NATS connections are down (reconnecting)"
    return None


async def store_ready(broker: Broker, collector: BrokerCollector) -> str | None:
    """``ready``, and on the JetStream store: the store acknowledged a write and its servers
    have a meta leader, within its deadline (a cluster that lost its quorum answers no write:
    503 within seconds)."""
    why = ready(broker)
    if why is not None:
        return why
    survey = collector.cluster_survey()
    if survey is None:
        return None
    # answered within ANSWER_WITHIN: a write probe that takes longer (up to its deadline,
    # a cluster without its quorum) goes on behind this answer, which is the last probe's
    # (not ready while none answered yet); the next /readyz has it
    probing = asyncio.ensure_future(survey.answers())

    def keep(done: asyncio.Future[str | None]) -> None:
        if not done.cancelled() and done.exception() is None:
            collector.writes, collector.wrote = done.result(), True

    probing.add_done_callback(keep)
    try:
        answered = await asyncio.wait_for(asyncio.shield(probing), ANSWER_WITHIN)
    except TimeoutError:
        # the last probe speaks only while it is recent: one from before the quorum was
        # lost (asked 10 s before, nothing since) said 200 while every SEND failed
        recent = survey.recent()
        if recent is not None:
            return recent[0]
        return (
            f"not known: the JetStream store answered no probe within {ANSWER_WITHIN:g} s, nor "
            f"one in the {PROBE_FRESH:g} s before"
        )
    collector.writes, collector.wrote = answered, True
    return collector.writes


async def _written(collector: BrokerCollector, survey: StoreSurvey) -> None:
    collector.writes, collector.wrote = await survey.answers(), True


def broker_endpoint(
    broker: Broker, host: str, port: int, monitors: Sequence[str] = ()
) -> OperatorEndpoint:
    """The operator's endpoint for ``broker``, whose ``meter`` it reads (made here when the
    broker has none); not started. ``monitors``: the nats-servers' monitoring endpoints
    (``HOST:PORT``) whose health it exports."""
    prometheus = need_prometheus()
    if broker.meter is None:
        broker.meter = broker_meter()
    registry = prometheus.CollectorRegistry(auto_describe=False)
    collector = BrokerCollector(broker, broker.meter)
    registry.register(collector)
    watched = ServersWatched(monitors) if monitors else None
    if watched is not None:
        registry.register(watched)
    scrape = _Scrape(broker, collector, watched)
    return OperatorEndpoint(
        host, port, registry, lambda: store_ready(broker, collector),
        ready_metric=f"{PREFIX}_ready", refresh=scrape.refresh,
    )  # fmt: skip


@dataclass
class _Scrape:
    """What a scrape reads first: the collector's figures, the nats-servers watched, and
    the store's readiness write, waited for within the scrape's deadline (a /readyz
    answers at once): the gauges it exports are this scrape's, an alert on them not a scrape
    late."""

    broker: Broker
    collector: BrokerCollector
    watched: ServersWatched | None

    async def refresh(self) -> None:
        collector = self.collector
        survey = collector.cluster_survey() if ready(self.broker) is None else None
        await asyncio.gather(
            collector.refresh(),
            *([] if self.watched is None else [self.watched.refresh()]),
            *([] if survey is None else [_written(collector, survey)]),
        )


__all__ = [  # the endpoint, and what dev_broker.py and the tests import of the modules beside it
    "DEAD_LETTER_SEGMENT",
    "NATS_PREFIX",
    "PREFIX",
    "SERVERS_KEPT",
    "WALK_LIMIT",
    "BrokerCollector",
    "HeldFigures",
    "ServersWatched",
    "broker_endpoint",
    "broker_meter",
    "command_label",
    "is_dead_letters",
    "ready",
    "store_ready",
]
