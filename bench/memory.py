"""Target 7: memory per stored message in the bundled broker, and that it comes back.

Each probe runs in a fresh interpreter (``python -m bench.memory --probe ...``) so nothing else
shares its heap: it fills one mailbox of the engine with N 200-byte messages through
``BrokerEngine.handle`` (each payload a fresh bytes object, as a network read gives), measures,
has a consumer group FETCH and ACK all of them, removes them (the 7-day retention on a
hand-moved clock, or DELETE one by one) and measures again.

Two measures, two probes each: Python's own allocations (``tracemalloc``: exact, what the
broker's objects hold) and the process's resident set (RSS from /proc, without tracemalloc
running: what the OS sees, allocator slack and unreturned arenas included).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

from .config import Config
from .infra import ROOT, child_env
from .results import Check, Section

PAYLOAD_SIZE = 200
LIMIT_BYTES = 1024
PROBE_TIMEOUT = 300


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; 0 elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


async def _probe(messages: int, removal: str, measure: str) -> dict:
    from mq9_broker import BrokerEngine, ManualClock
    from mq9_broker.engine.engine import RETENTION_SCAN_SECONDS, RETENTION_SECONDS
    from mq9_wire import protocol as p

    clock = ManualClock()
    engine = BrokerEngine(clock=clock)
    address = "bench.memory"
    filler = b"m" * (PAYLOAD_SIZE - 8)
    headers = None

    async def call(subject: str, body: bytes = b"", hdrs=None) -> dict:
        reply = json.loads(await engine.handle(subject, hdrs, body))
        if reply["error"]:
            raise RuntimeError(reply["error"])
        return reply

    await call(p.MAILBOX_CREATE, p.encode({"name": address, "ttl": 0}))
    # Warm every code path once (first-use allocations are not per-message costs), then
    # remove the warm-up message.
    first = await call(p.send_subject(address), b"w" * PAYLOAD_SIZE, headers)
    await call(p.delete_subject(address, first["msg_id"]))

    def used() -> int:
        gc.collect()
        return tracemalloc.get_traced_memory()[0] if measure == "tracemalloc" else rss_bytes()

    if measure == "tracemalloc":
        tracemalloc.start()
    before = used()
    send = p.send_subject(address)
    for i in range(messages):
        await call(send, i.to_bytes(8, "big") + filler, headers)
    full = used()

    # A consumer group reads everything in batches of 100 (the SDK's default) and acks each;
    # one more FETCH finds nothing (that is when a group forgets what it acked below its
    # position).
    fetch = p.fetch_subject(address)
    request = p.encode(
        {"group_name": "g", "deliver": "earliest", "config": {"num_msgs": 100, "max_wait_ms": 0}}
    )
    fetched = 0
    while True:
        batch = (await call(fetch, request))["messages"]
        if not batch:
            break
        fetched += len(batch)
        ack = {"group_name": "g", "mail_address": address, "msg_id": batch[-1]["msg_id"]}
        await call(p.ack_subject(address), p.encode(ack))
    acked = used()

    if removal == "retention":
        # As on RobustMQ, only the retention removes what a group has read (an ACK moves an
        # offset, a message TTL only hides): past 7 days, at the next scan
        clock.advance(RETENTION_SECONDS + RETENTION_SCAN_SECONDS)
        await call(p.query_subject(address), p.encode({"limit": 1}))  # housekeeping runs
    else:
        for msg_id in range(1, messages + 1):
            await call(p.delete_subject(address, msg_id))
    remaining = (await call(p.query_subject(address), b"{}"))["messages"]
    after = used()
    if measure == "tracemalloc":
        tracemalloc.stop()
    return {
        "messages": messages,
        "fetched": fetched,
        "left": len(remaining),
        "before": before,
        "full": full,
        "acked": acked,
        "after": after,
    }


def start_probe(messages: int, removal: str, measure: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.memory",
            "--probe",
            "--messages",
            str(messages),
            "--removal",
            removal,
            "--measure",
            measure,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=child_env(),
    )


def finish_probe(process: subprocess.Popen) -> dict:
    try:
        out, err = process.communicate(timeout=PROBE_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise RuntimeError("memory probe did not finish in time") from None
    if process.returncode != 0:
        raise RuntimeError(f"memory probe failed: {err.strip()[-1000:]}")
    return json.loads(out.strip().splitlines()[-1])


def _kib(n: float) -> str:
    return f"{n / 1024:,.1f} KiB" if abs(n) < 1024 * 1024 else f"{n / 1024 / 1024:,.1f} MiB"


def run(cfg: Config) -> Section:
    section = Section("memory", "Broker memory per message (target 7)")
    n = cfg.memory_messages
    per_message: dict[tuple[str, str], float] = {}
    returned: dict[tuple[str, str], float] = {}
    # Each probe is a process of its own, so they can run side by side.
    probes = {
        (removal, measure): start_probe(n, removal, measure)
        for removal in ("retention", "delete")
        for measure in ("tracemalloc", "rss")
    }
    try:
        outcomes = {key: finish_probe(process) for key, process in probes.items()}
    finally:
        for process in probes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    for (removal, measure), r in outcomes.items():
        if r["fetched"] != n or r["left"] != 0:
            raise RuntimeError(f"memory probe did not consume everything: {r}")
        # Held means after the reads too: a message read once keeps its encoded answer item
        grown = max(r["full"], r["acked"]) - r["before"]
        per_message[removal, measure] = grown / n
        back = grown + r["before"] - r["after"]
        returned[removal, measure] = back / grown if grown > 0 else 1.0
        how = "the 7-day retention" if removal == "retention" else "DELETE"
        section.figures.append(
            (
                f"{measure}, removed by {how}",
                f"{grown / n:,.0f} B/message while held ({_kib(grown)} for {n:,}); "
                f"after FETCH+ACK {_kib(r['acked'] - r['before'])} above the start; "
                f"after removal {_kib(r['after'] - r['before'])} above the start "
                f"({returned[removal, measure]:.0%} of the growth returned)",
            )
        )
    worst = max(per_message[k] for k in per_message if k[1] == "tracemalloc")
    section.checks.append(
        Check(
            key="7a",
            title=f"resident memory per stored {PAYLOAD_SIZE}-byte message at {n:,} messages "
            "(tracemalloc, the larger of the two runs)",
            ours_label="per message",
            ours=f"{worst:,.0f} B",
            baseline_label="limit",
            baseline=f"{LIMIT_BYTES:,} B",
            ratio=worst / LIMIT_BYTES,
            op="<=",
            limit=1.0,
        )
    )
    rss_worst = max(per_message[k] for k in per_message if k[1] == "rss")
    section.checks.append(
        Check(
            key="7b",
            title=f"the same, as process RSS growth at {n:,} messages",
            ours_label="per message",
            ours=f"{rss_worst:,.0f} B",
            baseline_label="limit",
            baseline=f"{LIMIT_BYTES:,} B",
            ratio=rss_worst / LIMIT_BYTES,
            op="<=",
            limit=1.0,
        )
    )
    back = min(returned[k] for k in returned if k[1] == "tracemalloc")
    section.checks.append(
        Check(
            key="7c",
            title="memory returned once every message is acked and past the retention or deleted "
            "(tracemalloc, the smaller share of the two runs)",
            ours_label="returned",
            ours=f"{back:.1%} of the growth",
            baseline_label="required",
            baseline="95%",
            ratio=back / 0.95,
            op=">=",
            limit=1.0,
            ratio_label="returned / 95%",
        )
    )
    section.notes.append(
        "RSS after removal is informational: CPython keeps freed small-object arenas for "
        "reuse, so the process does not necessarily give pages back to the OS even when every "
        "object is gone (tracemalloc shows whether they are)."
    )
    return section


def _main() -> None:
    parser = argparse.ArgumentParser(description="one memory probe (run by python -m bench)")
    parser.add_argument("--probe", action="store_true", required=True)
    parser.add_argument("--messages", type=int, required=True)
    parser.add_argument("--removal", choices=("retention", "delete"), required=True)
    parser.add_argument("--measure", choices=("tracemalloc", "rss"), required=True)
    args = parser.parse_args()
    result = asyncio.run(_probe(args.messages, args.removal, args.measure))
    print(json.dumps(result))


if __name__ == "__main__":
    _main()
