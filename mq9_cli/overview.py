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
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from langchain_mq9.a2a import wire as w
from langchain_mq9.groups.dead_letters import DeadLetter, dead_letter_address
from langchain_mq9.groups.reader import Replayed, replay
from langchain_mq9.operations.catalog import OPERATIONS
from langchain_mq9.operations.config import ToolConfig
from langchain_mq9.operations.policy import ToolPolicy
from langchain_mq9.protocol import PRIORITY_ORDER, QUERY_CAP, Message, Priority
from langchain_mq9.protocol.errors import MailboxNotFound
from langchain_mq9.protocol.messages import HEADER_TTL

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
    "count": f"A QUERY answers at most {QUERY_CAP} messages: a mailbox with more shows "
    f"{QUERY_CAP}+",
}


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
    client: Any, name: str, args: dict[str, Any], policy: ToolPolicy | None = None
) -> dict[str, Any]:
    """Run the catalog's operation ``name``; its result's data (``OperationError``: refused)."""
    outcome = await OPERATIONS[name].execute(client, args, policy or person_policy())
    return {k: v for k, v in outcome.content.items() if k not in _FOR_MODELS}


# -- mailboxes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MailboxFigures:
    """A mailbox as one QUERY shows it: its messages per priority (``capped``: the QUERY's
    limit was reached, there may be more), the oldest's time, the shortest message TTL."""

    address: str
    exists: bool
    counts: dict[str, int] = field(default_factory=dict)
    capped: bool = False
    oldest: int | None = None
    newest_id: int | None = None
    message_ttl: int | None = None

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
            "oldest": self.oldest,
            "newest_id": self.newest_id,
            "message_ttl": self.message_ttl,
            "mailbox_ttl": None,  # UNANSWERED["ttl"]
        }


async def figures(client: Any, address: str) -> MailboxFigures:
    try:
        found: list[Message] = await client.query(address, limit=QUERY_CAP)
    except MailboxNotFound:
        return MailboxFigures(address, exists=False)
    counts = {priority.value: 0 for priority in PRIORITY_ORDER}
    ttls = []
    for message in found:
        counts[Priority(message.priority).value] += 1
        with contextlib.suppress(KeyError, ValueError):
            ttls.append(int(message.header[HEADER_TTL]))
    return MailboxFigures(
        address,
        exists=True,
        counts=counts,
        capped=len(found) >= QUERY_CAP,
        oldest=min((m.create_time for m in found), default=None),
        newest_id=max((m.msg_id for m in found), default=None),
        message_ttl=min(ttls, default=None),
    )


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


async def messages(client: Any, address: str, *, limit: int = QUERY_CAP) -> list[Message]:
    """The oldest ``limit`` messages of ``address`` (a QUERY: nothing consumed)."""
    found: list[Message] = await client.query(address, limit=limit)
    return found


async def newest_id(client: Any, address: str) -> int | None:
    """The newest stored message's id (a stateless FETCH of ``latest``), None if empty."""
    found = await client.fetch(address, deliver="latest", num_msgs=1, max_wait_ms=0)
    return max((m.msg_id for m in found), default=None)


async def follow(
    client: Any,
    address: str,
    *,
    after: int | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> AsyncIterator[Message]:
    """Each message stored in ``address`` after ``after`` (None: after the newest now), as it
    arrives; nothing is consumed (stateless FETCHes from the next id, no group)."""
    if after is None:
        after = await newest_id(client, address)
    next_id = -1 if after is None else after
    while True:
        found = await client.fetch(
            address, deliver="from_id", from_id=next_id + 1, num_msgs=QUERY_CAP, max_wait_ms=0
        )
        # A FETCH from past the end answers the newest message again: only newer ones count.
        fresh = sorted((m for m in found if m.msg_id > next_id), key=lambda m: m.msg_id)
        for message in fresh:
            next_id = message.msg_id
            yield message
        if not fresh:
            await sleep(POLL_SECONDS)


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


async def dead_letters(client: Any, mailbox: str) -> tuple[str, list[Letter] | None]:
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


async def _not_replayed(client: Any, address: str) -> set[int] | None:
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


async def replay_dead_letters(client: Any, mailbox: str) -> Replayed:
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


async def call_timeline(client: Any, reply_mailbox: str, task_id: str) -> list[Event]:
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
