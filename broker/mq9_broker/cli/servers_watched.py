"""The nats-servers watched: given their monitoring endpoints (``--nats-monitor``),
a scrape reads each server's ``/healthz`` and ``/jsz`` (``ServersWatched``, kept ``SERVERS_KEPT``
s) and exports whether it answers and is healthy, whether it knows a JetStream meta leader, and
each meta-group peer as the leader sees it (current, offline, seconds since heard, entries
behind). NATS' own exporter (prometheus-nats-exporter) cannot be installed from the Go proxy, and
the broker can reach the servers it uses: docs/broker-watching.md#watching-the-nats-servers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..nats_servers.survey import read_monitor

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
