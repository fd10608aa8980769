"""One reader's large reads against another's small ones, on servers raised to 64 MB: the
victim's p99 while a flood runs, and QUERY's time at the raised payload
against the default.

A 3-node JetStream cluster on loopback (``testbed.jetstream.JetStreamCluster``), for each
payload in ``--payloads`` (``default``: nats-server's 1 MiB; ``raised``: ``max_payload: 64MB``
as docs/deploy.md has an operator raise it for large messages), and one ``mq9-dev-broker
--store jetstream`` on it (``--max-payload`` the largest the servers carry: 1 MiB, or
33550336). Mailboxes are filled through a cluster store in this process (its batches, fast):
``page`` with ``--messages`` small messages (200 bytes), ``hundred`` with 100, ``victim``
with 20. Then, through the broker, each figure the median of ``--rounds`` requests:

- ``query_100``: a QUERY of ``hundred``;
- ``query_page``: a QUERY of ``page``'s first 100 (the console's page of a 100,000-message
  mailbox);
- ``quiet``: the victim's small reads, one client, ``--seconds``: a QUERY of its 20
  messages, then a group FETCH of 5 and their ACKs, again and again; each QUERY's and FETCH's
  time (p50, p99);
- ``flood`` (raised only): the same while one client without credentials keeps ``--flood``
  QUERYs of 31 MiB messages going (three of them stored in its mailbox, each read by its
  key, or with ``--flood-by oldest`` its oldest): the victim's p50/p99 and errors, the
  flood's answers and errors.
- ``after_deleted`` (raised, with ``--deleted``): then the victim SENDs one
  31 MiB message into its own mailbox and deletes it at once, and its small reads are measured
  again under the same flood. The mailbox's head must say what is left, not 31 MiB for
  good: else every later read of hers is counted at that. Target: her p50 within 2x of hers
  under the flood before the large SEND.

Targets: the victim's p99 under 1 s while the flood runs; ``query_100`` and
``query_page`` raised within 2x of default. A figure is this machine's at this load: the
load average is printed with each run (the ratio is of the same run).

    python -m bench.js_read_shares                       # both payloads, the flood of 24
    python -m bench.js_read_shares --payloads raised --seconds 10 --out /tmp/shares.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
RAISED = "max_payload: 64MB\nmax_pending: 64MB\n"
LARGE = 31 * MIB
LARGEST_TAKEN = 33_550_336  # what a broker takes on servers raised so (docs/broker.md)
P99_TARGET = 1.0  # seconds: the victim's p99 while the flood runs
DELETED_TARGET = 2.0  # her p50 after a large SEND deleted, over hers before it
RATIO_TARGET = 2.0  # QUERY raised over default, at most
FILL = 1000  # messages appended at once while a mailbox is filled


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def _percentile(values: list[float], share: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


async def _fill(urls: list[str], stream: str, boxes: dict[str, int]) -> None:
    """Each of ``boxes`` created and given that many messages of 200 bytes."""
    import nats

    from mq9_broker.state.mailbox import StoredMessage
    from mq9_broker.storage.jetstream import ClusterStore
    from mq9_wire.protocol import Priority

    connection = await nats.connect(urls)
    store = ClusterStore(connection, name=stream, replicas=3, timeout=120.0)
    await store.open()
    try:
        now = int(time.time())
        for box, count in boxes.items():
            await store.create_mailbox(box, ttl=0, desc="", now=now)
            held = 0
            while held < count:
                some = min(FILL, count - held)
                await asyncio.gather(
                    *(
                        store.append(
                            box, StoredMessage(-1, b"x" * 200, Priority.NORMAL, now), now=now
                        )
                        for _ in range(some)
                    )
                )
                held += some
    finally:
        await store.close()
        await connection.close()


async def _median_query(client: Any, box: str, rounds: int, *, limit: int) -> dict[str, float]:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        found = await client.query(box, limit=limit)
        times.append(time.perf_counter() - started)
        assert len(found) == limit, (box, len(found))
    return {"median_s": _percentile(times, 0.5), "max_s": max(times)}


async def _victim(client: Any, box: str, seconds: float, group: str) -> dict[str, Any]:
    """The victim's small reads for ``seconds``: each QUERY's and FETCH's time."""
    times: list[float] = []
    acks: list[float] = []
    errors: list[str] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.perf_counter()
        try:
            found = await client.query(box, limit=20)
            assert len(found) == 20
            times.append(time.perf_counter() - started)
            started = time.perf_counter()
            batch = await client.fetch(
                box, group_name=group, deliver="earliest", num_msgs=5, max_wait_ms=0
            )
            times.append(time.perf_counter() - started)
            for message in batch:
                started = time.perf_counter()
                await client.ack(box, group, message.msg_id)
                acks.append(time.perf_counter() - started)
        except Exception as exc:  # counted and said: the figure is what was answered
            errors.append(f"{type(exc).__name__}: {exc}"[:200])
            times.append(time.perf_counter() - started)
    return {
        "reads": len(times),
        "p50_s": _percentile(times, 0.5),
        "p99_s": _percentile(times, 0.99),
        "max_s": max(times) if times else math.nan,
        "ack_p99_s": _percentile(acks, 0.99),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


async def _measure(payload: str, args: argparse.Namespace) -> dict[str, Any]:
    from bench.js_cluster import JetStreamCluster
    from mq9_platform.client import Mq9Client
    from testbed.devbroker import DevBroker

    raised = payload == "raised"
    stream = f"SH{uuid.uuid4().hex[:6].upper()}"
    result: dict[str, Any] = {"payload": payload, "load_before": _load()}
    with JetStreamCluster(3, extra_config=RAISED if raised else "") as cluster:
        urls = cluster.urls
        say = f"[{payload}]"
        print(f"{say} filling (load {_load()})", file=sys.stderr, flush=True)
        await _fill(urls, stream, {"page": args.messages, "hundred": 100, "victim": 20})
        broker_args = ["--nats", ",".join(urls), "--store", "jetstream", "--stream", stream]
        broker_args += ["--no-search"]  # (no model: the reads are measured, nothing else)
        broker_args += ["--max-payload", str(LARGEST_TAKEN if raised else MIB)]
        if args.answer_rate is not None:
            broker_args += ["--answer-rate", str(args.answer_rate)]
        broker = DevBroker(*broker_args)
        try:
            async with (
                Mq9Client(urls[1], request_timeout=120) as victim,
                Mq9Client(urls[0], request_timeout=120) as flooder,
            ):
                print(f"{say} QUERYs (load {_load()})", file=sys.stderr, flush=True)
                result["query_100"] = await _median_query(victim, "hundred", args.rounds, limit=100)
                result["query_page"] = await _median_query(victim, "page", args.rounds, limit=100)
                print(f"{say} quiet victim (load {_load()})", file=sys.stderr, flush=True)
                result["quiet"] = await _victim(victim, "victim", args.seconds, "quiet")
                if raised and args.flood:
                    result["flood"] = await _flooded(victim, flooder, args, say)
        finally:
            broker.stop()
    result["load_after"] = _load()
    return result


async def _flooded(victim: Any, flooder: Any, args: argparse.Namespace, say: str) -> dict[str, Any]:
    box = await flooder.mailbox_create(name="flood")
    for n in range(3):
        await flooder.send(box, (f"{n}." * (LARGE // 2 + 1)).encode()[:LARGE], key=f"k{n}")
    answered, failed = [0], [0]
    errors: list[str] = []
    stop = asyncio.Event()

    async def flood(worker: int) -> None:
        while not stop.is_set():
            try:
                if args.flood_by == "key":
                    (message,) = await flooder.query(box, key=f"k{worker % 3}")
                else:  # (its oldest that fits one answer: a batched direct get)
                    message = (await flooder.query(box, limit=1))[0]
                answered[0] += 1 if len(message.payload) == LARGE else 0
            except Exception as exc:
                failed[0] += 1
                errors.append(f"{type(exc).__name__}: {exc}"[:200])

    workers = [asyncio.ensure_future(flood(n)) for n in range(args.flood)]
    try:
        while answered[0] + failed[0] == 0:  # (under way: one answered)
            await asyncio.sleep(0.1)
        print(f"{say} victim under the flood (load {_load()})", file=sys.stderr, flush=True)
        before = answered[0], failed[0]
        measured = await _victim(victim, "victim", args.seconds, "flooded")
        measured["flood_answered"] = answered[0] - before[0]
        measured["flood_failed"] = failed[0] - before[1]
        measured["flood_first_error"] = errors[0] if errors else None
        measured["flood_in_flight"] = sum(not w.done() for w in workers)
        if args.deleted:  # one large SEND of hers, deleted at once, then again
            large = await victim.send("victim", (b"v." * (LARGE // 2 + 1))[:LARGE])
            await victim.delete("victim", large)
            print(f"{say} victim after a large SEND deleted (load {_load()})", file=sys.stderr)
            measured["after_deleted"] = await _victim(victim, "victim", args.seconds, "after")
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*workers, return_exceptions=True), timeout=600)
    return measured


def _report(results: dict[str, Any]) -> list[str]:
    lines = []
    for payload in ("default", "raised"):
        side = results.get(payload)
        if side is None:
            continue
        lines.append(
            f"{payload}: QUERY of 100 {side['query_100']['median_s'] * 1000:.1f} ms, page of "
            f"{results['messages']:,} {side['query_page']['median_s'] * 1000:.1f} ms (medians); "
            f"quiet victim p50 {side['quiet']['p50_s'] * 1000:.1f} ms, p99 "
            f"{side['quiet']['p99_s'] * 1000:.1f} ms ({side['quiet']['reads']} reads, "
            f"{side['quiet']['errors']} errors); load {side['load_before']} -> {side['load_after']}"
        )
        flood = side.get("flood")
        if flood is not None:
            verdict = "met" if flood["p99_s"] < P99_TARGET and not flood["errors"] else "NOT met"
            lines.append(
                f"  flood of {results['flood']}: victim p50 {flood['p50_s'] * 1000:.1f} ms, p99 "
                f"{flood['p99_s'] * 1000:.1f} ms, max {flood['max_s'] * 1000:.1f} ms "
                f"({flood['reads']} reads, {flood['errors']} errors; its ACKs' p99 "
                f"{flood['ack_p99_s'] * 1000:.1f} ms); flood answered "
                f"{flood['flood_answered']}, failed {flood['flood_failed']}, "
                f"{flood['flood_in_flight']} in flight at the end: p99 target "
                f"{P99_TARGET:g} s {verdict}"
            )
            after = flood.get("after_deleted")
            if after is not None:
                ratio = after["p50_s"] / flood["p50_s"]
                verdict = "met" if ratio <= DELETED_TARGET else "NOT met"
                lines.append(
                    f"  after one 31 MiB SEND of hers deleted: victim p50 "
                    f"{after['p50_s'] * 1000:.1f} ms, p99 {after['p99_s'] * 1000:.1f} ms "
                    f"({after['reads']} reads, {after['errors']} errors): {ratio:.2f}x her p50 "
                    f"before it (target {DELETED_TARGET:g}x) {verdict}"
                )
            if flood["flood_first_error"]:
                lines.append(f"  the flood's first error: {flood['flood_first_error']}")
            if flood["first_error"]:
                lines.append(f"  the victim's first error: {flood['first_error']}")
    if "default" in results and "raised" in results:
        for name in ("query_100", "query_page"):
            ratio = results["raised"][name]["median_s"] / results["default"][name]["median_s"]
            results.setdefault("ratios", {})[name] = round(ratio, 2)
            verdict = "met" if ratio <= RATIO_TARGET else "NOT met"
            lines.append(
                f"{name}: raised / default {ratio:.2f}x (target {RATIO_TARGET:g}x) {verdict}"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.js_read_shares", description=__doc__)
    parser.add_argument("--payloads", default="default,raised", help="default, raised or both")
    parser.add_argument("--messages", type=int, default=100_000, help="messages in 'page'")
    parser.add_argument("--rounds", type=int, default=20, help="QUERYs a figure")
    parser.add_argument("--seconds", type=float, default=20.0, help="the victim's reads, each run")
    parser.add_argument("--flood", type=int, default=24, help="31 MiB reads kept in flight")
    parser.add_argument(
        "--answer-rate", type=int, help="the broker's --answer-rate (default: its own)"
    )
    parser.add_argument(
        "--flood-by",
        choices=("key", "oldest"),
        default="key",
        help="the flood's QUERY: by key (a leader get) or its oldest (a direct get)",
    )
    parser.add_argument(
        "--deleted",
        action="store_true",
        help="then a 31 MiB SEND of the victim's, deleted, and her reads again",
    )
    parser.add_argument("--out", type=Path, help="the results as JSON")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"messages": args.messages, "flood": args.flood}
    for payload in args.payloads.split(","):
        results[payload] = asyncio.run(_measure(payload, args))
    print("\n".join(_report(results)))
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
