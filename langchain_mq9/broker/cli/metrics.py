"""``mq9-dev-broker --metrics HOST:PORT`` (#73): what the broker answers and holds, in
Prometheus' text format, with ``/healthz`` and ``/readyz``, on the operator's address.

Requests are counted as they are answered (``RequestMeter``, in serving/serve.py); what the
broker holds is read from its engine when scraped, on the broker's loop: mailboxes, stored
messages and their bytes, dead letters, agents, and the consumer groups' pending messages as
their committed offsets tell them. No label names a mailbox, an agent or a group.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from ... import protocol as p
from ...metrics import OperatorEndpoint, RequestMeter, need_prometheus
from ..broker import Broker
from ..engine.engine import COMMANDS, BrokerEngine

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


class BrokerCollector:
    """The families a scrape of ``broker`` reads (prometheus-client's collector protocol)."""

    def __init__(self, broker: Broker, meter: RequestMeter) -> None:
        self.broker = broker
        self.meter = meter

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        yield from self.meter.families(PREFIX)
        broker = self.broker
        up, opened = broker.connections
        yield GaugeMetricFamily(
            f"{PREFIX}_serving", "1 while this broker answers requests (a standby: 0)",
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
        if engine is not None:
            yield from _held(engine)


def _held(engine: BrokerEngine) -> Iterator[Any]:
    from prometheus_client.core import GaugeMetricFamily

    messages = stored = dead = 0
    for mailbox in engine.mailboxes.values():
        count = len(mailbox.messages)
        messages += count
        stored += sum(len(m.payload) for m in mailbox.messages.values())
        if is_dead_letters(mailbox.address):
            dead += count
    groups, pending, largest = _groups(engine)
    for name, text, value in (
        ("mailboxes", "live mailboxes", len(engine.mailboxes)),
        ("messages", "messages stored in live mailboxes", messages),
        ("message_bytes", "payload bytes of the messages stored", stored),
        ("dead_letters", "messages in dead-letter mailboxes (<mailbox>.dlq)", dead),
        ("agents", "agents registered", len(engine.registry)),
        ("groups", "consumer groups with a committed offset", groups),
        ("group_pending_messages", "messages past the groups' committed offsets, all groups",
         pending),
        ("group_pending_max", "the most messages past one group's committed offsets", largest),
    ):  # fmt: skip
        yield GaugeMetricFamily(f"{PREFIX}_{name}", text, value=value)


def _groups(engine: BrokerEngine) -> tuple[int, int, int]:
    """How many groups, the messages past their committed offsets in all, and the most of
    one group. A lane group is ``<group>-<priority>``: its shard's messages of that priority
    from the offset on."""
    by_shard = {m.shard: m for m in engine.topics.values()}
    per_group: dict[str, int] = {}
    for lane_group, shards in engine.offsets.items():
        group, _, priority = lane_group.rpartition("-")
        count = per_group.setdefault(group, 0)
        for shard, offset in shards.items():
            mailbox = by_shard.get(shard)
            if mailbox is None or priority not in _PRIORITIES:
                continue
            lane, live = mailbox.lanes[_PRIORITIES[priority]], mailbox.messages
            count += sum(1 for i in lane[bisect_left(lane, offset) :] if i in live)
        per_group[group] = count
    return len(per_group), sum(per_group.values()), max(per_group.values(), default=0)


_PRIORITIES = {priority.value: priority for priority in p.Priority}


def ready(broker: Broker) -> str | None:
    """None when the broker serves, connected, its store holding what it was told; else why
    not, in one line."""
    engine = broker.engine
    if engine is None or not broker.serving:
        return "not serving (starting, stopped, or standing by for the JetStream lease)"
    up, opened = broker.connections
    if up < opened:
        return f"{opened - up} of its {opened} NATS connections are down (reconnecting)"
    lost = engine.storage.lost()
    if lost is not None:
        return f"its store lost changes: {lost}"
    return None


def broker_endpoint(broker: Broker, host: str, port: int) -> OperatorEndpoint:
    """The operator's endpoint for ``broker``, whose ``meter`` it reads (made here when the
    broker has none); not started."""
    prometheus = need_prometheus()
    if broker.meter is None:
        broker.meter = broker_meter()
    registry = prometheus.CollectorRegistry(auto_describe=False)
    registry.register(BrokerCollector(broker, broker.meter))
    return OperatorEndpoint(host, port, registry, lambda: ready(broker))
