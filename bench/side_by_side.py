"""docs/deploy.md's side-by-side rows: a SEND through ``Mq9Client`` on each kind of broker.

For each broker: 100-byte SENDs to one mailbox, 1,000 one after another (p50 and p99), then 8
in flight on one connection for ``--seconds`` (SENDs a second). The bundled broker is started
here on each store (``--data`` on SQLite with its own nats-server; ``--store jetstream`` on 3
nats-servers clustered with JetStream on loopback, R3); any other broker (RobustMQ) is named by
``--url`` and measured as it runs.

    python -m bench.side_by_side --runs 2
    python -m bench.side_by_side --url nats://127.0.0.1:24222 --runs 2   # a running RobustMQ
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator

from langchain_mq9 import Mq9Client

PAYLOAD = "x" * 100
ONE_AT_A_TIME = 1_000
IN_FLIGHT = 8


async def measure(url: str, seconds: float) -> tuple[float, float, float]:
    """(p50 s, p99 s, SENDs a second) on the broker at ``url``."""
    address = f"bench.side.{uuid.uuid4().hex[:8]}"
    async with Mq9Client(url, request_timeout=30) as client:
        await client.mailbox_create(name=address)
        for _ in range(50):  # warm-up
            await client.send(address, PAYLOAD)
        times = []
        for _ in range(ONE_AT_A_TIME):
            started = time.perf_counter()
            await client.send(address, PAYLOAD)
            times.append(time.perf_counter() - started)
        times.sort()
        sent = 0
        until = time.perf_counter() + seconds

        async def sender() -> None:
            nonlocal sent
            while time.perf_counter() < until:
                await client.send(address, PAYLOAD)
                sent += 1

        began = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(IN_FLIGHT)))
        rate = sent / (time.perf_counter() - began)
    return statistics.median(times), times[int(len(times) * 0.99)], rate


@contextlib.contextmanager
def bundled(store: str) -> Iterator[str]:
    """A bundled broker on ``store`` ("sqlite" or "jetstream"); yields the URL to use."""
    from testbed.devbroker import DevBroker, wait_serving
    from testbed.jetstream import JetStreamCluster

    with tempfile.TemporaryDirectory(prefix="mq9-side-") as data:
        if store == "sqlite":
            broker = DevBroker("--data", data, "--port", "0")
            try:
                assert broker.url is not None
                yield broker.url
            finally:
                broker.stop()
            return
        with JetStreamCluster(3) as cluster:
            urls = ",".join(cluster.urls)
            broker = DevBroker("--nats", urls, "--store", "jetstream", wait=False)
            try:
                wait_serving(broker)
                yield cluster.urls[0]
            finally:
                broker.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.side_by_side", description=__doc__)
    parser.add_argument("--url", help="a running broker to measure instead of the bundled ones")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    targets = [("given", args.url)] if args.url else [("sqlite", None), ("jetstream", None)]
    for name, url in targets:
        for run in range(1, args.runs + 1):
            if url is not None:
                p50, p99, rate = asyncio.run(measure(url, args.seconds))
            else:
                with bundled(name) as served:
                    p50, p99, rate = asyncio.run(measure(served, args.seconds))
            print(
                f"{name} run {run}: p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms, "
                f"{rate:,.0f} SENDs a second with {IN_FLIGHT} in flight",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
