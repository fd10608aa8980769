"""Clocks for the broker engine: the real one, and one that tests move by hand."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]
"""Anything that returns the current Unix time in seconds."""

system_clock: Clock = time.time


class ManualClock:
    """A clock that only moves when told to, so TTL, delay and retention tests never sleep.

    >>> clock = ManualClock(1_700_000_000)
    >>> clock.advance(30)
    >>> clock()
    1700000030.0
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not run backwards")
        self.now += seconds
