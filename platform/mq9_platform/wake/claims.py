"""Who holds a mailbox: its rules mailbox read in one QUERY as rules, wakers' claims and the
wake state, and which claim holds (docs/wake.md, "Several wakers").

A waker claims mailbox M before it wakes for it: a SEND to M's rules mailbox, tag ``claim``,
mq9-key ``claim.<its instance>`` (a waker has one claim record there: its keyed SEND replaces
its older one), ``{"waker", "until"}``, with a TTL past its lease. Then one QUERY of the tags
``rule``, ``claim`` and ``state`` reads M's rules, every claim and M's state at once. The
oldest live claim holds M, as a consumer group's leases do (groups/leases.py): two wakers that
claim at once both see both claims, and only the older goes on.

Why the claim is not a field of the state record (one keyed record for both): a keyed SEND
replaces the key's older message whatever it holds, and mq9 has no compare-and-set, so a
second waker's claim would replace a live one and both would wake. Each waker's claim has a
key of its own instead, and the holder releases it with the state record it writes anyway:
the state names the claim its writer held (``released``), and a claim at or below that msg_id
holds nothing more (its record goes with its TTL). A wake thus costs a SEND to claim and one
to store the state and release, where a DELETE of the claim was a third.

A claim is live while its ``until`` is ahead and no more than a lease (+ ``CLAIM_SLACK``) from
now: a forged claim "until the end of time" is void. A ``released`` at or past the asker's own
claim is none a waker wrote (no holder releases a claim made after the asker's: the asker's
would be the older live one) and counts for nothing. Claims an older waker wrote (no key,
dropped by a DELETE) read the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from mq9_wire.protocol import Message

from .book import CLAIM_TAG, RULE_TAG, STATE_KEY
from .rules import RuleError, WakeRule, digest

CLAIM_SLACK = 5.0  # seconds a claim may outlast a lease (wakers' clocks differ)


@dataclass
class Records:
    """A rules mailbox as one QUERY of its three tags found it."""

    rules: list[WakeRule] = field(default_factory=list)  # by name
    claims: list[Message] = field(default_factory=list)
    state: Message | None = None  # None: no state record with the tag (perhaps one without)


@dataclass(frozen=True)
class Held:
    """Which claim holds the mailbox, and the claims nobody holds by (dead or forged)."""

    holder: int
    until: float
    void: tuple[int, ...] = ()


def read_records(found: Iterable[Message], d: str) -> Records:
    """The rules (each naming the mailbox whose digest is ``d``: a record naming another is
    no rule), claims and state among ``found``."""
    records = Records()
    rules: dict[str, WakeRule] = {}
    for message in found:
        if _tagged(message, RULE_TAG):
            try:
                rule = WakeRule.from_json(message.payload)
            except RuleError:
                rule = None  # not a rule this version can read: left alone
            if rule is not None and digest(rule.mailbox) == d:
                rules[rule.name] = rule
        if _tagged(message, CLAIM_TAG):
            records.claims.append(message)
        if message.key == STATE_KEY and (
            records.state is None or message.msg_id > records.state.msg_id
        ):
            records.state = message
    records.rules = [rules[n] for n in sorted(rules)]
    return records


def rules_in(found: Iterable[Message], d: str) -> list[WakeRule]:
    """The rules among ``found`` (a QUERY of the tag ``rule``), by name."""
    return read_records(found, d).rules


def judge(
    claims: Iterable[Message], mine: int, until: float, released: int, now: float, lease: float
) -> Held:
    """Who holds the mailbox, given its ``claims``, the asker's own (msg_id ``mine``, live
    until ``until``) and the claim the state record says was released."""
    if released >= mine:  # no waker wrote it: no holder releases a claim made after mine
        released = -1
    live: list[tuple[int, float]] = [(mine, until)]
    void: list[int] = []
    for message in claims:
        if message.msg_id == mine or message.msg_id <= released:
            continue  # mine; or released by the last state's writer, gone with its TTL
        ends = claim_until(message)
        if now < ends <= now + lease + CLAIM_SLACK:
            live.append((message.msg_id, ends))
        else:  # a dead waker's, or one longer than a lease (forged): nobody holds by it
            void.append(message.msg_id)
    holder, ends = min(live)
    return Held(holder, ends, tuple(void))


def claim_until(message: Message) -> float:
    try:
        until = message.json().get("until", 0)
        return float(until) if isinstance(until, (int, float)) else 0.0
    except (ValueError, TypeError, AttributeError, OverflowError):
        return 0.0


def _tagged(message: Message, tag: str) -> bool:
    """Whether ``message`` carries ``tag`` or a tag below it (``tag/...``), as a QUERY of the
    tag finds it."""
    return any(t == tag or t.startswith(tag + "/") for t in message.tags)
