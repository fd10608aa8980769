"""What a person looks at and does, over any mq9 server, for both the command line and the
console: the catalog's operations run for a person (nothing cut for a model's budget), and the
reads the catalog has no tool for: a mailbox's figures, its dead letters, following it live, a
call's timeline across agents.

mq9 has no listing of mailboxes, consumer groups or calls (RobustMQ neither): what is shown is
what the registry, the mailboxes named and the reply mailboxes given can answer, and every page
says what it cannot know (``UNANSWERED``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from mq9_platform.a2a import mail as w
from mq9_platform.client.api import Mq9ClientLike
from mq9_platform.client.client import Mq9Client
from mq9_platform.groups.dead_letters import DeadLetter, dead_letter_address
from mq9_platform.groups.dead_letters import store as store_dead_letter
from mq9_platform.groups.reader import Replayed, replay
from mq9_platform.groups.state import read_through
from mq9_platform.operations.catalog import OPERATIONS
from mq9_platform.operations.config import ToolConfig
from mq9_platform.operations.mailbox import hidden_in

# A mailbox's pages are the toolkit's query_messages pages: one reading of cut answers for both
# (the face reads Page, page and SURE_BYTES here, so they are named again as this module's)
from mq9_platform.operations.pages import SURE_BYTES as SURE_BYTES
from mq9_platform.operations.pages import Page as Page
from mq9_platform.operations.pages import maybe_cut, more_after
from mq9_platform.operations.pages import page as page
from mq9_platform.operations.policy import ToolPolicy
from mq9_wire.protocol import (
    LANE_READ_BYTES,
    PRIORITY_ORDER,
    QUERY_CAP,
    Message,
    Priority,
    payload_text,
)
from mq9_wire.protocol.errors import MailboxNotFound, Mq9Error, NotOwner
from mq9_wire.protocol.messages import HEADER_SENDER, HEADER_TTL

# Nothing a person asked for is cut: the budgets are the model's, not a person's.
_WHOLE = 1 << 40
# What the tools add for a model (what to call next, a note that payloads are data): not a
# person's; "warning" stays.
_FOR_MODELS = ("note", "next_step", "filter_used")
# The replay's consumer group on a dead-letter mailbox (groups.reader.replay's default).
REPLAY_GROUP = "replay"
POLL_SECONDS = 0.25  # how often a followed mailbox is looked at

UNANSWERED = {
    "mailboxes": "The mq9 protocol lists no mailboxes (RobustMQ's admin API has one, not its mq9 "
    "subjects): shown are the agents' mailboxes, their dead-letter mailboxes and those named",
    "ttl": "A mailbox's TTL is set when it is created and never answered over mq9",
    "groups": "The mq9 protocol lists no consumer groups, nor says where a group stands (RobustMQ "
    "neither)",
    "calls": "The mq9 protocol lists no calls: each caller keeps its own in its reply mailbox; "
    "shown are the calls of the reply mailboxes named",
    "reports": "An agent's reports (agent_report) are kept by the broker and never answered "
    "over mq9: DISCOVER shows cards only",
    "count": f"mq9 answers no count: a QUERY answers at most {QUERY_CAP} messages and "
    f"{LANE_READ_BYTES >> 20} MiB of payloads (a broker may cut it sooner to fit its answer "
    "size): the bundled broker counts a mailbox itself (each lane); on another broker "
    "the console counts past the QUERY page by page to its end, a little at each look, and a "
    "count not finished (or hidden under more urgent messages than a read carries) shows as "
    "a lower bound (N+)",
    "scheduled": "mq9 answers nothing of the messages sent with a delay and not yet due (no "
    "read shows them until they are): the bundled broker's count tells how many it holds and "
    "when the soonest is due; this broker does not (RobustMQ answers no count)",
}
# How far a mailbox's own page counts on past its QUERY (a stateless FETCH a page, each up to
# an answer of payloads): a person's look, not a scan of a mailbox of any size.
COUNT_PAGES = 10
COUNT_BYTES = 64 << 20


def person_policy(
    *,
    agent_mailbox: str | None = None,
    reply_mailbox: str | None = None,
    group: str = "default",
    read_only: bool = False,
) -> ToolPolicy:
    """The catalog's policy for a person: every tool, the agent-call ones too, nothing cut."""
    config = ToolConfig(
        max_payload_chars=_WHOLE,
        max_answer_chars=_WHOLE,
        calls=True,
        agent_mailbox=agent_mailbox,
        reply_mailbox=reply_mailbox,
        default_group=group,
        read_only=read_only,
    )
    return ToolPolicy(config)


