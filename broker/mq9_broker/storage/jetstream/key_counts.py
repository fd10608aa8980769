"""The idempotency keys each party holds in the cluster store, counted by JetStream: the
bound a vouched sender (or the client an open broker told apart) may hold, ``Once.most_each``,
is one party's across every broker of a layout, their restarts and their races.

The count is kept in a counter stream (``<layout>_KEYS``, ``allow_msg_counter``), one subject a
party and slice of its key window, ``mq9.<layout>.k.<party token>.<window>.<slice>``: a slice
is a tenth of the window (in milliseconds on the broker's clock), and a key counted in one
lives at most until the slice's end and a window after it. A new keyed SEND adds one to its
party's current slice (``Nats-Incr: +1``: the servers add it and answer the new total in one
step, whoever else adds at once), then reads the party's other slices still live, in one
direct get (``multi_last``): past the bound, it takes its one back (``-1``) and is refused
with the words the other stores say (``KeyTableFull``), unless its key lives, which answers it as
a duplicate. A SEND answered from its key, or whose write failed, takes its one back too. A
slice no longer live is purged by the party's next SEND that sees it (a counter stream takes
no ``Nats-TTL``, tried on nats-server 2.15), and the stream's ``max_age`` (the message
streams' retention: no key outlives it) removes a silent party's.

Exact among SENDs at once (each total is the servers'; a SEND reads the other slices after
its own add, so of two SENDs in two slices one sees the other's; on replicated servers that
read may be a replica's a moment behind, so at a slice's turn one more may pass), erring high
otherwise: a key counts a slice longer than it lives, and one whose give-back failed counts
until its slice ends. What a count costs: one add and one read for each new keyed SEND of a
bounded party, shared by its SENDs at once (a SEND without a key, or a party with no bound,
none): docs/broker.md, "A SEND stored once".

The bound in all (``Once.most``, ``--max-keys``) is not counted here: a count shared by the
layout would make one broker's keys refuse another's (the servers' storage bounds them), and
the words said of it are one broker's.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from mq9_wire.nats_floor.jetstream.api import NANOSECONDS

from ..key_parties import CALLER_FULL, PARTY_FULL, key_sender, of_caller
from ..mailbox_store import KeyTableFull, Once
from .keyed import key_written
from .mapping import RETENTION_SECONDS, Layout, token

if TYPE_CHECKING:
    from .requests import StorageRequests

log = logging.getLogger(__name__)

T = TypeVar("T")

SLICES = 10  # a window's slices: a key counts at most a tenth of its window longer than it lives
READ_MOST = 1000  # subjects one read of a party's slices brings (a live party has about 11)


def counts_stream(layout: Layout) -> str:
    return f"{layout.name}_KEYS"


def counts_prefix(layout: Layout) -> str:
    # (no message stream's subject: theirs are mq9.<name>.<m|d|s|t|h|i|digits>.>)
    return f"{layout.prefix}.k"


def counts_config(layout: Layout) -> dict[str, Any]:
    """The counter stream's settings: one total a subject, removed after the retention."""
    return {
        "subjects": [f"{counts_prefix(layout)}.>"],
        "allow_msg_counter": True,
        "allow_direct": True,
        "max_msgs_per_subject": 1,
        "max_age": (RETENTION_SECONDS + 3600) * NANOSECONDS,
    }


