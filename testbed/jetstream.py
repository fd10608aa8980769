"""nats-server with JetStream on loopback: one server, or a cluster of three (the tests, the
cluster store's kill and chaos lanes in bench/).

Each server runs from a config file in a directory of its own, which also holds its JetStream
store, so a server killed with SIGKILL can be started again on the same port and store. A
server's client port is the system's choice, read back when it first listens and kept for
its restarts; a cluster's route ports must be known to every server before any starts, so
they are asked of the system first, and a cluster one of whose ports was taken meanwhile
starts again on new ones (nats-server exits at once when it cannot listen)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from mq9_wire.nats_floor.server_process import find_nats_server, spawn_env
from testbed.ports import ServerExited, read_ports, unclaimed_port

START_TIMEOUT = 30.0  # a busy 2-core machine
PORT_TAKEN = "address already in use"
TRIES = 3  # a cluster whose route ports were all taken three times over: say so


@dataclass
class JetStreamServer:
    """One nats-server with JetStream; ``start()`` again after ``kill()`` keeps its store and
    its port. ``port`` 0: the system's choice, known once ``start()`` returns."""

    name: str
    port: int
    home: Path
    cluster_port: int | None = None
    routes: list[int] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    extra_config: str = ""  # appended to the config (the credentials tests: accounts, auth callout)
    # a name of this cluster's own: a route port of another cluster's, taken between ask and
    # bind (by a parallel worker), is refused by name instead of merging the two clusters
    cluster_name: str = "mq9js"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> JetStreamServer:
        config = self.home / "nats-server.conf"
        lines = [
            f"server_name: {self.name}",
            "host: 127.0.0.1",
            f"port: {self.port or -1}",
            f'jetstream {{ store_dir: "{self.home / "store"}" }}',
        ]
        if self.cluster_port is not None:
            routes = ", ".join(f"nats-route://127.0.0.1:{port}" for port in self.routes)
            lines.append(
                f"cluster {{ name: {self.cluster_name}, listen: 127.0.0.1:{self.cluster_port}, "
                f"routes: [{routes}] }}"
            )
        config.write_text("\n".join(lines) + "\n" + self.extra_config)
        ports_dir = self.home / "ports"
        ports_dir.mkdir(exist_ok=True)
        with (self.home / "server.log").open("ab") as log:
            self.process = subprocess.Popen(
                [find_nats_server(), "-c", str(config), "--ports_file_dir", str(ports_dir)],
                stdout=log,
                stderr=log,
                env=spawn_env(),
            )
        try:
            ports = read_ports(self.process, ports_dir, START_TIMEOUT, self.log_tail)
        except ServerExited as exited:
            raise ServerExited(f"nats-server {self.name} exited: {self.log_tail()}") from exited
        self.port = ports["nats"]
        return self

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
    ``extra_config`` added to its config. Their URLs are known once it has started, or at
    once with ``ports_first`` (a test handing out the URL of a server it starts later: those
    ports are asked of the system first, as the route ports are)."""

    def __init__(self, size: int = 3, extra_config: str = "", ports_first: bool = False) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="mq9-js-")
        self.size = size
        self.extra_config = extra_config
        self.ports_first = ports_first
        self.servers: list[JetStreamServer] = []
        self._lay_out()

    def _lay_out(self) -> None:
        """The servers, in homes of their own; new route ports (``unclaimed_port``: the
        routes are written into each server's configuration before any starts)."""
        cluster_ports = [unclaimed_port() for _ in range(self.size)] if self.size > 1 else [None]
        self.servers = []
        for i, cluster_port in enumerate(cluster_ports):
            home = Path(self._dir.name, f"n{i + 1}")
            shutil.rmtree(home, ignore_errors=True)  # a try before this one's store and log
            home.mkdir()
            routes = [p for p in cluster_ports if p is not None and p != cluster_port]
            port = unclaimed_port() if self.ports_first else 0
            server = JetStreamServer(
                f"n{i + 1}", port, home, cluster_port, routes, extra_config=self.extra_config,
                cluster_name=f"mq9js-{Path(self._dir.name).name}",
            )
            self.servers.append(server)

    @property
    def urls(self) -> list[str]:
        return [server.url for server in self.servers]

    def by_name(self, name: str) -> JetStreamServer:
        return next(server for server in self.servers if server.name == name)

    def __enter__(self) -> JetStreamCluster:
        try:
            for attempt in range(1, TRIES + 1):
                try:
                    for server in self.servers:
                        server.start()
                    return self
                except ServerExited as exited:
                    if PORT_TAKEN not in str(exited) or attempt == TRIES:
                        raise
                    for server in self.servers:  # a route port taken between ask and bind
                        server.stop()
                    self._lay_out()
        except BaseException:
            self.__exit__()
            raise
        raise AssertionError("unreachable")

    def __exit__(self, *exc_info: object) -> None:
        for server in self.servers:
            server.stop()
        self._dir.cleanup()