async def operate(
    client: Mq9ClientLike, name: str, args: dict[str, Any], policy: ToolPolicy | None = None
) -> dict[str, Any]:
    """Run the catalog's operation ``name``; its result's data (``OperationError``: refused)."""
    policy = policy or person_policy()
    outcome = await OPERATIONS[name].execute(client, args, policy)
    shown = {k: v for k, v in outcome.content.items() if k not in _FOR_MODELS}
    # A page's "may be missing" is a person's too (the note's other words are a model's)
    hidden = hidden_in(outcome.content.get("note"), policy) if name == "query_messages" else None
    if hidden is not None:
        shown["warning"] = "; ".join(filter(None, [shown.get("warning"), hidden]))
    return shown


# -- mailboxes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MailboxFigures:
    """A mailbox as its QUERY shows it, counted on past it when asked: its messages per
    priority, the oldest's time, the shortest message TTL. ``capped``: the QUERY did not hold
    every message (its 100, its 30 MiB, or the broker's answer size cut it), so its page has a
    next one; ``lower_bound``: the counts are not all there is, and ``why`` says why (the
    count stopped where a look stops). ``refused``: the broker's one line why this reader may
    not see it (a credentialed broker's mailbox of another agent), then nothing else is known.
    ``messages``: what the QUERY answered, oldest first."""

    address: str
    exists: bool
    refused: str | None = None
    messages: tuple[Message, ...] = field(default=(), repr=False, compare=False)
    counts: dict[str, int] = field(default_factory=dict)
    capped: bool = False
    lower_bound: bool = False
    why: str | None = None
    oldest: int | None = None
    newest_id: int | None = None
    message_ttl: int | None = None
    counted_at: float | None = None  # when a count past the QUERY reached the end
    # delayed messages held, not yet due (no read shows them), and the unix second the
    # soonest is due: where the broker tells them (the bundled broker's count), else None
    # (UNANSWERED["scheduled"]), never 0
    scheduled: int | None = None
    next_due: int | None = None

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def view(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "exists": self.exists,
            "counts": self.counts,
            "total": self.total,
            "capped": self.capped,
            "total_is_lower_bound": self.lower_bound,
            "lower_bound_why": self.why,
            "refused": self.refused,
            "oldest": self.oldest,
            "newest_id": self.newest_id,
            "message_ttl": self.message_ttl,
            "counted_at": self.counted_at,
            "scheduled": self.scheduled,  # None: UNANSWERED["scheduled"]
            "next_due": self.next_due,
            "mailbox_ttl": None,  # UNANSWERED["ttl"]
        }


def refusal(exc: BaseException) -> str | None:
    """The broker's one line when ``exc`` refuses this reader one mailbox (a credentialed
    broker: another agent's, or one nobody owns), None for anything else."""
    # NotOwner is exactly that refusal (the wire reads it from the broker's reply), whatever
    # its words say; any other refusal is not this reader's alone and is raised
    return exc.message if isinstance(exc, NotOwner) else None


