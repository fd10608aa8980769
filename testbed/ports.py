"""The ports a nats-server listens on, read back from the file ``--ports_file_dir`` makes it
write once it listens: a server given port -1 (the system's choice) says which it got."""

from __future__ import annotations

import json
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
    low = _ephemeral_low()
    for _ in range(1000):
        port = random.randrange(max(low - 12_000, 1024), low)
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:  # another process's already
                continue
        return port
    raise RuntimeError(f"no free port found on {host} in 1000 tries below {low}")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # (Linux's default; elsewhere as good a floor as any)
