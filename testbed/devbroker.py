"""The dev broker run as a user runs it: ``python -m mq9_broker`` as a subprocess
(the tests of tests/broker/cli and others, bench/side_by_side.py). Every wait is bounded; every
process started here is stopped by whoever started it."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from mq9_wire.nats_floor.server_process import spawn_env

ROOT = Path(__file__).resolve().parents[1]  # the checkout
READY = "mq9 dev broker ready on "
START_TIMEOUT = 30.0  # a cold interpreter importing langchain on a busy 2-core box


class DevBroker:
    """One dev-broker process. ``url`` and ``nats_pid`` are known once it printed ready."""

    def __init__(
        self,
        *args: str,
        wait: bool = True,
        command: list[str] | None = None,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """``command``: the whole command line instead (a documented one, run as written), in
        ``cwd`` with ``env``."""
        self.args = args
        self.process = subprocess.Popen(
            command or [sys.executable, "-m", "mq9_broker", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd or ROOT,
            env=spawn_env() if env is None else env,
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, self.stdout, True)),
            threading.Thread(target=self._read, args=(self.process.stderr, self.stderr, False)),
        ]
        for reader in self._readers:
            reader.daemon = True
            reader.start()
        self.url: str | None = None
        self.nats_pid: int | None = None
        if wait:
            self.wait_ready()

    def _read(self, stream: IO[str], into: list[str], announce: bool) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))
            if announce:
                self._lines.put(line)
        if announce:
            self._lines.put(None)

    def wait_ready(self, timeout: float = START_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                self.kill()
                raise AssertionError(f"no ready line in {timeout}s; {self.output()}") from None
            if line is None:
                self.process.wait(5)
                raise AssertionError(f"the broker exited before it was ready; {self.output()}")
            found = re.search(r"nats-server \(pid (\d+)\)", line)
            if found:
                self.nats_pid = int(found.group(1))
            if line.startswith(READY):
                self.url = line[len(READY) :].split()[0]
                return self.url

    @property
    def port(self) -> int:
        assert self.url is not None
        return int(self.url.rsplit(":", 1)[1])

    def output(self) -> str:
        self.join_output(1)
        return "stdout:\n" + "\n".join(self.stdout) + "\nstderr:\n" + "\n".join(self.stderr)

    def join_output(self, timeout: float) -> None:
        for reader in self._readers:
            reader.join(timeout)

    def wait_exit(self, timeout: float = START_TIMEOUT) -> int:
        """Wait for the process to end by itself (a refused start); its exit status."""
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"the broker did not exit in {timeout}s; {self.output()}"
            ) from None
        self.join_output(5)
        return status

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Send ``signum`` and wait for the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the broker ignored signal {signum}; {self.output()}") from None
        self.join_output(5)
        return status

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        if self.nats_pid is not None and process_alive(self.nats_pid):
            os.kill(self.nats_pid, signal.SIGKILL)

    def __enter__(self) -> DevBroker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.kill()


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie left for an absent reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def wait_serving(broker: DevBroker, timeout: float = 60.0) -> None:
    """Until ``broker`` (``--store jetstream``) serves (every broker of a store serves at
    once: there is no takeover to wait for)."""
    deadline = time.monotonic() + timeout
    while not any("ready on" in line for line in broker.stdout):
        assert broker.process.poll() is None, broker.output()
        if time.monotonic() > deadline:
            raise AssertionError(f"the broker never served in {timeout} s; {broker.output()}")
        time.sleep(0.1)
