"""A plain nats-server on loopback on the port the system gives it: ``start_nats_server`` as
``mq9_wire.nats_floor.server_process`` has it (the same arguments, the same
``NatsProcess``), less the race of a port asked of the system first and bound later."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mq9_wire.nats_floor.server_process import (
    LARGEST_MAX_PAYLOAD,
    NatsProcess,
    find_nats_server,
    spawn_env,
)
from testbed.ports import read_ports


@dataclass
class LoopbackNats(NatsProcess):
    """The package's ``NatsProcess``, with the monitoring port it read back (if it serves one)."""

    monitor_port: int | None = None


def start_nats_server(
    host: str = "127.0.0.1",
    port: int | None = None,
    *,
    monitor_port: int | None = None,
    max_payload: int | None = None,
    config_text: str = "",
    extra_args: Sequence[str] = (),
    timeout: float = 10.0,
) -> LoopbackNats:
    """nats-server on ``host``, on ``port`` (the system's choice if None: read back), once it
    listens. ``monitor_port`` 0 serves the monitoring on the system's choice too (read back
    as ``monitor_port``); the rest as the package's ``start_nats_server``."""
    if max_payload is not None and not 0 < max_payload <= LARGEST_MAX_PAYLOAD:
        raise ValueError(f"max_payload must be 1 to {LARGEST_MAX_PAYLOAD} bytes")
    home = tempfile.TemporaryDirectory(prefix="mq9-nats-")  # made 0700: a config may hold passwords
    command = [find_nats_server(), "-a", host, "-p", str(port or -1)]
    command += ["--ports_file_dir", home.name]
    if monitor_port is not None:
        command += ["-m", str(monitor_port or -1)]
    if max_payload is not None or config_text:
        path = Path(home.name, "nats-server.conf")
        path.touch(mode=0o600)
        size = f"max_payload: {max_payload}\n" if max_payload is not None else ""
        path.write_text(size + config_text)
        command += ["-c", str(path)]
    command += list(extra_args)
    log = Path(home.name, "server.log")
    try:
        with log.open("wb") as out:
            process = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=out, env=spawn_env()
            )

        def output() -> str:
            return log.read_text(errors="replace")[-2000:].strip()

        ports = read_ports(process, Path(home.name), timeout, output)
        return LoopbackNats(process, host, ports["nats"], home, ports.get("monitoring"))
    except BaseException:
        home.cleanup()
        raise

