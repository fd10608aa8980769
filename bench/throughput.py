"""Target 5: how many SEND+FETCH+ACK cycles a second the dev broker sustains on nats-server.

The bundled engine served with ``serve_on_nats`` (what ``mq9-dev-broker`` runs) and a canned
responder (answers the same commands, does nothing) sit on the same nats-server, in processes
of their own, and take turns answering the same load: concurrent Mq9Client workers in separate
load processes, each looping SEND → FETCH (consumer group) → ACK on its own mailbox.

The load processes, the responder and nats-server share the machine's cores, so the rate is a
whole-system figure; the responder's own CPU time per cycle is reported beside it, which is the
broker's cost independent of who else is busy.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
from pathlib import Path

import nats

from .config import Config
from .infra import ROOT, START_TIMEOUT, Network, child_env
from .measure import fmt_seconds
from .results import Check, Section


def cpu_exact(pid: int) -> float | None:
    """The CPU seconds of a process's live threads so far, to the nanosecond (Linux
    /proc/<pid>/task/*/schedstat: ``cpu_seconds`` counts 10 ms ticks, too coarse for a block
    of a few thousand requests); None elsewhere. A thread that ended meanwhile is not counted:
    for a process whose threads live as long as it does."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
        return sum(int((task / "schedstat").read_text().split()[0]) for task in tasks) / 1e9
    except (OSError, ValueError, IndexError):
        return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux /proc), None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class LoadProcess:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, url: str, workers: int, tag: int) -> LoadProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.load",
            "--url",
            url,
            "--workers",
            str(workers),
            "--tag",
            str(tag),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
            env=child_env(),
        )
        load = cls(process)
        line = await load._line(START_TIMEOUT)
        if line != "ready":
            raise RuntimeError(f"load generator did not start: {line!r}")
        return load

    async def _line(self, timeout: float) -> str:
        assert self.process.stdout is not None
        raw = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        return raw.decode().strip()

    async def ask(self, command: str, timeout: float) -> dict:
        assert self.process.stdin is not None
        self.process.stdin.write(command.encode() + b"\n")
        await self.process.stdin.drain()
        return json.loads(await self._line(timeout))

    async def stop(self) -> None:
        if self.process.returncode is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


async def _measure(cfg: Config, net: Network, section: Section) -> None:
    control = await nats.connect(net.url)
    loads: list[LoadProcess] = []
    try:
        loads = list(
            await asyncio.gather(
                *(
                    LoadProcess.start(net.url, cfg.workers_per_process, i)
                    for i in range(cfg.load_processes)
                )
            )
        )
        await net.serve(control, "engine")
        await asyncio.gather(*(load.ask("setup", 30) for load in loads))
        pids = {kind: r.process.pid for kind, r in net.responders.items()}
        nats_pid = net.nats.process.pid

        async def round_of(kind: str, seconds: float) -> tuple[float, float | None, float | None]:
            await net.serve(control, kind, fetch_count=1)
            before = cpu_seconds(pids[kind]), cpu_seconds(nats_pid)
            answers = await asyncio.gather(
                *(load.ask(f"run {seconds}", seconds + 60) for load in loads)
            )
            after = cpu_seconds(pids[kind]), cpu_seconds(nats_pid)
            cycles = sum(a["cycles"] for a in answers)
            elapsed = max(a["seconds"] for a in answers)
            costs = [
                (b - a) / cycles if a is not None and b is not None and cycles else None
                for a, b in zip(before, after, strict=True)
            ]
            return cycles / elapsed, costs[0], costs[1]

        if not cfg.quick:
            for kind in ("canned", "engine"):  # warm-up, not kept
                await round_of(kind, 0.5)
        rates: dict[str, list[float]] = {"engine": [], "canned": []}
        cpu: dict[str, list[float]] = {"engine": [], "canned": []}
        nats_cpu: dict[str, list[float]] = {"engine": [], "canned": []}
        for i in range(cfg.load_rounds):
            for kind in ("engine", "canned") if i % 2 == 0 else ("canned", "engine"):
                rate, own, server = await round_of(kind, cfg.load_seconds)
                rates[kind].append(rate)
                if own is not None:
                    cpu[kind].append(own)
                if server is not None:
                    nats_cpu[kind].append(server)
    finally:
        await asyncio.gather(*(load.stop() for load in loads))
        await control.close()

    engine, canned = statistics.median(rates["engine"]), statistics.median(rates["canned"])
    workers = cfg.load_processes * cfg.workers_per_process
    section.checks.append(
        Check(
            key="5",
            title=f"dev broker (serve_on_nats) vs trivial responder: SEND+FETCH+ACK cycles/s, "
            f"{workers} concurrent clients",
            ours_label="engine",
            ours=f"{engine:,.0f} cycles/s",
            baseline_label="canned responder",
            baseline=f"{canned:,.0f} cycles/s",
            ratio=engine / canned,
            op=">=",
            limit=0.7,
        )
    )
    for kind in ("engine", "canned"):
        section.figures.append(
            (f"{kind}: cycles/s per round", ", ".join(f"{r:,.0f}" for r in rates[kind]))
        )
        if cpu[kind]:
            section.figures.append(
                (
                    f"{kind}: responder CPU per cycle (3 requests)",
                    fmt_seconds(statistics.median(cpu[kind])),
                )
            )
        if nats_cpu[kind]:
            median = statistics.median(nats_cpu[kind])
            section.figures.append((f"{kind}: nats-server CPU per cycle", fmt_seconds(median)))
    if cpu["engine"] and cpu["canned"]:
        share = statistics.median(cpu["canned"]) / statistics.median(cpu["engine"])
        section.figures.append(
            (
                "canned / engine responder CPU per cycle",
                f"{share:.2f} (what the rate ratio would be if the broker process alone "
                "were the bottleneck)",
            )
        )


def run(cfg: Config, net: Network) -> Section:
    section = Section("throughput", "Dev-broker throughput on nats-server (target 5)")
    asyncio.run(_measure(cfg, net, section))
    section.notes.append(
        f"{cfg.load_processes} load process(es) × {cfg.workers_per_process} Mq9Client workers, "
        f"each looping SEND (200 bytes) → FETCH 1 (consumer group) → ACK on its own mailbox; "
        f"{cfg.load_rounds} rounds of {cfg.load_seconds:g} s per responder, alternating; "
        "medians. The engine runs `serve_on_nats` in its own process, as `mq9-dev-broker` does."
    )
    return section
