"""Ports for the test servers, none raced for. ``read_ports``: the ports a nats-server
listens on, read back from the file ``--ports_file_dir`` makes it write once it listens (a
server given port -1, the system's choice, says which it got). ``unclaimed_port``: one that
must be known before its server starts. ``silent_port``: one where nothing listens."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from mq9_wire.nats_floor.server_process import listed_ports


class ServerExited(RuntimeError):
    """The nats-server exited before it listened (its output in the message)."""


def read_ports(
    process: subprocess.Popen[bytes], directory: Path, timeout: float, output: Callable[[], str]
) -> dict[str, int]:
    """``{"nats": port, "cluster": port, "monitoring": port}`` (those it serves) once the
    server ``process`` listens; ``output()`` gives its log for the error if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerExited(f"nats-server exited at start: {output()}")
        ports = listed_ports(directory, process.pid)
        if ports is not None:
            return ports
        time.sleep(0.02)  # not written yet, or written halfway
    process.kill()
    process.wait()
    raise RuntimeError(f"nats-server did not listen in {timeout} s: {output()}")


def unclaimed_port(host: str = "127.0.0.1") -> int:
    """A free port below the kernel's ephemeral range, for a server whose port must be known
    before it starts (written into its configuration, passed on its command line, or taken
    again by a restart). A port asked of the system (bound to 0, then let go) comes from the
    ephemeral range, where any process's next connection or bind may take it before the server
    binds it; a port below the range is only taken by a bind that names it. A server that can
    take port 0 and say which it got should do that instead."""
    ports = _own_ports()
    for _ in range(1000):
        port = _CHOOSER.choice(ports)
        if port in _GIVEN:  # (not bound yet, perhaps: a test takes several before it starts)
            continue
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:  # another process's already
                continue
        _GIVEN.add(port)
        return port
    raise RuntimeError(f"no free port found on {host} in 1000 tries in {ports}")


def silent_port(host: str = "127.0.0.1") -> int:
    """A port where nothing listens, for as long as this process runs: bound and never
    listened on, so a connection there is refused and no server can take it meanwhile (a port
    let go after bind could be a server's by the time the test connects)."""
    sock = socket.socket()
    sock.bind((host, 0))
    _SILENT.append(sock)
    port: int = sock.getsockname()[1]
    return port


_SILENT: list[socket.socket] = []  # silent_port's, held until the process ends

# Not the random module's generator, which a test may seed; and a port given once is never
# given again in this process (a clean-clone run met one test given one port twice, and two
# tests in two workers choosing alike)
_CHOOSER = random.SystemRandom()
_GIVEN: set[int] = set()
_SHARES = 16  # of the range below the ephemeral one: a share each pytest-xdist worker (at most 8)


def _own_ports() -> range:
    """This process's ports: the 12,000 below the ephemeral range, or a pytest-xdist worker's
    own share of them, so that no two workers choose one port before either binds it."""
    low = _ephemeral_low()
    start = max(low - 12_000, 1024)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw3"
    if not (worker.startswith("gw") and worker[2:].isdigit()):
        return range(start, low)
    share = (low - start) // _SHARES
    first = start + int(worker[2:]) % _SHARES * share
    return range(first, first + share)


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # (Linux's default; elsewhere as good a floor as any)
