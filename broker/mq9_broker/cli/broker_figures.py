"""What a scrape of the broker reads (prometheus-client's collector protocol, ``BrokerCollector``):
its requests (``RequestMeter``, counted as they are answered, in serving/serve.py), whether it
serves and its NATS connections, the keys and registrations refused, and what it holds.

What the broker holds is read from its engine when scraped, on the broker's loop: mailboxes,
stored messages and their bytes, dead letters, agents, and the consumer groups' pending messages
as their committed offsets tell them (``HeldFigures``: counts are lengths; bytes and pending are
read again only where something changed, within a bound). On ``--store jetstream`` the same
figures are the cluster's, read from JetStream (``StoreSurvey``: kept 15 s, asked for before a
scrape, ``held_age_seconds`` saying how old they are). No label names a mailbox, an agent or a
group. The endpoint that serves them, and ``/readyz``: ``metrics.py``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from mq9_wire import protocol as p

from ..broker import Broker
from ..engine.process import BrokerEngine
from ..serving.meter import RequestMeter
from ..storage.jetstream.survey_state import StoreSurvey, SurveyFigures

PREFIX = "mq9_broker"
# groups/dead_letters.py names a mailbox's dead letters <mailbox>.dlq (or .dlq.<digest> for a
# name near the length limit); the broker may not import groups (docs/architecture.md)
DEAD_LETTER_SEGMENT = "dlq"


def is_dead_letters(address: str) -> bool:
    parts = address.split(".")
    return len(parts) > 1 and DEAD_LETTER_SEGMENT in parts[1:]


# Messages one scrape reads, at most, for the payload bytes and the groups' pending counts (on
# the broker's loop, where requests wait meanwhile): the bound keeps that wait short however
# much the mailboxes hold. A mailbox unchanged since it was last read is not read again, so a
# scrape of a quiet broker reads next to nothing; beyond the bound, figures stay as last read
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
        if engine is not None:  # the keys refused past --max-keys(-per-sender)
            from prometheus_client.core import CounterMetricFamily

            yield CounterMetricFamily(
                f"{PREFIX}_idempotency_keys_refused", "keyed SENDs refused because the keys "
                "held reached --max-keys, --max-keys-per-sender or --max-keys-per-address",
                value=engine.keys_refused,
            )  # fmt: skip
            yield CounterMetricFamily(
                f"{PREFIX}_idempotency_keys_refused_per_address", "of those, the keyed SENDs "
                "of an open broker's client refused at its own --max-keys-per-address",
                value=engine.keys_refused_per_address,
            )  # fmt: skip
            yield CounterMetricFamily(
                f"{PREFIX}_reports_unkept", "REPORTs answered and not kept: no registration "
                "holds their name (a report is kept while its agent is registered)",
                value=engine.reports_unkept,
            )  # fmt: skip
        identities = broker.identities
        if identities is not None:  # REGISTERs past an agent's own share
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
                "(memory, SQLite; bounded by --max-keys)", value=len(keys),
            )  # fmt: skip
            yield GaugeMetricFamily(
                f"{PREFIX}_idempotency_keys_most_one_holds", "the most idempotency keys one "
                "vouched sender or open broker's client holds (bounded by --max-keys-per-sender, "
                "--max-keys-per-address)", value=keys.most_held(),
            )  # fmt: skip
            reports = list(engine.reports.values())  # (a copy: the loop may add one meanwhile)
            yield GaugeMetricFamily(
                f"{PREFIX}_reports", "agents' latest REPORTs held (one per registered agent "
                "at most)", value=len(reports),
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
        figures = SurveyFigures(
            len(engine.mailboxes), messages, stored, dead, len(engine.registry), groups,
            pending, largest, self.exact, 0.0,
        )  # fmt: skip
        yield from _held_families(figures, "payload bytes of the messages stored (see held_exact)")


def _held_families(held: SurveyFigures, bytes_text: str) -> Iterator[Any]:
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
