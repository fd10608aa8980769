"""The waker: watches the mailboxes that have wake rules and wakes their targets when mail
waits there (docs/wake.md).

Each look at a mailbox M: one FETCH (no group, from the newest message) says whether anything
arrived above M's cursor. Only then does the waker claim M (a claim record in M's rules
mailbox) and read M's rules (so a removed rule never wakes again), the claims and M's state in
one QUERY; the oldest live claim holds M, as a group's leases do (claims.py). The holder
delivers, for each rule due, one wake for every message from its first owed one to the newest
the FETCH saw (counted exactly, span.py: one FETCH a page), then stores the state (the cursor
moved), which releases its claim. Five broker requests for a wake (FETCH, SEND, QUERY, FETCH,
SEND). So:

- a burst is one wake: what arrives while a rule waits for its minimum interval, quiet hours
  or cap joins the wake owed (``pending_from``), delivered once it is due;
- a waker that dies holding a claim holds M only until the claim's lease ends; the next waker
  finds the cursor where the state last said and wakes again (at least once: the same wake
  key, which receivers dedupe by);
- two wakers never hold M at once while claims are live, so they do not both wake for the
  same mail.

Where the broker announces arrivals (the bundled broker with ``--announce``, memory://), a
look follows each arrival after ``settle`` seconds; elsewhere every watched mailbox is looked
at every ``poll_interval`` seconds (RobustMQ: its FETCH never waits, docs/protocol.md rule 5).
A sweep every ``sweep_interval`` seconds looks at all of them anyway (what an announcement
missed while a waker was down).

At most ``CONCURRENT_LOOKS`` looks an announcement (or a wake owed) called ask the broker
whether mail arrived at once; a sweep asks with as many workers of its own, never queued
behind each other by the thousand (cancelling 10,000 waiters of one semaphore took over 30 s
at a waker's stop). A look that found mail goes on by itself, and its delivery (each try with
a deadline of its own, deliver.py) holds its own mailbox only. The index is read a page at a
time, each new digest kept only once its rules mailbox shows a rule: the waker's memory
follows the mailboxes with rules, whatever is written to the index.

``stop`` starts nothing more and cancels what runs until it has ended: a cancel can be lost
(Python 3.11's ``asyncio.wait_for``, in nats-py's request, returns a reply that arrived with the
cancel and drops the cancel), and a sweep worker that lost it went on through thousands of
mailboxes; so every loop here ends at its next turn once the waker stops, and what still runs
is cancelled again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from mq9_wire.protocol import HEADER_SENDER, Message
from mq9_wire.protocol.errors import MailboxNotFound, Mq9Error

from ..client import Mq9Client
from .arrivals import Unsubscribe, subscribe_arrivals
from .book import (
    CLAIM_TAG,
    RULE_TAG,
    STATE_KEY,
    STATE_TAG,
    MailboxState,
    RuleState,
    ensure_mailbox,
)
from .claims import judge, read_records, rules_in
from .deliver import Deliverer, Refused, Wake
from .rules import (
    INDEX_ADDRESS,
    RULES_ROOT,
    RuleError,
    WakeRule,
    digest,
    failed_address,
    quiet_until,
)
from .span import read_span

log = logging.getLogger("mq9_platform.wake")

POLL_INTERVAL = 1.0  # seconds between looks at each mailbox without announcements
SWEEP_INTERVAL = 30.0  # seconds between looks at every mailbox with announcements
SETTLE = 0.005  # seconds after an announcement before the look: a burst's next messages join
LEASE = 60.0  # seconds a claim holds a mailbox: longer than a wake's retries
PAYLOADS_SHOWN = 20  # messages whose payloads a rule with include_payload gets
PAYLOAD_CHARS = 4000
GROUP_SHOWN = 10_000  # a group's unacked messages counted per wake (one FETCH: no paging)
CONCURRENT_LOOKS = 16  # looks asking whether mail arrived at once (and a sweep's workers)
INDEX_PAGE = 200  # index entries read per FETCH
INDEX_LOOKS = 4  # new index digests whose rules are read at once (beside the looks' gate)
MAX_WATCHED = 100_000  # mailboxes with rules one waker watches; beyond, the rest wait
CANCEL_AGAIN = 0.5  # seconds stop waits for what it cancelled before cancelling it again
INDEX_DIGEST = digest(INDEX_ADDRESS)
Clock = Callable[[], float]


@dataclass
class _Watch:
    digest: str
    mailbox: str = ""
    explicit: bool = False  # named by the waker's owner (kept without rules)
    ruled: bool = True  # its last look found rules (else the next reads them before claiming)
    seen: int = -1  # the cursor as this waker last knew it
    due: float | None = None  # when a wake held back becomes due (the waker's clock)
    running: bool = False
    looked: asyncio.Event = field(default_factory=asyncio.Event)  # set when a look ends
    again: bool = False
    timer: asyncio.TimerHandle | None = None


@dataclass
class _Span:
    """What a wake tells of the messages it is for."""

    count: int = 0
    newest: Message | None = None
    priorities: dict[str, int] | None = None
    shown: list[Message] | None = None


class Waker:
    """Wakes the targets of the wake rules on ``client``'s broker.

    >>> waker = Waker(client, Deliverer(Destinations(hosts=["hooks.example.com"])))
    >>> await waker.start()   # ... runs until
    >>> await waker.stop()

    ``mailboxes``: watch only these (else every mailbox the index lists). ``clock``: the
    time rules are judged by (minimum interval, cap, quiet hours, claims' leases).
    ``owner``: the agent the client is logged in as (default: its credential's id), which
    names the mailbox wakes are set aside in (``failed_address``).
    """

    def __init__(
        self,
        client: Mq9Client,
        deliverer: Deliverer | None = None,
        *,
        mailboxes: Iterable[str] | None = None,
        clock: Clock = time.time,
        events: bool = True,
        poll_interval: float = POLL_INTERVAL,
        sweep_interval: float = SWEEP_INTERVAL,
        settle: float = SETTLE,
        lease: float = LEASE,
        name: str | None = None,
        owner: str | None = None,
    ) -> None:
        self.client = client
        self.deliverer = deliverer or Deliverer()
        self.clock = clock
        self.events = events
        self.poll_interval = poll_interval
        self.sweep_interval = sweep_interval
        self.settle = settle
        self.lease = lease
        self.name = name or f"waker-{uuid.uuid4().hex[:12]}"
        self.owner = owner if owner is not None else client.principal
        self.failed_address = failed_address(self.owner)
        # this instance's claims (two wakers given one name never replace each other's)
        self._claim_key = f"claim.{uuid.uuid4().hex}"
        self._stopping = False
        self._explicit = list(mailboxes) if mailboxes is not None else None
        self._watches: dict[str, _Watch] = {}
        self._index_next = 0
        self._index_lock = asyncio.Lock()
        self._index_task: asyncio.Task[None] | None = None
        self._index_again = False
        self._full_said = False
        self._announced = False  # an announcement came: sweeps may be rare
        self._unsubscribe: Unsubscribe | None = None
        self._task: asyncio.Task[None] | None = None
        self._looks: set[asyncio.Task[None]] = set()
        self._gate = asyncio.Semaphore(CONCURRENT_LOOKS)  # looks an announcement called
        self._sweeping: asyncio.Task[Any] | None = None
        self._vetting = asyncio.Semaphore(INDEX_LOOKS)
        self.wakes = 0  # delivered
        self.set_aside = 0
        # told of each wake tried: its rule, "delivered" or "set_aside", and the seconds
        # from its oldest message's arrival to the end of the delivery (mq9-wake --metrics)
        self.on_wake: Callable[[WakeRule, str, float], None] | None = None

    def __repr__(self) -> str:
        return f"Waker({self.client!r}, name={self.name!r}, watching={len(self._watches)})"

    @property
    def watching(self) -> list[str]:
        return sorted(w.mailbox for w in self._watches.values() if w.mailbox)

    @property
    def index_read(self) -> int:
        """How far the index has been read (its next msg_id)."""
        return self._index_next

    # -- running -------------------------------------------------------------------------

    async def start(self) -> Waker:
        if self.events:
            self._unsubscribe = await subscribe_arrivals(self.client, self._arrived)
        for mailbox in self._explicit or []:
            d = digest(mailbox)
            self._watches.setdefault(d, _Watch(d, mailbox, explicit=True))
        await self.sweep()
        self._task = asyncio.ensure_future(self._run())
        return self

    async def stop(self) -> None:
        """Start nothing more, and end what runs: cancelled, and cancelled again while it
        runs on (a cancel lost as a reply arrives: the module's docstring)."""
        self._stopping = True
        if self._unsubscribe is not None:
            await self._unsubscribe()
            self._unsubscribe = None
        for watch in self._watches.values():
            if watch.timer is not None:
                watch.timer.cancel()
                watch.timer = None
        running = [t for t in (self._task, *self._looks) if t is not None]
        while running:
            for task in running:
                task.cancel()
            await asyncio.wait(running, timeout=CANCEL_AGAIN)
            running = [t for t in running if not t.done()] + [
                t for t in self._looks if t not in running and not t.done()
            ]
        self._task = None
        await self.deliverer.close()

    async def _run(self) -> None:
        while not self._stopping:
            interval = self.sweep_interval if self._announced else self.poll_interval
            await asyncio.sleep(interval)
            try:
                if self._explicit is None:
                    await self._read_index()
            except Mq9Error as exc:  # the broker away: the next sweep tries again
                log.warning("wake index read failed: %s", exc)
            # in a task of its own: a look held by a slow target delays no other, nor the
            # next sweep (one still under way is left to finish)
            if self._sweeping is None or self._sweeping.done():
                self._sweeping = asyncio.ensure_future(self._sweep_looks())
                self._looks.add(self._sweeping)
                self._sweeping.add_done_callback(self._looks.discard)

    async def sweep(self) -> None:
        """Read the index's new entries, then look at every watched mailbox."""
        if self._explicit is None:
            await self._read_index()
        await asyncio.gather(*await self._sweep_looks())

    async def _sweep_looks(self) -> list[asyncio.Task[None]]:
        """Ask of every watched mailbox whether mail arrived (or a wake is owed), with
        ``CONCURRENT_LOOKS`` workers; each that has some gets a look of its own (returned)."""
        queue = iter([w for w in list(self._watches.values()) if not w.running])
        started: list[asyncio.Task[None]] = []

        async def worker() -> None:
            for watch in queue:
                if self._stopping:  # (a cancel it lost: the module's docstring)
                    return
                try:
                    if await self._due_now(watch) and not self._stopping:
                        task = asyncio.ensure_future(self._look(watch))
                        self._looks.add(task)
                        task.add_done_callback(self._looks.discard)
                        started.append(task)
                except Mq9Error as exc:
                    log.warning("wake look at %s failed: %s", watch.mailbox or watch.digest, exc)

        await asyncio.gather(*(worker() for _ in range(CONCURRENT_LOOKS)))
        return started

    async def _due_now(self, watch: _Watch) -> bool:
        if not watch.mailbox or watch.running:
            return not watch.running
        newest = await self._newest(watch.mailbox)
        return newest > watch.seen or (watch.due is not None and watch.due <= self.clock())

    async def check(self, mail_address: str) -> None:
        """Look at one mailbox now and deliver what is due."""
        d = digest(mail_address)
        watch = self._watches.setdefault(d, _Watch(d, mail_address, explicit=True))
        while watch.running:  # a look under way (a poll's): this one comes after it
            await watch.looked.wait()
        await self._look(watch)

    # -- announcements ---------------------------------------------------------------------

    def _arrived(self, d: str) -> None:
        self._announced = True
        if d == INDEX_DIGEST and self._explicit is None:
            self._kick_index()
            return
        watch = self._watches.get(d)
        if watch is not None:
            self._soon(watch, self.settle)

    def _kick_index(self) -> None:
        """One reader of the index at a time; a flood of entries is one more pass."""
        if self._stopping:
            return
        if self._index_task is not None and not self._index_task.done():
            self._index_again = True
            return
        self._index_task = asyncio.ensure_future(self._index_passes())
        self._looks.add(self._index_task)
        self._index_task.add_done_callback(self._looks.discard)

    async def _index_passes(self) -> None:
        while True:
            self._index_again = False
            try:
                listed = await self._read_index()
                await asyncio.gather(*(self._look(w) for w in listed))
            except Mq9Error as exc:
                log.warning("wake index read failed: %s", exc)
            if not self._index_again or self._stopping:
                return

    def _soon(self, watch: _Watch, delay: float) -> None:
        if self._stopping:
            return
        if watch.running:
            watch.again = True
            return
        self._later(watch, delay)

    def _later(self, watch: _Watch, delay: float) -> None:
        if self._stopping:
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + max(delay, 0.0)
        if watch.timer is not None:
            if watch.timer.when() <= when:
                return  # a look is already on its way, as soon
            watch.timer.cancel()
        watch.timer = loop.call_at(when, self._fire, watch)

    def _fire(self, watch: _Watch) -> None:
        watch.timer = None
        if not self._stopping:
            task = asyncio.ensure_future(self._look(watch))
            self._looks.add(task)
            task.add_done_callback(self._looks.discard)

    async def _read_index(self) -> list[_Watch]:
        """Read the index's entries listed since the last read, a page at a time; the watches
        to look at: a digest already watched (a rule added or removed lists it again), and a
        new one only if its rules mailbox holds a rule (no other is kept)."""
        listed: dict[str, _Watch] = {}
        async with self._index_lock:
            async for page in read_span(
                self.client, INDEX_ADDRESS, self._index_next, page=INDEX_PAGE
            ):
                if self._stopping:
                    break
                found = {m.text().strip() for m in page}
                digests = [
                    d for d in found if len(d) == 32 and all(c in "0123456789abcdef" for c in d)
                ]
                for watch in await asyncio.gather(*(self._listed(d) for d in digests)):
                    if watch is not None:
                        listed[watch.digest] = watch
                self._index_next = page[-1].msg_id + 1
        return list(listed.values())

    async def _listed(self, d: str) -> _Watch | None:
        watch = self._watches.get(d)
        if watch is not None:
            return watch
        if len(self._watches) >= MAX_WATCHED:
            if not self._full_said:
                self._full_said = True
                log.warning(
                    "this waker watches %d mailboxes, its most: run another with "
                    "--mailbox for the rest",
                    MAX_WATCHED,
                )
            return None
        async with self._vetting:
            rules = await self._rules(RULES_ROOT + d, d)
        if not rules:
            return None
        return self._watches.setdefault(d, _Watch(d, rules[0].mailbox))

    # -- one mailbox -----------------------------------------------------------------------

    async def _look(self, watch: _Watch) -> None:
        if watch.running:
            watch.again = True
            return
        watch.running = True
        watch.looked.clear()
        try:
            while True:
                watch.again = False
                try:
                    await self._visit(watch)
                except (Mq9Error, RuleError) as exc:
                    log.warning("wake look at %s failed: %s", watch.mailbox or watch.digest, exc)
                if not watch.again or self._stopping:
                    break
        finally:
            watch.running = False
            watch.looked.set()

    async def _rules(self, address: str, d: str) -> list[WakeRule]:
        try:
            return rules_in(await self.client.query(address, tags=[RULE_TAG]), d)
        except MailboxNotFound:
            return []

    async def _visit(self, watch: _Watch) -> None:
        now = self.clock()
        newest = -1
        if watch.mailbox:
            async with self._gate:
                newest = await self._newest(watch.mailbox)
            if newest <= watch.seen and (watch.due is None or watch.due > now):
                return  # nothing new, nothing owed yet
        if not watch.ruled or not watch.mailbox:  # none last time: read them before claiming
            rules = await self._rules(RULES_ROOT + watch.digest, watch.digest)
            if not rules:
                self._no_rules(watch, newest)
                return
            watch.ruled = True
            if not watch.mailbox:
                watch.mailbox = rules[0].mailbox
                newest = await self._newest(watch.mailbox)
        address = RULES_ROOT + watch.digest
        try:
            mine = await self.client.send(
                address,
                json.dumps({"waker": self.name, "until": now + self.lease}),
                key=self._claim_key,
                tags=[CLAIM_TAG],
                ttl=int(self.lease * 2) + 60,
            )
        except MailboxNotFound:  # no rules mailbox: no rules
            self._no_rules(watch, newest)
            return
        released = False
        try:
            released = await self._held(watch, address, mine, now, newest)
        finally:
            if not released:  # not holding, or stopped short of storing the state
                with contextlib.suppress(Mq9Error):
                    await self.client.delete(address, mine)

    async def _held(self, watch: _Watch, address: str, mine: int, now: float, newest: int) -> bool:
        """With claim ``mine`` sent: read the rules mailbox (rules, claims, state: one QUERY),
        and if ``mine`` holds, wake what is due and store the state, which releases ``mine``
        (True); False when it did not hold (the caller drops it)."""
        # read at every look that may wake: a rule removed wakes nothing from then on
        records = read_records(
            await self.client.query(address, tags=[RULE_TAG, CLAIM_TAG, STATE_TAG]),
            watch.digest,
        )
        if not records.rules:
            self._no_rules(watch, newest)
            return False
        watch.mailbox = records.rules[0].mailbox
        state = MailboxState.from_message(records.state)
        held = judge(records.claims, mine, now + self.lease, state.released, now, self.lease)
        for msg_id in held.void:  # a dead waker's, or forged: nobody needs it
            with contextlib.suppress(Mq9Error):
                await self.client.delete(address, msg_id)
        if held.holder != mine:
            # the holder may die: look again once its lease is over
            self._later(watch, held.until - now + 0.05)
            return False
        if records.state is None:  # an older waker's state record has no tag: once
            found = await self.client.query(address, key=STATE_KEY)
            state = MailboxState.from_message(found[-1] if found else None)
        await self._wake_due(watch, records.rules, state, newest, mine)
        return True

    def _no_rules(self, watch: _Watch, newest: int) -> None:
        watch.ruled = False
        if not watch.explicit:  # the index listed it; nothing to keep
            self._watches.pop(watch.digest, None)
        elif watch.mailbox:
            watch.seen, watch.due = max(watch.seen, newest), None

    async def _newest(self, mailbox: str) -> int:
        try:
            found = await self.client.fetch(mailbox, deliver="latest", num_msgs=1, max_wait_ms=0)
        except MailboxNotFound:
            return -1
        return max((m.msg_id for m in found), default=-1)

    async def _wake_due(
        self, watch: _Watch, rules: list[WakeRule], state: MailboxState, newest: int, mine: int
    ) -> None:
        """Wake each rule due for the messages up to ``newest`` (the look's FETCH), and store
        the state, releasing claim ``mine``."""
        now = self.clock()
        if state.seen > newest:  # another holder woke for mail that came after this look's
            # FETCH, or no cursor a waker wrote (past the mailbox's end, or the newest message
            # expired): asked again, and if so, start again from what this waker knew, else
            # from the start (at least once), since it would silence the mailbox
            newest = max(newest, await self._newest(watch.mailbox))
            if state.seen > newest:
                state.seen = watch.seen if watch.seen <= newest else -1
        for rs in state.rules.values():  # a time in the future is no time a waker wrote
            rs.last_wake = min(rs.last_wake, now)
            rs.window_start = min(rs.window_start, now)
            if rs.pending_from > state.seen + 1:
                rs.pending_from = -1
        if newest > state.seen:
            for rule in rules:
                rs = state.rules.setdefault(rule.name, RuleState())
                if rs.pending_from < 0:
                    rs.pending_from = state.seen + 1
            state.seen = newest
        for name in [n for n in state.rules if n not in {r.name for r in rules}]:
            del state.rules[name]  # a removed rule's record
        next_due: float | None = None
        spans: dict[tuple[str, int], _Span] = {}  # rules owed from one msg_id read it once
        for rule in rules:
            rs = state.rules.setdefault(rule.name, RuleState())
            if rs.pending_from < 0:
                continue
            due = self._due(rule, rs, now)
            if due <= now:  # the operator's ceilings, looked at (no read for a wake held)
                due = self.deliverer.free_at(rule, now)
            if due <= now and not self._stopping:  # (stopping: left owed to the next holder)
                due = await self._wake(rule, rs, watch, state.seen, now, spans) or now
            if due > now or self._stopping:
                next_due = due if next_due is None else min(next_due, due)
        # stored while the claim holds: the next holder reads where this one ended; the
        # record names the claim, which holds nothing from then on (claims.py)
        state.released = mine
        await self.client.send(
            RULES_ROOT + watch.digest, state.to_json(), key=STATE_KEY, tags=[STATE_TAG]
        )
        watch.seen = state.seen
        watch.due = next_due
        if next_due is not None:
            self._later(watch, next_due - now)

    def _due(self, rule: WakeRule, rs: RuleState, now: float) -> float:
        """When the rule may wake next: its minimum interval (never under the operator's
        floor), cap and quiet hours."""
        due = now
        if rs.last_wake:
            interval = max(rule.min_interval, self.deliverer.limits.min_interval)
            due = max(due, rs.last_wake + interval)
        if rule.cap and rs.window_count >= rule.cap and due - rs.window_start < rule.cap_window:
            due = rs.window_start + rule.cap_window
        ends = quiet_until(rule, due)
        return ends if ends is not None else due

    async def _span(self, rule: WakeRule, first: int, last: int) -> _Span:
        """The messages the wake is for: the mail its reader has not read (``rule.group``),
        else every message from ``first`` to ``last``, counted exactly."""
        span = _Span(priorities={}, shown=[])
        assert span.priorities is not None and span.shown is not None

        def add(message: Message) -> None:
            assert span.priorities is not None and span.shown is not None
            span.count += 1
            lane = str(message.priority)
            span.priorities[lane] = span.priorities.get(lane, 0) + 1
            if span.newest is None or message.msg_id > span.newest.msg_id:
                span.newest = message
            if len(span.shown) < PAYLOADS_SHOWN:
                span.shown.append(message)

        if rule.group:
            found = await self.client.fetch(
                rule.mailbox,
                group_name=rule.group,
                deliver="earliest",
                num_msgs=GROUP_SHOWN,
                max_wait_ms=0,
            )
            for message in sorted(found, key=lambda m: m.msg_id):
                if message.msg_id <= last:
                    add(message)
            return span
        async for page in read_span(self.client, rule.mailbox, first, last):
            for message in page:
                add(message)
        return span

    def _sender(self, message: Message) -> str:
        """Who sent ``message``: on a --credentials broker (this waker logged in) the agent
        the broker stamped on it, never a header a sender wrote; on an open broker anyone
        can write either, and the reply mailbox names whoever says so."""
        stamped = message.header.get(HEADER_SENDER, "")
        if self.owner:
            return stamped
        return stamped or message.header.get("mq9-reply-to", "")

    async def _wake(
        self,
        rule: WakeRule,
        rs: RuleState,
        watch: _Watch,
        last: int,
        now: float,
        spans: dict[tuple[str, int], _Span],
    ) -> float | None:
        """Wake ``rule`` for its messages up to ``last``; None when done (delivered, set aside
        or nothing left unread), else when the operator's ceilings let it (still owed)."""
        read = ("group:" + rule.group, -1) if rule.group else ("", rs.pending_from)
        span = spans.get(read)
        if span is None:
            span = spans[read] = await self._span(rule, rs.pending_from, last)
        if span.newest is None:
            rs.pending_from = -1
            return None  # read already: no wake
        # checked and recorded in one step: looks at other mailboxes ran meanwhile
        held = self.deliverer.take(rule, now)
        if held is not None:
            return held
        key = f"{watch.digest[:16]}.{rule.name}.{rs.pending_from}"
        rs.pending_from = -1
        wake = Wake(
            mailbox=rule.mailbox,
            rule=rule.name,
            key=key,
            waiting=span.count,
            newest_msg_id=span.newest.msg_id,
            priorities=span.priorities or {},
            sender=self._sender(span.newest),
            messages=[_shown(m) for m in span.shown or []] if rule.include_payload else [],
        )
        if rule.cap:
            if now - rs.window_start >= rule.cap_window:
                rs.window_start, rs.window_count = now, 0
            rs.window_count += 1
        rs.last_wake = now
        try:
            await self.deliverer.deliver(rule, wake, now, taken=True)
        except Exception as exc:
            rs.failures += 1
            rs.last_error = _reason(exc)
            await self._set_aside(rule, wake, rs.last_error)
            self.set_aside += 1  # counted once recorded: what counts may be read at once
            self._told(rule, "set_aside", span)
            return None
        rs.failures, rs.last_error = 0, ""
        self.wakes += 1
        self._told(rule, "delivered", span)
        return None

    def _told(self, rule: WakeRule, outcome: str, span: _Span) -> None:
        if self.on_wake is None:
            return
        arrived = min((m.create_time for m in span.shown or ()), default=None)
        lag = 0.0 if arrived is None else max(self.clock() - arrived, 0.0)
        self.on_wake(rule, outcome, lag)

    async def _set_aside(self, rule: WakeRule, wake: Wake, reason: str) -> None:
        log.warning(
            "wake %s of %s (rule %s, %s) set aside: %s",
            wake.key,
            rule.mailbox,
            rule.name,
            rule.target,
            reason,
        )
        record = {
            "wake": wake.body(False),
            "target": rule.target,
            "reason": reason,
            "waker": self.name,
        }
        try:
            await ensure_mailbox(self.client, self.failed_address)
            await self.client.send(self.failed_address, json.dumps(record), tags=[watch_tag(rule)])
        except Mq9Error as exc:
            log.warning("wake %s could not be set aside on the broker: %s", wake.key, exc)


def watch_tag(rule: WakeRule) -> str:
    return "m" + digest(rule.mailbox)


def _shown(message: Message) -> dict[str, Any]:
    text = message.payload.decode(errors="replace")
    return {
        "msg_id": message.msg_id,
        "priority": str(message.priority),
        "payload": text[:PAYLOAD_CHARS],
        "cut": len(text) > PAYLOAD_CHARS,
    }


def _reason(exc: BaseException) -> str:
    if isinstance(exc, Refused):
        return f"refused: {exc}"
    if isinstance(exc, TimeoutError):
        return "TimeoutError: no answer within the try's deadline"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:300]
