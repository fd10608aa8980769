"""Processes the network benchmarks need: one nats-server on loopback and the two responders.

Everything binds 127.0.0.1, every process is started by us and stopped by us (by its own
handle, never by name), and every wait is bounded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from mq9_wire.nats_floor.server_process import NatsProcess, start_nats_server
from testbed.ports import unclaimed_port

from .responders import CONTROL

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0
# a responder's set-up command (command): a bound, not a speed; a JetStream store's first
# set-up on a cluster just formed took over 120 s once, a clean-clone suite at load on 2 cores,
# within the smoke run's 600 s
SWITCH_TIMEOUT = 240.0


def child_env() -> dict[str, str]:
    """The environment for our Python children: the repository importable, nothing else new."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else "")}


def wait_for_line(process: subprocess.Popen, expected: str, timeout: float) -> None:
    """Wait until ``process`` prints ``expected`` on stdout (bounded; raises otherwise)."""
    seen: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            seen.append(line.strip())
            if line.strip() == expected:
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    if not seen or seen[-1] != expected:
        process.kill()
        process.wait(5)
        raise RuntimeError(f"{process.args!r} did not get ready: {seen[-5:]}")


class Responder:
    """A ``bench.responders`` child process, switched on and off over NATS."""

    def __init__(self, url: str, kind: str, name: str | None = None) -> None:
        self.kind = kind
        self.name = name or kind
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.responders",
                "--url",
                url,
                "--kind",
                kind,
                "--name",
                self.name,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=child_env(),
        )

    def wait_ready(self) -> Responder:
        wait_for_line(self.process, "ready", START_TIMEOUT)
        return self

    async def command(self, nc, cmd: str, **options: object) -> None:
        body = json.dumps({"cmd": cmd, **options}).encode()
        # a set-up step, not a measured one: switching to the cluster store makes its R3
        # stream and buckets, each waiting for its leader on a cluster just formed (over 10 s
        # once in a clean-clone suite run on a quiet machine, over 30 s once in another)
        await nc.request(CONTROL + self.name, body, timeout=SWITCH_TIMEOUT)

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                assert self.process.stdin is not None
                self.process.stdin.close()  # the responder leaves when its stdin closes
                self.process.wait(10)
            except (subprocess.TimeoutExpired, OSError):
                self.process.kill()
                self.process.wait(5)


class Network:
    """nats-server + a canned responder + the engine responder; only one answers at a time."""

    def __init__(self) -> None:
        # die_with_parent: even if this process is killed outright, nats-server goes with it.
        self.monitor_port = unclaimed_port()
        self.nats: NatsProcess = start_nats_server(
            "127.0.0.1", monitor_port=self.monitor_port, die_with_parent=True
        )
        self.responders: dict[str, Responder] = {}
        try:
            for kind in ("canned", "engine"):  # started together, then waited for
                self.responders[kind] = Responder(self.nats.url, kind)
            for responder in self.responders.values():
                responder.wait_ready()
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return self.nats.url

    async def serve(self, nc, kind: str, **options: object) -> None:
        """Make ``kind`` the one answering mq9 requests (the other is switched off first)."""
        for name, responder in self.responders.items():
            if name != kind:
                await responder.command(nc, "off")
        await self.responders[kind].command(nc, "on", **options)

    def connections(self, name: str, *, settle_to: int | None = None) -> int:
        """How many client connections named ``name`` nats-server holds (its /connz); with
        ``settle_to``, give it up to 5 s to notice closed sockets (it drops them later)."""
        url = f"http://127.0.0.1:{self.monitor_port}/connz?limit=1024"
        deadline = time.monotonic() + 5
        while True:
            with urllib.request.urlopen(url, timeout=5) as reply:
                found = json.load(reply).get("connections") or []
            count = sum(1 for c in found if c.get("name") == name)
            if settle_to is None or count == settle_to or time.monotonic() > deadline:
                return count
            time.sleep(0.02)

    def stop(self) -> None:
        for responder in self.responders.values():
            responder.stop()
        self.nats.stop()

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
