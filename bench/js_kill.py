"""Brokers on the cluster store serving at once, one SIGKILLed (issue #72): what the first
request sent after the kill waits, against the p99 of the requests before it.

Three JetStream nats-servers on loopback, one R3 layout, two broker processes
(``bench.js_broker``) in one queue group. Each round: ``--before`` SENDs one after another
give the p99 (every request answered); then one broker is SIGKILLed and, once it is gone,
``--after`` SENDs are timed, the first of them the one the issue names; the killed broker is
started again for the next round. No takeover exists to wait for: NATS hands each request to
a broker still subscribed. At the end every answered SEND is counted in the mailbox.

    python -m bench.js_kill --rounds 5 --out /tmp/js_kill.json
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bench.js_cluster import JetStreamCluster
from bench.js_store import BrokerProcess, open_layout, run_and_print
from langchain_mq9 import Mq9Client


async def timed(client: Mq9Client, text: str) -> float:
    started = time.perf_counter()
    await client.send("kill.lane", text)
    return time.perf_counter() - started


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"args": vars(args), "load_before": os.getloadavg(), "rounds": []}
    with JetStreamCluster(3) as cluster:
        urls = cluster.urls
        stream = f"K{uuid.uuid4().hex[:8]}"
        setup = await open_layout(urls, stream)
        brokers = [BrokerProcess(urls, stream, 3), BrokerProcess(urls, stream, 3)]
        async with Mq9Client(urls[0]) as client:
            await client.mailbox_create(name="kill.lane", ttl=0)
            for round_number in range(args.rounds):
                before = [await timed(client, f"b{round_number}-{i}") for i in range(args.before)]
                victim = brokers[round_number % 2]
                victim.process.send_signal(signal.SIGKILL)
                victim.process.wait(30)
                after = [await timed(client, f"a{round_number}-{i}") for i in range(args.after)]
                p99 = statistics.quantiles(before, n=100)[98]
                results["rounds"].append(
                    {
                        "p99_before_ms": p99 * 1000,
                        "first_after_ms": after[0] * 1000,
                        "first_over_p99": after[0] / p99,
                        "max_after_ms": max(after) * 1000,
                    }
                )
                brokers[round_number % 2] = BrokerProcess(urls, stream, 3)
            stored = await client.fetch("kill.lane", deliver="earliest", num_msgs=10_000)
            results["sends_answered"] = args.rounds * (args.before + args.after)
            results["messages_stored"] = len(stored)
        for broker in brokers:
            broker.stop()
        await setup.close()
    results["load_after"] = os.getloadavg()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--before", type=int, default=300)
    parser.add_argument("--after", type=int, default=20)
    parser.add_argument("--out", type=Path)
    return run_and_print(run, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
