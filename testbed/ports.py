"""The ports a nats-server listens on, read back from the file ``--ports_file_dir`` makes it
write once it listens: a server given port -1 (the system's choice) says which it got."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit


class ServerExited(RuntimeError):
    """The nats-server exited before it listened (its output in the message)."""


def read_ports(
    process: subprocess.Popen[bytes], directory: Path, timeout: float, output: Callable[[], str]
) -> dict[str, int]:
    """``{"nats": port, "cluster": port, "monitoring": port}`` (those it serves) once the
    server ``process`` listens; ``output()`` gives its log for the error if it never does."""
    path = directory / f"nats-server_{process.pid}.ports"  # named <executable>_<pid>
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerExited(f"nats-server exited at start: {output()}")
        try:
            listed = json.loads(path.read_text())
        except (OSError, ValueError):  # not written yet, or written halfway
            time.sleep(0.02)
            continue
        ports = {}
        for kind, urls in listed.items():
            if urls:
                port = urlsplit(urls[0]).port
                if port:
                    ports[kind] = port
        return ports
    process.kill()
    process.wait()
    raise RuntimeError(f"nats-server did not listen in {timeout} s: {output()}")


def unclaimed_port(host: str = "127.0.0.1") -> int:
    """A free port below the kernel's ephemeral range, for a server whose port is written into
    its configuration before it starts (a documented cluster's files): ``free_port``'s port
    comes from that range, where any process's next connection may take it before the server
    binds it; a port below the range is only taken by a bind that names it."""
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
