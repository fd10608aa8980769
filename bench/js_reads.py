"""A FETCH's reads against the size of its mailbox: what they cost the servers.

One JetStream nats-server on loopback, one cluster store on it, one mailbox filled to each of
``--sizes`` messages in turn (200 bytes each, every 50th critical, the rest normal). At each
size, ``--rounds`` times each, the reads a group's FETCH of 10 makes (the mailbox's last mark
from the leader, then its lanes from the group's position) for three readers:

- caught up: nothing written since its last ACK (an agent polling its inbox);
- 1 new, 10 new: that many messages written since;
- behind: half the mailbox written since (a group catching up with a backlog).

Reported for each: the server's CPU (its user + system time, from /proc) and this process's
(the broker's part: requests made, answers parsed) a read, in milliseconds. A figure at one
size means little on a machine whose load moves; the target is a ratio of the same run: the
server's CPU a read at the largest size against the smallest, for each reader. A read that
grows with its mailbox walks or counts every message of it (docs/broker.md, "A read behind a
backlog"), one that does not finds what it reads in the servers' subject index.

``--against DIR``: DIR's checkout measured the same way, in a process of its own on a server of
its own, after this one's (an older ``read_lanes`` takes the mailbox's last sequence, a newer
one its mark: either is called as it asks).

    python -m bench.js_reads --sizes 1000,16000,64000 --rounds 200
    python -m bench.js_reads --against /tmp/base --out /tmp/js_reads.json
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# a reader: messages new to it (None: half the mailbox's)
READERS: dict[str, int | None] = {"caught up": 0, "1 new": 1, "10 new": 10, "behind": None}
GROWTH_TARGET = 1.5  # the server's CPU a read at the largest size, against the smallest, at most
FILL = 500  # messages written at once while a mailbox is filled


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _measure(sizes: list[int], rounds: int) -> dict[str, dict[str, dict[str, float]]]:
    """``{size: {reader: {"server_ms", "own_ms"}}}`` for this process's checkout."""
    import nats

    from bench.js_cluster import JetStreamCluster
    from mq9_broker.state.mailbox import StoredMessage
    from mq9_broker.storage.jetstream import ClusterStore
    from mq9_broker.storage.mailbox_store import Mark
    from mq9_wire.protocol import Priority

    # an older checkout reads its lanes as of a sequence, a newer one as of a mark
    by_mark = inspect.signature(ClusterStore.read_lanes).parameters["upto"].annotation == "Mark"
    results: dict[str, dict[str, dict[str, float]]] = {}
    with JetStreamCluster(1) as cluster:
        process = cluster.servers[0].process
        assert process is not None
        connection = await nats.connect(cluster.urls)
        store = ClusterStore(connection, name=f"R{uuid.uuid4().hex[:8]}", timeout=60.0)
        await store.open()
        try:
            now = int(time.time())
            await store.create_mailbox("box", ttl=0, desc="", now=now)
            held = 0
            for size in sizes:
                while held < size:
                    some = min(FILL, size - held)
                    priorities = [
                        Priority.CRITICAL if (held + n) % 50 == 0 else Priority.NORMAL
                        for n in range(some)
                    ]
                    await asyncio.gather(
                        *(
                            store.append("box", StoredMessage(-1, b"x" * 200, p, now), now=now)
                            for p in priorities
                        )
                    )
                    held += some
                results[str(size)] = {}
                for reader, count in READERS.items():
                    last = await store.last("box")
                    assert last is not None
                    new = (last.msg_id + 1) // 2 if count is None else count
                    start = Mark(last.msg_id + 1, last.seq)
                    if new:
                        found = await store.find("box", last.msg_id + 1 - new)
                        assert found is not None
                        start = found
                    server, own = _cpu_seconds(process.pid), time.process_time()
                    for _ in range(rounds):
                        mark = await store.last("box")
                        assert mark is not None
                        upto: Any = mark if by_mark else mark.seq
                        lanes = await store.read_lanes("box", start, 10, upto=upto, now=now)
                        # every message new to it, or (behind) the normal lane's first 10
                        read = sum(map(len, lanes)) if new <= 10 else len(lanes[-1])
                        assert read == min(new, 10), lanes
                    results[str(size)][reader] = {
                        "server_ms": 1000 * (_cpu_seconds(process.pid) - server) / rounds,
                        "own_ms": 1000 * (time.process_time() - own) / rounds,
                    }
                    print(
                        f"  {size:>7} messages, {reader:>9}: server "
                        f"{results[str(size)][reader]['server_ms']:6.2f} ms, own "
                        f"{results[str(size)][reader]['own_ms']:6.2f} ms a read",
                        file=sys.stderr,
                        flush=True,
                    )
        finally:
            await store.close()
            await connection.close()
    return results


