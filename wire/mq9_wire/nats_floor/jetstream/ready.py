"""The one wait for a JetStream that cannot answer yet: a cluster just started (or a server
just restarted) elects its JetStream and streams' leaders first, and drops or refuses what it
is asked meanwhile. Every such wait of the broker is ``until_ready``: a question asked again,
every ``pause`` seconds, until it is answered or ``Deadline`` passes; what can never come
(JetStream off, a request refused for good) is its caller's to say at once, in ``not_yet``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class Deadline:
    """``seconds`` from now on ``clock`` (injected in tests)."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds, self.clock = seconds, clock
        self.at = clock() + seconds

    def left(self) -> float:
        return max(self.at - self.clock(), 0.0)

    def passed(self) -> bool:
        return self.clock() >= self.at


async def until_ready(
    ask: Callable[[], Awaitable[T]],
    not_yet: Callable[[Exception], None],
    *,
    pause: float,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """``ask()``'s answer, asked again after each failure that ``not_yet`` lets pass:
    ``not_yet(exc)`` raises when the failure is for good or the wait's deadline passed
    (``past``), and returns to have ``ask`` tried again ``pause`` seconds later."""
    while True:
        try:
            return await ask()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            not_yet(exc)
        if pause > 0:
            await sleep(pause)


def past(deadline: Deadline, exc: Exception, error: Callable[[Exception], Exception]) -> None:
    """``error(exc)`` raised once ``deadline`` passed; nothing before."""
    if deadline.passed():
        raise error(exc) from None
