"""The waker operator's bounds on what rules may make it do (docs/wake.md, "The operator's
configuration"): a floor under every rule's minimum interval, a ceiling on runs per hour per
target, a ceiling on commands running at once. A rule is data any reader of a mailbox may write
(a model too), so its own ``min_interval`` and ``cap`` only ever narrow what these allow.

``RunBook`` counts the runs per target in this waker's memory (a restarted waker starts
counting again; several wakers each count their own: the ceiling is per waker). Pure: the
caller gives the time.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

MIN_INTERVAL = 1.0  # seconds: no rule wakes its target more often than this
RUNS_PER_HOUR = 120  # wakes per target (a URL, a program, a callback) per hour
COMMANDS_AT_ONCE = 4  # command wakes running at once, all rules together
HOUR = 3600.0
BUSY_RETRY = 1.0  # seconds before a wake held by the commands' ceiling is tried again


@dataclass(frozen=True)
class Limits:
    """The operator's floors and ceilings (``mq9-wake --min-interval --runs-per-hour
    --commands-at-once``)."""

    min_interval: float = MIN_INTERVAL
    runs_per_hour: int = RUNS_PER_HOUR
    commands_at_once: int = COMMANDS_AT_ONCE

    def __post_init__(self) -> None:
        if not 0 <= self.min_interval <= 86400:
            raise ValueError("min_interval: between 0 and 86400 seconds")
        if not 1 <= self.runs_per_hour <= 10**6:
            raise ValueError("runs_per_hour: between 1 and 1,000,000")
        if not 1 <= self.commands_at_once <= 1024:
            raise ValueError("commands_at_once: between 1 and 1024")


class RunBook:
    """When each target last ran, for the ceiling on runs per hour."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._runs: dict[str, deque[float]] = {}

    def _window(self, target: str, now: float) -> deque[float]:
        runs = self._runs.get(target)
        if runs is None:
            return deque()
        while runs and (runs[0] <= now - HOUR or runs[0] > now + HOUR):
            runs.popleft()  # out of the hour (or from a clock set back by more than one)
        if not runs:
            del self._runs[target]  # memory follows the targets that ran this hour
        return runs

    def free_at(self, target: str, now: float) -> float:
        """When ``target`` may run again: ``now``, or when its oldest run of the hour ages out."""
        runs = self._window(target, now)
        if len(runs) < self.limits.runs_per_hour:
            return now
        return runs[len(runs) - self.limits.runs_per_hour] + HOUR

    def ran(self, target: str, now: float) -> None:
        self._window(target, now)
        self._runs.setdefault(target, deque()).append(now)