def _growth(measured: dict[str, dict[str, dict[str, float]]]) -> dict[str, float | None]:
    """Each reader's server CPU a read at the largest size over the smallest; None where the
    smallest measured none (too few rounds for the clock's ticks)."""
    sizes = sorted(measured, key=int)
    smallest, largest = measured[sizes[0]], measured[sizes[-1]]
    growth: dict[str, float | None] = {}
    for reader in READERS:
        below, above = smallest[reader]["server_ms"], largest[reader]["server_ms"]
        growth[reader] = round(above / below, 2) if below > 0 else None
    return growth


def _verdict(growth: float | None) -> str:
    if growth is None:
        return "not measured: more --rounds"
    return f"{growth}x, {'met' if growth <= GROWTH_TARGET else 'missed'}"


def _side(checkout: Path, sizes: list[int], rounds: int) -> dict[str, Any]:
    """``checkout``'s figures, from a process that imports its code (this file run there: an
    older checkout has none)."""
    env = dict(os.environ, PYTHONPATH=str(checkout))
    argv = ["--sizes", ",".join(map(str, sizes)), "--rounds", str(rounds), "--json"]
    run = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *argv],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    sys.stderr.write(run.stderr)
    if run.returncode != 0:
        raise SystemExit(f"js_reads: {checkout} failed (exit {run.returncode})")
    side: dict[str, Any] = json.loads(run.stdout)
    return side


def _table(name: str, measured: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    lines = [f"{name}: the server's CPU a read, ms (this process's in brackets)"]
    lines.append("| messages | " + " | ".join(READERS) + " |")
    lines.append("| --- |" + " --- |" * len(READERS))
    for size, row in measured.items():
        cells = [f"{row[r]['server_ms']:.2f} ({row[r]['own_ms']:.2f})" for r in READERS]
        lines.append(f"| {int(size):,} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.js_reads", description=__doc__)
    parser.add_argument("--sizes", default="1000,16000,64000", help="mailbox sizes, ascending")
    parser.add_argument("--rounds", type=int, default=200, help="reads a reader a size")
    parser.add_argument("--against", type=Path, help="another checkout, measured after")
    parser.add_argument("--out", type=Path, help="the results as JSON")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # (a side's)
    args = parser.parse_args(argv)
    sizes = sorted(int(size) for size in args.sizes.split(","))
    if len(sizes) < 2 or sizes[0] < 11:
        parser.error("--sizes: two or more, the smallest above 10 (a reader reads up to 10)")
    if args.json:
        print(json.dumps(asyncio.run(_measure(sizes, args.rounds))))
        return 0
    sides = {"ours": _side(ROOT, sizes, args.rounds)}
    if args.against is not None:
        sides["against"] = _side(args.against.resolve(), sizes, args.rounds)
    results: dict[str, Any] = {"sizes": sizes, "rounds": args.rounds, "target": GROWTH_TARGET}
    for name, measured in sides.items():
        growth = _growth(measured)
        results[name] = {"reads": measured, "growth": growth}
        print("\n".join(_table(name, measured)))
        print(
            f"{name}: largest / smallest, server CPU a read: "
            + "; ".join(f"{r} {_verdict(g)}" for r, g in growth.items())
            + f" (target {GROWTH_TARGET}x)\n"
        )
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
