"""The operator's endpoint: ``GET /metrics`` (Prometheus' text format), ``/healthz`` (the
process answers) and ``/readyz`` (it serves: connected, its store usable), on the address the
operator gave (``--metrics HOST:PORT``), apart from every port a tenant reaches.

A small HTTP/1.1 server on the server's own event loop, so that what a scrape reads (a
broker's mailboxes, a gateway's tasks) is read between requests, never while one is answered.
It reads a request line and headers within one deadline, answers once and closes; anything
else (another method, a body, a line too long, too many at once) is answered with its status
or dropped, and the server goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from .extra import need_prometheus
from .notify import tell_when_ready

log = logging.getLogger("mq9_wire.metrics")

# None: ready; else why not, in one line (served with 503); or an awaitable of that (a check
# that asks the broker), awaited within the read deadline
Ready = Callable[[], str | Awaitable[str | None] | None]
READ_DEADLINE = 10.0  # seconds for the request line and headers: a slow client is dropped
LINE_LIMIT = 8192  # bytes of one line; of all the headers: HEADERS_LIMIT
HEADERS_LIMIT = 32 * 1024
AT_ONCE = 16  # connections served at once; beyond, one is closed unanswered
DEFAULT_HOST = "127.0.0.1"


def operator_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT`` or ``PORT`` (on 127.0.0.1; 0: a free port), or
    ``ValueError`` in one line."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = DEFAULT_HOST, text
    host = host.strip("[]") or DEFAULT_HOST
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--metrics {text!r}: [HOST:]PORT, PORT from 0 (a free one) to 65535")
    return host, int(port)


class OperatorEndpoint:
    """Serves ``registry`` (a prometheus-client ``CollectorRegistry``) and the health
    endpoints on ``host``:``port`` (0: a free port, ``port`` is the bound one once started).
    ``ready``: None when the server is ready, else why not. ``read_deadline``: seconds a client
    has for its request line and headers; ``at_once``: connections served at once. ``async
    with`` starts and stops it.

    ``ready_metric``: a gauge of that name, 1 when ``/readyz`` would answer 200, asked at
    each scrape (Prometheus reads ``/metrics`` only: an alert on readiness reads this).
    ``refresh``: awaited before each scrape, within the read deadline (what a collector reads
    that must be asked for over the network: a cluster broker's survey). ``note``: what
    ``/readyz`` adds to "ready" (a console up read-only says so), or None."""

    def __init__(
        self, host: str, port: int, registry: Any, ready: Ready, *,
        read_deadline: float = READ_DEADLINE, at_once: int = AT_ONCE,
        ready_metric: str | None = None, refresh: Callable[[], Awaitable[Any]] | None = None,
        note: Callable[[], str | None] | None = None,
    ) -> None:  # fmt: skip
        self._prometheus = need_prometheus()
        self.read_deadline, self.at_once = read_deadline, at_once
        self.host, self.port = host, port
        self.registry = registry
        self.ready = ready
        self.refresh = refresh
        self.note = note
        self.ready_now = 0
        if ready_metric is not None:
            registry.register(_ReadyGauge(self, ready_metric))
        self._server: asyncio.Server | None = None
        self._told: asyncio.Task[None] | None = None  # systemd told once ready (notify.py)
        self._open = 0
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def __aenter__(self) -> OperatorEndpoint:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> OperatorEndpoint:
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, limit=LINE_LIMIT
        )
        self.port = self._server.sockets[0].getsockname()[1]
        if os.environ.get("NOTIFY_SOCKET"):  # a unit of Type=notify waits for it
            self._told = asyncio.ensure_future(tell_when_ready(self.why_not_ready))
        return self

    async def stop(self) -> None:
        if self._told is not None:
            self._told.cancel()
            await asyncio.gather(self._told, return_exceptions=True)
            self._told = None
        if self._server is None:
            return
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), READ_DEADLINE)
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._open += 1
        try:
            if self._open <= self.at_once:
                await self._answer(reader, writer)
        except (OSError, asyncio.IncompleteReadError, ValueError, TimeoutError):
            pass  # a client gone, too slow or too long: nothing to tell it
        except asyncio.CancelledError:
            pass  # stop(): the task ends here (asyncio's streams log a handler cancelled)
        except Exception:  # a collector that fails: the endpoint serves on
            log.exception("the operator endpoint failed to answer")
        finally:
            self._open -= 1
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with asyncio.timeout(self.read_deadline):
            line = await reader.readline()
            read = len(line)
            while True:  # the headers: read and dropped (nothing here depends on them)
                header = await reader.readline()
                read += len(header)
                if header in (b"\r\n", b"\n", b""):
                    break
                if read > HEADERS_LIMIT:
                    await _write(writer, 431, b"headers too large\n")
                    return
        parts = line.decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            await _write(writer, 400, b"bad request\n")
            return
        method, target = parts[0], parts[1]
        if method not in ("GET", "HEAD"):
            await _write(writer, 405, b"GET or HEAD\n", allow=True)
            return
        path = target.partition("?")[0]
        status, body, kind = 200, b"ok\n", "text/plain; charset=utf-8"
        if path == "/metrics":
            await self._before_scrape()
            body = self._prometheus.generate_latest(self.registry)
            kind = self._prometheus.CONTENT_TYPE_LATEST
        elif path == "/readyz":
            why = await self.why_not_ready()
            noted = None if why is not None or self.note is None else self.note()
            said = why if why is not None else "ready" if noted is None else f"ready ({noted})"
            status, body = 200 if why is None else 503, f"{said}\n".encode()
        elif path != "/healthz":
            status, body = 404, b"/metrics, /healthz or /readyz\n"
        await _write(writer, status, body, kind=kind, head=method == "HEAD")

    async def why_not_ready(self) -> str | None:
        """None when ready, else why not (``ready`` asked within the read deadline)."""
        why = self.ready()
        if inspect.isawaitable(why):
            try:
                why = await asyncio.wait_for(why, self.read_deadline)
            except TimeoutError:
                why = f"the readiness check took over {self.read_deadline:g}s"
        return why

    async def _before_scrape(self) -> None:
        if self.refresh is not None:
            # (too slow: the figures as last read; a collector says how old they are)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.refresh(), self.read_deadline)
        self.ready_now = int(await self.why_not_ready() is None)


class _ReadyGauge:
    """``<name>``: 1 when the server was ready at this scrape (prometheus-client's collector
    protocol)."""

    def __init__(self, endpoint: OperatorEndpoint, name: str) -> None:
        self.endpoint, self.name = endpoint, name

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        yield GaugeMetricFamily(
            self.name, "1 when /readyz answers 200 (asked at this scrape), else 0",
            value=self.endpoint.ready_now,
        )  # fmt: skip


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            431: "Request Header Fields Too Large", 503: "Service Unavailable"}  # fmt: skip


async def _write(
    writer: asyncio.StreamWriter, status: int, body: bytes, *,
    kind: str = "text/plain; charset=utf-8", head: bool = False, allow: bool = False,
) -> None:  # fmt: skip
    lines = [
        f"HTTP/1.1 {status} {_REASONS[status]}",
        f"Content-Type: {kind}",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-store",
        "X-Content-Type-Options: nosniff",
        "Connection: close",
    ]
    if allow:
        lines.append("Allow: GET, HEAD")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    if not head:
        writer.write(body)
    async with asyncio.timeout(READ_DEADLINE):
        await writer.drain()
