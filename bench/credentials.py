"""Per-agent credentials: what an agent's SEND and FETCH cost on a dev broker that
enforces them, against the open dev broker.

Two ``mq9-dev-broker`` processes run side by side, each with its own nats-server: the open one
(the default) and one started with ``--credentials`` (nats-server asks the broker at login and
holds the agent to ``$mq9.U.<id>.>``; the broker checks the revocation and the ownership of
every request). Both keep messages in memory. One ``Mq9Client`` each, the credentialed one with
its agent's credential (it switches to the prefixed form at its first request, before any is
timed). Requests alternate between the two one by one (the order flips every round), each timed
alone; a run's figure is the median, and the target's ratio the median over the runs. A third
client carries the credential to the open broker (which never asks for the prefixed form): its
ratio to the plain client, alternating with it in a pair of their own, is the client's own
share of the cost. Always two modes at a time: with three alternating, the one in the middle
never follows itself, and finds the caches the colder for it.

    python -m bench.credentials [--quick] [--runs N]
"""

from __future__ import annotations

import argparse
import asyncio
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

from langchain_mq9 import Mq9Client

from .config import Config
from .infra import START_TIMEOUT, child_env
from .measure import Stats, fmt_seconds, interleave_async
from .results import Check, Section

TITLE = "Per-agent credentials: SEND and FETCH against the open broker"
LIMIT = 1.1  # the credentialed broker's median within 1.1x of the open one's
READY = "mq9 dev broker ready on "
KEYS = {"SEND": "15a", "FETCH": "15b"}  # the rows of target 15
RUNS = {False: 5, True: 2}  # by cfg.quick
ROUNDS = {False: 1_000, True: 40}  # requests of each kind per mode and run
FETCHED = 10  # messages in the mailbox FETCH reads (the first one, without a group)


class DevBroker:
    """``python -m mq9_broker ARGS`` on a free loopback port, until ``stop``."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mq9_broker", "--port", "0", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=child_env(),
        )
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, args=(lines,), daemon=True).start()
        try:
            line = lines.get(timeout=START_TIMEOUT)
        except queue.Empty:
            line = ""
        if not line.startswith(READY):
            self.stop()
            raise RuntimeError(f"mq9-dev-broker {' '.join(args)} did not get ready")
        self.url = line[len(READY) :].strip()

    def _read(self, lines: queue.Queue[str]) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:  # read to the end: the pipe never fills
            if line.startswith(READY):
                lines.put(line)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def issue(place: Path, name: str) -> str:
    """A credential for ``name``, where a broker started with ``--credentials place`` reads."""
    from mq9_broker.identities.store import IdentityStore

    store = IdentityStore(place / "mq9-identities.sqlite3")
    try:
        return f"{name}:{store.issue(name)}"
    finally:
        store.close()


def _sender(client: Mq9Client, box: str) -> Callable[[], Awaitable[object]]:
    async def send() -> None:
        await client.send(box, "x" * 100)

    return send


def _fetcher(client: Mq9Client, shelf: str) -> Callable[[], Awaitable[object]]:
    async def fetch() -> None:  # the first message, no group: nothing moves
        await client.fetch(shelf, deliver="earliest", num_msgs=1, max_wait_ms=0)

    return fetch


async def _one_run(
    open_url: str, enforcing_url: str, credential: str, rounds: int
) -> dict[str, dict[str, Stats]]:
    """SEND and FETCH on each broker, alternating request by request: {kind: {mode: Stats}}."""
    async with (
        Mq9Client(open_url) as plain,
        Mq9Client(enforcing_url, credential=credential) as agent,
        Mq9Client(open_url, credential=credential) as carrying,  # the client's share alone
    ):
        sent, read = {}, {}
        for mode, client in (("open", plain), ("credentials", agent), ("client", carrying)):
            box = await client.mailbox_create()  # the agent's own (its creator's)
            shelf = await client.mailbox_create()
            for i in range(FETCHED):
                await client.send(shelf, f"message {i}")
            sent[mode], read[mode] = _sender(client, box), _fetcher(client, shelf)
        found: dict[str, dict[str, Stats]] = {}
        for kind, calls in (("SEND", sent), ("FETCH", read)):
            # In pairs: among three modes alternating, the open broker served two requests of
            # every three (the client's share runs on it) and the credentialed one, always in
            # the middle, never two in a row: its caches were the colder, 1.12-1.19x where the
            # pair gives 1.0x (SEND, 5 runs each)
            enforced = await interleave_async(
                {mode: calls[mode] for mode in ("open", "credentials")},
                rounds=rounds, block=1, warmup=50,
            )  # fmt: skip
            share = await interleave_async(
                {mode: calls[mode] for mode in ("open", "client")},
                rounds=rounds, block=1, warmup=50,
            )  # fmt: skip
            found[kind] = {**enforced, "client": share["client"], "client base": share["open"]}
        return found


def measure(runs: int, rounds: int) -> dict[str, list[dict[str, Stats]]]:
    """Every run's figures, by kind; the brokers started once for all runs."""
    with tempfile.TemporaryDirectory(prefix="mq9-bench-credentials-") as place:
        credential = issue(Path(place), "bench")
        brokers = [DevBroker()]
        try:
            brokers.append(DevBroker("--credentials", place))
            open_url, enforcing_url = brokers[0].url, brokers[1].url
            found: dict[str, list[dict[str, Stats]]] = {"SEND": [], "FETCH": []}
            for _ in range(runs):
                run = asyncio.run(_one_run(open_url, enforcing_url, credential, rounds))
                for kind, stats in run.items():
                    found[kind].append(stats)
            return found
        finally:
            for broker in brokers:
                broker.stop()


