"""What ``--metrics`` costs a SEND, target at most 1.05x.

Two ``mq9-dev-broker`` processes, each on a nats-server of its own, the same but for
``--metrics 127.0.0.1:0`` on one; one client sends the same raw nats-py request (a SEND of 200
bytes, no headers) to each, in blocks that alternate (``interleave_async_blocks``), while a
scrape of the metered one every second reads its figures as Prometheus would. The ratio is
the metered broker's median SEND over the other's; each run starts both brokers afresh, and the
figure is the median of the runs' ratios (the ratio moves with the processes' draw, see
request_path.py).

    .venv/bin/python -m bench.metrics_cost --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import urllib.request

import nats

from mq9_wire import protocol as p

from .measure import fmt_seconds, interleave_async_blocks

ADDRESS = "bench.metrics"
PAYLOAD = b"x" * 200
TARGET = 1.05
READY = "mq9 dev broker ready on "


class _Broker:
    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mq9_broker", "--port", "0",
             "--no-search", *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True,
        )  # fmt: skip
        self.url = self.metrics = ""
        assert self.process.stdout is not None
        for line in self.process.stdout:  # (a broker that fails ends the loop: stop)
            if " metrics on " in line:
                self.metrics = line.split(" metrics on ", 1)[1].split()[0]
            if line.startswith(READY):
                self.url = line[len(READY) :].split()[0]
                break
        if not self.url:
            raise SystemExit("the dev broker did not start")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()


async def _scraping(url: str) -> None:
    while True:  # Prometheus' every-second scrape, read as it would
        await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=30).read())
        await asyncio.sleep(1.0)


async def one_run(rounds: int, block: int) -> tuple[float, float]:
    """The two brokers' median SEND (seconds): without metrics, with."""
    plain, metered = _Broker(), _Broker("--metrics", "127.0.0.1:0")
    scraper = None
    try:
        connections = {}
        for name, broker in (("plain", plain), ("metered", metered)):
            nc = await nats.connect(broker.url)
            create = p.encode({"name": ADDRESS, "ttl": 0})
            await nc.request(p.MAILBOX_CREATE, create, timeout=30)
            connections[name] = nc
        scraper = asyncio.ensure_future(_scraping(metered.metrics))

        def runner(nc: nats.NATS) -> object:
            async def sends(count: int) -> list[float]:
                took = []
                for _ in range(count):
                    started = asyncio.get_running_loop().time()
                    await nc.request(p.MSG_SEND + ADDRESS, PAYLOAD, timeout=30)
                    took.append(asyncio.get_running_loop().time() - started)
                return took

            return sends

        stats = await interleave_async_blocks(
            {name: runner(nc) for name, nc in connections.items()},  # type: ignore[misc]
            rounds=rounds, block=block, warmup=200,
        )  # fmt: skip
        for nc in connections.values():
            await nc.close()
        return stats["plain"].median, stats["metered"].median
    finally:
        if scraper is not None:
            scraper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await scraper
        plain.stop()
        metered.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.metrics_cost")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--block", type=int, default=200)
    args = parser.parse_args()
    ratios = []
    for run in range(1, args.runs + 1):
        plain, metered = asyncio.run(one_run(args.rounds, args.block))
        ratios.append(metered / plain)
        load = os.getloadavg()[0]
        print(f"run {run}: SEND p50 {fmt_seconds(plain)} plain, {fmt_seconds(metered)} with "
              f"--metrics: {metered / plain:.3f}x (load {load:.1f})", flush=True)  # fmt: skip
    median = statistics.median(ratios)
    verdict = "met" if median <= TARGET else "missed"
    print(f"median of {len(ratios)} runs: {median:.3f}x (target {TARGET}x: {verdict})")


if __name__ == "__main__":
    main()
