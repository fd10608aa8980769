"""Brokers that add up: the cluster store's SEND, FETCH and ACK through 1, 2 and 4
brokers at once, and what each operation costs every process.

Three JetStream nats-servers clustered on loopback, one R3 layout, ``--brokers`` broker
processes (``bench.js_broker --served --count``: ``serve_on_nats``, what ``mq9-dev-broker
--store jetstream`` runs) in the one queue group, brokers added (or stopped)
between configurations, in the order given (``--brokers 4,1`` as well as ``1,4``).
``--clients`` client processes (``Mq9Client``), each with ``--in-flight`` requests under way,
round-robin over ``--mailboxes`` mailboxes, for ``--seconds`` each of: SEND (``--size``-byte
payloads), FETCH (``--fetch`` messages, group ``g``, from the earliest), ACK (group ``g``, a
msg_id the client's SENDs got).

For each configuration and operation: the rate, and the CPU microseconds an operation cost
the clients, the brokers and the servers (from /proc, summed over each kind's processes, over
the measured window; on a machine whose cores are shared the rates say little, the CPU per
operation does); for SEND, the brokers' reads of a mailbox's head per 1,000 SENDs (each a
write another broker's came before: refused, read again and renumbered).

``--partitions``: the servers map the mailbox commands to partitions
(``nats_servers/mappings.py``), and the brokers share them (``serving/partitions.py``): each
mailbox on one broker of the moment. ``--uvloop``: the brokers on uvloop's event loop.
``--raw``: first, the same client processes publishing the same payloads straight into an R3
stream with nats-py (no broker: what the servers give Python clients), the figure the brokers'
best is held against. ``--ops``: which operations, in order (default all three; one may come
again, as a FETCH after the ACKs moved a group's position). ``--profile FILE``: each broker
under cProfile, its figures in ``FILE.<n>.prof`` (n from 0, in the order started).
``--against DIR --rounds N``: one broker at a time, this checkout's and DIR's (another
checkout of the project, its ``.venv``) alternated N times an operation on one cluster: two
versions' CPU an operation side by side, on a machine whose load moves (``--against
uvloop``: this checkout's broker on asyncio's loop against it on uvloop's). ``--credentials``:
the credentialed path against the open one: two clusters, one configured as
``mq9-dev-broker credentials setup`` says, each served by ``mq9-dev-broker --store jetstream``
(``--credentials DIR`` on the second), the clients logged in with one agent's credential there,
the two sides alternated ``--rounds`` times an operation for each ``--brokers`` count
(``--profile FILE``: FILE.<side>.<n>.prof, the brokers under ``python -m cProfile``).

    python -m bench.js_scale --brokers 1,2,4 --clients 2 --mailboxes 64 --seconds 4
    python -m bench.js_scale --partitions --out /tmp/js_scale.json
    python -m bench.js_scale --credentials --brokers 1 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats

from bench.js_cluster import JetStreamCluster
from bench.js_store import ROOT, STARTED, BrokerProcess, cpu_seconds, open_layout
from mq9_broker.broker import READY
from mq9_broker.nats_servers.mappings import mappings_block

OPERATIONS = ("send", "fetch", "ack")
DEV_BROKER_WAIT = 120.0  # seconds a dev broker's start waits for the cluster (a busy machine)


async def _timed(
    args: argparse.Namespace, start_at: float, worker: int, one: Callable[[int], Awaitable[Any]]
) -> int:
    """``one(i)`` from ``--in-flight`` lanes at once for ``--seconds`` from ``start_at``:
    how many were done (lane k of this worker takes i = k + worker, then every in-flight-th)."""
    await asyncio.sleep(max(0.0, start_at - time.time()))
    done = 0
    stop = time.monotonic() + args.seconds

    async def lane(k: int) -> None:
        nonlocal done
        i = k + worker
        while time.monotonic() < stop:
            await one(i)
            i += args.in_flight
            done += 1

    await asyncio.gather(*(lane(k) for k in range(args.in_flight)))
    return done


async def _raw_lanes(args: argparse.Namespace, start_at: float, worker: int) -> int:
    connection = await nats.connect(args.urls[worker % len(args.urls)])
    stream = connection.jetstream()
    payload = b"x" * args.size
    await stream.publish("rawscale.0", payload)

    async def one(i: int) -> Any:
        return await stream.publish(f"rawscale.{i % args.mailboxes}", payload)

    done = await _timed(args, start_at, worker, one)
    await connection.close()
    return done


async def _lanes(args: argparse.Namespace, op: str, start_at: float, worker: int) -> int:
    from langchain_mq9 import Mq9Client

    if op == "raw":
        return await _raw_lanes(args, start_at, worker)

    boxes = [f"scale{i}" for i in range(args.mailboxes)]
    text = "x" * args.size
    url = args.urls[worker % len(args.urls)]
    credential = getattr(args, "credential", None)  # (--credentials: the agent's, else none)
    async with Mq9Client(url, request_timeout=60, credential=credential) as client:
        ids = {box: await client.send(box, text) for box in boxes}  # warm, and ids to ACK

        async def one(i: int) -> Any:
            box = boxes[i % len(boxes)]
            if op == "send":
                return await client.send(box, text)
            if op == "fetch":
                return await client.fetch(
                    box, group_name="g", deliver="earliest", num_msgs=args.fetch
                )
            return await client.ack(box, "g", ids[box])

        return await _timed(args, start_at, worker, one)


def _client(args: argparse.Namespace, op: str, start_at: float, worker: int, out: Any) -> None:
    try:
        out.put(asyncio.run(_lanes(args, op, start_at, worker)))
    except Exception as exc:  # (told in the figures, not lost)
        out.put(f"error: {exc!r}")


async def _head_reads(urls: list[str], pids: list[int]) -> int:
    connection = await nats.connect(urls)
    total = 0
    for pid in pids:
        answer = await connection.request(f"bench.counts.{pid}", b"", timeout=10)
        total += json.loads(answer.data)["head_reads"]
    await connection.close()
    return total


def measure(
    args: argparse.Namespace, op: str, brokers: list[int], servers: list[int], count: bool = True
) -> dict[str, Any]:
    """One operation for ``--seconds`` from ``--clients`` processes: its rate and CPU
    (``count``: the brokers answer their head reads, ``bench.js_broker --count``)."""
    out: Any = mp.Queue()
    start_at = time.time() + 4.0  # every client connected and warm before the window
    clients = [
        mp.Process(target=_client, args=(args, op, start_at, worker, out))
        for worker in range(args.clients)
    ]
    for process in clients:
        process.start()
    kinds = {"brokers": brokers, "servers": servers}
    time.sleep(max(0.0, start_at - time.time()))
    count = count and op == "send"
    reads = asyncio.run(_head_reads(args.urls, brokers)) if count else 0
    before = {kind: sum(cpu_seconds(pid) for pid in pids) for kind, pids in kinds.items()}
    before["clients"] = sum(cpu_seconds(p.pid) for p in clients if p.pid)
    time.sleep(args.seconds)
    after = {kind: sum(cpu_seconds(pid) for pid in pids) for kind, pids in kinds.items()}
    after["clients"] = sum(cpu_seconds(p.pid) for p in clients if p.pid)
    got = [out.get(timeout=args.seconds + 120) for _ in clients]
    for process in clients:
        process.join(30)
    done = sum(g for g in got if isinstance(g, int)) or 1
    row: dict[str, Any] = {"rate": round(done / args.seconds), "operations": done}
    row["errors"] = [g for g in got if isinstance(g, str)][:3]
    per_op = {kind: round((after[kind] - before[kind]) / done * 1e6) for kind in after}
    per_op["all"] = sum(per_op.values())
    row["cpu_us_per_op"] = per_op
    if count:
        # (the reads after the window include a few of its last SENDs' answers: within 1%)
        reads = asyncio.run(_head_reads(args.urls, brokers)) - reads
        row["head_reads_per_1000"] = round(reads / done * 1000, 1)
    return row


async def _create(urls: list[str], count: int, credential: str | None = None) -> None:
    from langchain_mq9 import Mq9Client

    async with Mq9Client(urls[0], request_timeout=60, credential=credential) as client:
        for i in range(count):
            await client.mailbox_create(name=f"scale{i}", ttl=0)


def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = [int(n) for n in args.brokers.split(",")]
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    results["load_before"] = os.getloadavg()
    extra = mappings_block("") if args.partitions else ""
    with JetStreamCluster(3, extra_config=extra) as cluster:
        args.urls = cluster.urls
        stream = f"S{uuid.uuid4().hex[:8]}"
        setup = asyncio.run(_open(cluster.urls, stream, args.streams))
        del setup
        servers = [s.process.pid for s in cluster.servers if s.process]
        if args.raw:
            asyncio.run(_raw_stream(cluster.urls))
            row = measure(args, "raw", [], servers)
            results["raw_send"] = row
            print(json.dumps({"brokers": 0, "op": "raw", **row}), flush=True)
        started: list[BrokerProcess] = []
        created = False
        try:
            for count in plan:
                while len(started) > count:  # (a smaller configuration after a larger one)
                    started.pop().stop()
                while len(started) < count:
                    profile = (
                        args.profile.with_suffix(f".{len(started)}.prof") if args.profile else None
                    )
                    started.append(
                        BrokerProcess(
                            cluster.urls, stream, 3, profile, served=True, extra=_extra(args)
                        )
                    )
                if not created:  # (once, by the first configuration's brokers)
                    asyncio.run(_create(cluster.urls, args.mailboxes))
                    created = True
                time.sleep(1.5)  # the partitions settled among the brokers started
                pids = [broker.process.pid for broker in started]
                for op in args.ops.split(","):
                    row = measure(args, op, pids, servers)
                    results[f"{count}_brokers_{op}"] = row
                    print(json.dumps({"brokers": count, "op": op, **row}), flush=True)
            results["broker_rss"] = [broker.rss_bytes() for broker in started]
        finally:
            for broker in started:
                broker.stop()
    results["load_after"] = os.getloadavg()
    return results


def side_by_side(args: argparse.Namespace) -> dict[str, Any]:
    """``--against DIR``: one broker at a time on one cluster, this checkout's and DIR's
    alternated ``--rounds`` times for each operation (the same servers, mailboxes and
    clients: what differs between two windows is the broker's code and the machine's load)."""
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    results["load_before"] = os.getloadavg()
    extra = mappings_block("") if args.partitions else ""
    # ("uvloop": this checkout's broker on uvloop's event loop, against it on asyncio's)
    uvloop = str(args.against) == "uvloop"
    sides = {"ours": None, "against": None if uvloop else args.against}
    with JetStreamCluster(3, extra_config=extra) as cluster:
        args.urls = cluster.urls
        stream = f"S{uuid.uuid4().hex[:8]}"
        asyncio.run(_open(cluster.urls, stream, args.streams))
        servers = [s.process.pid for s in cluster.servers if s.process]
        created = False
        for op in args.ops.split(","):
            for round_ in range(args.rounds):
                for side, checkout in sides.items():
                    flags = _extra(args) + (["--uvloop"] if uvloop and side == "against" else [])
                    broker = BrokerProcess(
                        cluster.urls, stream, 3, served=True, extra=flags, checkout=checkout
                    )
                    try:
                        if not created:
                            asyncio.run(_create(cluster.urls, args.mailboxes))
                            created = True
                        time.sleep(1.5)  # (the partitions settled on it)
                        load = os.getloadavg()[0]
                        row = measure(args, op, [broker.process.pid], servers)
                    finally:
                        broker.stop()
                    row["load"] = round(load, 2)
                    results.setdefault(f"{side}_{op}", []).append(row)
                    print(json.dumps({"side": side, "round": round_, "op": op, **row}), flush=True)
    results["load_after"] = os.getloadavg()
    return results


class DevBroker:
    """``python -m mq9_broker --nats URLS --store jetstream --no-search EXTRA``
    (what an operator runs), until ``stop``: for ``--credentials``, both sides the same
    program, one of them enforcing."""

    def __init__(self, urls: list[str], extra: list[str], profile: Path | None = None) -> None:
        command = [sys.executable, *(["-m", "cProfile", "-o", str(profile)] if profile else [])]
        command += ["-m", "mq9_broker", "--nats", ",".join(urls)]
        command += ["--store", "jetstream", "--no-search", *extra]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT
        )
        STARTED.append(self.process)
        ready = threading.Event()
        threading.Thread(target=self._read, args=(ready,), daemon=True).start()
        if not ready.wait(DEV_BROKER_WAIT):
            self.stop()
            raise RuntimeError(f"mq9-dev-broker {' '.join(extra)} did not get ready")

    def _read(self, ready: threading.Event) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:  # read to the end: the pipe never fills
            if line.startswith(READY):
                ready.set()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _credentials_command(*argv: str) -> str:
    """``mq9-dev-broker credentials ARGV``, in this process: what it printed."""
    import mq9_broker.cli.credentials as command

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        if command.main(list(argv)) != 0:
            raise RuntimeError(f"mq9-dev-broker credentials {argv[0]} failed")
    return out.getvalue()


def credentials_side_by_side(args: argparse.Namespace) -> dict[str, Any]:
    """``--credentials``: two clusters, an open one and one configured as ``credentials
    setup`` says, each served by ``mq9-dev-broker --store jetstream`` (the second with
    ``--credentials DIR``: nats-server asks the broker at each login and holds the agent to its
    own subjects; the broker checks the revocation and the ownership of every request; the
    clients log in with one agent's credential, the mailboxes its own). Each ``--brokers``
    count, each operation: the two sides alternated ``--rounds`` times, on a machine whose
    load moves; the figure is the brokers' CPU an operation, open against enforcing."""
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    results["load_before"] = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="mq9-js-scale-") as place:
        auth = Path(place, "mq9-auth")
        config = _credentials_command("setup", str(auth))
        with (
            JetStreamCluster(3) as plain,
            JetStreamCluster(3, extra_config=config) as guarded,
        ):
            nats_urls = ",".join(guarded.urls)
            issued = _credentials_command(
                "issue", "bench", "--credentials", str(auth), "--nats", nats_urls
            )
            sides = {
                "open": (plain, [], None),
                "credentials": (guarded, ["--credentials", str(auth)], issued.splitlines()[0]),
            }
            created: set[str] = set()
            for count in [int(n) for n in args.brokers.split(",")]:
                for op in args.ops.split(","):
                    for round_ in range(args.rounds):
                        for side, (cluster, flags, credential) in sides.items():
                            args.urls, args.credential = cluster.urls, credential
                            brokers = [
                                DevBroker(cluster.urls, flags, _profile(args, side, n))
                                for n in range(count)
                            ]
                            try:
                                if side not in created:
                                    asyncio.run(_create(cluster.urls, args.mailboxes, credential))
                                    created.add(side)
                                time.sleep(1.5)
                                load = os.getloadavg()[0]
                                servers = [s.process.pid for s in cluster.servers if s.process]
                                pids = [broker.process.pid for broker in brokers]
                                row = measure(args, op, pids, servers, count=False)
                            finally:
                                for broker in brokers:
                                    broker.stop()
                            row["load"] = round(load, 2)
                            results.setdefault(f"{count}_{side}_{op}", []).append(row)
                            shown = {"brokers": count, "side": side, "round": round_, "op": op}
                            print(json.dumps({**shown, **row}), flush=True)
    results["load_after"] = os.getloadavg()
    return results


