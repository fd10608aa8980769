"""``mq9 console --metrics HOST:PORT``: the console's HTTP requests by page and status
class with their duration, its open requests (live pages' event streams), and its broker
connection, with ``/healthz`` and ``/readyz``, on the operator's address, apart from the
console's own port. A page label is the route's first word (``mailboxes``), never a mailbox.

Its job is reading: ``/readyz`` is ready while a broker answers its reads, and
says ``ready (read-only: ...)`` while no write is acknowledged (a JetStream cluster that lost
its quorum): the pages still show, replay, delete and ack fail; ``mq9_console_writable`` says
the same to Prometheus."""

from __future__ import annotations

import sys
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from mq9_wire.metrics import OperatorEndpoint, need_prometheus, operator_address
from mq9_wire.metrics.http import HttpMetrics
from mq9_wire.metrics.probe import ReadsProbe

PREFIX = "mq9_console"
PAGES = frozenset(
    {"agents", "mailboxes", "calls", "events", "api", "static", "login", "logout", "log"}
)


def page_of(path: str) -> str:
    first = path.lstrip("/").split("/", 1)[0]
    return first if first in PAGES else ("root" if not first else "other")


class ConsoleMetrics:
    """The registry a scrape reads, the middleware that counts, and the endpoint. ``client``:
    the console's client (None before it connected): ``/readyz`` is ready while a
    broker answers its reads within a deadline, read-only while no write is acknowledged
    (``probe.note``); without it, while ``connected()``."""

    def __init__(self, address: str, connected: Any, client: Any = None) -> None:
        self.host, self.port = operator_address(address)
        prometheus = need_prometheus()
        self.registry = prometheus.CollectorRegistry(auto_describe=False)
        self.http = HttpMetrics(PREFIX, self.registry, route=page_of)
        up = prometheus.Gauge(
            f"{PREFIX}_broker_connected", "1 while the console's connection to the broker is up",
            registry=self.registry,
        )  # fmt: skip
        up.set_function(lambda: int(connected()))
        self.connected = connected
        self.client = client
        self.probe = None if client is None else ReadsProbe(client)
        writable = prometheus.Gauge(
            f"{PREFIX}_writable", "1 while the broker acknowledged the console's last write "
            "probe (0: up read-only)", registry=self.registry,
        )  # fmt: skip
        writable.set_function(self._writable)
        self.endpoint: OperatorEndpoint | None = None

    def _writable(self) -> int:
        if self.probe is None:
            return int(self.connected())
        return int(self.probe.writes is None and self.connected())

    async def start(self) -> None:
        def ready() -> str | None:
            return None if self.connected() else "not connected to the broker (reconnecting)"

        probe = self.probe
        self.endpoint = OperatorEndpoint(
            self.host, self.port, self.registry, ready if probe is None else probe,
            ready_metric=f"{PREFIX}_ready", note=None if probe is None else probe.note,
        )  # fmt: skip
        await self.endpoint.start()  # (serve.py tried the address first: one line if taken)
        print(f"mq9 console metrics on {self.endpoint.url}/metrics (/healthz, /readyz)",
              file=sys.stderr, flush=True)  # fmt: skip

    async def stop(self) -> None:
        if self.endpoint is not None:
            await self.endpoint.stop()


class Metered:
    """Starlette middleware (``app.add_middleware(Metered, metrics=...)``, outermost)."""

    def __init__(self, app: ASGIApp, metrics: ConsoleMetrics) -> None:
        self._app = metrics.http.wrap(app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)
