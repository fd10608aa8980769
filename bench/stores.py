"""Target 14: the dev broker's request path and its stores.

14a: one dev-broker request (SQLite store) against a trivial responder (``request_path``).

14b: SEND latency under load on the JetStream store (``--store jetstream``: the cluster store,
``Engine`` over a stream and buckets), replicated 3 times on a 3-node
JetStream cluster on loopback, against the SQLite store, both on this machine. The load:
``SENDERS`` raw nats-py SENDs of 200 bytes in flight at all times (each sender sends its next
as soon as its last is answered) on one connection to the cluster's first server, which
both dev brokers serve on (each the ``dev`` kind of ``bench.responders``, in its own process:
SQLite in a directory of its own, JetStream on a layout of its own); rounds alternate between
them. p50 and p99 of each SEND's time, and SENDs a second, are reported. The target is the
median of ``RUNS`` runs, each on a cluster and a dev broker of its own: which server leads the
stream and where each process runs moved the ratio by 0.3 between runs of the same code.

The growth figures: the engine in this process (``BrokerEngine.handle``, no network to the
client) on the SQLite store, filled to each size by SENDs made ``FILL_AT_ONCE`` at a time, then
``GROWTH_SENDS`` SENDs one after another (p50), and a restart: the time a new engine takes to
read the store back. (The cluster store reads nothing back at a start: its start time and
memory with 1,000,000 messages stored are ``bench.js_memory``'s, its rates ``bench.js_store``'s.)
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import nats

from mq9_broker import BrokerEngine
from mq9_broker.storage import SqliteStorage, Storage
from mq9_wire import protocol as p

from . import request_path
from .config import Config
from .infra import Responder
from .measure import Stats, fmt_seconds
from .responders import PAYLOAD_SIZE
from .results import Check, Section

TITLE = "The dev broker's request path and its stores (target 14)"
ADDRESS = "bench.stores"
BODY = b"x" * PAYLOAD_SIZE
TIMEOUT = 30.0
SENDERS = 8
FILL_AT_ONCE = 100
GROWTH_SENDS = 200
P50_LIMIT = 2.0
RUNS = 3  # the load, each run on a cluster of its own: one draw says little (as 14a)


def _cluster():  # 3 JetStream servers clustered on loopback (testbed/, as the tests' own)
    from testbed.jetstream import JetStreamCluster

    return JetStreamCluster(3)


async def _under_load(
    url: str, dev: Responder, servers: list[str], rounds: int, block: int
) -> dict[str, tuple[Stats, list[float]]]:
    """Per store: every SEND's time, and each round's SENDs a second."""
    nc = await nats.connect(url, name="bench-stores")
    stores = {"jetstream": {"store": "jetstream", "servers": servers}, "sqlite": {}}
    times: dict[str, list[float]] = {name: [] for name in stores}
    rates: dict[str, list[float]] = {name: [] for name in stores}
    created: set[str] = set()

    async def sender(out: list[float], n: int) -> None:
        clock = time.perf_counter
        for _ in range(n):
            started = clock()
            reply = await nc.request(p.MSG_SEND + ADDRESS, BODY, timeout=TIMEOUT)
            out.append(clock() - started)
            if b'"error":""' not in reply.data:
                raise RuntimeError(f"SEND failed: {reply.data[:200]!r}")

    async def round_of(name: str, n: int, keep: bool) -> None:
        await dev.command(nc, "on", **stores[name])
        if name not in created:
            await nc.request(p.MAILBOX_CREATE, p.encode({"name": ADDRESS}), timeout=TIMEOUT)
            created.add(name)
        out: list[float] = []
        started = time.perf_counter()
        await asyncio.gather(*(sender(out, n) for _ in range(SENDERS)))
        if keep:
            rates[name].append(len(out) / (time.perf_counter() - started))
            times[name].extend(out)

    try:
        for name in stores:  # warm-up, not kept
            await round_of(name, 10, keep=False)
        for i in range(rounds):
            for name in list(stores) if i % 2 == 0 else list(stores)[::-1]:
                await round_of(name, block, keep=True)
    finally:
        await dev.command(nc, "off")
        await nc.close()
    return {name: (Stats(tuple(times[name])), rates[name]) for name in stores}


async def _growth(
    make: Callable[[], Storage], sizes: tuple[int, ...]
) -> list[tuple[int, float, float]]:
    """(size, SEND p50, restart seconds) at each size of one store."""
    engine = BrokerEngine(storage=make())
    await engine.handle(p.MAILBOX_CREATE, None, p.encode({"name": ADDRESS}))
    subject, held, found = p.MSG_SEND + ADDRESS, 0, []
    try:
        for size in sizes:
            while held < size - GROWTH_SENDS:
                at_once = min(FILL_AT_ONCE, size - GROWTH_SENDS - held)
                await asyncio.gather(*(engine.handle(subject, None, BODY) for _ in range(at_once)))
                held += at_once
            clock, out = time.perf_counter, []
            for _ in range(GROWTH_SENDS):
                started = clock()
                await engine.handle(subject, None, BODY)
                out.append(clock() - started)
            held += GROWTH_SENDS
            engine.storage.close()
            started = clock()
            engine = await asyncio.to_thread(BrokerEngine, storage=make())
            restart = clock() - started
            assert len(engine.topics[ADDRESS].messages) == held
            found.append((size, statistics.median(out), restart))
    finally:
        engine.storage.close()
    return found


def _loaded(rounds: int, block: int) -> dict[str, tuple[Stats, list[float]]]:
    """One run of the load, on a JetStream cluster and a dev broker of its own."""
    with _cluster() as cluster:
        dev = Responder(cluster.urls[0], "dev").wait_ready()
        try:
            return asyncio.run(_under_load(cluster.urls[0], dev, cluster.urls, rounds, block))
        finally:
            dev.stop()


def run(cfg: Config) -> Section:
    section = Section("stores", TITLE)
    request_path.run(cfg, section)  # on nats-servers of its own, one a run
    rounds, block = cfg.store_rounds
    runs = [_loaded(rounds, block) for _ in range(1 if cfg.quick else RUNS)]
    with tempfile.TemporaryDirectory(prefix="mq9-bench-") as where:
        growth = {
            "sqlite": asyncio.run(_growth(lambda: SqliteStorage(Path(where)), cfg.store_sizes))
        }
    ratios = [loaded["jetstream"][0].median / loaded["sqlite"][0].median for loaded in runs]
    middle = sorted(range(len(runs)), key=lambda i: ratios[i])[len(runs) // 2]
    (js, _), (lite, _) = runs[middle]["jetstream"], runs[middle]["sqlite"]
    each = ", ".join(f"{ratio:.2f}" for ratio in ratios)
    section.checks.append(
        Check(
            key="14b",
            title=f"SEND p50 under load ({SENDERS} SENDs in flight), dev broker: JetStream "
            "store (the cluster store, 3 replicas, 3-node cluster on loopback) vs SQLite "
            "store, same machine; "
            f"median of {len(runs)} runs, each on a cluster of its own ({each}×)",
            ours_label="JetStream R3",
            ours=fmt_seconds(js.median),
            baseline_label="SQLite",
            baseline=fmt_seconds(lite.median),
            ratio=ratios[middle],
            op="<=",
            limit=P50_LIMIT,
        )
    )
    for number, loaded in enumerate(runs, 1):
        for name, (stats, rates) in loaded.items():
            section.figures.append(
                (
                    f"{name} under load, run {number}: SEND p50 / p99, SENDs a second "
                    "(median of rounds)",
                    f"{fmt_seconds(stats.median)} / {fmt_seconds(stats.quantile(0.99))}, "
                    f"{statistics.median(rates):,.0f}/s (rounds: "
                    + ", ".join(f"{r:,.0f}" for r in rates)
                    + ")",
                )
            )
        share = statistics.median(loaded["jetstream"][1]) / statistics.median(loaded["sqlite"][1])
        section.figures.append(
            (f"throughput under load, JetStream R3 / SQLite, run {number}", f"{share:.2f}")
        )
    for name, rows in growth.items():
        section.figures.append(
            (
                f"{name}, engine in process: SEND p50 and restart at each size",
                "; ".join(
                    f"{size:,}: {fmt_seconds(p50)}, restart {fmt_seconds(restart)}"
                    for size, p50, restart in rows
                ),
            )
        )
    section.notes.append(
        f"14b: {SENDERS} raw SENDs of {PAYLOAD_SIZE} bytes in flight at all times on one "
        "connection to the cluster's first server, which both dev brokers serve on; "
        f"{rounds} rounds of {SENDERS} x {block} SENDs per store, alternating, in each of "
        f"{len(runs)} runs (a cluster, a dev broker and a client of their own; the ratio is "
        "the median run's). Growth: the "
        f"engine in process on SQLite, filled {FILL_AT_ONCE} SENDs at a time, {GROWTH_SENDS} "
        "SENDs one after another timed at each size; restart = building a new engine on the "
        "store."
    )
    return section
