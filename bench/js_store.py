"""The cluster store against raw JetStream, side by side in one run.

Three JetStream nats-servers clustered on loopback, one R3 layout (``ClusterStore``), one
broker process on it (``bench.js_broker``). Alternating, for ``--seconds`` each, with
``--in-flight`` requests in flight and ``--size``-byte payloads:

- SEND: ``Mq9Client.send`` through the broker, against nats-py publishing the same bytes to
  the same stream (a message subject of the same mailbox), acknowledged the same way;
- FETCH: ``Mq9Client.fetch`` of ``--fetch`` messages without a group, against the batched
  direct get that reads them (the broker makes that read, and the leader read of the
  mailbox's last sequence before it);
- ACK: ``Mq9Client.ack``, against nats-py putting the same position into the bucket.

With ``--mailboxes N`` every side goes round-robin over N mailboxes, as agents write (each its
own mailbox, a reply mailbox a call): the SENDs, FETCHes and ACKs over N mailboxes, the raw
publishes over N message subjects of the same shape, the direct gets over their N lanes, the
KV puts over N positions; the same bytes and the same requests in flight. N=1 (the default) is
the one-mailbox run the figures before it measured, with the same names.

Also: the broker's CPU seconds per 10,000 SENDs (from /proc, its user + system time over the
SEND runs); for every side, the CPU microseconds an operation costs the bench process, the
broker and the 3 servers (``cpu_us_per_operation``: on a machine whose cores are all busy the
rates go as the inverse of their sum); and with ``--stored N``: N messages of ``--size``
bytes written into the layout (raw, the quickest), then a broker started on it: its start
time (launch to ``ready``) and resident memory, against a broker started on the layout empty.

    python -m bench.js_store --seconds 5 --rounds 3 --stored 100000 --out /tmp/js_store.json
    python -m bench.js_store --seconds 5 --rounds 3 --mailboxes 256
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from itertools import cycle
from pathlib import Path
from typing import Any

import nats

from bench.js_cluster import JetStreamCluster
from mq9_broker.storage.jetstream import ClusterStore, Layout, token
from mq9_broker.storage.jetstream.mapping import NO_KEY, frame
from mq9_broker.storage.jetstream.requests import StorageRequests
from mq9_platform import Mq9Client
from mq9_wire.protocol import Priority

ROOT = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")
STARTED: list[subprocess.Popen[str]] = []  # every broker process, stopped however a run ends


class BrokerProcess:
    def __init__(
        self,
        urls: list[str],
        stream: str,
        replicas: int,
        profile: Path | None = None,
        served: bool = False,
        extra: list[str] | None = None,
        checkout: Path | None = None,
    ) -> None:
        """``checkout``: the broker of another checkout of this project (its ``.venv``'s
        Python, its code), for a side by side of two versions on one cluster."""
        started = time.monotonic()
        python = str(checkout / ".venv" / "bin" / "python") if checkout else sys.executable
        extra = [*(extra or []), *(["--profile", str(profile)] if profile else [])]
        extra += ["--served"] if served else []
        self.process = subprocess.Popen(
            [python, "-m", "bench.js_broker", "--nats", ",".join(urls),
             "--stream", stream, "--replicas", str(replicas), *extra],
            cwd=checkout or ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        STARTED.append(self.process)
        assert self.process.stdout is not None
        while True:
            line = self.process.stdout.readline()
            if line.startswith("ready"):
                break
            if not line and self.process.poll() is not None:
                raise RuntimeError("the broker exited before serving")
        self.start_seconds = time.monotonic() - started

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.process.pid)

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


async def rate(work: Callable[[], Awaitable[Any]], in_flight: int, seconds: float) -> float:
    """Requests answered a second with ``in_flight`` of them always under way."""
    done = 0
    deadline = time.monotonic() + seconds

    async def lane() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            await work()
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(lane() for _ in range(in_flight)))
    return done / (time.monotonic() - started)


def cpu_seconds(pid: int) -> float:
    """A process's user + system CPU seconds so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def mailbox_names(count: int) -> list[str]:
    """The bench's mailboxes: ``bench`` alone for one (the name the one-mailbox figures used),
    else ``bench0`` to ``bench<count - 1>``."""
    return ["bench"] if count == 1 else [f"bench{i}" for i in range(count)]


