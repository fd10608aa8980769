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
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from ... import protocol as p
from ...metrics import OperatorEndpoint, RequestMeter, need_prometheus
from ..broker import Broker
from ..engine.process import BrokerEngine
from ..engine.rules import COMMANDS
from ..storage.jetstream.survey_state import Held, StoreSurvey

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
        if isinstance(engine, BrokerEngine):
            yield from self.held.families(engine)
        elif (survey := self.cluster_survey()) is not None:
            yield from _cluster_families(survey)


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
    """``ready``, and on the JetStream store: the store acknowledged a write within its
    deadline (a cluster that lost its quorum answers no write: 503 within seconds)."""
    why = ready(broker)
    if why is not None:
        return why
    survey = collector.cluster_survey()
    return None if survey is None else await survey.answers()


def broker_endpoint(broker: Broker, host: str, port: int) -> OperatorEndpoint:
    """The operator's endpoint for ``broker``, whose ``meter`` it reads (made here when the
    broker has none); not started."""
    prometheus = need_prometheus()
    if broker.meter is None:
        broker.meter = broker_meter()
    registry = prometheus.CollectorRegistry(auto_describe=False)
    collector = BrokerCollector(broker, broker.meter)
    registry.register(collector)
    return OperatorEndpoint(
        host, port, registry, lambda: store_ready(broker, collector),
        ready_metric=f"{PREFIX}_ready", refresh=collector.refresh,
    )  # fmt: skip
