"""One shared, lazily opened mq9 connection that any caller can use: sync code, any event
loop, Jupyter cells, many concurrent tasks. Never a connection per call.

A NATS connection belongs to the event loop that opened it (its *home*). An async caller opens
it on its own loop and then talks to it directly; callers on other loops or threads are handed
over to the home loop. Sync code cannot lend its thread, so a connection first opened from
sync code lives on a background loop thread the process shares. When the home loop ends
(``asyncio.run`` returns), the connection is closed with it, and the next caller opens a new
one. One case needs a second connection: a sync call made on the very thread whose loop owns
the connection (``tool.invoke`` in a notebook cell after an ``await``): that loop is blocked by
the call, so the call goes to a companion connection on the background loop.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from .client import Mq9Client
from .protocol import Mq9Error
from .transport import MEMORY_SCHEME

T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()
_open: weakref.WeakSet[Mq9Connection] = weakref.WeakSet()


def background_loop() -> asyncio.AbstractEventLoop:
    """The process's event loop thread for shared connections (started on first use)."""
    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=loop.run_forever, name="langchain-mq9-connections", daemon=True
            )
            thread.start()
            _loop = loop
        return _loop


class _Home:
    """A client and the event loop it belongs to."""

    def __init__(self, loop: asyncio.AbstractEventLoop, client: Any) -> None:
        self.loop = loop
        self.client = client
        self.opening: asyncio.Lock | None = None
        self.closer: Any = None  # an async generator the loop closes at shutdown

    @property
    def alive(self) -> bool:
        return not self.loop.is_closed() and self.loop.is_running()

    async def ready(self) -> Any:
        """The client, connected (on this home's loop)."""
        if self.client.is_connected:
            return self.client
        if self.opening is None:
            self.opening = asyncio.Lock()
        async with self.opening:
            if not self.client.is_connected:
                await self.client.connect()
                if self.closer is None and self.loop is not _loop:  # not the shared thread
                    # asyncio.run closes a loop's async generators before the loop itself:
                    # that is the moment to close the connection politely.
                    self.closer = _close_at_shutdown(self.client)
                    await self.closer.asend(None)
        return self.client

    async def close(self) -> None:
        if self.client.is_connected:
            await self.client.close()


async def _close_at_shutdown(client: Any):
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            await client.close()


