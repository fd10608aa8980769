"""An event loop on a thread of its own, for NATS work asked for synchronously.

The JetStream store (opening, replaying the stream, a change made outside any event loop) and
the standby's leader lock (kept alive while the serving loop is busy) each run one: what they
ask waits on a ``concurrent.futures.Future``, bounded, and fails only with ``StorageError``
(what the engine and the standby expect of a store).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

from .base import StorageError

T = TypeVar("T")


class LoopThread:
    """``loop`` running on a daemon thread named ``name`` until ``close``."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, work: Coroutine[Any, Any, T], timeout: float) -> T:
        """``work``'s result, waited for at most ``timeout`` seconds from another thread."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(work, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise StorageError(f"JetStream did not answer within {timeout:g} s") from None
        except StorageError:
            raise
        except Exception as exc:  # the engine expects a store to fail with StorageError only
            raise StorageError(f"{type(exc).__name__}: {exc}") from None

    def close(self, connection: Any = None) -> None:
        """Close ``connection`` (a nats-py client of this loop's) on the loop, then stop it."""
        if connection is not None and self.loop.is_running():
            with contextlib.suppress(Exception):
                self.run(connection.close(), 5)
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