async def figures(client: Mq9ClientLike, address: str, *, count_on: bool = False) -> MailboxFigures:
    """``address`` as its QUERY shows it; ``count_on``: past the QUERY, counted on page by page
    (``page``) up to ``COUNT_PAGES`` reads and ``COUNT_BYTES`` of payloads, so the count is
    exact where one look can reach the end, and a lower bound that says so where not."""
    try:
        found: list[Message] = await client.query(address, limit=QUERY_CAP)
    except MailboxNotFound:
        return MailboxFigures(address, exists=False)
    except Mq9Error as exc:
        why = refusal(exc)
        if why is None:
            raise
        return MailboxFigures(address, exists=True, refused=why)
    # A QUERY answers in msg_id order: one cut to the broker's answer size looks whole but
    # for what a next read from its last id finds
    capped = maybe_cut(found) or (bool(found) and await more_after(client, address, found))
    tally = Tally()
    tally.add(found)
    lower_bound, why = capped, (QUERY_WHY if capped else None)
    if capped and count_on:
        lower_bound, why = await _count_on(client, address, found[-1].msg_id + 1, tally)
    return MailboxFigures(
        address,
        exists=True,
        counts=tally.counts,
        capped=capped,
        lower_bound=lower_bound,
        why=why,
        oldest=tally.oldest,
        newest_id=tally.newest_id,
        message_ttl=min(tally.ttls, default=None),
        messages=tuple(found),
    )


QUERY_WHY = (
    f"one QUERY answers at most {QUERY_CAP} messages and {LANE_READ_BYTES >> 20} MiB of "
    "payloads, or less to fit the broker's answer size, and mq9 answers no count: the pages "
    "below go on"
)


@dataclass
class Tally:
    """What the counted messages add up to."""

    counts: dict[str, int] = field(default_factory=lambda: {p.value: 0 for p in PRIORITY_ORDER})
    ttls: list[int] = field(default_factory=list)
    oldest: int | None = None
    newest_id: int | None = None
    payload_bytes: int = 0

    def add(self, found: list[Message]) -> None:
        for message in found:
            self.counts[Priority(message.priority).value] += 1
            with contextlib.suppress(KeyError, ValueError):
                self.ttls.append(int(message.header[HEADER_TTL]))
            self.payload_bytes += len(message.payload)
        times = [m.create_time for m in found]
        self.oldest = min([*times, *([] if self.oldest is None else [self.oldest])], default=None)
        ids = [m.msg_id for m in found]
        top = max(ids, default=None)
        if top is not None and (self.newest_id is None or top > self.newest_id):
            self.newest_id = top


async def _count_on(
    client: Mq9ClientLike, address: str, from_id: int, tally: Tally
) -> tuple[bool, str | None]:
    """Count the messages from ``from_id`` on into ``tally``, a page at a time, as far as one
    look goes: (whether the count is a lower bound, why)."""
    spent = tally.payload_bytes
    hidden = None
    at: int | None = from_id
    for _ in range(COUNT_PAGES):
        if at is None:
            break
        found = await page(client, address, at)
        tally.add(found.messages)
        hidden = hidden or found.hidden
        at = found.next_from
        if tally.payload_bytes - spent > COUNT_BYTES:
            break
    if hidden is not None:
        return True, hidden
    if at is None:
        return False, None
    total = sum(tally.counts.values())
    return True, (
        f"counted the first {total}, as far as one look goes ({COUNT_PAGES} pages or "
        f"{COUNT_BYTES >> 20} MiB of payloads past the QUERY), and mq9 answers no count: the "
        "pages below go on"
    )


def pretty(text: str) -> str | None:
    """``text`` indented, when it is a JSON object or array (a person reads it better so; it
    stays text, shown escaped), else None."""
    if not text.lstrip().startswith(("{", "[")):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return json.dumps(value, indent=2, ensure_ascii=False)


def message_view(message: Message) -> dict[str, Any]:
    """A message for a person: every field, the payload as text (never interpreted)."""
    return {
        "msg_id": message.msg_id,
        "priority": Priority(message.priority).value,
        "create_time": message.create_time,
        "key": message.key,
        "tags": list(message.tags),
        "header": dict(message.header),
        "payload": bytes(message.payload).decode("utf-8", errors="replace"),
    }


