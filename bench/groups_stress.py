"""Target 10: competing workers under ``kill -9`` (docs/groups.md, scenario 7).

Worker processes read one mailbox as competing workers of one group (``GroupReader`` with a
``worker`` name and a short lease), each logging every message it handles before it calls
``done`` and every batch once ``done`` returned. Messages of mixed priorities arrive while
workers are killed at random with SIGKILL and started again, half under the same name and
half under a new one. Then the survivors drain the mailbox, and the logs are counted exactly:

- lost: messages nobody handled (target 0);
- repeats by live workers: a message handled again although every earlier handling of it was
  acked by a worker that was not killed first (target 0);
- repeats after a kill: handled again after the worker holding it was killed before its ack
  (allowed, counted);
- internal mailboxes left one lease TTL after the workers stopped (target 0): a CREATE of the
  lease mailbox's name succeeds only when it is gone;
- one poison message among them, whose handling always fails (``GroupReader.fail``, tried again
  at once): it must end in the dead-letter mailbox (target: not missing), whoever held it when
  the kills fell, and the others be handled as above.

    python -m bench.groups_stress                        # on the bundled broker, full size
    python -m bench.groups_stress --url nats://127.0.0.1:4222 --gc-wait 75   # on RobustMQ

(RobustMQ removes expired mailboxes every 60 s: ``--gc-wait`` gives its GC that long.)
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from langchain_mq9 import GroupReader, Mq9Client
from mq9_platform.groups.dead_letters import DeadLetter, dead_letter_address
from mq9_platform.groups.leases import lease_address

from .config import Config
from .results import Check, Section

TITLE = "Competing workers under kill -9 (target 10)"
GROUP = "stress"
POISON = b"poison"
PRIORITIES = ("normal", "normal", "urgent", "critical")


# -- a worker process ----------------------------------------------------------------------------


async def work(url: str, box: str, name: str, lease_ttl: int, log: Path) -> None:
    """Handle messages until killed or until the mailbox stays empty for a while."""
    rng = random.Random()
    async with Mq9Client(url) as client:
        reader = GroupReader(client, box, GROUP, worker=name, lease_ttl=lease_ttl)
        idle_since = time.monotonic()
        with log.open("a", buffering=1) as out:
            while time.monotonic() - idle_since < 2 * lease_ttl:
                batch = await reader.fetch(num_msgs=rng.randint(1, 5), max_wait_ms=200)
                if not batch:
                    continue
                idle_since = time.monotonic()
                handled = []
                for message in batch:  # "handling": a short piece of work, then the record
                    if message.payload == POISON:
                        await fail_for_ever(reader, message.msg_id)
                        continue
                    await asyncio.sleep(rng.uniform(0, 0.01))
                    out.write(f"handled {message.msg_id} {name} {os.getpid()} {time.time():.3f}\n")
                    handled.append(message.msg_id)
                if handled:
                    await reader.done(handled)
                    out.write(f"acked {' '.join(str(i) for i in handled)} {os.getpid()}\n")


async def fail_for_ever(reader: GroupReader, msg_id: int) -> None:
    """A handler that always fails, tried again at once until the message is set aside."""
    while not (await reader.fail(msg_id, "ValueError: the poison cannot be parsed")).dead_lettered:
        await asyncio.sleep(0.02)


# -- the run ---------------------------------------------------------------------------------------


class Fleet:
    """The worker processes, their logs, and who was killed when."""

    def __init__(self, url: str, box: str, lease_ttl: int, folder: Path) -> None:
        self.url, self.box, self.lease_ttl, self.folder = url, box, lease_ttl, folder
        self.procs: dict[int, tuple[subprocess.Popen, str]] = {}  # slot -> (process, name)
        self.killed: set[int] = set()  # pids
        self.stuck: set[int] = set()  # pids that did not stop by themselves
        self.names = 0

    def start(self, slot: int, name: str | None = None) -> None:
        if name is None:
            self.names += 1
            name = f"w{self.names}"
        log = self.folder / f"{name}.log"
        command = [sys.executable, "-m", "bench.groups_stress", "worker", "--url", self.url]
        command += ["--box", self.box, "--name", name, "--lease-ttl", str(self.lease_ttl)]
        command += ["--log", str(log)]
        errors = (self.folder / f"{name}.err").open("a")
        process = subprocess.Popen(command, cwd=Path(__file__).parent.parent, stderr=errors)
        self.procs[slot] = (process, name)

    def kill(self, slot: int, same_name: bool) -> None:
        process, name = self.procs[slot]
        process.send_signal(signal.SIGKILL)
        process.wait()
        self.killed.add(process.pid)
        self.start(slot, name if same_name else None)

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for process, _ in self.procs.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:  # stuck: say where (faulthandler), then end it
                process.send_signal(signal.SIGUSR1)
                time.sleep(0.5)
                process.kill()
                process.wait()
                self.stuck.add(process.pid)


def count(folder: Path, sent: set[int], killed: set[int]) -> dict[str, int]:
    """Read every worker's log: who handled what, and which handlings were acked."""
    handlings: dict[int, list[tuple[float, int]]] = defaultdict(list)  # msg_id -> (when, pid)
    acked: set[tuple[int, int]] = set()  # (msg_id, pid)
    for log in folder.glob("*.log"):
        for line in log.read_text().splitlines():
            parts = line.split()
            if parts[:1] == ["handled"] and len(parts) == 5:
                handlings[int(parts[1])].append((float(parts[4]), int(parts[3])))
            elif parts[:1] == ["acked"] and len(parts) >= 3:
                pid = int(parts[-1])
                acked.update((int(i), pid) for i in parts[1:-1])
    live_repeats = killed_repeats = 0
    examples: list[tuple[int, list[int]]] = []
    for msg_id, handled_by in handlings.items():
        pids = [pid for _, pid in sorted(handled_by)]  # in the order they happened
        for later in range(1, len(pids)):
            # a repeat is allowed when an earlier handling was never acked by a process that
            # was killed: its worker died holding it
            if any(p in killed and (msg_id, p) not in acked for p in pids[:later]):
                killed_repeats += 1
            else:
                live_repeats += 1
                examples.append((msg_id, pids))
    return {
        "sent": len(sent),
        "handled": len(handlings),
        "lost": len(sent - set(handlings)),
        "live_repeats": live_repeats,
        "killed_repeats": killed_repeats,
        "handlings": sum(len(p) for p in handlings.values()),
        "live_repeat_examples": examples[:5],
    }


