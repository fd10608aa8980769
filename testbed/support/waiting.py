"""The one way a test waits for something to happen that it cannot be told of: ``until`` (in a
coroutine) and ``until_sync`` look at ``predicate`` until it holds, against one deadline.

The deadline is a guard against a hang, never a timing claim (DEVELOPERS.md: no timing
assertions): it is set generously, and a failure names what was awaited and the last thing
seen, so a test that fails here says what never happened. Where the thing can tell the test
itself (an event, a future, a queue, a line a process prints), wait on that instead."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

T = TypeVar("T")

EVERY = 0.02  # how often the predicate is looked at: cheap for a test, quick for a machine


class NeverHappened(AssertionError):
    """What a test waited for did not happen within its deadline."""


def _failure(what: str, timeout: float, last: Any) -> NeverHappened:
    seen = repr(last)
    seen = seen if len(seen) <= 400 else seen[:400] + "..."
    return NeverHappened(f"waited {timeout:g} s for {what}; last seen: {seen}")


async def until(
    predicate: Callable[[], T | Awaitable[T]],
    *,
    timeout: float,
    what: str,
    every: float = EVERY,
    ignoring: tuple[type[BaseException], ...] = (),
    show: Callable[[], object] | None = None,
) -> T:
    """Wait until ``predicate()`` (awaited when it returns an awaitable) is true; its value.

    ``ignoring``: exceptions that mean "not yet" (a server not listening yet), seen as the
    last thing seen if the deadline passes. ``show``: what the failure says it saw instead
    of the predicate's last value (a log, a state), read when the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value: Any = predicate()
            if inspect.isawaitable(value):
                value = await value
        except ignoring as exc:
            value = exc
        else:
            if value:
                return cast(T, value)
        if time.monotonic() >= deadline:
            raise _failure(what, timeout, value if show is None else show())
        await asyncio.sleep(every)


def until_sync(
    predicate: Callable[[], T],
    *,
    timeout: float,
    what: str,
    every: float = EVERY,
    ignoring: tuple[type[BaseException], ...] = (),
    show: Callable[[], object] | None = None,
) -> T:
    """``until`` for a test that runs no event loop (a process started, a thread's work)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value: Any = predicate()
        except ignoring as exc:
            value = exc
        else:
            if value:
                return value
        if time.monotonic() >= deadline:
            raise _failure(what, timeout, value if show is None else show())
        time.sleep(every)
