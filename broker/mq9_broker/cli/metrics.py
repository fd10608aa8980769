"""``mq9-dev-broker --metrics HOST:PORT`` (#73): what the broker answers and holds, in
Prometheus' text format, with ``/healthz`` and ``/readyz``, on the operator's address.

Requests are counted as they are answered (``RequestMeter``, in serving/serve.py); what the
broker holds is read from its engine when scraped, on the broker's loop: mailboxes, stored
messages and their bytes, dead letters, agents, and the consumer groups' pending messages as
their committed offsets tell them (``HeldFigures``: counts are lengths; bytes and pending are
read again only where something changed, within a bound). On ``--store jetstream`` the same
figures are the cluster's, read from JetStream (``StoreSurvey``: kept 15 s, asked for before a
scrape, ``held_age_seconds`` saying how old they are), and ``/readyz`` is ready only when the
store acknowledged a write within its deadline (#78, #77 item 6). No label names a mailbox, an
agent or a group.

The nats-servers (#91 item 1): given their monitoring endpoints (``--nats-monitor``), a scrape
reads each server's ``/healthz`` and ``/jsz`` (``ServersWatched``, kept ``SERVERS_KEPT`` s) and
exports whether it answers and is healthy, whether it knows a JetStream meta leader, and each
meta-group peer as the leader sees it (current, offline, seconds since heard, entries behind).
NATS' own exporter (prometheus-nats-exporter) cannot be installed from the Go proxy, and the
broker can reach the servers it uses: docs/deploy.md#watching-the-nats-servers. The store's
writes (#91 item 2): ``store_writes_answered`` is the write ``/readyz`` made, apart from the
survey (reads, answered by a cluster that lost its quorum).
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from mq9_wire import protocol as p
from mq9_wire.metrics import OperatorEndpoint, need_prometheus
from mq9_wire.metrics.probe import ANSWER_WITHIN

from ..broker import Broker
from ..engine.engine import COMMANDS
from ..engine.process import BrokerEngine
from ..nats_servers.survey import read_monitor
from ..serving.meter import RequestMeter
from ..storage.jetstream.survey_state import PROBE_FRESH, Held, StoreSurvey

PREFIX = "mq9_broker"
# groups/dead_letters.py names a mailbox's dead letters <mailbox>.dlq (or .dlq.<digest> for a
# name near the length limit); the broker may not import groups (docs/architecture.md)
DEAD_LETTER_SEGMENT = "dlq"


def command_label(subject: str) -> str:
    """``$mq9.AI.MSG.SEND.`` -> ``SEND``: the command's last word."""
    return subject.rstrip(".").rsplit(".", 1)[-1]


def broker_meter() -> RequestMeter:
    """A meter for every command of the engine's table."""
    return RequestMeter({subject: command_label(subject) for subject in COMMANDS})


def is_dead_letters(address: str) -> bool:
    parts = address.split(".")
    return len(parts) > 1 and DEAD_LETTER_SEGMENT in parts[1:]


# Messages one scrape reads, at most, for the payload bytes and the groups' pending counts (on
# the broker's loop, where requests wait meanwhile): 200,000 took 207 ms on a busy 2-core
# machine (load 8), so at most about 100 ms. A mailbox unchanged since it was last read is not
# read again (0.3 ms for 100 unchanged mailboxes); beyond the bound, figures stay as last read
# and ``held_exact`` says 0.
WALK_LIMIT = 100_000


