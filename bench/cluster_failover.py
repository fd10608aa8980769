"""The cluster failover runs: SENDs to a mailbox of a running RobustMQ
cluster, **the node that holds the mailbox's shard** killed part-way and started again, then
every message the broker acknowledged looked for on every node. Nothing here starts or builds
RobustMQ: start the cluster by hand (docs/deploy-robustmq.md) and say how to kill and start a
node with ``--kill`` and ``--start``, shell commands in which ``{port}`` stands for the NATS port
of the node to kill or start.

    python -m bench.cluster_failover --runs 10 \
        --urls nats://127.0.0.1:4222,nats://127.0.0.1:5222,nats://127.0.0.1:6222 \
        --admin http://127.0.0.1:58080,http://127.0.0.1:58082 \
        --kill 'kill -9 $(cat /path/to/node-of-{port}.pid)' --start '/path/to/start {port}'

The holder is read from RobustMQ's admin API (``/api/storage-engine/shard/list`` by topic, then
``/api/storage-engine/segment/list``: the active segment's ``leader``, a broker id; the n-th URL
is broker n unless ``--nodes 1=4222,2=5222,...`` says otherwise). The admin API answers loopback
callers without a token (admin-server ``auth.rs`` ``auth_middleware``). ``--admin`` may name
several nodes' admin URLs: each is asked in turn until one answers, because a node's admin API
can fail to reach the meta leader (seen on 8bd49dc: node 1 answered "Failed to send request to
node 2" for minutes after a fresh start while node 2's answered) and the node asked may be the
one that is down.

Each run records: SENDs acknowledged; how long the mailbox was unavailable (first failed SEND
to the first acknowledged one after it); how many acknowledged messages no node returns
afterwards; and who was told: the **sender** (``client.warnings``: a SEND answered a msg_id at or
below one it already got), a **group reader** that read and acked before the kill and reads
again after the restart (``GroupReader``, which warns through the same client check), and a
**fresh client** started after the loss, given only a receipt the application kept
(``Mq9Client.check_receipt``: the msg_id and payload of the last message acknowledged before the
kill). It also counts what the group reader's first fetch after the restart skipped:
messages acknowledged after the kill, readable on some node, yet not handed out (a group
position that outlived the log it pointed into). A run passes when nothing acknowledged was
lost, or the sender was warned.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlparse

from langchain_mq9 import Mq9Client, Mq9Error
from mq9_platform.groups.reader import GroupReader


class SetupFailed(Exception):
    """The cluster would not make the run's mailbox, or say which node holds it."""


@dataclass
class Run:
    mailbox: str
    holder_port: int | None
    acked: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    failed_final: list[str] = field(default_factory=list)
    unavailable_s: float = 0.0
    lost: int = 0  # acknowledged, and read through no node afterwards
    unreadable_on_a_node: int = 0  # acknowledged, and missing through at least one node
    sender_warned: bool = False
    reader_warned: bool = False
    # acknowledged after the kill, still readable, and not handed out by the group reader's
    # fetch after the restart: what a reader whose group position outlived the log skips
    reader_skipped: int = 0
    fresh_client_warned: bool = False

    @property
    def passed(self) -> bool:
        return not self.failed_final and (self.lost == 0 or self.sender_warned)