async def open_layout(urls: list[str], stream: str, streams: int | None = None) -> nats.NATS:
    """A connection to the cluster once the store's streams (``streams`` message
    streams) and buckets (R3) are made there, tried again while the forming cluster elects its
    JetStream leader (up to 120 s); the js_* benches share it."""
    setup = await nats.connect(urls)
    deadline = time.monotonic() + 120
    while True:
        try:
            store = ClusterStore(setup, name=stream, replicas=3, timeout=5, streams=streams)
            await store.open()
            await store.close()  # (made: the brokers do the work)
            return setup
        except Exception:
            if time.monotonic() > deadline:
                await setup.close()
                raise
            await asyncio.sleep(1)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"args": vars(args), "load_before": os.getloadavg()}
    with JetStreamCluster(3) as cluster:
        urls = cluster.urls
        stream = f"B{uuid.uuid4().hex[:8]}"
        layout = Layout(stream, args.streams)
        setup = await open_layout(urls, stream, args.streams)
        given = ["--streams", str(args.streams)] if args.streams > 1 else []
        broker = BrokerProcess(urls, stream, 3, args.profile, args.served, given)
        raw = await nats.connect(urls)
        js = raw.jetstream()
        payload = b"x" * args.size
        stored = frame(None, payload)  # a message as the store keeps it: the same bytes
        boxes = mailbox_names(args.mailboxes)
        # raw publishes: a message subject of a mailbox of their own (msg_id 0 each: numbered
        # by no broker, so kept out of the broker's mailboxes, whose numbering they would stop),
        # one per bench mailbox, so JetStream's per-subject work is the same on both sides
        raw_boxes = ["raw"] if len(boxes) == 1 else [f"raw{i}" for i in range(len(boxes))]
        subjects = [
            layout.message_subject(token(box), Priority.NORMAL, NO_KEY, 0) for box in raw_boxes
        ]
        names = ("send", "raw_publish", "fetch", "raw_direct_get", "ack", "raw_kv_put")
        rows: dict[str, list[float]] = {name: [] for name in names}
        cpu_per_10k: list[float] = []
        cpu_per_op: dict[str, list[dict[str, int]]] = {name: [] for name in names}
        processes_own = ("bench", "broker")
        requests = [  # what the broker's FETCH of each mailbox reads: its lane, its stream
            (
                layout.mailbox_stream(box),
                {
                    "seq": 1,
                    "next_by_subj": layout.lane_filter(box, Priority.NORMAL),
                    "batch": args.fetch,
                },
            )
            for box in boxes
        ]
        positions = [f"$KV.{layout.groups}.{layout.position_key('g', box)}" for box in boxes]
        value = b'{"log":"x","offset":1}'
        text = payload.decode()

        # the raw side's batched direct gets through the same reader the broker reads with
        # (one subscription for every read's answers), not a subscription a read
        reads = StorageRequests(raw, timeout=10)
        await reads.start()

        async def direct_get() -> None:
            """What the broker's lane read is: a batched direct get, up to its end."""
            await reads.direct_batch(*next(next_request))

        # round-robin, each side its own turn: a lane takes the next mailbox at each request
        next_request, next_position = cycle(requests), cycle(positions)
        next_subject, next_send, next_fetch = cycle(subjects), cycle(boxes), cycle(boxes)

        async with Mq9Client(urls[0]) as client:
            sent: list[tuple[str, int]] = []  # (mailbox, a msg_id in it) for the ACKs
            for box in boxes:
                await client.mailbox_create(name=box, ttl=0)
                await client.send(box, "warm")
                sent.append((box, await client.send(box, text)))
            next_ack = cycle(sent)

            def ack() -> Awaitable[Any]:
                box, msg_id = next(next_ack)
                return client.ack(box, "g", msg_id)

            sides: dict[str, Callable[[], Awaitable[Any]]] = {
                "send": lambda: client.send(next(next_send), text),
                "raw_publish": lambda: js.publish(next(next_subject), stored),
                "fetch": lambda: client.fetch(
                    next(next_fetch), deliver="earliest", num_msgs=args.fetch
                ),
                "raw_direct_get": direct_get,
                "ack": ack,
                "raw_kv_put": lambda: js.publish(next(next_position), value),
            }
            processes = {"bench": os.getpid(), "broker": broker.process.pid}
            processes.update({s.name: s.process.pid for s in cluster.servers if s.process})
            for _ in range(args.rounds):
                for name, work in sides.items():
                    before = {who: cpu_seconds(pid) for who, pid in processes.items()}
                    started = time.monotonic()
                    count = await rate(work, args.in_flight, args.seconds)
                    done = count * (time.monotonic() - started)
                    used = {who: cpu_seconds(pid) - before[who] for who, pid in processes.items()}
                    rows[name].append(count)
                    if name == "send":
                        cpu_per_10k.append(used["broker"] / done * 10_000)
                    # every process's CPU an operation: on a machine whose cores are all
                    # busy, the rates go as the inverse of the CPU an operation costs in all
                    cpu_per_op[name].append(
                        {
                            "bench": round(used["bench"] / done * 1e6),
                            "broker": round(used["broker"] / done * 1e6),
                            "servers": round(
                                sum(v for who, v in used.items() if who not in processes_own)
                                / done
                                * 1e6
                            ),
                        }
                    )
        results["rates"] = rows
        results["ratios"] = {
            "send": [s / r for s, r in zip(rows["send"], rows["raw_publish"], strict=True)],
            "fetch": [s / r for s, r in zip(rows["fetch"], rows["raw_direct_get"], strict=True)],
            "ack": [s / r for s, r in zip(rows["ack"], rows["raw_kv_put"], strict=True)],
        }
        results["cpu_seconds_per_10k_sends"] = cpu_per_10k
        # (microseconds of CPU an operation: the bench process, the broker, the 3 servers)
        results["cpu_us_per_operation"] = cpu_per_op
        results["broker_start_seconds_empty_layout"] = broker.start_seconds
        results["broker_rss_after_runs"] = broker.rss_bytes()
        broker.stop()
        if args.stored:
            empty = BrokerProcess(urls, f"E{uuid.uuid4().hex[:8]}", 3)
            results["start_seconds_empty"] = empty.start_seconds
            results["rss_empty"] = empty.rss_bytes()
            empty.stop()
            fill = layout.message_subject(token("stored"), Priority.NORMAL, NO_KEY, 0)
            written = time.monotonic()
            pending = []
            for _ in range(args.stored):
                pending.append(js.publish(fill, stored))
                if len(pending) >= 256:
                    await asyncio.gather(*pending)
                    pending = []
            await asyncio.gather(*pending)
            results["stored"] = args.stored
            results["store_fill_seconds"] = time.monotonic() - written
            full = BrokerProcess(urls, stream, 3)
            results["start_seconds_stored"] = full.start_seconds
            results["rss_stored"] = full.rss_bytes()
            async with Mq9Client(urls[0]) as client:
                await client.mailbox_create(name="stored", ttl=0)
                for _ in range(20):  # reads across the stored messages
                    await client.fetch("stored", deliver="earliest", num_msgs=100)
                    await client.fetch("stored", num_msgs=100)
            results["rss_stored_after_reads"] = full.rss_bytes()
            full.stop()
        await reads.stop()
        await raw.close()
        await setup.close()
    results["load_after"] = os.getloadavg()
    return results


