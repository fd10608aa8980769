"""What an idempotency key costs the broker: the CPU seconds of SENDs with a key
against the same SENDs without, answered by one engine in this process (the bench process is
the broker: ``engine.handle`` straight, no client), on the memory store and on the cluster
store (a one-node JetStream nats-server on loopback, whose own CPU is not counted: the
broker's is). Each key new (the SEND stored); then the same keys again (each answered from its
key, nothing stored). And the memory one key takes in the store held in this process.

Then the same SENDs to ``mq9-dev-broker`` (memory store) as a user runs it, over its
nats-server, from a client in this process: the broker *process's* CPU seconds a SEND (Linux
/proc), which is what an operator pays, its NATS reading and answering included.

    python -m bench.keyed_send --sends 20000 --in-flight 32 --rounds 3
    python -m bench.keyed_send --process-only --sends 1000 --rounds 60   # the process alone

The broker process's CPU is read to the nanosecond (its threads' schedstat), so a round may
be short: many short rounds, each side's order turned every round, give each round's ratio
from moments close together (a shared machine's load moves between rounds, not within one).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import tracemalloc
import uuid
from collections.abc import Awaitable, Callable

import nats
from nats.aio.client import Client

from mq9_broker import BrokerEngine
from mq9_broker.engine.engine import Engine
from mq9_broker.storage.in_process.sent_keys import SentKeys
from mq9_broker.storage.jetstream import ClusterStore
from mq9_wire import protocol as p
from testbed.devbroker import DevBroker
from testbed.jetstream import JetStreamCluster

from .throughput import cpu_exact

Handle = Callable[[str, dict[str, str] | None, bytes], Awaitable[bytes]]
BODY = b'{"task":"summarize the thread","n":12345}'


async def _cpu_us(handle: Handle, box: str, sends: int, in_flight: int, keyed: str | None) -> float:
    """CPU microseconds a SEND of this process, ``sends`` of them, ``in_flight`` at once."""
    subject = p.send_subject(box)
    # (made before the clock starts: the headers nats-py would have read off the wire)
    headers = [{p.HEADER_IDEMPOTENCY_KEY: f"{keyed}-{n}"} if keyed else None for n in range(sends)]
    queue = iter(headers)

    async def worker() -> None:
        for header in queue:
            answer = await handle(subject, header, BODY)
            assert b'"error":""' in answer, answer

    started = time.process_time()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return (time.process_time() - started) / sends * 1e6


Measure = Callable[[str, str | None], Awaitable[float]]  # (mailbox, key tag) -> us a SEND
Create = Callable[[str], Awaitable[object]]


async def _rounds(measure: Measure, create: Create, rounds: int) -> dict[str, list[float]]:
    """Each round on mailboxes of its own (a mailbox's size is no side's), unkeyed first in
    one round and last in the next (no side always runs on a warmer process)."""
    found: dict[str, list[float]] = {"unkeyed": [], "keyed_new": [], "keyed_again": []}
    for n in range(rounds):
        plain, keyed, tag = f"bench.u{n}", f"bench.k{n}", uuid.uuid4().hex[:8]
        await create(plain)
        await create(keyed)
        if n % 2 == 0:
            found["unkeyed"].append(await measure(plain, None))
        found["keyed_new"].append(await measure(keyed, tag))
        found["keyed_again"].append(await measure(keyed, tag))
        if n % 2 == 1:
            found["unkeyed"].append(await measure(plain, None))
    return found


async def _engine_rounds(handle: Handle, args: argparse.Namespace) -> dict[str, list[float]]:
    async def measure(box: str, keyed: str | None) -> float:
        return await _cpu_us(handle, box, args.sends, args.in_flight, keyed)

    async def create(box: str) -> bytes:
        return await handle(p.MAILBOX_CREATE, None, json.dumps({"name": box}).encode())

    return await _rounds(measure, create, args.rounds)


def _summary(found: dict[str, list[float]]) -> dict[str, float]:
    """The best of the rounds each way and their ratio; and each round's own ratio (its keyed
    SENDs against the unkeyed ones beside them in time), their median and range: on a shared
    machine the bests of two sides may come from different moments, a round's pair does not."""
    best = {name: min(values) for name, values in found.items()}
    rounds = sorted(k / u for k, u in zip(found["keyed_new"], found["unkeyed"], strict=True))
    return best | {
        "keyed_over_unkeyed": best["keyed_new"] / best["unkeyed"],
        "again_over_unkeyed": best["keyed_again"] / best["unkeyed"],
        "round_ratio_median": statistics.median(rounds),
        "round_ratio_lowest": rounds[0],
        "round_ratio_highest": rounds[-1],
    }


