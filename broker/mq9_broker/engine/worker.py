"""The one thread the process's engines hand CPU-heavy work to: reading a large body, ranking
a search, embedding a card, cutting a long answer; the event loop serves other requests
meanwhile. One thread, as onnxruntime runs an embedding on one thread and the loop needs the
other core; below the loop's priority, so the scheduler gives the loop a core at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from mq9_wire.semantic.ranking import word_pieces

log = logging.getLogger("mq9_broker")

T = TypeVar("T")  # what a piece of work gives
A = TypeVar("A")  # what it is given

WORKER_NICENESS = 10
# Between two pieces of a text query's words (4 KiB each) the worker sleeps this long
# (seconds): Python's lock goes to the loop at once, not when the loop has waited the switch
# interval for it, so a client sending large queries back to back no longer keeps the loop
# busy with its requests' bytes (bench 9d text). A query of one piece never waits.
TEXT_PAUSE = 0.0005


def _yield_to_the_loop() -> None:
    """Run this thread below the event loop's priority (Linux: a thread's own nice value)."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICENESS)


_WORKER = ThreadPoolExecutor(
    1, thread_name_prefix="mq9-broker-work", initializer=_yield_to_the_loop
)


async def off_loop(work: Callable[[A], T], argument: A) -> T:
    """``work(argument)`` on the worker thread, the loop serving others meanwhile."""
    return await asyncio.get_running_loop().run_in_executor(_WORKER, work, argument)


def soon(work: Callable[[], None]) -> Future[None]:
    """``work()`` started on the worker thread now, from any thread (no loop needed)."""
    return _WORKER.submit(work)


def after(work: Callable[[], None]) -> None:
    """``work()`` on the worker thread after what was handed to it before, not waited for
    (so the request handing it over does not wait a turn of the loop); a failure logged."""

    def logged() -> None:
        try:
            work()
        except Exception:
            log.exception("the broker's worker failed")

    _WORKER.submit(logged)


def paced_words(text: str) -> set[str]:
    """The ``words`` of a text search's query, a piece at a time, sleeping ``TEXT_PAUSE``
    between pieces (on the worker thread)."""
    found: set[str] = set()
    for i, some in enumerate(word_pieces(text)):
        if i:
            time.sleep(TEXT_PAUSE)
        found |= some
    return found