class BrokerCollector:
    """The families a scrape of ``broker`` reads (prometheus-client's collector protocol)."""

    def __init__(self, broker: Broker, meter: RequestMeter, walk_limit: int = WALK_LIMIT) -> None:
        self.broker = broker
        self.meter = meter
        self.held = HeldFigures(walk_limit)
        self.survey: StoreSurvey | None = None  # on the JetStream store, once it serves
        self.writes: str | None = None  # why the store's last write was not acknowledged
        self.wrote = False  # a write was asked (on the JetStream store)

    def cluster_survey(self) -> StoreSurvey | None:
        """The survey of the cluster store this broker serves (None on another store)."""
        engine = self.broker.engine
        if engine is None or isinstance(engine, BrokerEngine):  # the state of this process
            return None
        if self.survey is None or self.survey.store is not engine.store:
            self.survey = StoreSurvey(engine.store)
        return self.survey

    async def refresh(self) -> None:
        """Before a scrape: the cluster's figures surveyed again when older than kept."""
        survey = self.cluster_survey()
        if survey is not None:
            await survey.held()

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        yield from self.meter.families(PREFIX)
        broker = self.broker
        up, opened = broker.connections
        yield GaugeMetricFamily(
            f"{PREFIX}_serving", "1 while this broker answers requests (0 before and after)",
            value=int(broker.serving),
        )  # fmt: skip
        connections = GaugeMetricFamily(
            f"{PREFIX}_nats_connections", "the broker's own NATS connections, by state",
            labels=["state"],
        )  # fmt: skip
        connections.add_metric(["connected"], up)
        connections.add_metric(["disconnected"], opened - up)
        yield connections
        engine = broker.engine
        if engine is not None:  # (#98) the keys refused past --max-keys(-per-sender)
            from prometheus_client.core import CounterMetricFamily

            yield CounterMetricFamily(
                f"{PREFIX}_idempotency_keys_refused", "keyed SENDs refused because the keys "
                "held reached --max-keys, --max-keys-per-sender or --max-keys-per-address",
                value=engine.keys_refused,
            )  # fmt: skip
            yield CounterMetricFamily(
                f"{PREFIX}_idempotency_keys_refused_per_address", "of those, the keyed SENDs "
                "of an open broker's client refused at its own --max-keys-per-address (#106)",
                value=engine.keys_refused_per_address,
            )  # fmt: skip
            yield CounterMetricFamily(
                f"{PREFIX}_reports_unkept", "REPORTs answered and not kept: no registration "
                "holds their name (#106: a report is kept while its agent is registered)",
                value=engine.reports_unkept,
            )  # fmt: skip
        identities = broker.identities
        if identities is not None:  # (#106) REGISTERs past an agent's own share
            from prometheus_client.core import CounterMetricFamily

            yield CounterMetricFamily(
                f"{PREFIX}_registrations_refused_per_sender", "REGISTERs of a new name "
                "refused because their agent holds --max-agents-per-sender registrations "
                "(its own share of --max-agents)",
                value=identities.ownership.shares_refused,
            )  # fmt: skip
        if isinstance(engine, BrokerEngine):
            keys = engine.store.sent_keys
            yield GaugeMetricFamily(
                f"{PREFIX}_idempotency_keys", "idempotency keys held by this broker's store "
                "(memory, SQLite; #98: bounded by --max-keys)", value=len(keys),
            )  # fmt: skip
            yield GaugeMetricFamily(
                f"{PREFIX}_idempotency_keys_most_one_holds", "the most idempotency keys one "
                "vouched sender or open broker's client holds (bounded by --max-keys-per-sender, "
                "--max-keys-per-address)", value=keys.most_held(),
            )  # fmt: skip
            reports = list(engine.reports.values())  # (a copy: the loop may add one meanwhile)
            yield GaugeMetricFamily(
                f"{PREFIX}_reports", "agents' latest REPORTs held (one per registered agent "
                "at most, #106)", value=len(reports),
            )  # fmt: skip
            yield GaugeMetricFamily(
                f"{PREFIX}_report_characters", "the characters of the REPORTs held",
                value=sum(len(info) for info, _ in reports),
            )  # fmt: skip
            yield from self.held.families(engine)
        elif (survey := self.cluster_survey()) is not None:
            yield from _cluster_families(survey)
            if self.wrote:
                yield GaugeMetricFamily(
                    f"{PREFIX}_store_writes_answered", "1 when the JetStream store acknowledged "
                    "the last readiness write within its deadline (0: quorum lost, cluster away)",
                    value=int(self.writes is None),
                )  # fmt: skip