def _profile(args: argparse.Namespace, side: str, n: int) -> Path | None:
    """``--profile FILE`` with ``--credentials``: FILE.<side>.<n>.prof (the last round's)."""
    return args.profile.with_suffix(f".{side}.{n}.prof") if args.profile else None


def _extra(args: argparse.Namespace) -> list[str]:
    # (a broker given the count checks it against the layout's: an older checkout refuses it)
    given = ["--streams", str(args.streams)] if args.streams else []
    return ["--count", *(["--uvloop"] if args.uvloop else []), *given]


async def _raw_stream(urls: list[str]) -> None:
    connection = await nats.connect(urls)
    await connection.jetstream().add_stream(
        name="RAWSCALE", subjects=["rawscale.>"], num_replicas=3
    )
    await connection.close()


async def _open(urls: list[str], stream: str, streams: int | None = None) -> None:
    setup = await open_layout(urls, stream, streams)
    await setup.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", default="1,2,4", help="the configurations, in order")
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--mailboxes", type=int, default=64)
    parser.add_argument("--in-flight", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--fetch", type=int, default=10)
    parser.add_argument("--partitions", action="store_true", help="servers map, brokers share")
    parser.add_argument("--uvloop", action="store_true", help="the brokers on uvloop")
    parser.add_argument("--raw", action="store_true", help="raw publishes first, no broker")
    parser.add_argument("--ops", default=",".join(OPERATIONS), help="send,fetch,ack or fewer")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--profile", type=Path, help="cProfile each broker: FILE.<n>.prof")
    parser.add_argument("--against", type=Path, help="another checkout: its broker alternated")
    parser.add_argument("--rounds", type=int, default=4, help="with --against: pairs an op")
    parser.add_argument(
        "--streams", type=int, help="the layout's message streams (default: 1)"
    )
    parser.add_argument(
        "--credentials", action="store_true", help="open against enforcing dev brokers"
    )
    args = parser.parse_args(argv)
    mp.set_start_method("fork", force=True)
    try:
        if args.credentials:
            results = credentials_side_by_side(args)
        else:
            results = side_by_side(args) if args.against else run(args)
    finally:
        for process in STARTED:
            if process.poll() is None:
                process.kill()
                process.wait(30)
    text = json.dumps(results, indent=2, default=str)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
