"""One shared, lazily opened ``Mq9Client`` that any caller can use: sync code, any event loop,
Jupyter cells, many concurrent tasks.

A NATS connection belongs to the event loop that opened it, and user code comes and goes with
loops of its own (``asyncio.run`` per script step, a notebook's kernel loop, LangGraph's sync
executor threads). So a connection opened from ``server=`` lives on one background loop thread
for the process; every call, sync or async, is handed to that loop. A connection is opened once
and reused by every tool call, never opened per call.
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


class Mq9Connection:
    """Either owns a client built from ``server`` (opened on first use) or wraps a ``client``
    the caller opened and closes itself.

    An owned NATS client lives on the background loop, so every caller can use it. A program
    that runs one event loop for its whole life (a server) can pass ``on_caller_loop=True``:
    the client then opens on that loop and async calls skip the hand-over between threads.
    ``memory://`` needs no hand-over either way: the in-process broker serves any loop.
    """

    def __init__(
        self,
        server: str | None = None,
        *,
        client: Any | None = None,
        on_caller_loop: bool = False,
        **client_options: Any,
    ) -> None:
        if (server is None) == (client is None):
            raise ValueError("give exactly one of server= (a URL) or client= (an Mq9Client)")
        self.server = server if server is not None else getattr(client, "server", "client")
        self.owned = client is None
        self.client = client if client is not None else Mq9Client(server, **client_options)
        self.request_timeout = float(getattr(self.client, "request_timeout", 5.0))
        self._memory = self.owned and self.server.strip().startswith(MEMORY_SCHEME)
        self._direct = not self.owned or on_caller_loop or self._memory
        self._opening: asyncio.Lock | None = None
        if self.owned:
            _open.add(self)

    async def _ready(self) -> Any:
        if not self.owned or self.client.is_connected:
            return self.client
        if self._memory:  # instant and idempotent: no lock, which would bind to one loop
            return await self.client.connect()
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if not self.client.is_connected:
                await self.client.connect()
        return self.client

    async def _call(self, action: Callable[[Any], Awaitable[T]]) -> T:
        return await action(await self._ready())

    async def run(self, action: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``action(client)`` from async code."""
        if self._direct:
            return await self._call(action)
        return await _hand_over(self._call(action), background_loop())

    def run_sync(self, action: Callable[[Any], Awaitable[T]], *, wait: float = 0.0) -> T:
        """Run ``action(client)`` from sync code, also inside a running loop (Jupyter).

        ``wait`` is how long the action may legitimately take beyond a request (a long poll).
        """
        future = asyncio.run_coroutine_threadsafe(self._call(action), background_loop())
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

    async def aclose(self) -> None:
        if self.owned and self.client.is_connected:
            if self._direct:
                await self.client.close()
            else:
                await _hand_over(self.client.close(), background_loop())

    def close(self) -> None:
        if self.owned and self.client.is_connected:
            asyncio.run_coroutine_threadsafe(self.client.close(), background_loop()).result(10)


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
