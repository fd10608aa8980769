"""Waiting for mail in a mailbox: woken by the broker's arrival announcements where it makes
them, polling where it does not (docs/a2a-tck.md, "How quickly a call is seen").

    arrivals = await Arrivals(client).start()
    with arrivals.bell(mailbox) as bell:
        while not (found := await look()):
            await bell.wait(seconds_left)   # an arrival there, or the next look's time
    await arrivals.stop()

A bell hears only what arrives while it is there: arm it before whatever it waits for is
asked for (before the first look, before the request is sent), or mark the announcements heard
before asking and give the mark to the bell, ``bell(mailbox, since=mark)``: an answer announced
between the request and the bell is then not waited out (a process whose send returned after
the agent's answer was announced would otherwise wait its whole sweep).

The bundled broker announces each message stored (memory:// in this process, and
``mq9-dev-broker --announce`` on ``$mq9.WAKE.<digest>``: platform/mq9_platform/wake/arrivals.py); a
waiter then looks as soon as mail arrives, and every ``SWEEP_SECONDS`` anyway (for what no
announcement tells: an announcement lost in a reconnect, a lease that ran out, a delayed
message now due). mq9 itself announces nothing and RobustMQ neither; nor may a long FETCH wait
there (it holds the broker's handler for the connection: docs/protocol.md §1 point 5), so
until an announcement has been heard a waiter looks every ``POLL_SECONDS``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator

from ..client.client import Mq9Client
from ..client.live_search import is_robustmq
from ..groups.reader import POLL_SECONDS
from ..wake.arrivals import Unsubscribe, subscribe_arrivals
from ..wake.rules import digest

# With announcements heard: how often a waiter looks anyway.
SWEEP_SECONDS = 1.0
# Wakes in a row whose look found nothing (another waiter's mail, or announcements forged by a
# peer on the NATS server) after which the next look waits its poll time: a flood of them
# costs no more looks than polling does.
IDLE_WAKES = 3


class Arrivals:
    """The arrival announcements one client hears, handed to the waiters on each mailbox."""

    def __init__(self, client: Mq9Client | None, mailboxes: Iterable[str] | None = None) -> None:
        """``client``: the connection to listen on (None: no announcements, poll);
        ``mailboxes``: the only ones waited on, if known (else every mailbox's are heard)."""
        self.client = client
        self.mailboxes = None if mailboxes is None else list(mailboxes)
        self.heard = False  # an announcement came: the broker announces arrivals
        self._count = 0  # announcements heard, of any mailbox listened to (``mark``)
        self._bells: dict[str, set[Bell]] = {}
        self._unsubscribe: Unsubscribe | None = None

    async def start(self) -> Arrivals:
        """Listen, where the broker may announce (never on RobustMQ: it does not)."""
        client = self.client
        if client is None or self._unsubscribe is not None:
            return self
        if is_robustmq(client.server_info):
            return self
        self._unsubscribe = await subscribe_arrivals(
            client, self._arrived, mailboxes=self.mailboxes
        )
        return self

    async def stop(self) -> None:
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            await unsubscribe()

    def _arrived(self, mailbox_digest: str) -> None:
        self.heard = True
        self._count += 1
        for bell in self._bells.get(mailbox_digest, ()):
            bell.ring()

    @property
    def interval(self) -> float:
        """Seconds between looks that no arrival prompted."""
        return SWEEP_SECONDS if self.heard else POLL_SECONDS

    def mark(self) -> int:
        """Where the announcements stand now: for ``bell(since=...)``."""
        return self._count

    @contextlib.contextmanager
    def bell(self, mailbox: str, *, since: int | None = None) -> Iterator[Bell]:
        """A bell rung by each arrival in ``mailbox``, for as long as the block lasts; with
        ``since`` (a ``mark``), rung at once if anything was announced after that mark (the
        announcements' digests are not kept: it may be another mailbox's, which costs a look,
        where missing this one's would cost a sweep)."""
        d = digest(mailbox)
        bell = Bell(self)
        if since is not None and since != self._count:
            bell.ring()
        self._bells.setdefault(d, set()).add(bell)
        try:
            yield bell
        finally:
            bells = self._bells.get(d)
            if bells is not None:
                bells.discard(bell)
                if not bells:
                    del self._bells[d]


class Bell:
    """One waiter's: ``wait`` returns at an arrival since the previous ``wait`` returned (so
    mail that came during a look is not waited out), or at the next look's time."""

    def __init__(self, arrivals: Arrivals) -> None:
        self._arrivals = arrivals
        self._rung = asyncio.Event()
        self._woken = False  # the last wait ended at an arrival
        self._idle_wakes = 0

    def ring(self) -> None:
        self._rung.set()

    async def wait(self, limit: float, *, found: bool = False) -> None:
        """Until an arrival, or ``limit`` seconds at most; ``found``: the look since the last
        wait found something (wakes whose look finds nothing are limited: ``IDLE_WAKES``)."""
        if found or not self._woken:
            self._idle_wakes = 0
        else:
            self._idle_wakes += 1
        if self._idle_wakes > IDLE_WAKES:
            self._idle_wakes = 0
            self._woken = False
            await asyncio.sleep(max(min(POLL_SECONDS, limit), 0))
        else:
            interval = max(min(self._arrivals.interval, limit), 0)
            try:
                await asyncio.wait_for(self._rung.wait(), interval)
                self._woken = True
            except TimeoutError:
                self._woken = False
        self._rung.clear()


NO_ANNOUNCEMENTS = Arrivals(None)  # polls: for a waiter given no Arrivals
