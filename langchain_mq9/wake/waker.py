"""The waker: watches the mailboxes that have wake rules and wakes their targets when mail
waits there (docs/wake.md).

Each look at a mailbox M: one FETCH (no group, from the newest message) says whether anything
arrived above M's cursor. Only then does the waker read M's rules (so a removed rule never
wakes again), claim M (a claim record in M's rules mailbox; the oldest live claim holds M, as
a group's leases do: groups/leases.py), read M's state again, and for each rule due deliver
one wake for every message from its first owed one to the newest (counted exactly, span.py),
then store the state (the cursor moved) and drop the claim. So:

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

from ..client import Mq9Client
from ..protocol import HEADER_SENDER, Message
from ..protocol.errors import MailboxNotFound, Mq9Error
from .arrivals import Unsubscribe, subscribe_arrivals
from .book import CLAIM_TAG, RULE_TAG, STATE_KEY, MailboxState, RuleState, ensure_mailbox
from .deliver import Deliverer, Refused, Wake
from .rules import (
    INDEX_ADDRESS,
    RULES_ROOT,
    RuleError,
    WakeRule,
    digest,
    failed_address,
    quiet_until,
    rules_address,
)
from .span import read_span

log = logging.getLogger("langchain_mq9.wake")

POLL_INTERVAL = 1.0  # seconds between looks at each mailbox without announcements
SWEEP_INTERVAL = 30.0  # seconds between looks at every mailbox with announcements
SETTLE = 0.005  # seconds after an announcement before the look: a burst's next messages join
LEASE = 60.0  # seconds a claim holds a mailbox: longer than a wake's retries
CLAIM_SLACK = 5.0  # seconds a claim may outlast this waker's lease (wakers' clocks differ)
PAYLOADS_SHOWN = 20  # messages whose payloads a rule with include_payload gets
PAYLOAD_CHARS = 4000
GROUP_SHOWN = 10_000  # a group's unacked messages counted per wake (one FETCH: no paging)
CONCURRENT_LOOKS = 16  # looks asking whether mail arrived at once (and a sweep's workers)
INDEX_PAGE = 200  # index entries read per FETCH
INDEX_LOOKS = 4  # new index digests whose rules are read at once (beside the looks' gate)
MAX_WATCHED = 100_000  # mailboxes with rules one waker watches; beyond, the rest wait
INDEX_DIGEST = digest(INDEX_ADDRESS)
Clock = Callable[[], float]


@dataclass
class _Watch:
    digest: str
    mailbox: str = ""
    explicit: bool = False  # named by the waker's owner (kept without rules)
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
        # #73: told of each wake tried: its rule, "delivered" or "set_aside", and the seconds
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
        if self._unsubscribe is not None:
            await self._unsubscribe()
            self._unsubscribe = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for watch in self._watches.values():
            if watch.timer is not None:
                watch.timer.cancel()
        for task in list(self._looks):
            task.cancel()
        await asyncio.gather(*self._looks, return_exceptions=True)
        await self.deliverer.close()

    async def _run(self) -> None:
        while True:
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
                try:
                    if await self._due_now(watch):
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
            if not self._index_again:
                return

    def _soon(self, watch: _Watch, delay: float) -> None:
        if watch.running:
            watch.again = True
            return
        self._later(watch, delay)

    def _later(self, watch: _Watch, delay: float) -> None:
        loop = asyncio.get_running_loop()
        when = loop.time() + max(delay, 0.0)
        if watch.timer is not None:
            if watch.timer.when() <= when:
                return  # a look is already on its way, as soon
            watch.timer.cancel()
        watch.timer = loop.call_at(when, self._fire, watch)

    def _fire(self, watch: _Watch) -> None:
        watch.timer = None
        self._spawn(self._look(watch))

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._looks.add(task)
        task.add_done_callback(self._looks.discard)

    async def _read_index(self) -> list[_Watch]:
        """Read the index's entries listed since the last read, a page at a time; the watches
        to look at: a digest already watched (a rule added or removed lists it again), and a
        new one only if its rules mailbox holds a rule (no other is kept)."""
        listed: dict[str, _Watch] = {}
        async with self._index_lock:
            async for page in read_span(self.client, INDEX_ADDRESS, self._index_next,
                                        page=INDEX_PAGE):
                found = {m.text().strip() for m in page}
                digests = [d for d in found if len(d) == 32 and
                           all(c in "0123456789abcdef" for c in d)]
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
                log.warning("this waker watches %d mailboxes, its most: run another with "
                            "--mailbox for the rest", MAX_WATCHED)
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
                if not watch.again:
                    break
        finally:
            watch.running = False
            watch.looked.set()

    async def _rules(self, address: str, d: str) -> list[WakeRule]:
        try:
            found = await self.client.query(address, tags=[RULE_TAG])
        except MailboxNotFound:
            return []
        rules: dict[str, WakeRule] = {}
        for message in found:
            try:
                rule = WakeRule.from_json(message.payload)
            except RuleError:
                continue
            if digest(rule.mailbox) == d:  # a record naming another mailbox: no rule
                rules[rule.name] = rule
        return [rules[n] for n in sorted(rules)]

    async def _visit(self, watch: _Watch) -> None:
        now = self.clock()
        newest = -1
        if watch.mailbox:
            async with self._gate:
                newest = await self._newest(watch.mailbox)
            if newest <= watch.seen and (watch.due is None or watch.due > now):
                return  # nothing new, nothing owed yet
        # read at every look that may wake: a rule removed wakes nothing from then on
        rules = await self._rules(RULES_ROOT + watch.digest, watch.digest)
        if not rules:
            if not watch.explicit:  # the index listed it; nothing to keep
                self._watches.pop(watch.digest, None)
            elif watch.mailbox:
                watch.seen, watch.due = max(watch.seen, newest), None
            return
        watch.mailbox = rules[0].mailbox
        claim = await self._claim(watch)
        if claim is None:
            return
        try:
            await self._wake_due(watch, rules)
        finally:
            with contextlib.suppress(Mq9Error):
                await self.client.delete(rules_address(watch.mailbox), claim)

    async def _newest(self, mailbox: str) -> int:
        try:
            found = await self.client.fetch(mailbox, deliver="latest", num_msgs=1, max_wait_ms=0)
        except MailboxNotFound:
            return -1
        return max((m.msg_id for m in found), default=-1)

    async def _claim(self, watch: _Watch) -> int | None:
        """Claim the mailbox; its msg_id, or None when another waker's live claim holds it
        (then look again when that claim's lease ends)."""
        address = rules_address(watch.mailbox)
        now = self.clock()
        mine = await self.client.send(
            address,
            json.dumps({"waker": self.name, "until": now + self.lease}),
            tags=[CLAIM_TAG],
            ttl=int(self.lease * 2) + 60,
        )
        claims = await self.client.query(address, tags=[CLAIM_TAG])
        live: list[tuple[int, float]] = []
        for message in claims:
            until = _until(message)
            # a claim longer than a lease is forged (it would hold the mailbox for good): void
            if message.msg_id == mine or now < until <= now + self.lease + CLAIM_SLACK:
                live.append((message.msg_id, until))
            else:  # a dead waker's: nobody needs it
                with contextlib.suppress(Mq9Error):
                    await self.client.delete(address, message.msg_id)
        holder = min(live, default=(mine, now + self.lease))
        if holder[0] == mine:
            return mine
        with contextlib.suppress(Mq9Error):
            await self.client.delete(address, mine)
        # the holder may die: look again once its lease is over
        self._later(watch, holder[1] - now + 0.05)
        return None

    async def _wake_due(self, watch: _Watch, rules: list[WakeRule]) -> None:
        address = rules_address(watch.mailbox)
        records = await self.client.query(address, key=STATE_KEY)
        state = MailboxState.from_message(records[0] if records else None)
        # the newest once the claim holds: the wake covers all that arrived until now
        newest = await self._newest(watch.mailbox)
        now = self.clock()
        if state.seen > newest:  # past the mailbox's end: no cursor a waker wrote (or the
            # newest message expired); it would silence the mailbox: start again from what
            # this waker knew, else from the start (at least once)
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
        for rule in rules:
            rs = state.rules.setdefault(rule.name, RuleState())
            if rs.pending_from < 0:
                continue
            due = max(self._due(rule, rs, now), self.deliverer.free_at(rule, now))
            if due > now:
                next_due = due if next_due is None else min(next_due, due)
                continue
            await self._wake(rule, rs, watch, state.seen, now)
        # stored before the claim is dropped: the next holder reads where this one ended
        await self.client.send(address, state.to_json(), key=STATE_KEY)
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
                rule.mailbox, group_name=rule.group, deliver="earliest",
                num_msgs=GROUP_SHOWN, max_wait_ms=0,
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
        self, rule: WakeRule, rs: RuleState, watch: _Watch, last: int, now: float
    ) -> None:
        span = await self._span(rule, rs.pending_from, last)
        key = f"{watch.digest[:16]}.{rule.name}.{rs.pending_from}"
        rs.pending_from = -1
        if span.newest is None:
            return  # read already: no wake
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
            await self.deliverer.deliver(rule, wake, now)
        except Exception as exc:
            rs.failures += 1
            rs.last_error = _reason(exc)
            await self._set_aside(rule, wake, rs.last_error)
            self.set_aside += 1  # counted once recorded: what counts may be read at once
            self._told(rule, "set_aside", span)
            return
        rs.failures, rs.last_error = 0, ""
        self.wakes += 1
        self._told(rule, "delivered", span)

    def _told(self, rule: WakeRule, outcome: str, span: _Span) -> None:
        if self.on_wake is None:
            return
        arrived = min((m.create_time for m in span.shown or ()), default=None)
        lag = 0.0 if arrived is None else max(self.clock() - arrived, 0.0)
        self.on_wake(rule, outcome, lag)

    async def _set_aside(self, rule: WakeRule, wake: Wake, reason: str) -> None:
        log.warning("wake %s of %s (rule %s, %s) set aside: %s", wake.key, rule.mailbox,
                    rule.name, rule.target, reason)
        record = {"wake": wake.body(False), "target": rule.target, "reason": reason,
                  "waker": self.name}
        try:
            await ensure_mailbox(self.client, self.failed_address)
            await self.client.send(self.failed_address, json.dumps(record),
                                   tags=[watch_tag(rule)])
        except Mq9Error as exc:
            log.warning("wake %s could not be set aside on the broker: %s", wake.key, exc)


def watch_tag(rule: WakeRule) -> str:
    return "m" + digest(rule.mailbox)


def _until(message: Message) -> float:
    try:
        return float(message.json().get("until", 0))
    except (ValueError, TypeError, AttributeError):
        return 0.0


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