def run(cfg: Config) -> Section:
    runs, rounds = RUNS[cfg.quick], ROUNDS[cfg.quick]
    found = measure(runs, rounds)
    section = Section("credentials", TITLE)
    for kind, per_run in found.items():
        ratios = [r["credentials"].median / r["open"].median for r in per_run]
        ours = statistics.median(r["credentials"].median for r in per_run)
        base = statistics.median(r["open"].median for r in per_run)
        section.checks.append(
            Check(
                key=KEYS[kind],
                title=f"{kind} with a credential, enforced, against the open broker",
                ours_label="enforcing broker (--credentials), p50",
                ours=fmt_seconds(ours),
                baseline_label="open broker, p50",
                baseline=fmt_seconds(base),
                ratio=statistics.median(ratios),
                op="<=",
                limit=LIMIT,
                note=f"median of {runs} runs; each run's ratio: "
                + ", ".join(f"{r:.2f}" for r in ratios),
            )
        )
        client_share = [r["client"].median / r["client base"].median for r in per_run]
        section.figures += [
            (f"{kind}: requests per mode and run, runs", f"{per_run[0]['open'].n:,}, {runs}"),
            (
                f"{kind}: a credentialed client on the open broker / a plain one (each run)",
                ", ".join(f"{r:.2f}" for r in client_share),
            ),
        ]
    section.notes.append(
        "Two dev brokers side by side (memory store, a nats-server each); requests alternate "
        "between them one by one, so both see the same machine."
    )
    return section


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.credentials", description=TITLE)
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--runs", type=int, help=f"runs (default {RUNS[False]})")
    args = parser.parse_args(argv)
    runs = args.runs or RUNS[args.quick]
    found = measure(runs, ROUNDS[args.quick])
    for kind, per_run in found.items():
        for number, stats in enumerate(per_run, 1):
            ours, base = stats["credentials"].median, stats["open"].median
            print(
                f"{kind} run {number}: open {fmt_seconds(base)}, credentials "
                f"{fmt_seconds(ours)}, ratio {ours / base:.3f}; the client's share "
                f"{stats['client'].median / stats['client base'].median:.3f} "
                f"({stats['open'].n} each)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