def run_and_print(
    run: Callable[[argparse.Namespace], Awaitable[dict[str, Any]]], args: argparse.Namespace
) -> int:
    """Run one of the cluster store's benches and print its figures as JSON (and to ``--out``),
    its broker processes killed however the run ends (the js_* benches share this)."""
    try:
        results = asyncio.run(run(args))
    finally:
        for process in STARTED:
            if process.poll() is None:
                process.kill()
                process.wait(30)
    text = json.dumps(results, indent=2, default=str)
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--in-flight", type=int, default=16)
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--fetch", type=int, default=10)
    parser.add_argument(
        "--mailboxes", type=int, default=1, help="spread every side round-robin over N mailboxes"
    )
    parser.add_argument("--stored", type=int, default=0)
    parser.add_argument(
        "--streams", type=int, default=1, help="the layout's message streams, 1 to 64"
    )
    parser.add_argument("--out", type=Path)
    parser.add_argument("--profile", type=Path, help="cProfile the broker into this file")
    parser.add_argument(
        "--served", action="store_true", help="the broker through serve_on_nats (bench.js_broker)"
    )
    args = parser.parse_args(argv)
    if args.mailboxes < 1:
        parser.error("--mailboxes must be 1 or more")
    return run_and_print(run, args)


if __name__ == "__main__":
    sys.exit(main())