def slice_ms(window: int) -> int:
    """How long one slice of a ``window`` of seconds is, in milliseconds."""
    return max(window * 1000 // SLICES, 1)


def live(window: int, index: int, now_ms: int) -> bool:
    """Whether a key counted in slice ``index`` of ``window`` may still live at ``now_ms``."""
    return (index + 1) * slice_ms(window) + window * 1000 > now_ms


def counted(once: Once) -> list[tuple[str, int, str]]:
    """Whose counts ``once``'s new key goes in, each with its bound and the words said past
    it, as the stores in this process count (sent_keys.SentKeys.room): a carried caller's
    share, then its sender's bound; a party's bound; none for a key no party is counted for."""
    party = once.party if once.party is not None else key_sender(once.key)
    if party is None:
        return []
    names = []
    carried = of_caller(party)
    if carried is not None:  # a carrier's caller: its share, then its sender's bound
        sender, caller, share = carried
        names.append((caller, share, CALLER_FULL))
        party = sender
    if once.most_each is not None:
        names.append((party, once.most_each, PARTY_FULL))
    return names


@dataclass
class Taken:
    """The ones a keyed SEND added (the subjects), or the answer its living key gave."""

    subjects: list[str]
    answer: int | None = None


class KeyCounts:
    """The parties' counts of keys in ``layout``'s counter stream (opening.py makes it)."""

    def __init__(self, requests: StorageRequests, layout: Layout) -> None:
        self.requests, self.layout = requests, layout
        self.stream, self.prefix = counts_stream(layout), counts_prefix(layout)
        # the SENDs waiting for an add of their subjects under way, and the adds under way
        self._waiting: dict[tuple[str, ...], list[asyncio.Future[list[int]]]] = {}
        self._flights: set[asyncio.Task[None]] = set()

    async def counting(
        self, mailbox: str, once: Once | None, write: Callable[[], Awaitable[T]]
    ) -> T | int:
        """``write`` (a SEND of ``mailbox``, keyed ``once``) once its new key is counted:
        ``KeyTableFull`` past a bound, the key's answer when it lives; the one added taken back
        when the write answered from the key (a duplicate) or failed."""
        if once is None:
            return await write()
        taken = await self.take(mailbox, once)
        if taken.answer is not None:
            return taken.answer
        try:
            done = await write()
        except BaseException:
            await self.give_back(taken)
            raise
        if once.duplicate:
            await self.give_back(taken)
        return done

    async def take(self, mailbox: str, once: Once) -> Taken:
        """One added to each count ``once``'s key goes in; ``KeyTableFull`` (each taken back)
        when a count passes its bound, unless the key lives (``Taken.answer``)."""
        names = counted(once)
        if not names:
            return Taken([])
        window, at = once.window, once.at_ms
        here = at // slice_ms(window)
        tokens = [token(name) for name, _, _ in names]
        subjects = [f"{self.prefix}.{each}.{window}.{here}" for each in tokens]
        totals = await self._together(tokens, tuple(subjects), at)
        taken = Taken(subjects)
        for (_, most, why), total in zip(names, totals, strict=True):
            if total > most:
                await self.give_back(taken)
                answer = await key_written(self.requests, self.layout, token(mailbox), once)
                if answer is None:
                    raise KeyTableFull(why)
                return Taken([], answer)
        return taken

    async def _together(self, tokens: list[str], subjects: tuple[str, ...], at: int) -> list[int]:
        """Each count's total with this SEND's one in it. The SENDs of one party and slice
        that come while an add of theirs is under way go together in the next: one add of
        their number, one read, each SEND its place among them (as if added one by one)."""
        place: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        waiting = self._waiting.get(subjects)
        if waiting is not None:
            waiting.append(place)
        else:
            self._waiting[subjects] = [place]
            flight = asyncio.get_running_loop().create_task(self._fly(tokens, subjects, at))
            self._flights.add(flight)  # (held until done: a task only the loop holds may go)
            flight.add_done_callback(self._flights.discard)
        return await place

    async def _fly(self, tokens: list[str], subjects: tuple[str, ...], at: int) -> None:
        """The adds of the SENDs waiting on ``subjects``, a group at a time, until none
        waits. (``at``: the first's millisecond: a later one's slices read as live a little
        longer, erring high.)"""
        places: list[asyncio.Future[list[int]]] = []
        try:
            while places := self._waiting[subjects]:
                self._waiting[subjects] = []
                count = len(places)
                try:
                    adds = (self._add(subject, count) for subject in subjects)
                    totals = await asyncio.gather(*adds)
                    # (after the adds: of two SENDs in two slices at once, one reads the other's)
                    others = await self._others(tokens, set(subjects), at)
                except Exception as exc:
                    for place in places:
                        if not place.done():
                            place.set_exception(exc)
                    continue
                for n, place in enumerate(places):  # (one cancelled: its one counted, erring high)
                    if not place.done():
                        mine = zip(totals, tokens, strict=True)
                        place.set_result([t - count + n + 1 + others.get(e, 0) for t, e in mine])
        finally:
            # (cancelled itself: those it took, and those waiting for the next, are told)
            for place in [*places, *self._waiting.pop(subjects)]:
                if not place.done():
                    place.set_exception(self.requests.no_answer("a key's count was cut short"))

    async def give_back(self, taken: Taken) -> None:
        """The ones ``taken`` added, taken back (a failure leaves them counted until their
        slice ends: erring high)."""
        if not taken.subjects:
            return
        subjects, taken.subjects = taken.subjects, []
        backs = await asyncio.gather(
            *(self._add(subject, -1) for subject in subjects), return_exceptions=True
        )
        for back in backs:
            if isinstance(back, Exception):
                log.warning("a key's count is given back when its slice ends: %s", back)

    async def _add(self, subject: str, by: int) -> int:
        """``by`` added to ``subject``'s counter by the servers; its new total."""
        return await self.requests.add(subject, by)

    async def _others(self, tokens: list[str], own: set[str], now_ms: int) -> dict[str, int]:
        """Each party's (token's) total in its live slices other than ``own``, read in one
        direct get; the slices no longer live are purged."""
        filters = [f"{self.prefix}.{each}.>" for each in tokens]
        request = {"multi_last": filters, "batch": READ_MOST}
        found = await self.requests.direct_batch(self.stream, request)
        totals: dict[str, int] = {}
        dead = []
        for entry in found.entries:
            if entry.subject in own:
                continue
            party, window, index = entry.subject.rsplit(".", 3)[1:]
            if not live(int(window), int(index), now_ms):
                dead.append(entry.subject)
                continue
            value = int(json.loads(entry.data)["val"])
            totals[party] = totals.get(party, 0) + value
        if dead:
            await self._purge(dead)
        return totals

    async def _purge(self, subjects: list[str]) -> None:
        """Remove slices no longer live (a failure leaves them to the next SEND, or the
        stream's max_age)."""
        purges = await asyncio.gather(
            *(
                self.requests.api(f"STREAM.PURGE.{self.stream}", {"filter": subject})
                for subject in subjects
            ),
            return_exceptions=True,
        )
        for purge in purges:
            if isinstance(purge, Exception):
                log.debug("a slice of keys counted is purged later: %s", purge)