class HeldFigures:
    """What the engine holds, read at each scrape. Counts (mailboxes, messages, dead letters,
    agents, groups) are exact: each is a length. A mailbox's payload bytes are read again only
    when it changed since (its message table replaced, its length or its newest msg_id moved:
    msg_ids only grow, so a removal and an append between two scrapes still move one), and the
    groups' pending counts walk their lanes; both within ``walk_limit`` messages a scrape."""

    def __init__(self, walk_limit: int = WALK_LIMIT) -> None:
        self.walk_limit = walk_limit
        # address -> (the mailbox's shape when read, its payload bytes then, which scrape)
        self._bytes: dict[str, tuple[tuple[int, int, int, int], int, int]] = {}
        self._scrapes = 0
        self.exact = True  # the last scrape's bytes and pending counts were all read then

    def families(self, engine: BrokerEngine) -> Iterator[Any]:

        budget = [self.walk_limit]
        self._scrapes += 1
        messages = dead = 0
        stale: list[tuple[int, str, tuple[int, int, int, int], dict[int, Any]]] = []
        known = self._bytes
        for address, mailbox in engine.mailboxes.items():
            live = mailbox.messages
            count = len(live)
            messages += count
            if is_dead_letters(address):
                dead += count
            shape = (id(mailbox), id(live), count, mailbox.next_id)
            held = known.get(address)
            if held is None or held[0] != shape:
                stale.append((-1 if held is None else held[2], address, shape, live))
        exact = True
        # the least recently read first, so that a bound reached reads the others next time
        stale.sort(key=lambda entry: entry[0])
        for _, address, shape, live in stale:
            if len(live) > budget[0]:
                exact = False
                continue
            budget[0] -= len(live)
            known[address] = (shape, sum(len(m.payload) for m in live.values()), self._scrapes)
        for address in [a for a in known if a not in engine.mailboxes]:
            del known[address]  # gone: never read again
        stored = sum(held[1] for held in known.values())
        groups, pending, largest, counted = _groups(engine, budget)
        self.exact = exact and counted
        figures = Held(
            len(engine.mailboxes), messages, stored, dead, len(engine.registry), groups,
            pending, largest, self.exact, 0.0,
        )  # fmt: skip
        yield from _held_families(figures, "payload bytes of the messages stored (see held_exact)")


def _held_families(held: Held, bytes_text: str) -> Iterator[Any]:
    from prometheus_client.core import GaugeMetricFamily

    for name, text, value in (
        ("mailboxes", "live mailboxes", held.mailboxes),
        ("messages", "messages stored in live mailboxes", held.messages),
        ("message_bytes", bytes_text, held.message_bytes),
        ("dead_letters", "messages in dead-letter mailboxes (<mailbox>.dlq)", held.dead_letters),
        ("agents", "agents registered", held.agents),
        ("groups", "consumer groups with a committed offset", held.groups),
        ("group_pending_messages", "messages past the groups' committed offsets, all groups",
         held.group_pending_messages),
        ("group_pending_max", "the most messages past one group's committed offsets",
         held.group_pending_max),
        ("held_exact", "1 when every figure was read whole (0: more than a read's bound, some "
         "are as last read or lower bounds)", int(held.exact)),
    ):  # fmt: skip
        yield GaugeMetricFamily(f"{PREFIX}_{name}", text, value=value)


def _cluster_families(survey: StoreSurvey) -> Iterator[Any]:
    """The cluster's figures as last surveyed (none before the first survey answered), how
    old they are, and whether the last survey was answered."""
    from prometheus_client.core import GaugeMetricFamily

    held = survey.last
    yield GaugeMetricFamily(
        f"{PREFIX}_store_answered", "1 when the JetStream store answered the last survey "
        "within its deadline (jetstream store)", value=int(survey.failure is None and held
                                                          is not None),
    )  # fmt: skip
    if held is None:
        return
    yield GaugeMetricFamily(
        f"{PREFIX}_held_age_seconds", "seconds since the cluster's figures were read "
        "(jetstream store: kept 15 s, any broker's read the same)",
        value=max(survey.clock() - held.at, 0.0),
    )  # fmt: skip
    yield from _held_families(
        held, "bytes the JetStream messages stream stores (its messages, headers, subjects "
        "and index entries: JetStream's accounting)",
    )  # fmt: skip


def _groups(engine: BrokerEngine, budget: list[int]) -> tuple[int, int, int, bool]:
    """How many groups, the messages past their committed offsets in all, the most of one
    group, and whether every lane was walked within ``budget`` (what is left of it; a lane
    beyond it counts as 0: the figures are then lower bounds). A lane group is
    ``<group>-<priority>``: its shard's messages of that priority from the offset on."""
    by_shard = {m.shard: m for m in engine.topics.values()}
    per_group: dict[str, int] = {}
    counted = True
    for lane_group, shards in engine.offsets.items():
        group, _, priority = lane_group.rpartition("-")
        count = per_group.setdefault(group, 0)
        for shard, offset in shards.items():
            mailbox = by_shard.get(shard)
            if mailbox is None or priority not in _PRIORITIES:
                continue
            lane, live = mailbox.lanes[_PRIORITIES[priority]], mailbox.messages
            start = bisect_left(lane, offset)
            if len(lane) - start > budget[0]:
                counted = False
                continue
            budget[0] -= len(lane) - start
            count += sum(1 for i in lane[start:] if i in live)
        per_group[group] = count
    return (len(per_group), sum(per_group.values()), max(per_group.values(), default=0), counted)


