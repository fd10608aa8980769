"""Target 14a: one dev-broker request against a trivial NATS responder.

The same raw nats-py request (a SEND of 200 bytes, no headers) goes to the canned responder
(``bench.responders``: a fixed answer, no work) and to the dev broker as ``mq9-dev-broker
--data DIR`` builds it (``bench.responders`` kind ``dev``: SQLite store and its request log,
collections frozen, the 0.1 ms switch interval, large answers paced, the bulk connection), both
on one nats-server, switched on in turn, blocks alternating. What the ratio shows is the
broker's own cost per request: the engine and its store, ``serve.py``'s path, the guarded
parser.

Each run starts its own nats-server and responders, and the target is the median of the runs'
ratios (``RUNS``): the ratio moves with the processes' draw more than with anything measured
(one nats-server and pair of responders gave 1.14-1.17x over five runs, another started a minute
later 1.22-1.25x; the code was the same), so one draw says little.

``ablations`` (``python -m bench.request_path``) adds the dev broker with one part taken away
at a time (in memory instead of SQLite; nats-py's delivery instead of the read loop's), to say
what each costs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

import nats

from mq9_wire import protocol as p

from .config import Config
from .infra import Network, Responder
from .measure import Stats, fmt_seconds, interleave_async_blocks
from .responders import PAYLOAD_SIZE
from .results import Check, Section

ADDRESS = "bench.reqpath"
SEND = p.MSG_SEND + ADDRESS
BODY = b"x" * PAYLOAD_SIZE
TIMEOUT = 5.0
LIMIT = 1.2
RUNS = 3  # each on a nats-server and responders of its own
# Variant -> (responder, its "on" options)
VARIANTS: dict[str, tuple[str, dict[str, object]]] = {
    "canned": ("canned", {}),
    "dev broker": ("dev", {}),
}
ABLATIONS: dict[str, tuple[str, dict[str, object]]] = {
    "dev, in memory": ("dev", {"store": "memory"}),
    "dev, nats-py's delivery (a task, a flusher)": ("dev", {"inline": False}),
    "dev, in memory, nats-py's delivery": ("dev", {"store": "memory", "inline": False}),
}


async def _measure(
    net: Network,
    dev: Responder,
    variants: dict[str, tuple[str, dict[str, object]]],
    rounds: int,
    block: int,
) -> dict[str, Stats]:
    responders = {**net.responders, "dev": dev}
    nc = await nats.connect(net.url, name="bench-reqpath")
    serving: list[tuple[str, dict[str, object]] | None] = [None]

    async def serve(kind: str, options: dict[str, object]) -> None:
        if serving[0] == (kind, options):
            return
        for name, responder in responders.items():
            if name != kind:
                await responder.command(nc, "off")
        await responders[kind].command(nc, "on", **options)
        serving[0] = (kind, options)
        if kind != "canned":  # each store makes the mailbox once (an existing one: an error)
            await nc.request(p.MAILBOX_CREATE, p.encode({"name": ADDRESS}), timeout=TIMEOUT)

    def runner(kind: str, options: dict[str, object]) -> Callable[[int], Awaitable[list[float]]]:
        async def run(n: int) -> list[float]:
            await serve(kind, options)
            request, clock, out = nc.request, time.perf_counter, []
            for _ in range(n):
                started = clock()
                reply = await request(SEND, BODY, timeout=TIMEOUT)
                out.append(clock() - started)
            if b'"error":""' not in reply.data:
                raise RuntimeError(f"{kind} {options}: {reply.data[:200]!r}")
            return out

        return run

    try:
        return await interleave_async_blocks(
            {name: runner(*variant) for name, variant in variants.items()},
            rounds=rounds,
            block=block,
            warmup=50,
        )
    finally:
        for responder in responders.values():
            await responder.command(nc, "off")
        await nc.close()


def measure(net: Network, rounds: int, block: int, *, ablations: bool = False) -> dict[str, Stats]:
    dev = Responder(net.url, "dev").wait_ready()
    try:
        variants = {**VARIANTS, **(ABLATIONS if ablations else {})}
        return asyncio.run(_measure(net, dev, variants, rounds, block))
    finally:
        dev.stop()


def measure_runs(
    runs: int, rounds: int, block: int, *, ablations: bool = False
) -> list[dict[str, Stats]]:
    """``runs`` measurements, each on a fresh nats-server with fresh responders."""
    results = []
    for _ in range(runs):
        with Network() as net:
            results.append(measure(net, rounds, block, ablations=ablations))
    return results


def ratios(results: dict[str, Stats]) -> dict[str, float]:
    baseline = results["canned"].median
    return {name: stats.median / baseline for name, stats in results.items()}


def check(runs: list[dict[str, Stats]]) -> Check:
    """The median run by its ratio (its medians are the row's figures)."""
    middle = sorted(runs, key=lambda results: ratios(results)["dev broker"])[len(runs) // 2]
    shown = ", ".join(f"{ratios(results)['dev broker']:.2f}" for results in runs)
    return Check(
        key="14a",
        title="one dev-broker request (SQLite store, raw SEND of 200 bytes) vs a trivial "
        f"responder on the same nats-server; median of {len(runs)} runs, each on a fresh "
        f"nats-server ({shown}×)",
        ours_label="mq9-dev-broker --data",
        ours=fmt_seconds(middle["dev broker"].median),
        baseline_label="canned responder",
        baseline=fmt_seconds(middle["canned"].median),
        ratio=ratios(middle)["dev broker"],
        op="<=",
        limit=LIMIT,
    )


def figures(results: dict[str, Stats], run: str = "") -> list[tuple[str, str]]:
    baseline = results["canned"].median
    return [
        (
            f"request path{run}: {name}",
            f"median {fmt_seconds(s.median)} ({s.median / baseline:.2f}x canned), "
            f"p90 {fmt_seconds(s.quantile(0.9))}, n={s.n}",
        )
        for name, s in results.items()
    ]


def run(cfg: Config, section: Section) -> None:
    rounds, block = cfg.client_rounds
    runs = measure_runs(1 if cfg.quick else RUNS, rounds, block)
    section.checks.append(check(runs))
    for number, results in enumerate(runs, 1):
        section.figures.extend(figures(results, f", run {number}"))


def main() -> None:
    parser = argparse.ArgumentParser(description="the dev broker's request path, ablations")
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--block", type=int, default=100)
    parser.add_argument("--no-ablations", action="store_true")
    args = parser.parse_args()
    collected: dict[str, list[float]] = {}
    for run_number in range(args.runs):
        (results,) = measure_runs(1, args.rounds, args.block, ablations=not args.no_ablations)
        print(f"run {run_number + 1}:")
        for name, line in figures(results):
            print(f"  {name}: {line}")
        for name, value in ratios(results).items():
            collected.setdefault(name, []).append(value)
    print("medians of the runs' ratios to canned:")
    for name, values in collected.items():
        shown = ", ".join(f"{v:.2f}" for v in values)
        print(f"  {name}: {statistics.median(values):.2f}x ({shown})")


if __name__ == "__main__":
    main()
