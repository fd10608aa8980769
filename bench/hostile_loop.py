"""9d: no request holds the dev broker's loop.

``mq9-dev-broker`` (a process, on its nats-server) serves an honest client that SENDs to its
own mailbox, back to back, and times each SEND; a second process sends the heaviest valid
request of one kind, back to back, or nothing. The kinds: a REGISTER of a card as large as the
broker keeps (64 KiB, a new card each time, unregistered after), a semantic DISCOVER and a text
DISCOVER with a query as large as the broker takes (64 KiB), the listing of a registry of
REGISTRY agents, and a QUERY of 64 KiB of tags on a mailbox of TAGGED messages. The variants
take turns in blocks (``measure.interleave_async_blocks``); the figure is the honest SEND's p99
under each kind against with nothing else running, and the check is the worst kind: target
<= 2x: neither a large semantic query nor a REGISTER's embedding of its card may run on the
loop.

9e: the same honest SEND under a rotating-inbox flood: a client publishing
FLOOD_BURST QUERYs of 16 KiB of tags at once, each under a reply inbox of its own (a requester
of its own for the broker's turns), awaiting every answer, again and again. Target <= 2x idle.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import threading
import time
import uuid

import nats

from mq9_broker.engine.engine import WORKER_NICENESS
from mq9_wire import protocol as p
from testbed.ports import unclaimed_port

from .infra import ROOT, START_TIMEOUT, child_env
from .measure import Stats, fmt_seconds, interleave_async_blocks
from .results import Check

TARGET = 2.0
QUERY_BYTES = 64 * 1024 - 64  # a query as large as a DISCOVER body may be, with its JSON
CARD_BYTES = 64 * 1024 - 512  # a card as large as the broker keeps
KINDS = ("register", "semantic", "text", "listing", "query")
# The flood: costly requests published at once, each under a new reply inbox. Each a
# QUERY of 16 KiB of tags (costly above 4 KiB): a burst of 1,000 of 64 KiB would be 64 MB in
# flight to the broker's one connection, nats-server's max_pending for it (a flood of bytes,
# which would hold any request behind it, not of work)
FLOOD, FLOOD_QUERY_BYTES = "rotating-inbox flood", 16 * 1024
FLOOD_BURST, FLOOD_BURST_QUICK = 1_000, 100
FLOOD_BOX = "flood.tags"
# Not a request: a process burning a core at the worker thread's priority, for the figure of
# what busy cores alone cost the honest client's SEND on this machine
BUSY = "a busy core"
TAGGED_BOX, TAGGED = "heavy.tags", 2_000
PREPARED = 16  # requests of each kind made before the heavy client starts
READY = "mq9 dev broker ready on "
# A setup request's bound (nats-py's default is 0.5 s): a run beside a busy suite waited longer
SETUP_TIMEOUT = 60.0
REGISTRY, REGISTRY_QUICK = 1_000, 50  # agents the searches rank and the listing lists
HONEST_BOX = "honest.box"
# Rounds of blocks of SENDs per variant. A block (~0.3 s) outlasts the slowest heavy request
# (a QUERY's ~0.2 s, a paced listing's ~0.25 s): blocks of 150 SENDs (~50 ms) saw a quarter of
# one, and a p99 over 8 of them turned on whether an answer fell inside (query: 1.8-2.3x in
# such runs, 1.4-1.5x over 4 s windows of the same code, three runs)
ROUNDS, QUICK_ROUNDS = (12, 800), (2, 40)


def _query(seed: int) -> str:
    """Distinct words (so every word is looked up), cut to the largest query taken."""
    return " ".join(f"translate{seed}x{i}" for i in range(QUERY_BYTES // 8))[:QUERY_BYTES]


def heavy_request(kind: str, seed: int) -> tuple[str, bytes]:
    """The heaviest valid request of ``kind``: subject and body."""
    if kind == "register":
        text = (f"contract {seed} translation " * 4000)[:CARD_BYTES]
        return p.AGENT_REGISTER, p.encode(p.agent_card(f"heavy.{seed}", description=text))
    if kind == "semantic":
        return p.AGENT_DISCOVER, p.encode({"semantic": _query(seed)})
    if kind == "text":
        return p.AGENT_DISCOVER, p.encode({"text": _query(seed)})
    if kind == "query":  # every tag the heavy client's mailbox holds, and more: 64 KiB of them
        tags = [f"x/y{i}" for i in range(QUERY_BYTES // 12)]  # a tag takes at most 12 bytes
        return p.query_subject(TAGGED_BOX), p.encode({"tags": tags})
    return p.AGENT_DISCOVER, b"{}"


async def _tagged_mailbox(nc, box: str = TAGGED_BOX) -> None:
    """The heavy client's own mailbox for its QUERYs: TAGGED messages, each two tags."""
    await nc.request(p.MAILBOX_CREATE, p.encode({"name": box, "ttl": 0}), timeout=SETUP_TIMEOUT)
    for i in range(TAGGED):
        await nc.request(
            p.send_subject(box),
            b"m" * 100,
            headers={p.HEADER_TAGS: f"t{i % 50},x/y{i}"},
            timeout=SETUP_TIMEOUT,
        )


