"""A broker's memory and start time against the messages its cluster store holds,
side by side in one run.

Three JetStream nats-servers clustered on loopback (each store in a temporary directory), two
R3 layouts on them: ``F``, filled, and ``E``, left empty. One broker process
(``bench.js_broker``, the ``Engine`` ``--store jetstream`` serves) on ``F`` stores
``--stored`` SENDs of ``--size`` bytes, spread over ``--mailboxes`` mailboxes, with
``--in-flight`` raw nats-py SEND requests in flight: the store's own write path, each
mailbox's SENDs gathered into atomic batches of up to 256 (``numbering.py``). Its resident
memory (VmRSS, from /proc) is read after a warm-up of every command on the empty layout,
after the fill, and after reads across the stored messages (FETCHes from the earliest and
the newest, a group's FETCH and ACK, QUERYs); its high-water mark (VmHWM) says what the fill
itself peaked at.

Start time: launch to serving (the broker's ``ready``, printed once it subscribed), for
brokers started in turn on ``E`` and on ``F`` once ``F`` holds the messages, ``--starts`` of
each, alternated so both see the same machine; each one's resident memory at ``ready`` and
after a FETCH of the earliest 100 messages of a stored mailbox (of ``E``'s own, empty).

    python -m bench.js_memory --stored 1000000 --out /tmp/js_memory.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import nats

from bench.js_cluster import JetStreamCluster
from bench.js_store import BrokerProcess, open_layout, run_and_print
from langchain_mq9 import MailboxExists, Mq9Client
from mq9_wire import protocol as p

SAMPLE_SECONDS = 1.0  # how often the fill reads the broker's memory and progress


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of process ``pid``, in bytes."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name = line.split(":", 1)[0]
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(line.split()[1]) * 1024
    return found


def disk_bytes(homes: list[Path]) -> int:
    return sum(f.stat().st_size for home in homes for f in home.rglob("*") if f.is_file())


def boxes(count: int) -> list[str]:
    return [f"stored{i}" for i in range(count)]


async def exercise(client: Mq9Client, names: list[str], tag: str) -> None:
    """Every command the readers use, on each of ``names``: a SEND, FETCHes from the earliest
    and the newest, a group's FETCH and ACK, QUERYs (all, by key, by tag)."""
    for name in names:
        await client.send(name, f"{tag} keyed", key="k")
        await client.send(name, f"{tag} tagged", tags=["t/x"])
        for _ in range(5):
            await client.fetch(name, deliver="earliest", num_msgs=100, max_wait_ms=0)
            await client.fetch(name, num_msgs=100, max_wait_ms=0)
        got = await client.fetch(
            name, group_name="g", deliver="earliest", num_msgs=100, max_wait_ms=0
        )
        if got:
            await client.ack(name, "g", got[-1].msg_id)
        await client.query(name, limit=100)
        await client.query(name, key="k")
        await client.query(name, tags=["t"])