def admin_post(admin: str, path: str, body: dict) -> object:
    """The ``data`` of the first of ``admin``'s comma-separated URLs that answers ``path``."""
    errors = []
    for url in admin.split(","):
        request = urllib.request.Request(
            f"{url.strip().rstrip('/')}/api{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                reply = json.loads(answer.read())
        except OSError as exc:
            errors.append(f"{url}: {exc}")
            continue
        if reply.get("code") in (0, 200, None):
            return reply.get("data")
        errors.append(f"{url}: {reply}")
    raise RuntimeError(f"admin {path}: {errors}")


def holder_broker(admin: str, mailbox: str) -> int | None:
    """The broker id leading the active segment of the mailbox's shard, or None if the admin
    API does not know the mailbox (yet)."""
    shards = admin_post(admin, "/storage-engine/shard/list", {"topic_name": mailbox, "limit": 50})
    rows = shards.get("data", []) if isinstance(shards, dict) else []
    mine = [r["shard_info"] for r in rows if r["shard_info"]["topic_name"].endswith(mailbox)]
    if not mine:
        return None
    shard = mine[0]
    active = shard.get("shard", shard)["active_segment_seq"]  # the row nests the shard itself
    body = {"shard_name": shard["shard_name"]}
    segments = admin_post(admin, "/storage-engine/segment/list", body)
    for row in segments.get("segment_list", []) if isinstance(segments, dict) else []:
        if row["segment"]["segment_seq"] == active:
            return int(row["segment"]["leader"])
    return None


async def until(action, seconds: float, pause: float = 0.5):
    """``action()`` once it stops failing retryably, within ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return await action()
        except Mq9Error as exc:
            if not exc.retryable or time.monotonic() > deadline:
                raise
        await asyncio.sleep(pause)


async def _holder_port(
    client: Mq9Client, admin: str, nodes: dict[int, int], box: str, settle: float
) -> int:
    """Make ``box`` and find the NATS port of the node holding its shard."""
    try:
        await until(lambda: client.mailbox_create(name=box, ttl=3600), settle)
        await until(lambda: client.send(box, "probe"), settle)  # the shard exists once written
    except Mq9Error as exc:
        raise SetupFailed(f"{box}: {exc.message}") from exc
    broker = None
    deadline = time.monotonic() + settle
    while broker is None and time.monotonic() < deadline:
        broker = holder_broker(admin, box)
        if broker is None:
            await asyncio.sleep(0.5)
    port = nodes.get(broker) if broker is not None else None
    if port is None:
        raise SetupFailed(f"no holder found for {box} (broker {broker}, nodes {nodes})")
    return port


def shell(command: str, port: int) -> None:
    subprocess.run(command.format(port=port), shell=True, check=True)


async def one_run(
    urls: list[str],
    admin: str,
    nodes: dict[int, int],
    kill: str,
    start: str,
    *,
    sends: int,
    kill_after: int,
    down: float,
    settle: float,
) -> Run:
    box = f"failover.{uuid.uuid4().hex[:10]}"
    # the reader has a client of its own: each client's warnings say what it saw
    async with (
        Mq9Client(",".join(urls), request_timeout=5) as client,
        Mq9Client(",".join(urls), request_timeout=5) as reader_client,
    ):
        run = Run(box, await _holder_port(client, admin, nodes, box, settle))
        reader = GroupReader(reader_client, box, group_name="failover")
        acked: dict[str, int] = {}
        receipt: tuple[int, str] | None = None
        failures: Counter[str] = Counter()
        first_failure = back_at = None
        restart_at = None
        i = 0
        give_up = time.monotonic() + down + 4 * settle
        while i < sends and time.monotonic() < give_up:
            if i == kill_after and restart_at is None:
                # the group reader has read and acked what was there before the kill (after
                # an earlier run's loss the cluster may refuse its records mailbox: set-up)
                try:
                    read = await reader.fetch(num_msgs=kill_after + 10)
                    await reader.done([message.msg_id for message in read])
                except Mq9Error as exc:
                    raise SetupFailed(f"{box}: the group reader: {exc.message}") from exc
                shell(kill, run.holder_port)
                restart_at = time.monotonic() + down
            if restart_at is not None and restart_at > 0 and time.monotonic() >= restart_at:
                shell(start, run.holder_port)
                restart_at = 0.0
            payload = f"m{i}"
            try:
                acked[payload] = await client.send(box, payload)
                if i == kill_after - 1:
                    receipt = (acked[payload], payload)
                if first_failure is not None and back_at is None:
                    back_at = time.monotonic()
                i += 1
            except Mq9Error as exc:
                failures[type(exc).__name__] += 1
                first_failure = first_failure or time.monotonic()
                if not exc.retryable:
                    run.failed_final.append(exc.message[:200])
                    i += 1
                else:
                    await asyncio.sleep(0.5)
        if restart_at:  # the sends ended before the restart was due
            await asyncio.sleep(max(0.0, restart_at - time.monotonic()))
            shell(start, run.holder_port)
        run.acked = len(acked)
        run.failed = dict(failures)
        if first_failure is not None:
            run.unavailable_s = round((back_at or time.monotonic()) - first_failure, 1)
        run.sender_warned = box in client.warnings
        reader_got: set[str] = set()
        with contextlib.suppress(Mq9Error):
            read = await until(lambda: reader.fetch(num_msgs=sends * 2), settle)
            reader_got = {m.text() for m in read}
        run.reader_warned = box in reader_client.warnings
    readable: dict[str, set[str]] = {}
    for url in urls:  # the node started again may still be starting: connecting is retried

        async def read_all(url=url) -> list:
            async with Mq9Client(url, request_timeout=5) as other:
                return await other.fetch(box, deliver="earliest", num_msgs=sends * 2)

        readable[url] = {m.text() for m in await until(read_all, settle, pause=1.0)}
    run.lost = len(set(acked) - set().union(*readable.values()))
    run.unreadable_on_a_node = max(len(set(acked) - seen) for seen in readable.values())
    after_kill = {f"m{i}" for i in range(kill_after, sends)} & set(acked)
    run.reader_skipped = len(after_kill & set().union(*readable.values()) - reader_got)
    if receipt is not None:
        async with Mq9Client(",".join(urls), request_timeout=5) as fresh:
            run.fresh_client_warned = not await until(
                lambda: fresh.check_receipt(box, *receipt), settle
            )
    return run


async def failover_runs(
    urls: list[str],
    admin: str,
    nodes: dict[int, int],
    kill: str,
    start: str,
    *,
    runs: int,
    report: Callable[[dict], None] = lambda row: None,
    **options: Any,
) -> tuple[list[Run], list[str]]:
    """``runs`` runs that got as far as the kill, and the set-up failures met on the way (at
    most ``runs`` of them): after a node loss the cluster sometimes refuses a new mailbox for a
    while (``ShardNotExist`` on its first SEND), which is not the run's question. ``report``
    gets each run's row as it ends."""
    done: list[Run] = []
    setup_failures: list[str] = []
    while len(done) < runs and len(setup_failures) < runs:
        try:
            run = await one_run(urls, admin, nodes, kill, start, **options)
        except SetupFailed as exc:
            setup_failures.append(str(exc)[:300])
            report({"run": len(done) + len(setup_failures), "setup_failed": str(exc)[:300]})
            continue
        done.append(run)
        report({"run": len(done) + len(setup_failures), **asdict(run), "passed": run.passed})
    return done, setup_failures


def summary(runs: list[Run], setup_failures: Sequence[str] = ()) -> dict:
    losing = [r for r in runs if r.lost]
    return {
        "runs": len(runs),
        "setup_failures": len(setup_failures),
        "losing_runs": len(losing),
        "lost_per_losing_run": [r.lost for r in losing],
        "runs_with_a_node_missing_some": sum(bool(r.unreadable_on_a_node) for r in runs),
        "acked_median": statistics.median(r.acked for r in runs) if runs else 0,
        "unavailable_s_median": statistics.median(r.unavailable_s for r in runs) if runs else 0,
        "unavailable_s_max": max((r.unavailable_s for r in runs), default=0),
        "losing_runs_warned_sender": sum(r.sender_warned for r in losing),
        "losing_runs_warned_reader": sum(r.reader_warned for r in losing),
        "losing_runs_reader_skipped": [r.reader_skipped for r in losing],
        "runs_reader_skipped_some": sum(bool(r.reader_skipped) for r in runs),
        "losing_runs_warned_fresh_client": sum(r.fresh_client_warned for r in losing),
        "false_alarms_fresh_client": sum(r.fresh_client_warned for r in runs if not r.lost),
        "passed": all(r.passed for r in runs),
    }


def node_ports(urls: list[str], spec: str | None) -> dict[int, int]:
    if spec:
        pairs = (item.split("=") for item in spec.split(","))
        return {int(broker): int(port) for broker, port in pairs}
    return {n: urlparse(url).port or 4222 for n, url in enumerate(urls, start=1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--urls", required=True, help="the cluster's NATS URLs, comma-separated")
    parser.add_argument("--admin", required=True, help="admin URLs (http://host:port), comma-sep.")
    parser.add_argument("--kill", required=True, help="shell command; {port}: the node to kill")
    parser.add_argument("--start", required=True, help="shell command; {port}: the node to start")
    parser.add_argument("--nodes", help="broker id to NATS port, e.g. 1=4222,2=5222,3=6222")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--sends", type=int, default=300)
    parser.add_argument("--kill-after", type=int, default=100)
    parser.add_argument("--down", type=float, default=40.0, help="seconds the node stays down")
    parser.add_argument("--settle", type=float, default=90.0, help="seconds to wait for a node")
    args = parser.parse_args(argv)
    urls = [u.strip() for u in args.urls.split(",") if u.strip()]
    nodes = node_ports(urls, args.nodes)
    runs, setup_failures = asyncio.run(
        failover_runs(
            urls,
            args.admin,
            nodes,
            args.kill,
            args.start,
            runs=args.runs,
            report=lambda row: print(json.dumps(row), flush=True),
            sends=args.sends,
            kill_after=args.kill_after,
            down=args.down,
            settle=args.settle,
        )
    )
    result = summary(runs, setup_failures)
    print(json.dumps(result, indent=2))
    return 0 if result["passed"] and len(runs) == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