async def search(
    client: Mq9Client,  # tags: a QUERY filter of this package's client, not the SDK's
    address: str,
    *,
    key: str = "",
    tags: list[str] | None = None,
    text: str = "",
    from_id: int = 0,
    limit: int = QUERY_CAP,
    scan: int = 10,
    until: float | None = None,
    clock: Callable[[], float] | None = None,
) -> Page:
    """The messages of ``address`` with ``key`` (the newest of that key), one of ``tags``
    (each a QUERY filter of the broker's, which answers the oldest 100 and pages no further),
    and holding ``text`` (matched here, case-insensitively, in the payload, key and tags,
    ``scan`` pages at most a call, and none begun past the time ``until`` on ``clock``: the
    next call goes on from ``next_from``)."""
    if key or tags:
        given: dict[str, Any] = {"key": key} if key else {"tags": tags}
        filtered = await client.query(address, limit=QUERY_CAP, **given)
        return Page([m for m in filtered if _holds(m, text)][:limit], None)
    if not text:
        return await page(client, address, from_id, limit)
    hits: list[Message] = []
    at = from_id
    hidden: list[str] = []  # each scanned page's "may be missing" note: the search's too
    for _ in range(scan):
        found = await page(client, address, at)
        if found.hidden is not None:
            hidden.append(found.hidden)
        said = "; ".join(hidden) or None
        for message in found.messages:
            if _holds(message, text):
                if len(hits) == limit:
                    return Page(hits, message.msg_id, message.msg_id - 1, said)
                hits.append(message)
        if found.next_from is None:
            return Page(hits, None, hidden=said)
        at = found.next_from
        if until is not None and clock is not None and clock() >= until:
            break
    return Page(hits, at, at - 1, "; ".join(hidden) or None)


def _holds(message: Message, text: str) -> bool:
    if not text:
        return True
    wanted = text.casefold()
    words = [payload_text(message.payload), message.key or "", *message.tags]
    return any(wanted in w.casefold() for w in words)


async def messages(client: Mq9ClientLike, address: str, *, limit: int = QUERY_CAP) -> list[Message]:
    """The oldest ``limit`` messages of ``address`` (a QUERY: nothing consumed)."""
    found: list[Message] = await client.query(address, limit=limit)
    return found


class Unknown(Exception):
    """What a read cannot tell (said in its one line)."""


async def message_at(client: Mq9ClientLike, address: str, msg_id: int) -> Message | None:
    """The message ``msg_id`` of ``address``, or None when it is not there (mq9's DELETE of
    such an id succeeds all the same): stateless FETCHes from it, nothing consumed. A FETCH
    reads lane by lane, most urgent first, so a normal message is in its answer only if the
    lanes before it left room: ``Unknown`` when over 100 more urgent ones follow it."""
    for asked in (1, QUERY_CAP + 1):
        found: list[Message] = await client.fetch(
            address, deliver="from_id", from_id=msg_id, num_msgs=asked, max_wait_ms=0
        )
        held = next((m for m in found if m.msg_id == msg_id), None)
        if held is not None:
            return held
        if read_through([m for m in found if m.msg_id >= msg_id], asked) >= msg_id:
            return None
    raise Unknown(
        f"cannot tell whether {address} holds msg_id {msg_id}: over {QUERY_CAP} more urgent "
        "messages follow it"
    )


async def waiting(client: Mq9ClientLike, address: str, group: str, wait_ms: int) -> list[Message]:
    """What waits for ``group`` in ``address``, most urgent first, as a FETCH of the
    group answers it: a FETCH moves no position and hands nothing out (docs/protocol.md
    §5.3), and nothing here records a hand-out (a ``GroupReader`` counts those toward a dead
    letter): a person's look. A group that never acked here reads from the beginning."""
    return await client.fetch(
        address, group_name=group, deliver="earliest", num_msgs=QUERY_CAP, max_wait_ms=wait_ms
    )


