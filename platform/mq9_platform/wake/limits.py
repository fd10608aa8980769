"""The waker operator's bounds on what rules may make it do (docs/wake.md, "The operator's
configuration"): a floor under every rule's minimum interval, two ceilings on runs, and one on
commands running at once. A rule is data any reader of a mailbox may write (a model too), so
its own ``min_interval`` and ``cap`` only ever narrow what these allow.

The two ceilings on runs, each a bucket per key, refilled evenly (``Buckets``):

- per receiver (``runs_per_hour``): every wake to one receiver (a URL normalised once,
  ``receivers.py``; a program; a callback), whichever mailbox it is for. Sized for a fleet
  behind one webhook: 100,000 an hour, and past them the next run is free 3600/N seconds
  later, not an hour after the first (a fixed hourly window would starve a fleet for the hour);
- per rule (``runs_per_rule``): one mailbox's wakes to one receiver, so one model's rules
  cannot flood the others' receiver. Keyed by the mailbox and the receiver, not the rule's
  name: a rule renamed, or 20 rules to one receiver, count as one.

``Ceilings`` checks every bound a run needs and records it in one step (nothing awaited
between): looks of several mailboxes at once cannot each pass before any records (else
more POSTs pass than the ceiling allows). Counted in this waker's memory (a restarted waker starts
counting again; several wakers each count their own). Pure: the caller gives the time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .receivers import DEFAULT_KEY, KEYS

MIN_INTERVAL = 1.0  # seconds: no rule wakes its target more often than this
RUNS_PER_HOUR = 100_000  # wakes per receiver an hour: a fleet of 1,000 woken each minute, x1.6
RUNS_PER_RULE = 120  # wakes per rule (a mailbox's, to one receiver) an hour: two a minute
COMMANDS_AT_ONCE = 4  # command wakes running at once, all rules together
HOUR = 3600.0
BUSY_RETRY = 1.0  # seconds before a wake held by the commands' ceiling is tried again
_PRUNE_EVERY = 1024  # runs between two sweeps of the buckets full again (memory follows use)
_EPSILON = 1e-9  # a run's worth short by a float's rounding is a run's worth
Keys = str | Sequence[str]  # what a ceiling counts a run by: one key, or several


@dataclass(frozen=True)
class Limits:
    """The operator's floor and ceilings (``mq9-wake --floor-interval --runs-per-hour
    --runs-per-rule --receiver-key --commands-at-once``)."""

    min_interval: float = MIN_INTERVAL
    runs_per_hour: int = RUNS_PER_HOUR  # per receiver
    commands_at_once: int = COMMANDS_AT_ONCE
    runs_per_rule: int = RUNS_PER_RULE
    receiver_key: str = DEFAULT_KEY  # what beside the origin tells receivers apart

    def __post_init__(self) -> None:
        if not 0 <= self.min_interval <= 86400:
            raise ValueError("min_interval: between 0 and 86400 seconds")
        for name in ("runs_per_hour", "runs_per_rule"):
            if not 1 <= getattr(self, name) <= 10**6:
                raise ValueError(f"{name}: between 1 and 1,000,000")
        if not 1 <= self.commands_at_once <= 1024:
            raise ValueError("commands_at_once: between 1 and 1024")
        if self.receiver_key not in KEYS:
            raise ValueError(f"receiver_key: one of {', '.join(KEYS)}")


class Buckets:
    """A bucket of ``per_hour`` runs per key, full at first, refilled evenly at ``per_hour``
    an hour: at most ``per_hour`` at once, and ``per_hour`` an hour on average (so up to
    twice that in the hour a full bucket is emptied). A key whose bucket is full again is
    forgotten."""

    def __init__(self, per_hour: int) -> None:
        self.size = float(per_hour)
        self.rate = per_hour / HOUR  # runs a second
        self._held: dict[str, tuple[float, float]] = {}  # key -> (runs left, as of when)
        self._runs = 0

    def __len__(self) -> int:
        return len(self._held)

    def left(self, key: str, now: float) -> float:
        held = self._held.get(key)
        if held is None:
            return self.size
        left, at = held
        # a clock set back refills nothing (and empties nothing)
        return min(self.size, left + max(now - at, 0.0) * self.rate)

    def free_at(self, key: str, now: float) -> float:
        """``now`` if ``key`` may run now, else when it may."""
        left = self.left(key, now)
        if left >= 1 - _EPSILON:
            return now
        return now + (1 - left) / self.rate

    def take(self, key: str, now: float) -> None:
        """Record a run of ``key`` (the caller checked ``free_at``: a run over is a debt)."""
        self._held[key] = (self.left(key, now) - 1, now)
        self._runs += 1
        if self._runs % _PRUNE_EVERY == 0:
            self._prune(now)

    def _prune(self, now: float) -> None:
        full = [k for k in self._held if self.left(k, now) >= self.size - _EPSILON]
        for key in full:
            del self._held[key]


class Ceilings:
    """The ceilings per receiver and per rule together: ``take`` checks both and records in
    both, or neither. A wake may count against several receivers (a name resolving to several
    addresses: each may be the one that gets it), given as a sequence of keys: it runs
    when every one of them may."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.receivers = Buckets(limits.runs_per_hour)
        self.rules = Buckets(limits.runs_per_rule)

    def free_at(self, receiver: Keys, rule: Keys, now: float) -> float:
        due = [self.receivers.free_at(k, now) for k in _keys(receiver)]
        return max(due + [self.rules.free_at(k, now) for k in _keys(rule)])

    def take(self, receiver: Keys, rule: Keys, now: float) -> float | None:
        """Check and record in one step: None when the run is taken, else when to ask again."""
        due = self.free_at(receiver, rule, now)
        if due > now:
            return due
        self.force(receiver, rule, now)
        return None

    def force(self, receiver: Keys, rule: Keys, now: float) -> None:
        """Record a run a caller made without asking (counted all the same)."""
        for key in _keys(receiver):
            self.receivers.take(key, now)
        for key in _keys(rule):
            self.rules.take(key, now)


def _keys(keys: Keys) -> Sequence[str]:
    return (keys,) if isinstance(keys, str) else keys
