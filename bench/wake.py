"""Mail that wakes its agent (target 17): how long from a SEND to the webhook's
POST, and what one waker costs watching many mailboxes.

The broker is ``mq9-dev-broker`` (a process, on its nats-server), with ``--announce`` for the
event-driven rows and without for the polling ones. The webhook receiver is a small HTTP server
in this process on loopback.

- 17a: wake latency, event-driven: one mailbox, one rule (min_interval 0), one message at a
  time; from just before the SEND to the POST's arrival. p50 against the 20 ms target.
- 17b: the same with polling every 0.1 s (RobustMQ's way: no announcements).
- 17c: one ``mq9-wake`` process watching N mailboxes with rules, 1% of them active (a message
  each every second): its CPU (seconds of CPU per second) and resident memory, at two sizes,
  and how both grow.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from .config import Config
from .infra import child_env
from .results import Check, Section

TITLE = "Mail that wakes its agent: arrival to webhook, and one waker's cost (target 17)"
READY = "mq9 dev broker ready on "
SECRET = "bench-secret-bench-secret"
TARGET_P50 = 0.020  # seconds


class _Receiver:
    """A minimal HTTP receiver: the time each POST's body arrived, by wake key."""

    def __init__(self) -> None:
        self.times: list[tuple[float, bytes]] = []
        self.arrived = asyncio.Event()
        self.url = ""
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> _Receiver:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                self.times.append((time.perf_counter(), body))
                self.arrived.set()
                writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()


