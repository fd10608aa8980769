"""A mailbox counted to its end.

Where the broker counts a mailbox itself (the bundled broker's ``$mq9.AI.MSG.COUNT``:
each lane, and the newest msg_id), that count is the one every part of every page shows: exact
at once, whatever the mailbox's size and mix of priorities, delays, deletes and keys, made
again after ``ASKED_SECONDS``. No read of the protocol can count a mailbox with many urgent
messages: a read from an id answers the most urgent lane first, so the normal messages under
more urgent ones than a read carries are never reached (with 10% urgent of
100,000 a count would stay at "200+ ... may be missing" for good).

Where it does not (RobustMQ answers nothing there; the official SDK's client has no such
call): mq9 answers no count, so the console reads the
mailbox page by page (``overview.page``, the reading of cut answers every page uses) from its
first message to its last, and keeps the count it reached. A count goes on where it stopped at
the next look (a page view gives it a few seconds, the depth sampler more), so a mailbox of
100,000 messages is counted exactly after a look or two, and every part of every page shows
that one count: the list, the mailbox's figures, its picture, its last page.

The bundled broker's count also tells how many delayed messages it holds, not yet due
(``scheduled``: no read shows them until they are), and when the soonest is due (``next_due``):
the console asks it for every mailbox it shows, a small one too (``Censuses.told``). Where the
broker answers no count, or a count without them, nothing tells: ``scheduled`` stays None,
shown as not told, never 0.

A count is exact as of when it reached the end (``done_at``, shown with it), and made again
after ``RECOUNT_SECONDS`` (messages come, are deleted and expire meanwhile); until the new one
ends the last exact one is shown, with its time. A count is "at least N" only where it truly is:
still under way, or stopped at ``COUNT_BYTES`` of payloads (a mailbox of 31 MiB messages is
not read through for a count), or a page that says less urgent messages may be missing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from mq9_platform.client.api import Mq9ClientLike
from mq9_wire.protocol import PRIORITY_ORDER, Message
from mq9_wire.protocol.errors import MailboxNotFound, Mq9Error, RequestTimeout

from .. import overview

# How long a finished count stands before it is made again.
RECOUNT_SECONDS = 30.0
# The most payload bytes one count reads: past it the count stays "at least N".
COUNT_BYTES = 64 << 20
# A count the broker answers (``asked``): how long it stands (it costs the broker a
# lookup a lane), how long the console waits for it (RobustMQ answers nothing there), and how
# long a broker that answered none is not asked again.
ASKED_SECONDS = 2.0
ASK_SECONDS = 2.0
ASK_AGAIN_SECONDS = 30.0
# One that did not answer within ASK_SECONDS: RobustMQ (no reply to a subject it lacks: each
# ask costs a look ASK_SECONDS), or a bundled broker slow at load (a full suite's run met one):
# asked again after two minutes, not ten, so a slow moment does not hide the count that long
UNANSWERED_AGAIN_SECONDS = 120.0


@dataclass
class Census:
    """One count of ``address`` from its first message on: what it added up so far, where it
    goes on (``next_from``; None: it reached the end), and why it is a lower bound for good
    (``stopped``: a page that may miss messages, or the byte budget spent)."""

    address: str
    started: float
    tally: overview.Tally = field(default_factory=overview.Tally)
    next_from: int | None = 0
    stopped: str | None = None
    done_at: float | None = None
    pages: int = 0
    asked: bool = False  # counted by the broker itself (``asked``), not page by page
    # delayed messages the broker holds, not yet due, and the unix second the soonest
    # is due: None where the broker does not tell (a count page by page, RobustMQ)
    scheduled: int | None = None
    next_due: int | None = None
    # one count at a time: a page view's and the sampler's would count the same pages twice
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    @property
    def exact(self) -> bool:
        return self.done_at is not None and self.stopped is None

    @property
    def total(self) -> int:
        return sum(self.tally.counts.values())

    def why(self) -> str | None:
        """Why the count is a lower bound (None: it is exact)."""
        if self.exact:
            return None
        if self.stopped is not None:
            return self.stopped
        return (
            f"counted the first {self.total:,} so far, page by page (mq9 answers no count): "
            "the count goes on at each look"
        )

    def seed(self, found: list[Message]) -> None:
        """Start from a QUERY's answer (the mailbox's oldest, in msg_id order): not read twice."""
        if self.pages == 0 and found:
            self.tally.add(found)
            self.next_from, self.pages = found[-1].msg_id + 1, 1

    async def advance(
        self,
        client: Mq9ClientLike,
        seconds: float,
        clock: Callable[[], float],
        pages: int = 0,
    ) -> None:
        """Count on, a page at a time, until the end, or for ``seconds`` once ``pages`` pages
        were read (on the loop's clock: ``clock`` dates the end)."""
        loop = asyncio.get_running_loop()
        until, read = loop.time() + seconds, 0
        while self.next_from is not None and self.stopped is None:
            found = await overview.page(client, self.address, self.next_from)
            self.pages, read = self.pages + 1, read + 1
            self.tally.add(found.messages)
            self.next_from = found.next_from
            if found.hidden is not None:
                self.stopped = found.hidden
            elif self.tally.payload_bytes > COUNT_BYTES:
                self.stopped = (
                    f"counted the first {self.total:,}: a count reads at most "
                    f"{COUNT_BYTES >> 20} MiB of payloads, and mq9 answers no count"
                )
            if self.next_from is not None and read >= pages and loop.time() >= until:
                return
        self.done_at = clock()


async def asked(
    client: Mq9ClientLike, address: str, seed: list[Message], clock: Callable[[], float]
) -> Census | None:
    """``address`` counted by its broker (``$mq9.AI.MSG.COUNT``, the bundled broker's):
    a finished, exact count at once; None where the broker answers no count (RobustMQ, the
    official SDK's client, an older bundled broker). ``seed``: the QUERY just read, for the
    oldest message's time and the shortest TTL. With it, where the broker tells them,
    the delayed messages it holds and when the soonest is due."""
    answer: Callable[[str], Awaitable[dict[str, Any]]] | None
    answer = getattr(client, "count_answer", None)
    lane_counts: Callable[[str], Awaitable[tuple[dict[str, int], int | None]]] | None
    lane_counts = getattr(client, "lane_counts", None)
    try:
        if answer is not None:
            told = await asyncio.wait_for(answer(address), ASK_SECONDS)
        elif lane_counts is not None:  # a client that reads the lanes alone: no schedule told
            counts, newest = await asyncio.wait_for(lane_counts(address), ASK_SECONDS)
            told = {"counts": counts, "newest_id": newest}
        else:
            return None
    except MailboxNotFound:
        raise
    except RequestTimeout as exc:  # unanswered (RobustMQ answers no subject it lacks)
        raise TimeoutError from exc
    except Mq9Error:  # unknown there, refused, the store away: paged instead
        return None
    now, counts, newest = clock(), told["counts"], told["newest_id"]
    census = Census(address, now, next_from=None, done_at=now, pages=1, asked=True)
    census.tally.add(seed)
    census.tally.counts = {p.value: int(counts.get(p.value, 0)) for p in PRIORITY_ORDER}
    if newest is not None:
        census.tally.newest_id = newest
    census.scheduled, census.next_due = told.get("scheduled"), told.get("next_due")
    return census


class Censuses:
    """The counts of the mailboxes the console looked at: the last finished one of each, and
    the one under way. Where the broker counts a mailbox itself (``asked``), that count, made
    again after ``ASKED_SECONDS``; else page by page. A broker that answered no count is
    asked again only after ``ASK_AGAIN_SECONDS`` (an upgrade, a failover), one that did not
    answer at all (RobustMQ: each ask costs a look ``ASK_SECONDS``) after
    ``UNANSWERED_AGAIN_SECONDS``."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.done: dict[str, Census] = {}
        self.going: dict[str, Census] = {}
        self.unasked_until = 0.0  # monotonic: no count asked of the broker before then

    async def count(
        self,
        client: Mq9ClientLike,
        address: str,
        seconds: float,
        *,
        pages: int = 0,
        seed: list[Message] | None = None,
    ) -> Census:
        """``address``'s count, counted on first for ``pages`` pages and then up to
        ``seconds``: the last finished one while it is fresh (or while the next one is under
        way), else the one under way. ``seed``: the QUERY just read, where a new count starts."""
        now = self.clock()
        done = self.done.get(address)
        fresh = ASKED_SECONDS if done is not None and done.asked else RECOUNT_SECONDS
        if done is not None and done.done_at is not None and now - done.done_at < fresh:
            return done
        told = await self.told(client, address, seed=seed)
        if told is not None:
            return told
        going = self.going.setdefault(address, Census(address, now))
        async with going.lock:
            if going.done_at is None:
                going.seed(seed or [])
                try:
                    await going.advance(client, seconds, self.clock, pages)
                except MailboxNotFound:  # gone meanwhile
                    self.forget(address)
                    raise
        if going.done_at is not None:
            if self.going.get(address) is going:
                self.done[address] = self.going.pop(address)
            return going
        return done or going

    async def told(
        self, client: Mq9ClientLike, address: str, *, seed: list[Message] | None = None
    ) -> Census | None:
        """``address`` as its broker counts it (``asked``): the last one while fresh, else
        asked again; None where the broker answers no count (not asked again for a while,
        then: ``ASK_AGAIN_SECONDS``, ``UNANSWERED_AGAIN_SECONDS``). Never page by page: what
        a mailbox its QUERY holds whole is shown (for its ``scheduled``) costs one
        request of the broker, or none."""
        done = self.done.get(address)
        if (
            done is not None
            and done.asked
            and done.done_at is not None
            and (self.clock() - done.done_at < ASKED_SECONDS)
        ):
            return done
        if time.monotonic() < self.unasked_until:
            return None
        try:
            told = await asked(client, address, seed or [], self.clock)
        except MailboxNotFound:  # gone meanwhile
            self.forget(address)
            raise
        except TimeoutError:  # a broker with no such command: not asked for a while
            told, self.unasked_until = None, time.monotonic() + UNANSWERED_AGAIN_SECONDS
        else:
            self.unasked_until = time.monotonic() + ASK_AGAIN_SECONDS
        if told is not None:
            self.unasked_until = 0.0
            self.going.pop(address, None)
            self.done[address] = told
        return told

    def forget(self, address: str) -> None:
        self.done.pop(address, None)
        self.going.pop(address, None)
