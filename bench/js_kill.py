"""Brokers on the cluster store serving at once, one SIGKILLed: what the
SENDs sent after the kill wait, against the p99 of the SENDs before it.

Three JetStream nats-servers on loopback, one R3 layout, two broker processes
(``bench.js_broker``) in one queue group. Each round: a SEND is started every ``--every``
milliseconds, each on its own (not waiting for the one before: a client's flow),
``--before`` of them; then one broker is SIGKILLed while they go on, and
``--after`` more are sent. Each SEND's wait is timed from the moment it was sent (a SEND
unanswered in ``--timeout`` seconds counts as that long, and is counted). The figures: the
p99 before, the slowest SEND sent after the kill (target: under 1 s), the unanswered.
The killed broker is started again for the next round; no takeover exists to wait for.
At the end every answered SEND is looked for in the mailbox.

    python -m bench.js_kill --rounds 5 --out /tmp/js_kill.json
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench.js_cluster import JetStreamCluster
from bench.js_store import STARTED, BrokerProcess, open_layout, run_and_print
from langchain_mq9 import Mq9Client


class DevBroker:
    """``mq9-dev-broker --store jetstream`` as a process (``--dev-broker``): the broker a
    deployment runs (its embedding model loaded, unless ``--no-search``), where
    ``bench.js_broker`` is the engine alone."""

    def __init__(self, urls: list[str], stream: str, *extra: str) -> None:
        command = [sys.executable, "-m", "mq9_broker", "--nats", ",".join(urls)]
        command += ["--store", "jetstream", "--stream", stream, *extra]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        STARTED.append(self.process)
        assert self.process.stdout is not None
        while True:
            line = self.process.stdout.readline()
            if "ready on" in line:
                break
            if not line and self.process.poll() is not None:
                raise RuntimeError("the broker exited before serving")
        # (its output read on, so that it never blocks on a full pipe)
        threading.Thread(target=self.process.stdout.read, daemon=True).start()

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_broker(args: argparse.Namespace) -> Any:
    if args.dev_broker:
        return DevBroker(args.urls, args.stream, *(["--no-search"] if args.no_search else []))
    return BrokerProcess(args.urls, args.stream, 3)


Timed = tuple[float, float, int | None]  # when sent (perf_counter), waited, msg_id (None: none)


async def timed(client: Mq9Client, text: str, timeout: float) -> Timed:
    """When the SEND of ``text`` was sent, how long it waited for its answer, its msg_id."""
    started = time.perf_counter()
    try:
        msg_id = await asyncio.wait_for(client.send("kill.lane", text), timeout)
    except Exception:  # unanswered (or refused): counted as the whole wait
        return started, timeout, None
    return started, time.perf_counter() - started, msg_id


async def paced(
    client: Mq9Client, prefix: str, count: int, every: float, timeout: float, victim: Any = None
) -> tuple[list[asyncio.Task[Timed]], float | None]:
    """``count`` SENDs started ``every`` seconds apart, each on its own task; and when
    ``victim`` (a process) was first seen gone (looked at before each SEND)."""
    tasks, gone = [], None
    for i in range(count):
        if gone is None and victim is not None and victim.poll() is not None:
            gone = time.perf_counter()
        tasks.append(asyncio.ensure_future(timed(client, f"{prefix}-{i}", timeout)))
        await asyncio.sleep(every)
    return tasks, gone


async def one_round(
    client: Mq9Client, brokers: list[Any], number: int, args: argparse.Namespace
) -> tuple[dict[str, Any], list[int]]:
    every, timeout = args.every / 1000, args.timeout
    before, _ = await paced(client, f"b{number}", args.before, every, timeout)
    victim = brokers[number % 2].process
    killed = time.perf_counter()
    victim.send_signal(signal.SIGKILL)  # (the SENDs go on meanwhile)
    after, gone = await paced(client, f"a{number}", args.after, every, timeout, victim)
    victim.wait(30)
    gone = gone if gone is not None else time.perf_counter()
    sent_before = await asyncio.gather(*before)
    sent_after = await asyncio.gather(*after)
    # a SEND NATS may still have handed the dying broker (sent before the kernel closed its
    # socket) is its own request; those sent once it was gone must be answered by the other
    dead = [(sent, wait, msg_id) for sent, wait, msg_id in sent_after if sent >= gone]
    ids = [msg_id for _, _, msg_id in [*sent_before, *sent_after] if msg_id is not None]
    brokers[number % 2] = start_broker(args)
    slowest = max(dead, key=lambda one: one[1]) if dead else (gone, 0.0, None)
    return {
        "p99_before_ms": statistics.quantiles([w for _, w, _ in sent_before], n=100)[98] * 1000,
        "gone_after_kill_ms": (gone - killed) * 1000,
        "max_after_gone_ms": slowest[1] * 1000,
        "slowest_sent_after_kill_ms": (slowest[0] - killed) * 1000,
        "unanswered_after_gone": sum(msg_id is None for _, _, msg_id in dead),
        "unanswered_while_dying": sum(
            msg_id is None for sent, _, msg_id in sent_after if sent < gone
        ),
    }, ids


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"args": vars(args), "load_before": os.getloadavg(), "rounds": []}
    with JetStreamCluster(3) as cluster:
        args.urls, args.stream = cluster.urls, f"K{uuid.uuid4().hex[:8]}"
        setup = await open_layout(args.urls, args.stream)
        brokers = [start_broker(args) for _ in range(2)]
        answered: list[int] = []
        async with Mq9Client(args.urls[0]) as client:
            await client.mailbox_create(name="kill.lane", ttl=0)
            for number in range(args.rounds):
                figures, ids = await one_round(client, brokers, number, args)
                results["rounds"].append(figures)
                print(figures, file=sys.stderr, flush=True)
                answered += ids
            stored = await client.fetch("kill.lane", deliver="earliest", num_msgs=10_000)
        kept = {message.msg_id for message in stored}
        results["sends_answered"] = len(answered)
        results["answered_not_stored"] = sum(msg_id not in kept for msg_id in answered)
        results["slowest_after_gone_ms"] = max(r["max_after_gone_ms"] for r in results["rounds"])
        for broker in brokers:
            broker.stop()
        await setup.close()
    del args.urls
    results["load_after"] = os.getloadavg()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--before", type=int, default=300, help="SENDs before the kill")
    parser.add_argument("--after", type=int, default=100, help="SENDs after the kill")
    parser.add_argument("--every", type=float, default=10.0, help="ms between SENDs")
    parser.add_argument("--timeout", type=float, default=10.0, help="s a SEND waits at most")
    parser.add_argument("--dev-broker", action="store_true", help="mq9-dev-broker processes")
    parser.add_argument("--no-search", action="store_true", help="(--dev-broker) no model")
    parser.add_argument("--out", type=Path)
    return run_and_print(run, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