async def fill(
    urls: list[str], names: list[str], count: int, size: int, in_flight: int, pid: int
) -> dict[str, Any]:
    """``count`` SENDs of ``size`` bytes, round-robin over ``names``, ``in_flight`` at once
    (a SEND that failed is sent again: counted); progress and the broker's memory sampled."""
    nc = await nats.connect(urls, name="bench-js-memory")
    body = b"x" * size
    subjects = [p.send_subject(name) for name in names]
    left = count
    retried = 0
    samples: list[tuple[float, int, int]] = []  # (seconds, stored so far, VmRSS)
    started = time.monotonic()

    async def lane(number: int) -> None:
        nonlocal left, retried
        subject = subjects[number % len(subjects)]
        while left > 0:
            left -= 1
            while True:
                try:
                    reply = await nc.request(subject, body, timeout=30)
                except Exception:
                    retried += 1
                    continue
                if b'"error":""' in reply.data:
                    break
                retried += 1
                await asyncio.sleep(0.1)

    async def sample() -> None:
        while True:
            await asyncio.sleep(SAMPLE_SECONDS)
            rss = memory(pid)["VmRSS"]
            samples.append((time.monotonic() - started, count - left - in_flight, rss))

    sampler = asyncio.create_task(sample())
    try:
        await asyncio.gather(*(lane(i) for i in range(in_flight)))
    finally:
        sampler.cancel()
        await nc.close()
    seconds = time.monotonic() - started
    return {
        "seconds": seconds,
        "sends_a_second": count / seconds,
        "retried": retried,
        "rss_samples": samples[:: max(1, len(samples) // 60)],  # about 60 kept
    }


async def stream_messages(urls: list[str], stream: str) -> int:
    nc = await nats.connect(urls)
    try:
        info = await nc.jetstream().stream_info(f"{stream}_MSGS")
        return info.state.messages
    finally:
        await nc.close()


async def start_one(urls: list[str], stream: str, name: str) -> dict[str, Any]:
    broker = BrokerProcess(urls, stream, 3)
    try:
        ready = memory(broker.process.pid)["VmRSS"]
        async with Mq9Client(urls[0]) as client:
            # (made once on E, where nothing else made it; on F it exists already)
            with contextlib.suppress(MailboxExists):
                await client.mailbox_create(name=name, ttl=0)
            got = await client.fetch(name, deliver="earliest", num_msgs=100, max_wait_ms=0)
        return {
            "seconds": broker.start_seconds,
            "rss_ready": ready,
            "rss_after_fetch": memory(broker.process.pid)["VmRSS"],
            "fetched": len(got),
        }
    finally:
        broker.stop()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"args": vars(args), "load_before": os.getloadavg()}
    names = boxes(args.mailboxes)
    with JetStreamCluster(3) as cluster:
        urls = cluster.urls
        full, empty = f"F{uuid.uuid4().hex[:8]}", f"E{uuid.uuid4().hex[:8]}"
        setup = await open_layout(urls, full)
        await (await open_layout(urls, empty)).close()
        broker = BrokerProcess(urls, full, 3)
        pid = broker.process.pid
        results["start_seconds_first"] = broker.start_seconds
        async with Mq9Client(urls[0]) as client:
            for name in names:
                await client.mailbox_create(name=name, ttl=0)
            await exercise(client, names, "warm")
            await asyncio.sleep(2)  # (the warm-up's own garbage collected, its tasks gone)
            results["rss_before"] = memory(pid)["VmRSS"]
            results["hwm_before"] = memory(pid)["VmHWM"]
            results["fill"] = await fill(urls, names, args.stored, args.size, args.in_flight, pid)
            await asyncio.sleep(2)
            results["rss_after_fill"] = memory(pid)["VmRSS"]
            results["hwm_after_fill"] = memory(pid)["VmHWM"]
            await exercise(client, names, "read")
            await asyncio.sleep(2)
            results["rss_after_reads"] = memory(pid)["VmRSS"]
            results["hwm_after_reads"] = memory(pid)["VmHWM"]
        broker.stop()
        results["stream_messages"] = await stream_messages(urls, full)
        results["disk_bytes"] = disk_bytes([server.home for server in cluster.servers])
        results["servers_rss"] = {s.name: memory(s.process.pid)["VmRSS"] for s in cluster.servers}
        starts: dict[str, list[dict[str, Any]]] = {"empty": [], "stored": []}
        for i in range(args.starts):
            for kind in ("empty", "stored") if i % 2 == 0 else ("stored", "empty"):
                stream = empty if kind == "empty" else full
                starts[kind].append(await start_one(urls, stream, names[0]))
        results["starts"] = starts
        await setup.close()
    for kind, rows in starts.items():
        results[f"start_seconds_{kind}_median"] = statistics.median(r["seconds"] for r in rows)
    results["start_ratio"] = (
        results["start_seconds_stored_median"] / results["start_seconds_empty_median"]
    )
    results["rss_growth"] = (
        max(results["rss_after_fill"], results["rss_after_reads"]) - results["rss_before"]
    )
    results["load_after"] = os.getloadavg()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stored", type=int, default=1_000_000)
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--mailboxes", type=int, default=1)
    parser.add_argument("--in-flight", type=int, default=256)
    parser.add_argument("--starts", type=int, default=5, help="brokers started on each layout")
    parser.add_argument("--out", type=Path)
    return run_and_print(run, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
