"""nats-server with JetStream on loopback: one server, or a cluster of three (tests, the kill lane).

Each server runs from a config file in a directory of its own, which also holds its JetStream
store, so a server killed with SIGKILL can be started again on the same port and store."""

from __future__ import annotations

import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from langchain_mq9.broker.nats_servers.processes import find_nats_server, free_port

START_TIMEOUT = 30.0  # a busy 2-core machine


@dataclass
class JetStreamServer:
    """One nats-server with JetStream; ``start()`` again after ``kill()`` keeps its store."""

    name: str
    port: int
    home: Path
    cluster_port: int | None = None
    routes: list[int] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    extra_config: str = ""  # appended to the config (the #53 tests: accounts, auth callout)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> JetStreamServer:
        config = self.home / "nats-server.conf"
        lines = [
            f"server_name: {self.name}",
            "host: 127.0.0.1",
            f"port: {self.port}",
            f'jetstream {{ store_dir: "{self.home / "store"}" }}',
        ]
        if self.cluster_port is not None:
            routes = ", ".join(f"nats-route://127.0.0.1:{port}" for port in self.routes)
            lines.append(
                f"cluster {{ name: mq9js, listen: 127.0.0.1:{self.cluster_port}, "
                f"routes: [{routes}] }}"
            )
        config.write_text("\n".join(lines) + "\n" + self.extra_config)
        log = (self.home / "server.log").open("ab")
        self.process = subprocess.Popen(
            [find_nats_server(), "-c", str(config)], stdout=log, stderr=log
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server {self.name} exited: {self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"nats-server {self.name} did not listen in {START_TIMEOUT} s")

    def log_tail(self) -> str:
        return (self.home / "server.log").read_text(errors="replace")[-2000:]

    def kill(self) -> None:
        """SIGKILL: no goodbye to the cluster, no flush."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


class JetStreamCluster:
    """``size`` JetStream servers clustered on loopback (size 1: a lone server), each with
    ``extra_config`` added to its config."""

    def __init__(self, size: int = 3, extra_config: str = "") -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="mq9-js-")
        ports = [free_port() for _ in range(size)]
        cluster_ports = [free_port() for _ in range(size)] if size > 1 else [None] * size
        self.servers = []
        for i, (port, cluster_port) in enumerate(zip(ports, cluster_ports, strict=True)):
            home = Path(self._dir.name, f"n{i + 1}")
            home.mkdir()
            routes = [p for p in cluster_ports if p is not None and p != cluster_port]
            self.servers.append(
                JetStreamServer(
                    f"n{i + 1}", port, home, cluster_port, routes, extra_config=extra_config
                )
            )

    @property
    def urls(self) -> list[str]:
        return [server.url for server in self.servers]

    def by_name(self, name: str) -> JetStreamServer:
        return next(server for server in self.servers if server.name == name)

    def __enter__(self) -> JetStreamCluster:
        try:
            for server in self.servers:
                server.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        for server in self.servers:
            server.stop()
        self._dir.cleanup()
