"""``mq9-mcp`` as a person meets it: started by hand at a terminal, typed at, stopped with Ctrl-C
(SIGINT) or by a service manager (SIGTERM), over stdio and over HTTP. Real processes, real
signals; every process a test starts is stopped by that test."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from testbed.ports import silent_port, unclaimed_port
from testbed.support.devbroker_helpers import port_open
from testbed.support.mcp_support import ROOT, server_env
from testbed.support.waiting import until_sync

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and pty"),
]

STARTED = "mq9 MCP server"
CONNECTED = "connected to the mq9 broker"
PROMPT = "press Ctrl-C to stop"


class Server:
    """A running ``python -m mq9_mcp``, its stderr collected by a thread."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.process.stderr is not None
        while chunk := self.process.stderr.read1(4096):
            self._chunks.append(chunk)

    @property
    def stderr(self) -> str:
        return b"".join(self._chunks).decode(errors="replace")

    def wait_for(self, text: str, timeout: float = 10) -> None:
        def said() -> bool:
            if text not in self.stderr and self.process.poll() is not None:
                self._reader.join(2)  # what it wrote before it exited
                assert text in self.stderr, (
                    f"exited {self.process.returncode} before {text!r}:\n{self.stderr}"
                )
            return text in self.stderr

        until_sync(said, timeout=timeout, what=f"{text!r} on stderr", show=lambda: self.stderr)

    def stop_with(self, signum: int, timeout: float = 5) -> int:
        """Send ``signum``; the exit code (the process is killed if it does not exit)."""
        self.process.send_signal(signum)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            message = f"still running {timeout}s after {signum}:\n{self.stderr}"
            raise AssertionError(message) from None
        self._reader.join(2)
        return code


