"""Large answers share a byte rate, taken in turns by requester (the dev broker's, issue #35).

A request of a few bytes can ask for megabytes: the listing of 1,000 agents is 2 MB for the
two bytes ``{}``. Sent back to back, such answers keep both cores of a small machine busy
(nats-server copying them twice, the requester reading them) and every other client's SEND
waits for a core: 6x its idle p99 in bench 9d. Paced to a rate the machine carries beside its
other work, they leave the cores free most of the time.

The pace is a virtual clock (GCRA): an answer goes at once while the answers before it have
been paid for, up to ``burst`` bytes ahead; a single large answer after a quiet moment is never
held, however large. Requesters waiting take turns, so one client asking for large answers
back to back holds another's large answer by at most one of its own each turn. A requester is
known by its reply subject without the last token (NATS clients make one inbox prefix per
connection); a client making up prefixes gets as many turns as it makes, as it could make
connections: the dev broker has no authentication.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

Sleep = Callable[[float], Awaitable[object]]
# A wait shorter than this is none (what float rounding leaves of a pace exactly met)
NEGLIGIBLE = 1e-6  # seconds


def requester(reply: str) -> str:
    """Who is asking, as far as the reply subject shows: ``_INBOX.<connection>.<n>`` →
    ``_INBOX.<connection>``."""
    return reply.rpartition(".")[0] or reply


class AnswerPacer:
    """At most ``rate`` bytes a second of answers, ``burst`` bytes ahead of that pace;
    ``await pacer.admit(requester, size)`` returns when an answer of ``size`` bytes may go.
    ``clock`` and ``sleep`` are the time it keeps (injected in tests)."""

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if rate <= 0 or burst < 0:
            raise ValueError(f"rate must be above 0 and burst at least 0, not {rate}, {burst}")
        self.rate, self.burst = rate, burst
        self._clock, self._sleep = clock, sleep
        self._paid_until = clock()  # when the answers admitted so far are paid for
        # Requesters in the order of their turns (a dict keeps insertion order), each with
        # its answers waiting: (size, future set when it may go)
        self._waiting: dict[str, deque[tuple[int, asyncio.Future[None]]]] = {}
        self._turns: asyncio.Task[None] | None = None

    async def admit(self, requester: str, size: int) -> None:
        if not self._waiting and self._wait() <= NEGLIGIBLE:
            self._pay(size)  # nobody waiting and within the burst: at once
            return
        future = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(requester, deque()).append((size, future))
        if self._turns is None or self._turns.done():
            self._turns = asyncio.create_task(self._take_turns())
        await future

    def _wait(self) -> float:
        """Seconds until the answers admitted so far are paid for but ``burst`` bytes."""
        return self._paid_until - self.burst / self.rate - self._clock()

    def _pay(self, size: int) -> None:
        self._paid_until = max(self._paid_until, self._clock()) + size / self.rate

    async def _take_turns(self) -> None:
        while self._waiting:
            who, queue = next(iter(self._waiting.items()))
            size, future = queue.popleft()
            del self._waiting[who]
            if queue:  # its next answer waits for its next turn, behind everyone else's
                self._waiting[who] = queue
            if future.done():  # its request was cancelled (the broker stopping)
                continue
            wait = self._wait()
            if wait > NEGLIGIBLE:
                await self._sleep(wait)
            self._pay(size)
            if not future.done():
                future.set_result(None)

    def close(self) -> None:
        """Stop taking turns (what waits is cancelled with the requests that wait)."""
        if self._turns is not None:
            self._turns.cancel()