_PRIORITIES = {priority.value: priority for priority in p.Priority}


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
    # (#99) answered within ANSWER_WITHIN: a write probe that takes longer (up to its deadline,
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
        # (#113) the last probe speaks only while it is recent: one from before the quorum was
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
    (#99) the store's readiness write, waited for within the scrape's deadline (a /readyz
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


SERVERS_KEPT = 5.0  # seconds one read of the servers answers the scrapes after it
NATS_PREFIX = "mq9_nats"


class ServersWatched:
    """What the nats-servers' monitoring endpoints (``HOST:PORT``) say, read again before a
    scrape when older than ``kept`` seconds (prometheus-client's collector protocol).
    ``clock``: monotonic."""

    def __init__(
        self, servers: Sequence[str], *, kept: float = SERVERS_KEPT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.servers, self.kept, self.clock = list(servers), kept, clock
        # server -> (its /healthz status, its /jsz) or None: it did not answer
        self.seen: dict[str, tuple[int, dict[str, Any]] | None] = {}
        self._at: float | None = None

    async def refresh(self) -> None:
        if self._at is not None and self.clock() - self._at < self.kept:
            return
        read = await asyncio.gather(*(self._read(server) for server in self.servers))
        self.seen, self._at = dict(zip(self.servers, read, strict=True)), self.clock()

    @staticmethod
    async def _read(server: str) -> tuple[int, dict[str, Any]] | None:
        try:
            status, _ = await read_monitor(server, "/healthz")
            _, jsz = await read_monitor(server, "/jsz")
        except (OSError, TimeoutError, ValueError):
            return None
        return status, jsz

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        def family(name: str, text: str, label: str) -> Any:
            return GaugeMetricFamily(f"{NATS_PREFIX}_{name}", text, labels=[label])

        up = family("server_up", "1 when the server's monitoring endpoint answered", "server")
        healthy = family("server_healthy", "1 when its /healthz answered 200 (JetStream "
                         "current, its streams' replicas caught up)", "server")  # fmt: skip
        leader = family("jetstream_meta_leader", "1 when the server knows a JetStream "
                        "meta leader (0 on all: quorum lost)", "server")  # fmt: skip
        peers = _peer_families(family)
        for server in self.servers:
            seen = self.seen.get(server)
            up.add_metric([server], int(seen is not None))
            if seen is None:
                continue
            status, jsz = seen
            healthy.add_metric([server], int(status == 200))
            meta = jsz.get("meta_cluster") or {}
            leader.add_metric([server], int(bool(meta.get("leader"))))
            replicas = meta.get("replicas") or []
            if meta.get("leader") and all(r.get("name") != meta["leader"] for r in replicas):
                _add_peers(peers, replicas)  # the leader's own view: its followers'
        yield from (up, healthy, leader, *peers)


def _peer_families(family: Callable[[str, str, str], Any]) -> tuple[Any, ...]:
    return (
        family("jetstream_peer_current", "1 when the meta leader counts the peer current",
               "peer"),
        family("jetstream_peer_offline", "1 when the meta leader counts the peer offline",
               "peer"),
        family("jetstream_peer_seen_seconds", "seconds since the meta leader last heard the "
               "peer", "peer"),
        family("jetstream_peer_lag", "entries the peer is behind the meta leader", "peer"),
    )  # fmt: skip


def _add_peers(peers: tuple[Any, ...], replicas: list[dict[str, Any]]) -> None:
    current, offline, seen, lag = peers
    for replica in replicas:
        name = str(replica.get("name", "?"))
        current.add_metric([name], int(bool(replica.get("current"))))
        offline.add_metric([name], int(bool(replica.get("offline"))))
        seen.add_metric([name], float(replica.get("active") or 0) / 1e9)
        lag.add_metric([name], float(replica.get("lag") or 0))
