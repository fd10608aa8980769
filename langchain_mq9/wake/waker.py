"""The waker: watches the mailboxes that have wake rules and wakes their targets when mail
waits there (docs/wake.md).

Each look at a mailbox M: one FETCH (no group, from the newest message) says whether anything
arrived above M's cursor. Only then does the waker claim M (a claim record in M's rules
mailbox; the oldest live claim holds M, as a group's leases do: groups/leases.py), read M's
state again, and for each rule due deliver one wake for all that arrived since its last one,
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
from ..protocol import Message
from ..protocol.errors import MailboxNotFound, Mq9Error
from .arrivals import Unsubscribe, subscribe_arrivals
from .book import CLAIM_TAG, PAGE, RULE_TAG, STATE_KEY, MailboxState, RuleState, ensure_mailbox
from .deliver import Deliverer, Refused, Wake
from .rules import (
    FAILED_ADDRESS,
    INDEX_ADDRESS,
    RULES_ROOT,
    RuleError,
    WakeRule,
    digest,
    quiet_until,
    rules_address,
)

log = logging.getLogger("langchain_mq9.wake")

POLL_INTERVAL = 1.0  # seconds between looks at each mailbox without announcements
SWEEP_INTERVAL = 30.0  # seconds between looks at every mailbox with announcements
SETTLE = 0.005  # seconds after an announcement before the look: a burst's next messages join
LEASE = 60.0  # seconds a claim holds a mailbox: longer than a wake's retries
FORGED_AHEAD = 1000  # msg_ids a stored cursor may be ahead of the newest message stored
CLAIM_SLACK = 5.0  # seconds a claim may outlast this waker's lease (wakers' clocks differ)
# seconds a mailbox's rules are kept before they are read again (an added or removed rule
# lists its mailbox in the index again: announced, the waker reads them at once)
RULES_REFRESH = 300.0
WAITING_SHOWN = 100  # messages counted per wake (a wake says "100" for more)
PAYLOADS_SHOWN = 20  # messages whose payloads a rule with include_payload gets
PAYLOAD_CHARS = 4000
CONCURRENT_LOOKS = 16
INDEX_DIGEST = digest(INDEX_ADDRESS)
Clock = Callable[[], float]


@dataclass
class _Watch:
    digest: str
    mailbox: str = ""
    rules: list[WakeRule] = field(default_factory=list)
    rules_read: float = -1e18
    seen: int = -1  # the cursor as this waker last knew it
    due: float | None = None  # when a wake held back becomes due (the waker's clock)
    running: bool = False
    again: bool = False
    timer: asyncio.TimerHandle | None = None


class Waker:
    """Wakes the targets of the wake rules on ``client``'s broker.

    >>> waker = Waker(client, Deliverer(Destinations(hosts=["hooks.example.com"])))
    >>> await waker.start()   # ... runs until
    >>> await waker.stop()

    ``mailboxes``: watch only these (else every mailbox the index lists). ``clock``: the
    time rules are judged by (minimum interval, cap, quiet hours, claims' leases).
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
        self._explicit = list(mailboxes) if mailboxes is not None else None
        self._watches: dict[str, _Watch] = {}
        self._index_next = 0
        self._announced = False  # an announcement came: sweeps may be rare
        self._unsubscribe: Unsubscribe | None = None
        self._task: asyncio.Task[None] | None = None
        self._looks: set[asyncio.Task[None]] = set()
        self._gate = asyncio.Semaphore(CONCURRENT_LOOKS)
        self.wakes = 0  # delivered
        self.set_aside = 0

    def __repr__(self) -> str:
        return f"Waker({self.client!r}, name={self.name!r}, watching={len(self._watches)})"

    @property
    def watching(self) -> list[str]:
        return sorted(w.mailbox for w in self._watches.values() if w.mailbox)

    # -- running -------------------------------------------------------------------------

    async def start(self) -> Waker:
        if self.events:
            self._unsubscribe = await subscribe_arrivals(self.client, self._arrived)
        for mailbox in self._explicit or []:
            self._watches.setdefault(digest(mailbox), _Watch(digest(mailbox), mailbox))
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
                await self.sweep()
            except Mq9Error as exc:  # the broker away: the next sweep tries again
                log.warning("wake sweep failed: %s", exc)

    async def sweep(self) -> None:
        """Read the index's new entries, then look at every watched mailbox."""
        if self._explicit is None:
            await self._read_index()
        now = self.clock()
        for watch in list(self._watches.values()):
            if now - watch.rules_read >= RULES_REFRESH:
                watch.rules_read = -1e18  # read again at its look
        await asyncio.gather(*(self._look(w) for w in list(self._watches.values())))

    async def check(self, mail_address: str) -> None:
        """Look at one mailbox now (its rules read again) and deliver what is due."""
        watch = self._watches.setdefault(digest(mail_address), _Watch(digest(mail_address)))
        watch.rules_read = -1e18
        await self._look(watch)

    # -- announcements ---------------------------------------------------------------------

    def _arrived(self, d: str) -> None:
        self._announced = True
        if d == INDEX_DIGEST and self._explicit is None:
            self._spawn(self._read_index_and_look())
            return
        watch = self._watches.get(d)
        if watch is not None:
            self._soon(watch, self.settle)

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

    async def _read_index_and_look(self) -> None:
        fresh = await self._read_index()
        await asyncio.gather(*(self._look(w) for w in fresh))

    async def _read_index(self) -> list[_Watch]:
        """Learn the rules mailboxes listed since the last read (a rule added again lists its
        mailbox again: its rules are read again)."""
        fresh: list[_Watch] = []
        while True:
            try:
                page = await self.client.fetch(
                    INDEX_ADDRESS, deliver="from_id", from_id=self._index_next,
                    num_msgs=PAGE, max_wait_ms=0,
                )
            except MailboxNotFound:
                return fresh
            page = [m for m in page if m.msg_id >= self._index_next]
            if not page:
                return fresh
            for message in page:
                d = message.text().strip()
                if len(d) == 32 and all(c in "0123456789abcdef" for c in d):
                    watch = self._watches.setdefault(d, _Watch(d))
                    watch.rules_read = -1e18
                    fresh.append(watch)
            self._index_next = max(m.msg_id for m in page) + 1

    # -- one mailbox -----------------------------------------------------------------------

    async def _look(self, watch: _Watch) -> None:
        if watch.running:
            watch.again = True
            return
        watch.running = True
        try:
            while True:
                watch.again = False
                async with self._gate:
                    try:
                        await self._visit(watch)
                    except (Mq9Error, RuleError) as exc:
                        log.warning("wake look at %s failed: %s", watch.mailbox or watch.digest,
                                    exc)
                if not watch.again:
                    break
        finally:
            watch.running = False

    async def _read_rules(self, watch: _Watch) -> None:
        address = RULES_ROOT + watch.digest
        try:
            found = await self.client.query(address, tags=[RULE_TAG])
        except MailboxNotFound:
            found = []
        rules: dict[str, WakeRule] = {}
        for message in found:
            try:
                rule = WakeRule.from_json(message.payload)
            except RuleError:
                continue
            if digest(rule.mailbox) == watch.digest:  # a record naming another mailbox: no rule
                rules[rule.name] = rule
        watch.rules = [rules[n] for n in sorted(rules)]
        if watch.rules:
            watch.mailbox = watch.rules[0].mailbox
        watch.rules_read = self.clock()

    async def _visit(self, watch: _Watch) -> None:
        if watch.rules_read < 0:
            await self._read_rules(watch)
        if not watch.rules:
            return
        now = self.clock()
        newest = await self._newest(watch.mailbox)
        if newest <= watch.seen and (watch.due is None or watch.due > now):
            return  # nothing new, nothing owed yet
        claim = await self._claim(watch)
        if claim is None:
            return
        try:
            await self._wake_due(watch)
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

    async def _wake_due(self, watch: _Watch) -> None:
        address = rules_address(watch.mailbox)
        records = await self.client.query(address, key=STATE_KEY)
        state = MailboxState.from_message(records[0] if records else None)
        newest = await self._newest(watch.mailbox)
        if state.seen > newest + FORGED_AHEAD:  # far past the mailbox's end (expired mail
            # ends it early, a little): no cursor a waker wrote, and it would silence the
            # mailbox for good; start again from what this waker knew (at least once)
            state.seen = watch.seen if watch.seen <= newest else -1
        arrived = await self._above(watch.mailbox, state.seen)
        now = self.clock()
        if arrived:
            first = min(m.msg_id for m in arrived)
            for rule in watch.rules:
                rs = state.rules.setdefault(rule.name, RuleState())
                if rs.pending_from < 0:
                    rs.pending_from = first
            state.seen = max(state.seen, max(m.msg_id for m in arrived))
        for name in [n for n in state.rules if n not in {r.name for r in watch.rules}]:
            del state.rules[name]  # a removed rule's record
        next_due: float | None = None
        for rule in watch.rules:
            rs = state.rules.setdefault(rule.name, RuleState())
            if rs.pending_from < 0:
                continue
            due = _due(rule, rs, now)
            if due > now:
                next_due = due if next_due is None else min(next_due, due)
                continue
            await self._wake(rule, rs, watch, state, now)
        # stored before the claim is dropped: the next holder reads where this one ended
        await self.client.send(address, state.to_json(), key=STATE_KEY)
        watch.seen = state.seen
        watch.due = next_due
        if next_due is not None:
            self._later(watch, next_due - now)

    async def _above(self, mailbox: str, seen: int) -> list[Message]:
        try:
            found = await self.client.fetch(
                mailbox, deliver="from_id", from_id=seen + 1, num_msgs=WAITING_SHOWN,
                max_wait_ms=0,
            )
        except MailboxNotFound:
            return []
        return [m for m in found if m.msg_id > seen]

    async def _waiting(self, rule: WakeRule, rs: RuleState) -> list[Message]:
        """What the wake is for: the mail its reader has not read (``rule.group``), else what
        arrived since the wake owed began."""
        if rule.group:
            found = await self.client.fetch(
                rule.mailbox, group_name=rule.group, deliver="earliest",
                num_msgs=WAITING_SHOWN, max_wait_ms=0,
            )
            return found
        return await self._above(rule.mailbox, rs.pending_from - 1)

    async def _wake(
        self, rule: WakeRule, rs: RuleState, watch: _Watch, state: MailboxState, now: float
    ) -> None:
        waiting = await self._waiting(rule, rs)
        key = f"{watch.digest[:16]}.{rule.name}.{rs.pending_from}"
        rs.pending_from = -1
        if not waiting:
            return  # read already: no wake
        newest = max(waiting, key=lambda m: m.msg_id)
        priorities: dict[str, int] = {}
        for message in waiting:
            priorities[str(message.priority)] = priorities.get(str(message.priority), 0) + 1
        wake = Wake(
            mailbox=rule.mailbox,
            rule=rule.name,
            key=key,
            waiting=len(waiting),
            newest_msg_id=newest.msg_id,
            priorities=priorities,
            sender=newest.header.get("mq9-reply-to", ""),
            messages=[_shown(m) for m in waiting[:PAYLOADS_SHOWN]] if rule.include_payload else [],
        )
        if rule.cap:
            if now - rs.window_start >= rule.cap_window:
                rs.window_start, rs.window_count = now, 0
            rs.window_count += 1
        rs.last_wake = now
        try:
            await self.deliverer.deliver(rule, wake)
        except Exception as exc:
            rs.failures += 1
            rs.last_error = _reason(exc)
            self.set_aside += 1
            await self._set_aside(rule, wake, rs.last_error)
            return
        rs.failures, rs.last_error = 0, ""
        self.wakes += 1

    async def _set_aside(self, rule: WakeRule, wake: Wake, reason: str) -> None:
        log.warning("wake %s of %s (rule %s, %s) set aside: %s", wake.key, rule.mailbox,
                    rule.name, rule.target, reason)
        record = {"wake": wake.body(False), "target": rule.target, "reason": reason,
                  "waker": self.name}
        try:
            await ensure_mailbox(self.client, FAILED_ADDRESS)
            await self.client.send(FAILED_ADDRESS, json.dumps(record), tags=[watch_tag(rule)])
        except Mq9Error as exc:
            log.warning("wake %s could not be set aside on the broker: %s", wake.key, exc)


def watch_tag(rule: WakeRule) -> str:
    return "m" + digest(rule.mailbox)


def _until(message: Message) -> float:
    try:
        return float(message.json().get("until", 0))
    except (ValueError, TypeError, AttributeError):
        return 0.0


def _due(rule: WakeRule, rs: RuleState, now: float) -> float:
    """When the rule may wake next: its minimum interval, cap and quiet hours."""
    due = now
    if rs.last_wake:
        due = max(due, rs.last_wake + rule.min_interval)
    if rule.cap and rs.window_count >= rule.cap and due - rs.window_start < rule.cap_window:
        due = rs.window_start + rule.cap_window
    ends = quiet_until(rule, due)
    return ends if ends is not None else due


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
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:300]
