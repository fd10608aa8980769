"""mq9-mcp over stdio: one MCP session on stdin/stdout, for a client that starts the server
itself (Claude Desktop, Cursor). stdin's lines are screened before the SDK reads them
(``screening.py``); SIGINT and SIGTERM end the session cleanly."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import AsyncIterator
from contextlib import ExitStack, suppress
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage

from mq9_platform.client.connection import Mq9Connection

from .screening import screened
from .server import connect_early

log = logging.getLogger("mq9_mcp")


async def serve_stdio(server: Server, connection: Mq9Connection) -> None:
    """Serve one MCP session over stdin/stdout until the client closes stdin, or until SIGINT
    (Ctrl-C) or SIGTERM, which end it cleanly (the broker connection is closed either way)."""
    with ExitStack() as held:
        # Taken before any task starts: a signal turned into KeyboardInterrupt inside a task
        # ends the loop while the task group waits on it, and asyncio logs the group's
        # traceback at shutdown (CI: a SIGTERM just after the ready line). Before this line
        # it lands here, in the main task, and cli.main stops quietly.
        signals = _signal_receiver(held)
        async with anyio.create_task_group() as tasks:
            if signals is not None:
                tasks.start_soon(_stop_on_signals, signals, tasks.cancel_scope)
            tasks.start_soon(connect_early, connection)
            try:
                stdin: Any = _StdinLines(anyio.lowlevel.current_token())
                async with stdio_server(stdin=stdin) as (read_stream, write_stream):
                    stdin.answer_on = write_stream
                    options = server.create_initialization_options()
                    await server.run(read_stream, write_stream, options)
            finally:
                tasks.cancel_scope.cancel()
                with anyio.CancelScope(shield=True):
                    await connection.aclose()


def _signal_receiver(held: ExitStack) -> AsyncIterator[signal.Signals] | None:
    """SIGINT and SIGTERM received by the event loop while ``held`` is open; None where
    signals cannot be (Windows: Ctrl-C still raises KeyboardInterrupt)."""
    try:
        return held.enter_context(anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM))
    except NotImplementedError:
        return None


async def _stop_on_signals(
    signals: AsyncIterator[signal.Signals], scope: anyio.CancelScope
) -> None:
    async for signum in signals:
        log.info("stopping (%s)", signal.Signals(signum).name)
        scope.cancel()
        return


class _StdinLines:
    """The lines of stdin (fd 0) for the SDK's ``stdio_server``, read by a daemon thread with
    ``os.read``: a signal need not wait for a line, and no lock holds up an exiting interpreter.

    Only lines the SDK can read reach it. A request among the others that carries an id is
    answered here (``refusals``, on ``answer_on``), so its client never waits for ever; a line
    that is not JSON-RPC at all (a person typing at a terminal) is dropped with a one-line
    warning instead of reaching the SDK, which would log a traceback."""

    def __init__(self, token: Any) -> None:
        self._send, self._receive = anyio.create_memory_object_stream[bytes](16)
        self._token = token
        self.answer_on: Any = None  # the session's write stream, once it is open
        threading.Thread(target=self._read, name="mq9-mcp stdin", daemon=True).start()

    def _read(self) -> None:
        pending = b""
        with suppress(Exception):  # the event loop is gone, or stdin is unreadable: stop reading
            while chunk := os.read(0, 65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    anyio.from_thread.run(self._send.send, line, token=self._token)
            if pending:
                anyio.from_thread.run(self._send.send, pending, token=self._token)
        with suppress(Exception):
            anyio.from_thread.run_sync(self._send.close, token=self._token)

    async def __aiter__(self) -> AsyncIterator[str]:
        async with self._receive:
            async for raw in self._receive:
                line = raw.decode("utf-8", errors="replace")
                if not line.strip():
                    continue
                answers = screened(line)
                if answers is None:  # the SDK reads it
                    yield line
                    continue
                if not answers:  # not JSON-RPC at all, or nothing to answer
                    self._ignore(line)
                    continue
                for answer in answers:
                    log.info("refused a JSON-RPC request: %s", answer.error.message)
                    await self.answer_on.send(SessionMessage(answer))

    @staticmethod
    def _ignore(line: str) -> None:
        shown = line.strip()
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        log.warning(
            "ignored a line on stdin that is not an MCP (JSON-RPC) message: %r; mq9-mcp is "
            "meant to be started by an MCP client",
            shown,
        )