async def create(client: Mq9Client, address: str, ttl: int, description: str) -> None:
    """Make mailbox ``address`` (``ttl`` seconds, 0: for ever; ``description`` kept
    with it); ``MailboxExists`` when it is there already (left as it is)."""
    await client.mailbox_create(name=address, ttl=ttl, desc=description or None)


async def exists(client: Mq9ClientLike, address: str) -> bool:
    """Whether ``address`` is a mailbox now (a QUERY of one message)."""
    try:
        await client.query(address, limit=1)
    except MailboxNotFound:
        return False
    return True


async def newest_id(client: Mq9ClientLike, address: str) -> int | None:
    """The newest stored message's id (a stateless FETCH of ``latest``), None if empty."""
    found = await client.fetch(address, deliver="latest", num_msgs=1, max_wait_ms=0)
    return max((m.msg_id for m in found), default=None)


async def follow(
    client: Mq9ClientLike,
    address: str,
    *,
    after: int | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> AsyncIterator[Message]:
    """Each message stored in ``address`` after ``after`` (None: after the newest now), once,
    as it arrives; nothing is consumed (stateless reads, no group). Read as a mailbox's pages
    are (``page``): an answer the broker cut, or one full of more urgent messages, is sure
    only so far, so the ids it may hide less urgent messages among are read again until a
    read covers them. What one poll finds comes in msg_id order; a message hidden under more
    than an answer of more urgent ones comes when a read reaches it (they were deleted or
    expired), after newer ones."""
    if after is None:
        after = await newest_id(client, address)
    followed = _Followed(0 if after is None else after + 1)
    while True:
        fresh = await followed.poll(client, address)
        for message in fresh:
            yield message
        if not fresh:
            await sleep(POLL_SECONDS)


# How many pages one poll of a followed mailbox reads at most (its new messages, then the ids
# that may hide some): a backlog is read on at the next poll, without a pause.
FOLLOW_PAGES = 10
# Ids that may hide a message are read again in the poll that found them (a read from their
# own id may reach it), then once in this many polls: a message stays hidden under more
# urgent ones until some of those are deleted or expire, which no read from past them sees.
AGAIN_POLLS = 20


@dataclass
class _Followed:
    """Where a followed mailbox was read to. ``start``: every id below it was read in every
    lane (shown, or not there) but those in ``open``, id ranges (first, last) a read may have
    hidden less urgent messages in; ``shown``: the ids shown from the first of those on (a
    read from there answers them again); ``polls``: how many polls were made."""

    start: int
    open: list[tuple[int, int]] = field(default_factory=list)
    shown: set[int] = field(default_factory=set)
    polls: int = 0

    async def poll(self, client: Mq9ClientLike, address: str) -> list[Message]:
        """The messages not shown yet that one poll finds, in msg_id order."""
        found: list[Message] = []
        reads, known = 0, len(self.open)
        while reads < FOLLOW_PAGES:  # the new messages first: the frontier's pages
            read = await page(client, address, self.start)
            reads += 1
            found += self._take(read)
            last = read.messages[-1].msg_id if read.messages else self.start - 1
            if not _sure(read):
                self._hide(self.start, last)
            self.start = read.next_from if read.next_from is not None else last + 1
            if read.next_from is None:
                break
        again = self.open if self.polls % AGAIN_POLLS == 0 else self.open[known:]
        self.polls += 1
        for first, _ in list(again):  # then the ids that may hide some, oldest first
            if reads >= FOLLOW_PAGES:
                break
            read = await page(client, address, first)
            reads += 1
            found += self._take(read)
            if _sure(read):  # every lane read from first on, as far as the page goes
                self._cover(first, math.inf if read.next_from is None else read.next_from - 1)
        floor = min([self.start, *(first for first, _ in self.open)])
        self.shown = {i for i in self.shown if i >= floor}
        return sorted(found, key=lambda m: m.msg_id)

    def _take(self, read: Page) -> list[Message]:
        fresh = [m for m in read.messages if m.msg_id not in self.shown]
        self.shown.update(m.msg_id for m in fresh)
        return fresh

    def _hide(self, first: int, last: int) -> None:
        """The ids first..last not shown may hold less urgent messages no read reached yet."""
        held = sorted(i for i in self.shown if first <= i <= last)
        for low, high in zip([first - 1, *held], [*held, last + 1], strict=True):
            if high - low > 1:
                self.open.append((low + 1, high - 1))

    def _cover(self, first: int, last: float) -> None:
        """Every lane was read from ``first`` through ``last``: no range there is open."""
        kept = []
        for low, high in self.open:
            if high < first or low > last:
                kept.append((low, high))
                continue
            if low < first:
                kept.append((low, first - 1))
            if high > last:
                kept.append((int(last) + 1, high))
        self.open = kept


def _sure(read: Page) -> bool:
    """Whether every lane of ``read`` was read as far as it goes: its page says nothing may be
    missing (``page`` tells a cut it cannot see from the ids missing below its highest, and
    says when a deleted message and a hidden one still look alike)."""
    return read.hidden is None


# -- dead letters ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Letter:
    """A message of a dead-letter mailbox: its dead letter (None when it carries none: anyone
    may write there), and whether the replay group has passed it (None: unknown)."""

    message: Message
    letter: DeadLetter | None
    problem: str | None
    waiting: bool | None

    def view(self) -> dict[str, Any]:
        shown = message_view(self.message)
        shown["waiting"] = self.waiting
        if self.letter is None:
            shown["dead_letter"] = None
            shown["problem"] = self.problem
            return shown
        shown["dead_letter"] = {
            "mailbox": self.letter.mailbox,
            "group": self.letter.group,
            "msg_id": self.letter.msg_id,
            "create_time": self.letter.create_time,
            "key": self.letter.key,
            "attempts": self.letter.attempts,
            "reason": self.letter.reason,
        }
        return shown


async def dead_letters(client: Mq9ClientLike, mailbox: str) -> tuple[str, list[Letter] | None]:
    """The dead-letter mailbox of ``mailbox`` and its messages (None: it does not exist)."""
    address = dead_letter_address(mailbox)
    try:
        found: list[Message] = await client.query(address, limit=QUERY_CAP)
    except MailboxNotFound:
        return address, None
    waiting = await _not_replayed(client, address)
    letters = []
    for message in found:
        try:
            letter, problem = DeadLetter.read(message), None
        except ValueError as exc:
            letter, problem = None, str(exc)
        shown = None if waiting is None else message.msg_id in waiting
        letters.append(Letter(message, letter, problem, shown))
    return address, letters


async def _not_replayed(client: Mq9ClientLike, address: str) -> set[int] | None:
    """The msg_ids the replay group has not passed: its FETCH without an ack hands them out
    and moves nothing (None: unknown)."""
    try:
        found = await client.fetch(
            address,
            group_name=REPLAY_GROUP,
            deliver="earliest",
            num_msgs=QUERY_CAP,
            max_wait_ms=0,
        )
    except Exception:  # a look only: the page says "unknown"
        return None
    return {m.msg_id for m in found}


async def set_aside(
    client: Mq9Client, address: str, msg_id: int, *, group: str, reason: str
) -> int:
    """Move message ``msg_id`` of ``address`` to its dead letters (``<address>.dlq``), saying
    why, then delete it: every group passes it, and it is kept there to read and replay. Its
    msg_id in the dead-letter mailbox; ``LookupError`` when it is not there."""
    message = await message_at(client, address, msg_id)
    if message is None:
        raise LookupError(f"no message {msg_id} in {address}")
    letter = await store_dead_letter(
        client,
        dead_letter_address(address),
        message,
        mailbox=address,
        group=group,
        attempts=0,
        reason=reason,
    )
    await client.delete(address, msg_id)
    return letter


async def replay_one(client: Mq9Client, mailbox: str, letter_id: int) -> int:
    """Send the dead letter ``letter_id`` (in ``<mailbox>.dlq``) back to ``mailbox`` as
    ``replay`` does (payload, priority, tags and headers as they were, not the key), then
    delete it from the dead letters, so that it goes back once. Its new msg_id."""
    dlq = dead_letter_address(mailbox)
    message = await message_at(client, dlq, letter_id)
    if message is None:
        raise LookupError(f"no dead letter {letter_id} in {dlq}")
    letter = DeadLetter.read(message)  # ValueError: it carries none
    if letter.mailbox != mailbox:
        raise ValueError(f"#{letter_id} is a dead letter of {letter.mailbox}, not of {mailbox}")
    sender = message.header.get(HEADER_SENDER)
    me = getattr(client, "principal", None)
    if sender is not None and sender != me:
        raise ValueError(
            f"#{letter_id} was written by the agent {sender!r}, not by this console's "
            f"({me!r}): it sends back only what its own agent set aside"
        )
    sent: int = await client.send(
        mailbox,
        payload_text(message.payload),
        priority=message.priority,
        tags=message.tags or None,
        headers=letter.header or None,
    )
    await client.delete(dlq, letter_id)
    return sent


async def replay_dead_letters(client: Mq9Client, mailbox: str) -> Replayed:
    """Send ``mailbox``'s dead letters back to it, each once (``groups.reader.replay``)."""
    try:
        return await replay(client, dead_letter_address(mailbox), mailbox=mailbox)
    except MailboxNotFound:  # no dead-letter mailbox: none was ever set aside
        return Replayed([], {})


# -- calls -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One step of a call, seen in a mailbox: when, in whose mailbox (``lane``), what, and the
    trace it carried (W3C ``traceparent``'s trace id, if any)."""

    time: int
    lane: str
    what: str
    trace_id: str | None = None


def _trace_id(header: dict[str, str]) -> str | None:
    parts = header.get("traceparent", "").split("-")
    ok = len(parts) == 4 and len(parts[1]) == 32
    return parts[1] if ok and all(c in "0123456789abcdef" for c in parts[1]) else None


async def call_timeline(client: Mq9ClientLike, reply_mailbox: str, task_id: str) -> list[Event]:
    """A call's steps across the caller's reply mailbox and the agent's mailbox, oldest first:
    the record, each request the agent was sent (the task, answers, a cancel), the newest state
    and error the agent left. Key compaction keeps only the newest of each record."""
    caller = w.caller_address(reply_mailbox)
    events: list[Event] = []
    agent_mailbox = None
    for key, what in ((w.CALL_KEY, "call recorded"), (w.TASK_KEY, "state"), ("error.", "error")):
        with contextlib.suppress(MailboxNotFound):
            for message in await client.query(caller, key=key + task_id):
                label = what
                value = _json(message)
                if what == "state" and isinstance(value, dict):
                    label = "state: " + w.short_state(w.task_state(value))
                if what == "call recorded":
                    agent_mailbox = value.get("mailbox") if isinstance(value, dict) else None
                trace = _trace_id(message.header)
                events.append(Event(message.create_time, "caller", label, trace))
    if isinstance(agent_mailbox, str):
        with contextlib.suppress(MailboxNotFound, ValueError):
            sends = 0
            for message in await client.query(agent_mailbox, limit=QUERY_CAP):
                if message.header.get(w.HEADER_TASK_ID) != task_id:
                    continue
                method = message.header.get(w.HEADER_METHOD, w.SEND)
                what = "cancel asked" if method == w.CANCEL_TASK else f"request: {method}"
                if method == w.SEND:  # the task, then each answer the caller gave
                    what = "task sent" if sends == 0 else "answer sent"
                    sends += 1
                trace = _trace_id(message.header)
                events.append(Event(message.create_time, "agent", what, trace))
    return sorted(events, key=lambda e: e.time)


def _json(message: Message) -> Any:
    try:
        return message.json()
    except ValueError:
        return None