class _Broker:
    def __init__(self, *args: str) -> None:

        self.process = subprocess.Popen(
            [sys.executable, "-m", "mq9_broker", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=child_env(),
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + 60
        self.url = ""
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if line.startswith(READY):
                self.url = line[len(READY) :].strip()
                break
            if not line and self.process.poll() is not None:
                break
        if not self.url:
            self.stop()
            raise RuntimeError(f"mq9-dev-broker {' '.join(args)} did not get ready")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _latencies(url: str, rounds: int, events: bool) -> list[float]:
    from langchain_mq9 import Mq9Client
    from mq9_platform.wake import Deliverer, Destinations, Limits, RuleBook, Waker, WakeRule

    receiver = await _Receiver().start()
    async with Mq9Client(url) as client:
        await client.mailbox_create(name="bench.wake")
        await RuleBook(client).add(
            WakeRule(
                mailbox="bench.wake",
                target="webhook",
                url=receiver.url,
                secret=SECRET,
                min_interval=0,
            )
        )
        # the operator lifts the floor and the ceiling: every SEND is a wake to time
        limits = Limits(min_interval=0, runs_per_hour=10**6, runs_per_rule=10**6)
        waker = Waker(
            client,
            Deliverer(Destinations(hosts=["127.0.0.1/32"]), limits=limits),
            events=events,
            poll_interval=0.1,
        )
        await waker.start()
        found: list[float] = []
        try:
            for n in range(rounds + 3):
                receiver.arrived.clear()
                before = len(receiver.times)
                started = time.perf_counter()
                await client.send("bench.wake", f"mail {n}")
                while len(receiver.times) == before:
                    await asyncio.wait_for(receiver.arrived.wait(), 30)
                    receiver.arrived.clear()
                if n >= 3:  # the first ones warm the connections up
                    found.append(receiver.times[before][0] - started)
                await asyncio.sleep(0.02)  # the waker stores its state and drops its claim
        finally:
            await waker.stop()
            await receiver.stop()
    return found


def _proc(pid: int) -> tuple[float, int]:
    """(CPU seconds, resident bytes) of process ``pid``, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    return cpu, rss


async def _scale(url: str, mailboxes: int, seconds: float) -> tuple[float, int, int, float]:
    """One mq9-wake process watching ``mailboxes``, 1% active: (CPU per second, RSS, wakes,
    seconds from SIGTERM to its exit)."""
    from langchain_mq9 import Mq9Client
    from mq9_platform.wake import RuleBook, WakeRule

    receiver = await _Receiver().start()
    names = [f"bench.m{mailboxes}.{n}" for n in range(mailboxes)]
    async with Mq9Client(url) as client:
        book = RuleBook(client)

        async def one(name: str) -> None:
            await client.mailbox_create(name=name)
            await book.add(
                WakeRule(
                    mailbox=name, target="webhook", url=receiver.url, secret=SECRET, min_interval=0
                )
            )

        for start in range(0, mailboxes, 64):
            await asyncio.gather(*(one(n) for n in names[start : start + 64]))
        waker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mq9_platform.wake",
                "--server",
                url,
                "--allow-host",
                "127.0.0.1/32",
                "--log-level",
                "WARNING",
                # one receiver for every mailbox: the operator's ceilings lifted
                "--floor-interval",
                "0",
                "--runs-per-hour",
                "1000000",
                "--runs-per-rule",
                "1000000",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=child_env(),
        )
        try:
            assert waker.stdout is not None
            await asyncio.to_thread(waker.stdout.readline)  # watching: its first sweep is done
            await asyncio.sleep(1.0)
            active = names[::100] or names[:1]
            cpu0, _ = _proc(waker.pid)
            began = time.monotonic()
            while time.monotonic() - began < seconds:
                tick = time.monotonic()
                await asyncio.gather(*(client.send(n, "mail") for n in active))
                await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
            await asyncio.sleep(0.5)
            cpu1, rss = _proc(waker.pid)
            elapsed = time.monotonic() - began
        finally:
            waker.terminate()
            signalled = time.monotonic()
            # waited for in a thread: this loop serves the receiver, and a loop blocked here
            # left the waker's POSTs unanswered while it stopped (each try's 10 s)
            await asyncio.to_thread(waker.wait, 30)
            exited = time.monotonic() - signalled
            await receiver.stop()
    return (cpu1 - cpu0) / elapsed, rss, len(receiver.times), exited


def run(cfg: Config, network: object = None) -> Section:
    section = Section("wake", TITLE)
    rounds = 20 if cfg.quick else 200
    sizes = (100, 1000) if cfg.quick else (1000, 10_000)
    window = 5.0 if cfg.quick else 30.0
    announced = _Broker("--announce")
    try:
        events = asyncio.run(_latencies(announced.url, rounds, events=True))
        p50, p99 = _quantile(events, 0.5), _quantile(events, 0.99)
        section.checks.append(
            Check(
                key="17a",
                title="Wake latency, event-driven (SEND to webhook POST)",
                ours_label="p50",
                ours=f"{p50 * 1000:.1f} ms",
                baseline_label="target",
                baseline=f"{TARGET_P50 * 1000:.0f} ms",
                ratio=p50 / TARGET_P50,
                op="<=",
                limit=1.0,
                ratio_label="p50 / 20 ms",
            )
        )
        section.figures.append(
            (
                "17a wake latency p50 / p99 (event-driven)",
                f"{p50 * 1000:.1f} / {p99 * 1000:.1f} ms, {len(events)} wakes",
            )
        )
        scaled = [asyncio.run(_scale(announced.url, n, window)) for n in sizes]
        for n, (cpu, rss, wakes, exited) in zip(sizes, scaled, strict=True):
            section.figures.append(
                (
                    f"17c one waker, {n:,} mailboxes, 1% active (a message each a second)",
                    f"CPU {cpu * 100:.1f}% of a core, RSS {rss / 2**20:.0f} MiB, {wakes} wakes "
                    f"in {window:.0f} s; exit {exited:.1f} s after SIGTERM",
                )
            )
        (cpu_a, rss_a, _, _), (cpu_b, rss_b, _, _) = scaled
        section.figures.append(
            (
                f"17c growth from {sizes[0]:,} to {sizes[1]:,} mailboxes",
                f"CPU x{cpu_b / max(cpu_a, 1e-9):.1f}, RSS +{(rss_b - rss_a) / 2**20:.1f} MiB "
                f"({(rss_b - rss_a) / (sizes[1] - sizes[0]):.0f} bytes a mailbox)",
            )
        )
    finally:
        announced.stop()
    polled = _Broker()
    try:
        polls = asyncio.run(_latencies(polled.url, max(10, rounds // 4), events=False))
        section.figures.append(
            (
                "17b wake latency p50 / p99, polling every 0.1 s (no announcements: RobustMQ)",
                f"{_quantile(polls, 0.5) * 1000:.1f} / {_quantile(polls, 0.99) * 1000:.1f} ms, "
                f"{len(polls)} wakes",
            )
        )
    finally:
        polled.stop()
    section.notes.append(
        "A wake is a FETCH (has anything arrived?), a claim (SEND), the rules, claims and "
        "state read at once (QUERY: a removed rule wakes nothing), the count of what waits "
        "(a FETCH per 500 messages a lane), the POST, and the state written, which releases "
        "the claim: 5 broker round trips and one HTTP request. With "
        "polling, a mailbox costs one FETCH per interval whether mail came or not; with "
        "announcements, nothing until it does "
        "(and one FETCH per mailbox per 30 s sweep)."
    )
    return section


if __name__ == "__main__":
    from .config import FULL, QUICK

    quick = "--quick" in sys.argv
    result = run(QUICK if quick else FULL)
    for what, value in result.figures:
        print(f"{what}: {value}")
    for check in result.checks:
        print(check.key, check.title, check.ours, check.target, check.passed)
