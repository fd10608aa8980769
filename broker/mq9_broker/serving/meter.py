"""Requests counted on a server's hot path: by command and outcome, refusals by reason, and
their latency, as plain integers a scrape reads.

A SEND on the bundled broker costs tens of microseconds; prometheus-client's own ``Histogram``
takes a lock and walks its buckets in Python on every observation, and a labelled child is
looked up by its labels' values. Here each command has a slot made once; an answer costs a
clock read, one ``bisect`` (C) and three integer increments, and nothing is built per request.
The families are made only when scraped (``families``). The server calls ``answered`` from its
event loop alone, so the integers need no lock.

A readiness probe is not traffic: a QUERY of the probe's mailbox
(``mq9_wire.metrics.probe``, the servers' ``/readyz``), answered "no such mailbox", is counted
in ``probes_total`` alone, neither a request nor a refusal (only a refusal's answer is looked
at, for the mailbox's name).
"""

from __future__ import annotations

import json
import re
from bisect import bisect_left
from collections.abc import Iterator, Mapping
from time import perf_counter
from typing import Any

from mq9_wire.metrics.probe import PROBE_MAILBOX
from mq9_wire.protocol.errors import Mq9Error, from_reply

# Seconds: a SEND in memory answers under the first, a FETCH that parks waits up to its
# max_wait_ms (seconds), a costly DISCOVER may take a few
LATENCY_BOUNDS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
_OK = b'{"error":""'  # every answer that is not an error starts so (protocol: "error" first)
OTHER = "other"  # a refusal whose text no class reads
_PROBE = f"'{PROBE_MAILBOX}'".encode()  # as a refusal names the mailbox it did not find


class _Slot:
    __slots__ = ("buckets", "label", "ok", "probes", "refused", "total")

    def __init__(self, label: str) -> None:
        self.label = label
        self.ok = 0
        self.probes = 0
        self.refused: dict[str, int] = {}
        self.buckets = [0] * (len(LATENCY_BOUNDS) + 1)  # the last: above every bound
        self.total = 0.0


def reason_of(reply: bytes) -> str:
    """The reason an error answer gives, as a bounded label: its class in the protocol
    (``MailboxNotFound`` -> ``mailbox_not_found``), or ``other``."""
    try:
        text = json.loads(reply).get("error")
    except (ValueError, AttributeError):
        return OTHER
    if not isinstance(text, str) or not text:
        return OTHER
    found: Mq9Error = from_reply(text)
    if type(found) is Mq9Error:
        return OTHER
    return _snake(type(found).__name__)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class RequestMeter:
    """Requests answered, by command. ``commands``: each command's key (what the server
    looks it up by, e.g. its subject) and its label (``SEND``); a key not among them counts
    as ``unknown``. ``started()`` when a request comes, ``answered(key, reply, started)``
    once its answer is written; ``refused(key, reason)`` for one answered without the
    command running (too many waiting)."""

    def __init__(self, commands: Mapping[str, str]) -> None:
        self._slots = {key: _Slot(label) for key, label in commands.items()}
        self._unknown = _Slot("unknown")

    started = staticmethod(perf_counter)

    def answered(self, key: str, reply: bytes, started: float) -> None:
        took = perf_counter() - started
        slot = self._slots.get(key) or self._unknown
        if not reply.startswith(_OK) and _PROBE in reply:
            slot.probes += 1  # a server's /readyz, answered: not traffic
            return
        slot.buckets[bisect_left(LATENCY_BOUNDS, took)] += 1
        slot.total += took
        if reply.startswith(_OK):
            slot.ok += 1
        else:
            reason = reason_of(reply)
            slot.refused[reason] = slot.refused.get(reason, 0) + 1

    def refused(self, key: str, reason: str) -> None:
        slot = self._slots.get(key) or self._unknown
        slot.refused[reason] = slot.refused.get(reason, 0) + 1

    def counts(self) -> dict[tuple[str, str], int]:
        """Requests by (command label, outcome): ``ok`` or ``refused``."""
        found: dict[tuple[str, str], int] = {}
        for slot in self._all():
            found[(slot.label, "ok")] = slot.ok
            found[(slot.label, "refused")] = sum(slot.refused.values())
        return found

    def _all(self) -> Iterator[_Slot]:
        yield from self._slots.values()
        yield self._unknown

    def families(self, prefix: str) -> Iterator[Any]:
        """The metric families, made now: ``<prefix>_requests_total{command,outcome}``,
        ``<prefix>_refusals_total{command,reason}`` and
        ``<prefix>_request_duration_seconds{command}``."""
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        requests = CounterMetricFamily(
            f"{prefix}_requests", "mq9 requests answered, by command and outcome",
            labels=["command", "outcome"],
        )  # fmt: skip
        refusals = CounterMetricFamily(
            f"{prefix}_refusals", "mq9 requests refused, by command and the refusal's class",
            labels=["command", "reason"],
        )  # fmt: skip
        probes = CounterMetricFamily(
            f"{prefix}_probes", "readiness probes answered (the servers' /readyz), by "
            "command: neither requests nor refusals", labels=["command"],
        )  # fmt: skip
        latency = HistogramMetricFamily(
            f"{prefix}_request_duration_seconds",
            "from a request read to its answer written, by command",
            labels=["command"],
        )
        for slot in self._all():
            requests.add_metric([slot.label, "ok"], slot.ok)
            requests.add_metric([slot.label, "refused"], sum(slot.refused.values()))
            if slot.probes:
                probes.add_metric([slot.label], slot.probes)
            for reason, count in sorted(slot.refused.items()):
                refusals.add_metric([slot.label, reason], count)
            running, buckets = 0, []
            for bound, count in zip((*LATENCY_BOUNDS, float("inf")), slot.buckets, strict=True):
                running += count
                buckets.append((_le(bound), running))
            latency.add_metric([slot.label], buckets, slot.total)
        yield from (requests, refusals, probes, latency)


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)