class Mq9Connection:
    """Either owns a client built from ``server`` (opened on first use, where it is first
    used) or wraps a ``client`` the caller opened and closes itself.

    ``memory://`` has no loop of its own (the in-process broker serves any loop), and a given
    ``client`` is the caller's to manage: both are used directly.
    """

    def __init__(
        self,
        server: str | None = None,
        *,
        client: Any | None = None,
        **client_options: Any,
    ) -> None:
        if (server is None) == (client is None):
            raise ValueError("give exactly one of server= (a URL) or client= (an Mq9Client)")
        self.server = server if server is not None else getattr(client, "server", "client")
        self.owned = client is None
        self._options = client_options
        # Built now so a bad URL or option fails at construction, not on the first call.
        self.client = client if client is not None else Mq9Client(server, **client_options)
        self.request_timeout = float(getattr(self.client, "request_timeout", 5.0))
        self._memory = self.owned and self.server.strip().startswith(MEMORY_SCHEME)
        self._direct = not self.owned or self._memory
        self._lock = threading.Lock()
        self._home: _Home | None = None
        self._companion: _Home | None = None  # sync calls made on the home loop's own thread
        if self.owned:
            _open.add(self)

    def _new_home(self, loop: asyncio.AbstractEventLoop) -> _Home:
        client = self.client
        if client.is_connected:  # still tied to a loop that ended without closing it
            client = self.client = Mq9Client(self.server, **self._options)
        return _Home(loop, client)

    async def _direct_call(self, action: Callable[[Any], Awaitable[T]]) -> T:
        if self._memory and not self.client.is_connected:
            await self.client.connect()  # instant and idempotent
        return await action(self.client)

    async def run(self, action: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``action(client)`` from async code."""
        if self._direct:
            return await self._direct_call(action)
        loop = asyncio.get_running_loop()
        with self._lock:
            home = self._home
            if home is None or not home.alive:
                home = self._home = self._new_home(loop)
        if home.loop is loop:
            return await action(await home.ready())
        return await _hand_over(_on(home, action), home.loop)

    def run_sync(self, action: Callable[[Any], Awaitable[T]], *, wait: float = 0.0) -> T:
        """Run ``action(client)`` from sync code, also inside a running loop (Jupyter).

        ``wait`` is how long the action may legitimately take beyond a request (a long poll).
        """
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if self._direct:
            home = _Home(background_loop(), self.client)
            call: Coroutine[Any, Any, T] = self._direct_call(action)
        else:
            with self._lock:
                home = self._home
                if home is None or not home.alive:
                    home = self._home = self._new_home(background_loop())
                if home.loop is running:  # that loop waits for this very call: use another
                    if self._companion is None:
                        companion = Mq9Client(self.server, **self._options)
                        self._companion = _Home(background_loop(), companion)
                    home = self._companion
            call = _on(home, action)
        future = asyncio.run_coroutine_threadsafe(call, home.loop)
        try:
            return future.result(timeout=self.request_timeout + wait + 5.0)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise Mq9Error(
                "the mq9 call did not finish in time. If you passed client= opened in the "
                "event loop you are calling from, use `await tool.ainvoke(...)` there, or "
                "give the toolkit server= instead",
                retryable=True,
            ) from None

    def _homes(self) -> list[_Home]:
        with self._lock:
            homes = [h for h in (self._home, self._companion) if h is not None]
            self._home = self._companion = None
        return homes

    async def aclose(self) -> None:
        """Close the connection (a later call opens a new one)."""
        if not self.owned:
            return
        if self._memory:
            await self.client.close()
            return
        loop = asyncio.get_running_loop()
        for home in self._homes():
            if home.loop is loop:
                await home.close()
            elif home.alive:
                await _hand_over(home.close(), home.loop)

    def close(self) -> None:
        """Close the connection from sync code."""
        if not self.owned:
            return
        if self._memory:
            asyncio.run_coroutine_threadsafe(self.client.close(), background_loop()).result(10)
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for home in self._homes():
            if home.loop is running:  # cannot wait here: let the loop do it next
                running.create_task(home.close())
            elif home.alive:
                asyncio.run_coroutine_threadsafe(home.close(), home.loop).result(10)


async def _on(home: _Home, action: Callable[[Any], Awaitable[T]]) -> T:
    return await action(await home.ready())


async def _hand_over(coro: Coroutine[Any, Any, T], owner: asyncio.AbstractEventLoop) -> T:
    """Run ``coro`` on the ``owner`` loop (another thread) and await its outcome here.

    What ``await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, owner))`` does,
    without the ``concurrent.futures.Future`` in between (its lock, condition and extra
    callbacks were a third of the hand-over's cost on every tool call): the task reports
    straight to a future of the calling loop, and cancelling the caller cancels the task.
    """
    caller = asyncio.get_running_loop()
    outcome: asyncio.Future[T] = caller.create_future()
    started: list[asyncio.Task[T]] = []

    def report(task: asyncio.Task[T]) -> None:
        if outcome.cancelled() and caller.is_closed():
            return  # nobody is waiting any more
        caller.call_soon_threadsafe(_settle, outcome, task)

    def start() -> None:
        task = owner.create_task(coro)
        started.append(task)
        task.add_done_callback(report)

    def cancel() -> None:  # runs on the owner after start() (its callbacks run in order)
        for task in started:
            task.cancel()

    owner.call_soon_threadsafe(start)
    try:
        return await outcome
    except asyncio.CancelledError:
        if outcome.cancelled():  # the caller was cancelled: so is the work it waited for
            with contextlib.suppress(RuntimeError):  # the owner loop is closed: nothing runs
                owner.call_soon_threadsafe(cancel)
        raise


def _settle(outcome: asyncio.Future[T], task: asyncio.Task[T]) -> None:
    if outcome.cancelled():
        if not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" warning
        return
    if task.cancelled():
        outcome.cancel()
    elif (error := task.exception()) is not None:
        outcome.set_exception(error)
    else:
        outcome.set_result(task.result())


@atexit.register
def _close_all() -> None:
    # Close owned connections at interpreter exit so nats-py flushes and says goodbye.
    for connection in list(_open):
        with contextlib.suppress(Exception):
            connection.close()
