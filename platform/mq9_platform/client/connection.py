"""Every event loop that calls gets an mq9 client of its own, opened by a keeper task on that
loop at its first call and closed when the task is cancelled (by ``close()``, or by
``asyncio.run`` as the loop ends). Sync callers (plain code, threads, a notebook cell) share the
client of one background loop thread, which an async caller whose loop has no client yet also
uses rather than open a second connection. A ``client=`` the caller opened is used directly by
every caller. At exit every connection still open is closed.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from mq9_wire.nats_floor.redaction import redact
from mq9_wire.protocol.errors import RequestTimeout

from .client import Mq9Client

T = TypeVar("T")

_background: asyncio.AbstractEventLoop | None = None
_background_lock = threading.Lock()
_live: set[_LoopClient] = set()  # every client open or opening (asyncio keeps tasks weakly)


def background_loop() -> asyncio.AbstractEventLoop:
    """The event loop thread that serves sync callers (started on first use)."""
    global _background
    with _background_lock:
        if _background is None or _background.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="langchain-mq9", daemon=True).start()
            _background = loop
        return _background


class Mq9Connection:
    """Builds clients from ``server`` (one per event loop, see the module) or uses the
    ``client`` given, which the caller opened and closes."""

    def __init__(
        self,
        server: str | None = None,
        *,
        client: Mq9Client | None = None,
        **client_options: Any,
    ) -> None:
        if (server is None) == (client is None):
            raise ValueError("give exactly one of server= (a URL) or client= (an Mq9Client)")
        self.server = server if server is not None else getattr(client, "server", "client")
        self.client = client
        self._options = client_options
        # Built now so a bad URL or option fails at construction, not on the first call.
        probe = client if client is not None else Mq9Client(server, **client_options)
        self.request_timeout = float(getattr(probe, "request_timeout", 5.0))
        self._clients: dict[asyncio.AbstractEventLoop, _LoopClient] = {}

    def __repr__(self) -> str:
        return f"Mq9Connection({redact(str(self.server))!r})"

    async def run(self, action: Callable[[Mq9Client], Awaitable[T]]) -> T:
        """Run ``action(client)`` from async code."""
        if self.client is not None:
            return await action(self.client)
        loop = asyncio.get_running_loop()
        entry = self._clients.get(loop)
        if entry is None:
            shared = _background
            if shared is not None and shared is not loop and shared in self._clients:
                call = asyncio.run_coroutine_threadsafe(self.run(action), shared)
                return await asyncio.wrap_future(call)
            for ended in [other for other in self._clients if other.is_closed()]:
                _live.discard(self._clients.pop(ended, None))  # closed without ending its tasks
            entry = self._clients[loop] = _LoopClient(self, loop)
        opened = entry.opened
        client = opened.result() if opened.done() else await asyncio.shield(opened)
        return await action(client)

    def run_sync(self, action: Callable[[Mq9Client], Awaitable[T]], *, wait: float = 0.0) -> T:
        """Run ``action(client)`` from sync code, also inside a running loop (Jupyter).
        ``wait``: how long the action may legitimately take beyond a request (a long poll)."""
        future = asyncio.run_coroutine_threadsafe(self.run(action), background_loop())
        try:
            return future.result(timeout=self.request_timeout + wait + 5.0)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise RequestTimeout("the mq9 call did not finish in time") from None

    def _take_all(self) -> list[_LoopClient]:
        return [entry for loop in list(self._clients) if (entry := self._clients.pop(loop, None))]

    async def aclose(self) -> None:
        """Close every client this connection opened (a later call opens new ones)."""
        here = asyncio.get_running_loop()
        for entry in self._take_all():
            if entry.loop is here:
                await entry.stop()
            elif entry.loop.is_running():
                stopping = asyncio.run_coroutine_threadsafe(entry.stop(), entry.loop)
                await asyncio.wrap_future(stopping)
            else:
                entry.stop_later()

    def close(self) -> None:
        """Close every client this connection opened, from sync code."""
        _stop(self._take_all())


class _LoopClient:
    """The client of one event loop, and the keeper task that opens it and closes it."""

    def __init__(self, owner: Mq9Connection, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.opened: asyncio.Future[Mq9Client] = loop.create_future()
        self.keeper = loop.create_task(self._keep(owner))
        _live.add(self)
        # Cancelled before it opened the client (even before it started): callers stop waiting.
        self.keeper.add_done_callback(lambda _: self.opened.cancel())

    async def _keep(self, owner: Mq9Connection) -> None:
        client = Mq9Client(owner.server, **owner._options)
        try:
            await client.connect()
            self.opened.set_result(client)
            await self.loop.create_future()  # until cancelled
        except Exception as exc:
            self.opened.set_exception(exc)
            self.opened.exception()  # its callers see it; nobody else need retrieve it
        finally:
            if owner._clients.get(self.loop) is self:
                del owner._clients[self.loop]  # the next call opens a new client
            _live.discard(self)
            await client.close()

    async def stop(self) -> None:
        self.keeper.cancel()
        await asyncio.wait({self.keeper})

    def stop_later(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing left to stop
            self.loop.call_soon_threadsafe(self.keeper.cancel)


def _stop(entries: Iterable[_LoopClient], *, quietly: bool = False) -> None:
    """Stop ``entries`` from sync code: waiting for those of loops running in other threads."""
    try:
        here = asyncio.get_running_loop()
    except RuntimeError:
        here = None
    for entry in entries:
        with contextlib.suppress(*((Exception,) if quietly else ())):
            if entry.loop is not here and entry.loop.is_running():
                asyncio.run_coroutine_threadsafe(entry.stop(), entry.loop).result(10)
            else:  # this thread's own loop cannot be waited for here; an idle one runs later
                entry.stop_later()


# At exit, close what is still open, so nats-py flushes and says goodbye.
atexit.register(lambda: _stop(list(_live), quietly=True))