@contextmanager
def server(*args: str, stdin: int | None = subprocess.PIPE, **env: str) -> Iterator[Server]:
    broker = [] if "--server" in args else ["--server", "memory://"]
    process = subprocess.Popen(
        [sys.executable, "-m", "mq9_mcp", *broker, *args],
        cwd=ROOT,
        env=server_env(**env),
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        yield Server(process)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def clean(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert "Internal Server Error" not in stderr, stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_stdio_stops_on_a_signal_while_the_client_keeps_stdin_open(signum):
    with server() as mcp:
        mcp.wait_for(CONNECTED)
        assert mcp.stop_with(signum) == 0
    clean(mcp.stderr)
    assert f"stopping ({signal.Signals(signum).name})" in mcp.stderr
    assert PROMPT not in mcp.stderr  # stdin is a pipe: a client started it, no help text


# The moment CI's docs test hit (session 28's stop): the start line is out, the signal lands
# while the stdin reader starts, before the session's own signal handler is in place. The
# process sends it to itself there, so the moment is the same every run.
AT_STDIN_READER = """
import os, signal, sys
from mq9_mcp import cli, stdio
started = stdio._StdinLines.__init__
def signalled(self, token):
    os.kill(os.getpid(), signal.SIG{name})
    started(self, token)
stdio._StdinLines.__init__ = signalled
sys.exit(cli.main(["--server", "memory://"]))
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_stdio_stops_cleanly_on_a_signal_before_its_own_handler_is_in_place(signum):
    name = signal.Signals(signum).name.removeprefix("SIG")
    process = subprocess.run(
        [sys.executable, "-c", AT_STDIN_READER.format(name=name)],
        cwd=ROOT,
        env=server_env(),
        stdin=subprocess.PIPE,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert process.returncode == 0, process.stderr
    clean(process.stderr)
    assert STARTED in process.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_at_a_terminal_it_says_what_it_is_for_and_stops_on_a_signal(signum):
    controller, terminal = pty.openpty()
    try:
        with server(stdin=terminal) as mcp:
            mcp.wait_for(PROMPT)
            mcp.wait_for(CONNECTED)
            os.write(controller, b"hello\n")  # what a person tries first
            mcp.wait_for("not an MCP (JSON-RPC) message: 'hello'")
            assert mcp.stop_with(signum) == 0
    finally:
        os.close(controller)
        os.close(terminal)
    clean(mcp.stderr)
    assert "MCP client" in mcp.stderr and "mcpServers" in mcp.stderr
    assert mcp.process.stdout is not None


@pytest.mark.parametrize("attempt", range(3))
def test_at_a_terminal_an_unreachable_broker_is_one_warning_and_no_task_exception(attempt):
    """#35: ``mq9-mcp --server nats://127.0.0.1:1`` at a terminal printed "Task exception was
    never retrieved ... NoServersError" in 2 of 3 runs (hence three runs here)."""
    controller, terminal = pty.openpty()
    nowhere = f"nats://127.0.0.1:{silent_port()}"  # nothing listens there
    try:
        with server("--server", nowhere, stdin=terminal) as mcp:
            mcp.wait_for(PROMPT)
            mcp.wait_for("not reachable yet", timeout=20)
            time.sleep(2)  # a task failing unseen is reported when it is collected
            assert mcp.stop_with(signal.SIGINT) == 0
    finally:
        os.close(controller)
        os.close(terminal)
    clean(mcp.stderr)
    assert "never retrieved" not in mcp.stderr, mcp.stderr
    assert mcp.stderr.count("NoServersError") == 1  # the one warning


def test_stdio_still_ends_when_the_client_closes_stdin():
    with server() as mcp:
        mcp.wait_for(CONNECTED)
        assert mcp.process.stdin is not None
        mcp.process.stdin.write(b'not json\n{"jsonrpc": "2.0", "id": 1, "method": "ping"}\n')
        mcp.process.stdin.flush()
        assert mcp.process.stdout is not None
        ready, _, _ = select.select([mcp.process.stdout], [], [], 5)
        assert ready, mcp.stderr
        answer = mcp.process.stdout.readline()  # the ping after the bad line is answered
        assert json.loads(answer) == {"jsonrpc": "2.0", "id": 1, "result": {}}
        mcp.process.stdin.close()
        assert mcp.process.wait(timeout=5) == 0
    clean(mcp.stderr)
    assert "not an MCP (JSON-RPC) message: 'not json'" in mcp.stderr


def wait_for_port(port: int, mcp: Server, timeout: float = 10) -> None:
    def listening() -> bool:
        assert mcp.process.poll() is None, mcp.stderr
        return port_open(port)

    what = f"mq9-mcp listening on {port}"
    until_sync(listening, timeout=timeout, what=what, every=0.05, show=lambda: mcp.stderr)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("token", [None, "s3cret-token"], ids=["no-token", "token"])
def test_http_stops_cleanly_on_a_signal_and_says_whether_a_token_is_enforced(signum, token):
    port = unclaimed_port()
    env = {"MQ9_MCP_TOKEN": token} if token else {}
    args = ("--transport", "http", "--host", "127.0.0.1", "--port", str(port))
    with server(*args, stdin=subprocess.DEVNULL, **env) as mcp:
        wait_for_port(port, mcp)
        assert mcp.stop_with(signum) == 0
    clean(mcp.stderr)
    assert f"stopping ({signal.Signals(signum).name})" in mcp.stderr
    if token:
        assert "HTTP bearer token enforced" in mcp.stderr
        assert token not in mcp.stderr
    else:
        assert "no HTTP bearer token" in mcp.stderr


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        ((), {"MQ9_MCP_TOKEN": ""}, "MQ9_MCP_TOKEN"),
        ((), {"MQ9_MCP_TOKEN": "  "}, "MQ9_MCP_TOKEN"),
        (("--auth-token", ""), {}, "--auth-token"),
        (("--host", "0.0.0.0"), {"MQ9_MCP_TOKEN": ""}, "MQ9_MCP_TOKEN"),
    ],
)
def test_an_empty_bearer_token_is_refused(args, env, named):
    port = str(unclaimed_port())
    with server("--transport", "http", "--port", port, *args, stdin=subprocess.DEVNULL,
                **env) as mcp:  # fmt: skip
        code = mcp.process.wait(timeout=10)
        mcp._reader.join(2)
    assert code == 2, mcp.stderr
    assert f"{named} is set but empty" in mcp.stderr
    clean(mcp.stderr)
    with socket.socket() as probe:  # it never listened
        assert probe.connect_ex(("127.0.0.1", int(port))) != 0
