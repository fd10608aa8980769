"""NATS asked synchronously: an event loop on a thread of its own, with its own connection.

The identities' bucket (identities/kv_store.py: its reads and writes come from synchronous
code) runs one. What it asks waits on a ``concurrent.futures.Future``, bounded, and fails only
with the error its owner names.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from mq9_wire.nats_floor.fits import fence
from mq9_wire.nats_floor.jetstream.ready import Deadline, until_ready

from .mailbox_store import StorageError

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient
    from nats.js import JetStreamContext

T = TypeVar("T")


@dataclass(frozen=True)
class Patience:
    """How ``LoopThread.open`` waits for JetStream: ``ask``, one request's timeout; ``wait``,
    how long JetStream may take to answer at all; ``pause``, between two tries."""

    ask: float
    wait: float
    pause: float


class LoopThread:
    """``loop`` running on a daemon thread named ``name`` until ``close``; ``nc``, the
    connection ``connect`` opened on it."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.nc: NatsClient | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(
        self,
        work: Coroutine[Any, Any, T],
        timeout: float,
        *,
        error: type[Exception] = StorageError,
        who: str = "JetStream",
    ) -> T:
        """``work``'s result, waited for at most ``timeout`` seconds from another thread; any
        failure an ``error`` (what the owner's callers expect, and nothing else)."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(work, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise error(f"{who} did not answer within {timeout:g} s") from None
        except error:
            raise
        except Exception as exc:
            raise error(f"{type(exc).__name__}: {exc}") from None

    async def open(
        self,
        servers: list[str],
        find: Callable[[JetStreamContext], Awaitable[T]],
        missing: type[Exception],
        patience: Patience,
    ) -> tuple[NatsClient, JetStreamContext, T | None]:
        """(on the loop) Connect to ``servers`` (the connection is closed with the loop), then
        ask JetStream ``find(js)`` until it answers (``until_jetstream``): the connection, its
        JetStream context and the answer (None: ``missing``)."""
        try:
            self.nc = nc = await connect(servers)
        except Exception as exc:
            raise StorageError(f"cannot connect to NATS at {servers}: {exc}") from None
        js = nc.jetstream(timeout=patience.ask)
        found = await until_jetstream(
            partial(find, js),
            wait=patience.wait,
            pause=patience.pause,
            unavailable=partial(_no_jetstream, servers),
            missing=missing,
        )
        return nc, js, found

    def close(self, connection: Any = None) -> None:
        """Close ``connection`` (a nats-py client of this loop's; else ``nc``) on the loop,
        then stop it."""
        connection = connection if connection is not None else self.nc
        if connection is not None and self.loop.is_running():
            with contextlib.suppress(Exception):
                self.run(connection.close(), 5)
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)


async def connect(servers: list[str], *, in_order: bool = False) -> NatsClient:
    """A connection that reconnects for ever and buffers nothing meanwhile: a write given up
    on must not land later. ``in_order``: try ``servers`` in their order."""
    import nats

    connection = await nats.connect(
        servers,
        connect_timeout=2,
        pending_size=0,
        max_reconnect_attempts=-1,
        allow_reconnect=True,
        reconnect_time_wait=0.25,
        dont_randomize=in_order,
    )
    # nats-py reconnects for ever but closes for good on a server's -ERR: a write the server
    # cannot take is refused here, unsent
    fence(connection, StorageError)
    return connection


async def until_jetstream(
    ask: Callable[[], Awaitable[T]],
    *,
    wait: float,
    pause: float,
    unavailable: Callable[[Exception], Exception],
    missing: type[Exception] | None = None,
) -> T | None:
    """``ask()``'s answer, asked again every ``pause`` seconds for ``wait`` seconds while
    JetStream does not answer (a cluster just started elects its JetStream leader first).
    None when it raised ``missing``; ``unavailable(exc)`` is raised when there is no JetStream
    at all (no responders) or it did not answer in time."""
    from nats.errors import NoRespondersError

    deadline = Deadline(wait, asyncio.get_running_loop().time)

    async def asked() -> T | None:
        try:
            return await ask()
        except Exception as exc:
            if missing is not None and isinstance(exc, missing):
                return None
            raise

    def not_yet(exc: Exception) -> None:
        if isinstance(exc, NoRespondersError) or deadline.passed():
            raise unavailable(exc) from None

    return await until_ready(asked, not_yet, pause=pause)


def _no_jetstream(servers: list[str], exc: Exception) -> StorageError:
    return StorageError(
        f"JetStream is not available on {servers}: {type(exc).__name__}: {exc} (start "
        "nats-server with -js, or with jetstream in its config)"
    )