async def stress(
    url: str,
    *,
    workers: int,
    messages: int,
    kills: int,
    lease_ttl: int,
    gc_wait: float,
    seed: int = 7,
) -> dict[str, int]:
    rng = random.Random(seed)
    box = f"stress.{int(time.time() * 1000)}"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(os.environ.get("MQ9_STRESS_LOGS") or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        async with Mq9Client(url) as client:
            await client.mailbox_create(name=box, ttl=0)
            fleet = Fleet(url, box, lease_ttl, folder)
            for slot in range(workers):
                fleet.start(slot)
            sent: set[int] = set()
            poison: int | None = None
            kills_left, per_burst = kills, max(1, messages // max(kills, 1))
            while len(sent) < messages:
                if poison is None and len(sent) >= messages // 3:
                    poison = await client.send(box, POISON, priority="normal")
                for _ in range(min(per_burst, messages - len(sent))):
                    sent.add(await client.send(box, "job", priority=rng.choice(PRIORITIES)))
                await asyncio.sleep(rng.uniform(0.02, 0.15))
                if kills_left:
                    fleet.kill(rng.randrange(workers), same_name=rng.random() < 0.5)
                    kills_left -= 1
            while kills_left:  # the rest of the kills once everything is sent
                await asyncio.sleep(rng.uniform(0.05, 0.2))
                fleet.kill(rng.randrange(workers), same_name=rng.random() < 0.5)
                kills_left -= 1
            # Let the survivors drain: they stop after 2 lease TTLs with nothing to do.
            await asyncio.to_thread(fleet.wait, 60 + 8 * lease_ttl)
            result = count(folder, sent, fleet.killed)
            result["stuck"] = len(fleet.stuck)
            result["poison_copies"] = await _dead_letters_of(client, box, poison)
            result["examples_records"] = await _records_of(
                client, box, [msg_id for msg_id, _ in result["live_repeat_examples"]]
            )
            # The workers idled two lease TTLs before they stopped: the lease mailbox, made for
            # one lease TTL at a time, is gone, and a CREATE of its name succeeds.
            result["mailboxes_left"] = await _lease_mailbox_left(
                client, lease_address(box, GROUP), gc_wait
            )
            result["kills"] = kills
            result["workers"] = workers
            return result


async def _records_of(client: Mq9Client, box: str, msg_ids: list[int]) -> list[str]:
    """The lease records of some messages, to see why one was handled twice."""
    out = []
    for msg_id in msg_ids:
        [message] = await client.fetch(box, deliver="from_id", from_id=msg_id, num_msgs=1)
        tags = [f"c{msg_id}.{message.create_time}", f"d{msg_id}.{message.create_time}"]
        for r in await client.query(lease_address(box, GROUP), tags=tags):
            out.append(f"{msg_id}: #{r.msg_id} {r.text()} at {r.create_time} {r.tags}")
    return out


async def _dead_letters_of(client: Mq9Client, box: str, msg_id: int | None) -> int:
    """Copies of the poison in the dead-letter mailbox (more than one: a worker was killed
    between storing the copy and its done record)."""
    try:
        letters = [DeadLetter.read(m) for m in await client.query(dead_letter_address(box))]
    except Exception:
        return 0
    return sum(1 for letter in letters if letter.msg_id == msg_id)


async def _lease_mailbox_left(client: Mq9Client, address: str, gc_wait: float) -> int:
    deadline = time.monotonic() + gc_wait
    while True:
        try:
            await client.mailbox_create(name=address, ttl=1)
            return 0
        except Exception as exc:
            if "already exists" not in str(exc) or time.monotonic() > deadline:
                return 1
            await asyncio.sleep(1)


# -- as a bench section ----------------------------------------------------------------------------


def on_bundled_broker(**options) -> dict[str, int]:
    """``stress`` on the bundled broker, served on a nats-server of its own."""
    import nats

    from mq9_broker import BrokerEngine, serve_on_nats
    from mq9_wire.nats_floor.server_process import start_nats_server

    async def serving(url: str) -> dict[str, int]:
        connection = await nats.connect(url)
        service = await serve_on_nats(BrokerEngine(), connection)
        try:
            return await stress(url, **options)
        finally:
            await service.stop()
            await connection.close()

    with start_nats_server() as server:
        return asyncio.run(serving(server.url))


def run(cfg: Config) -> Section:
    workers, messages, kills, lease_ttl = (2, 100, 4, 5) if cfg.quick else (4, 1_000, 40, 5)
    result = on_bundled_broker(
        workers=workers, messages=messages, kills=kills, lease_ttl=lease_ttl,
        gc_wait=lease_ttl + 2,
    )  # fmt: skip
    section = Section("groups", TITLE)
    poison_missing = int(result["poison_copies"] == 0)
    for key, title, value in (
        ("10a", "messages lost (nobody handled them)", result["lost"]),
        ("10b", "repeats by live workers (every earlier handling acked)", result["live_repeats"]),
        (
            "10c",
            "lease mailboxes left once the workers had been idle for a lease TTL",
            result["mailboxes_left"],
        ),
        ("10d", "the poison message missing from the dead-letter mailbox", poison_missing),
    ):
        section.checks.append(
            Check(
                key=key,
                title=title,
                ours_label="count",
                ours=str(value),
                baseline_label="allowed",
                baseline="0",
                ratio=float(value),
                op="<=",
                limit=0,
                ratio_label="count",
            )
        )
    section.figures.append(("10: the run", json.dumps(result)))
    section.notes.append(
        f"{workers} worker processes, {messages} messages (normal, urgent, critical), {kills} "
        f"random kill -9s (half restarted under the same name, half under a new one), lease "
        f"{lease_ttl} s, on the bundled broker served on nats-server, and one poison message "
        f"(dead-lettered {result['poison_copies']} time(s)). Repeats after a kill "
        f"({result['killed_repeats']}) are allowed: the worker died holding the message."
    )
    return section


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.groups_stress", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    worker = sub.add_parser("worker")
    for option in ("--url", "--box", "--name", "--log"):
        worker.add_argument(option, required=True)
    worker.add_argument("--lease-ttl", type=int, required=True)
    parser.add_argument("--url", help="a running broker (RobustMQ); default: the bundled one")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--messages", type=int, default=1_000)
    parser.add_argument("--kills", type=int, default=40)
    parser.add_argument("--lease-ttl", type=int, default=5)
    parser.add_argument("--gc-wait", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=7, help="where the kills fall")
    args = parser.parse_args()
    if args.command == "worker":
        faulthandler.register(signal.SIGUSR1)
        asyncio.run(work(args.url, args.box, args.name, args.lease_ttl, Path(args.log)))
        return
    options = {k: getattr(args, k) for k in ("workers", "messages", "kills", "lease_ttl", "seed")}
    if args.url is None:
        result = on_bundled_broker(gc_wait=args.lease_ttl + 2, **options)
    else:
        result = asyncio.run(stress(args.url, gc_wait=args.gc_wait, **options))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