async def _paused(running: threading.Event, quiet: threading.Event) -> bool:
    """Whether the heavy client is switched off (``running`` cleared): then it prints "off"
    once when ``quiet`` asks, and waits a moment."""
    if running.is_set():
        return False
    if quiet.is_set():
        quiet.clear()
        print("off", flush=True)
    await asyncio.sleep(0.01)
    return True


async def _flood(nc, burst: int, running: threading.Event, quiet: threading.Event) -> None:
    """The flooder: while ``running``, ``burst`` QUERYs of 16 KiB of tags published at
    once, each under a reply inbox of its own, then every answer awaited; "off" once the burst
    under way is answered. Counts what was refused, on stderr at the end."""
    await _tagged_mailbox(nc, FLOOD_BOX)
    body = p.encode({"tags": [f"x/y{i}" for i in range(FLOOD_QUERY_BYTES // 12)]})
    subject = p.query_subject(FLOOD_BOX)
    answers: asyncio.Queue = asyncio.Queue()
    await nc.subscribe("flood.>", cb=answers.put)
    counts = {"answered": 0, "refused": 0}
    try:
        while True:
            if await _paused(running, quiet):
                continue
            for _ in range(burst):
                await nc.publish(subject, body, reply=f"flood.{uuid.uuid4().hex}.0")
            await nc.flush()
            for _ in range(burst):
                answer = await asyncio.wait_for(answers.get(), 600)
                counts["answered" if b'"error":""' in answer.data[:20] else "refused"] += 1
    finally:
        print(f"flood: {counts}", file=sys.stderr, flush=True)


async def _heavy_loop(
    url: str, kind: str, running: threading.Event, quiet: threading.Event, burst: int
):
    """Send ``kind``'s request back to back while ``running`` is set (the heavy client); when
    it is cleared, print "off" once the request under way is answered (``quiet`` asks)."""
    if kind == BUSY:
        return await asyncio.to_thread(_burn, running, quiet)
    nc = await nats.connect(url)
    if kind == FLOOD:
        try:
            return await _flood(nc, burst, running, quiet)
        finally:
            await nc.close()
    seed = 0
    if kind == "query":
        await _tagged_mailbox(nc)
    # Made beforehand, so this process takes little CPU from the broker's while it runs (a
    # REGISTER needs a new card each time: its vector is cached by text; a card is quick to make)
    ready = [heavy_request(kind, -i) for i in range(PREPARED)]
    try:
        while True:
            if await _paused(running, quiet):
                continue
            seed += 1
            subject, body = (
                heavy_request(kind, seed) if kind == "register" else ready[seed % PREPARED]
            )
            reply = await nc.request(subject, body, timeout=120)
            if b'"error":""' not in reply.data[:20]:
                print(f"heavy {kind} refused: {reply.data[:300]!r}", file=sys.stderr)
            if kind == "register":  # keep the registry as it was
                unregister = p.encode({"name": f"heavy.{seed}"})
                await nc.request(p.AGENT_UNREGISTER, unregister, timeout=120)
    finally:
        await nc.close()


def _burn(running: threading.Event, quiet: threading.Event) -> None:
    """Keep a core busy at the broker's worker priority while ``running`` is set."""
    os.nice(WORKER_NICENESS)
    while True:
        if running.is_set():
            sum(range(10_000))
            continue
        if quiet.is_set():
            quiet.clear()
            print("off", flush=True)
        time.sleep(0.01)


def heavy_main(argv: list[str]) -> None:
    """The heavy client's process: ``on`` and ``off`` lines on stdin switch it; EOF ends it."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--kind", choices=(*KINDS, BUSY, FLOOD), required=True)
    parser.add_argument("--burst", type=int, default=FLOOD_BURST)  # the flood's
    args = parser.parse_args(argv)
    running, quiet = threading.Event(), threading.Event()
    loop = asyncio.new_event_loop()
    task = loop.create_task(_heavy_loop(args.url, args.kind, running, quiet, args.burst))

    run_switched(loop, task, running, quiet)


def run_switched(
    loop: asyncio.AbstractEventLoop,
    task: asyncio.Task[None],
    running: threading.Event,
    quiet: threading.Event,
) -> None:
    """Run a flooding client's ``task`` on ``loop``, ``on`` and ``off`` lines on stdin setting
    ``running`` (``quiet`` once it is off); stdin closed ends it."""

    def read_commands() -> None:
        print("ready", flush=True)
        for line in sys.stdin:
            if line.strip() == "on":
                running.set()
            else:
                running.clear()
                quiet.set()
        loop.call_soon_threadsafe(task.cancel)

    threading.Thread(target=read_commands, daemon=True).start()
    with contextlib.suppress(asyncio.CancelledError):  # stdin closed: the parent is done
        loop.run_until_complete(task)


class _Child:
    """A process of ours, stopped by its own handle."""

    def __init__(self, args: list[str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=child_env(),
        )

    def wait_for(self, prefix: str) -> str:
        found: list[str] = []

        def read() -> None:
            assert self.process.stdout is not None
            for line in self.process.stdout:
                if line.startswith(prefix):
                    found.append(line.strip())
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(START_TIMEOUT)
        if not found:
            self.stop()
            raise RuntimeError(f"{self.process.args!r} did not print {prefix!r}")
        return found[0]

    def say(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


async def _fill_registry(nc, agents: int) -> None:
    for i in range(agents):
        card = p.agent_card(
            f"agent.{i}", description=f"agent {i} translates, summarizes and reviews " * 40
        )
        await nc.request(p.AGENT_REGISTER, p.encode(card), timeout=60)


async def _measure_sends(url: str, heavy: dict[str, _Child], quick: bool) -> dict[str, Stats]:
    nc = await nats.connect(url)
    try:
        honest = p.encode({"name": HONEST_BOX, "ttl": 0})
        await nc.request(p.MAILBOX_CREATE, honest, timeout=SETUP_TIMEOUT)
        await _fill_registry(nc, REGISTRY_QUICK if quick else REGISTRY)
        subject = p.send_subject(HONEST_BOX)

        def runner(kind: str | None):
            async def timed(n: int) -> list[float]:
                others = [child for name, child in heavy.items() if name != kind]
                for child in others:  # the idle broker: nothing of theirs still running
                    child.say("off")
                for child in others:
                    await asyncio.to_thread(child.wait_for, "off")
                if kind is not None:
                    heavy[kind].say("on")
                    await asyncio.sleep(0.2)  # its requests are under way
                out = []
                for _ in range(n):
                    started = time.perf_counter()
                    await nc.request(subject, b"hello", timeout=30)
                    out.append(time.perf_counter() - started)
                return out

            return timed

        runners = {"idle": runner(None)} | {kind: runner(kind) for kind in heavy}
        rounds, block = QUICK_ROUNDS if quick else ROUNDS
        return await interleave_async_blocks(runners, rounds=rounds, block=block, warmup=20)
    finally:
        for child in heavy.values():
            child.say("off")
        await nc.close()


def measure(quick: bool) -> tuple[list[Check], list[tuple[str, str]], list[str]]:
    port = unclaimed_port()
    broker = _Child(["-m", "mq9_broker", "--port", str(port)])
    url = f"nats://127.0.0.1:{port}"
    heavy: dict[str, _Child] = {}
    try:
        broker.wait_for(READY)
        burst = str(FLOOD_BURST_QUICK if quick else FLOOD_BURST)
        for kind in (*KINDS, BUSY, FLOOD):  # started together, then waited for
            heavy[kind] = _Child(
                ["-m", "bench.hostile_loop", "--url", url, "--kind", kind, "--burst", burst]
            )
        for child in heavy.values():
            child.wait_for("ready")
        stats = asyncio.run(_measure_sends(url, heavy, quick))
    finally:
        for child in heavy.values():
            child.stop()
        broker.stop()
    idle = stats["idle"].quantile(0.99)
    ratios = {kind: stats[kind].quantile(0.99) / idle for kind in KINDS}
    worst = max(ratios, key=ratios.get)
    check = Check(
        key="9d",
        title="another client's SEND under the heaviest request of each kind vs idle "
        "(dev broker process; worst kind)",
        ours_label=f"p99 under {worst}",
        ours=fmt_seconds(stats[worst].quantile(0.99)),
        baseline_label="p99 idle",
        baseline=fmt_seconds(idle),
        ratio=ratios[worst],
        op="<=",
        limit=TARGET,
        note=f"{stats['idle'].n} SENDs per variant; registry of "
        f"{REGISTRY_QUICK if quick else REGISTRY} agents; beside {BUSY} alone, no request: "
        f"p99 {fmt_seconds(stats[BUSY].quantile(0.99))} "
        f"({stats[BUSY].quantile(0.99) / idle:.2f}x idle)",
    )
    figures = [("honest SEND idle (p50 / p99)", _p50_p99(stats["idle"]))]
    figures += [
        (
            f"honest SEND under {kind} (p50 / p99; p99 {ratios[kind]:.2f}x idle)",
            _p50_p99(stats[kind]),
        )
        for kind in KINDS
    ]
    figures.append((f"honest SEND beside {BUSY} (p50 / p99)", _p50_p99(stats[BUSY])))
    flood = stats[FLOOD].quantile(0.99) / idle
    figures.append((f"honest SEND under the {FLOOD} (p50 / p99)", _p50_p99(stats[FLOOD])))
    flood_check = Check(
        key="9e",
        title=f"another client's SEND under the {FLOOD} vs idle (dev broker process)",
        ours_label="p99 under the flood",
        ours=fmt_seconds(stats[FLOOD].quantile(0.99)),
        baseline_label="p99 idle",
        baseline=fmt_seconds(idle),
        ratio=flood,
        op="<=",
        limit=TARGET,
        note=f"{stats[FLOOD].n} SENDs; bursts of {burst} QUERYs of 16 KiB of tags, each under "
        "a reply inbox of its own",
    )
    notes = [
        "9d: the heavy client sends, back to back, a REGISTER of a 64 KiB card (a new one each "
        "time, unregistered after), a semantic or a text DISCOVER with a 64 KiB query (the "
        "largest body a DISCOVER may have), the listing of every agent, or a QUERY of 64 KiB of "
        f"tags on a mailbox of {TAGGED:,} messages with two tags each. Beside {BUSY}: no "
        "request, another process spinning at the worker thread's priority (nice "
        f"{WORKER_NICENESS}), what busy cores alone cost the SEND here.",
    ]
    notes.append(
        f"9e: the flooder publishes {burst} QUERYs of 16 KiB of tags at once on a "
        f"mailbox of {TAGGED:,} messages, each under a reply inbox of its own, and awaits every "
        "answer before the next burst (the broker bounds costly requests in all, so a burst waits "
        "its turn rather than each running at once)."
    )
    return [check, flood_check], figures, notes


def _p50_p99(stats: Stats) -> str:
    return f"{fmt_seconds(stats.median)} / {fmt_seconds(stats.quantile(0.99))}"


if __name__ == "__main__":
    heavy_main(sys.argv[1:])
