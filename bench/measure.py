"""Side-by-side timing: two (or more) things measured in the same run, interleaved.

Every comparison in this suite is a ratio, so both sides must see the same machine state: the
variants take turns in short blocks (the order flips every round, so neither always goes first
after a pause), each call is timed on its own, and the figure kept is the median, which ignores
the occasional garbage collection or scheduler hiccup that would drag a mean around.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Stats:
    """Per-call durations of one variant, in seconds."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def quantile(self, q: float) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def n(self) -> int:
        return len(self.samples)


def _orders(names: list[str], rounds: int) -> list[list[str]]:
    return [names if i % 2 == 0 else names[::-1] for i in range(rounds)]


async def interleave_async(
    variants: dict[str, Callable[[], Awaitable[object]]],
    *,
    rounds: int,
    block: int,
    warmup: int = 5,
) -> dict[str, Stats]:
    """Time ``block`` calls of each variant per round, for ``rounds`` rounds, alternating."""
    names = list(variants)
    for name in names:
        for _ in range(warmup):
            await variants[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    gc.collect()
    clock = time.perf_counter
    for order in _orders(names, rounds):
        for name in order:
            call, out = variants[name], samples[name]
            for _ in range(block):
                started = clock()
                await call()
                out.append(clock() - started)
    return {name: Stats(tuple(values)) for name, values in samples.items()}


def interleave_sync(
    variants: dict[str, Callable[[], object]],
    *,
    rounds: int,
    block: int,
    warmup: int = 5,
) -> dict[str, Stats]:
    """The synchronous twin of ``interleave_async``."""
    names = list(variants)
    for name in names:
        for _ in range(warmup):
            variants[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    gc.collect()
    clock = time.perf_counter
    for order in _orders(names, rounds):
        for name in order:
            call, out = variants[name], samples[name]
            for _ in range(block):
                started = clock()
                call()
                out.append(clock() - started)
    return {name: Stats(tuple(values)) for name, values in samples.items()}


def interleave_blocks(
    runners: dict[str, Callable[[int], list[float]]],
    *,
    rounds: int,
    block: int,
    warmup: int = 5,
) -> dict[str, Stats]:
    """For variants that must run in different contexts (plain code, inside an event loop):
    each runner makes ``n`` timed calls its own way and returns their durations."""
    names = list(runners)
    for name in names:
        runners[name](warmup)
    samples: dict[str, list[float]] = {name: [] for name in names}
    gc.collect()
    for order in _orders(names, rounds):
        for name in order:
            samples[name].extend(runners[name](block))
    return {name: Stats(tuple(values)) for name, values in samples.items()}


async def interleave_async_blocks(
    runners: dict[str, Callable[[int], Awaitable[list[float]]]],
    *,
    rounds: int,
    block: int,
    warmup: int = 5,
) -> dict[str, Stats]:
    """``interleave_blocks`` for runners that are coroutines (they may time only part of
    what they do, e.g. a SEND and not the DELETE that keeps the mailbox size constant)."""
    names = list(runners)
    for name in names:
        await runners[name](warmup)
    samples: dict[str, list[float]] = {name: [] for name in names}
    gc.collect()
    for order in _orders(names, rounds):
        for name in order:
            samples[name].extend(await runners[name](block))
    return {name: Stats(tuple(values)) for name, values in samples.items()}


def fmt_seconds(value: float) -> str:
    """A duration in the unit that reads best (µs below a millisecond)."""
    if value < 1e-3:
        return f"{value * 1e6:.1f} µs"
    if value < 1:
        return f"{value * 1e3:.2f} ms"
    return f"{value:.2f} s"