def _bytes_per_key(count: int = 100_000) -> float:
    """The memory one key takes in ``SentKeys`` (a mailbox name and a key of 36 characters)."""
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    keys = SentKeys()
    for n in range(count):
        keys.put("agent.inbox", f"{uuid.UUID(int=n)}", n, bytes(16), n)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    return grown / count


async def _broker_cpu_us(
    connection: Client, pid: int, box: str, args: argparse.Namespace, keyed: str | None
) -> float:
    """The broker process's CPU microseconds a SEND to ``box``, ``args.sends`` of them,
    ``args.in_flight`` at once."""
    subject = p.send_subject(box)
    sends = args.sends
    headers = [{p.HEADER_IDEMPOTENCY_KEY: f"{keyed}-{n}"} if keyed else None for n in range(sends)]
    queue = iter(headers)

    async def worker() -> None:
        for header in queue:
            answer = await connection.request(subject, BODY, timeout=30, headers=header)
            assert b'"error":""' in answer.data, answer.data

    started = cpu_exact(pid)
    await asyncio.gather(*(worker() for _ in range(args.in_flight)))
    ended = cpu_exact(pid)
    assert started is not None and ended is not None, "no /proc: Linux only"
    return float(ended - started) / sends * 1e6


async def _broker_process(args: argparse.Namespace) -> dict[str, float]:
    """Unkeyed, keyed (new), keyed (again) SENDs to a dev broker process: its CPU a SEND."""
    with DevBroker("--port", "0", "--no-search") as broker:
        assert broker.url is not None
        connection = await nats.connect(broker.url)
        pid = broker.process.pid

        async def measure(box: str, keyed: str | None) -> float:
            return await _broker_cpu_us(connection, pid, box, args, keyed)

        async def create(box: str) -> object:
            body = json.dumps({"name": box}).encode()
            return await connection.request(p.MAILBOX_CREATE, body, timeout=30)

        try:
            found = await _rounds(measure, create, args.rounds)
        finally:
            await connection.close()
    return _summary(found)


async def main(args: argparse.Namespace) -> dict[str, object]:
    conditions = vars(args) | {"date": time.strftime("%Y-%m-%d %H:%M")}
    if args.process_only:
        return {"dev_broker_process": await _broker_process(args), "conditions": conditions}
    engine = BrokerEngine()
    found = await _engine_rounds(engine.handle, args)
    results: dict[str, object] = {"memory": _summary(found)}
    with JetStreamCluster(1) as cluster:
        connection = await nats.connect(cluster.urls)
        store = ClusterStore(connection, name=f"B{uuid.uuid4().hex[:8]}", timeout=20.0)
        await store.open()
        cluster_engine = Engine(store)
        try:
            found = await _engine_rounds(cluster_engine.handle, args)
            results["cluster"] = _summary(found)
        finally:
            await store.close()
            await connection.close()
    results["dev_broker_process"] = await _broker_process(args)
    results["memory_bytes_per_key"] = _bytes_per_key()
    results["conditions"] = conditions
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sends", type=int, default=20_000)
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--process-only", action="store_true", help="only the mq9-dev-broker process's figures"
    )
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=2))
