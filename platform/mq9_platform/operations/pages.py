"""A page of a mailbox read without consuming anything: the toolkit's ``query_messages`` and
the console's pages and counts read a mailbox this one way.

Two things make a page hard to end right. A stateless FETCH from an id reads lane by lane
(critical, urgent, normal; each lane at most 30 MiB; docs/protocol-commands.md §5.3), so only
the ids every lane was read through are a page (``read_through``). And a broker may cut either
a QUERY or a FETCH answer after any message to fit its answer size (the bundled broker does, to its
NATS server's max_payload or ``BrokerLimits.max_answer``; RobustMQ does not; nothing in the answer
says so): a cut answer is a prefix in the broker's order, so a page that looks like the end is
the end only when a read from where its answer stops finds nothing new.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mq9_wire.protocol import LANE_READ_BYTES, MAX_NUM_MSGS, PRIORITY_ORDER, QUERY_CAP, Message

from ..client.api import Mq9ClientLike
from ..groups.state import LARGEST_MESSAGE, read_through

# A page's read asks for this many when over a page of more urgent messages kept it from the
# less urgent lanes: the page still shows its limit, now from every lane (each at most 30 MiB).
DEEP_ASK = 1_000
# A QUERY (a lane read of a FETCH) holding more payload bytes than this may have been cut by
# RobustMQ's 30 MiB a read: the next message could have been up to the largest a broker takes.
SURE_BYTES = LANE_READ_BYTES - LARGEST_MESSAGE


@dataclass(frozen=True)
class Page:
    """Messages of a mailbox in msg_id order, and where the next page starts (None: the end).
    ``scanned_to``: a search looked at every message up to this id (its next page's start).
    ``hidden``: why less urgent messages among these ids may be missing from it."""

    messages: list[Message]
    next_from: int | None
    scanned_to: int | None = None
    hidden: str | None = None


def maybe_cut(found: list[Message], asked: int = QUERY_CAP) -> bool:
    """Whether a QUERY answer may hold less than the mailbox: ``asked`` reached, or so many
    payload bytes that RobustMQ's 30 MiB a read may have stopped it (34 messages of 1 MB
    answer 31)."""
    return len(found) >= asked or sum(len(m.payload) for m in found) > SURE_BYTES


async def more_after(client: Mq9ClientLike, address: str, found: list[Message]) -> bool:
    """Whether ``address`` holds a message past the newest in ``found``: a FETCH of one from
    the next id (one message always fits an answer; from past the end the broker answers the
    newest message, which is not past it)."""
    last = max(m.msg_id for m in found)
    probe = await client.fetch(
        address, deliver="from_id", from_id=last + 1, num_msgs=1, max_wait_ms=0
    )
    return any(m.msg_id > last for m in probe)


async def page(client: Mq9ClientLike, address: str, from_id: int, limit: int = QUERY_CAP) -> Page:
    """Up to ``limit`` messages from msg_id ``from_id`` on, in msg_id order, and where the
    next page starts. The first page is a QUERY (the oldest); the others stateless FETCHes
    from an id: only the ids every lane was read through make the page, so none is left out.
    A page whose answer may have been cut has a next page: from where its answer stops."""
    asked = min(limit, QUERY_CAP)
    if from_id <= 0:
        found = await client.query(address, limit=asked)
        more = maybe_cut(found, asked) or (bool(found) and await more_after(client, address, found))
        return Page(found, found[-1].msg_id + 1 if more and found else None)
    found = await _fetch_from(client, address, from_id, asked)
    if not found:  # an empty answer was not cut: the first message always fits one
        return Page([], None)
    through = read_through(found, asked)
    if through < from_id:  # the less urgent lanes were not read: once more, asking for more
        asked = DEEP_ASK
        found = await _fetch_from(client, address, from_id, asked)
        if not found:
            return Page([], None)
        through = read_through(found, asked)
    hidden = None
    if through < from_id:
        # Over ``asked`` more urgent messages from from_id on: the less urgent lanes were not
        # read. Their own page: from the most urgent, as far as it was read.
        through = found[min(asked, len(found)) - 1].msg_id
        hidden = _hidden(from_id, through, f"over {asked} more urgent ones follow")
    # A cut answer is a prefix in the broker's order (critical, urgent, normal): its last
    # lane may go on past its last id, and the lanes after it may not have been read
    last = next(p for p in reversed(PRIORITY_ORDER) if any(m.priority is p for m in found))
    read_to = max(m.msg_id for m in found if m.priority is last)
    if through > read_to and await _went_on(client, address, found, read_to):
        through = read_to
        if last is not PRIORITY_ORDER[-1]:
            hidden = _hidden(from_id, read_to, "more urgent ones filled the broker's answer")
    kept = [m for m in found if m.msg_id <= through][:limit]
    gap = _first_gap(from_id, kept) if hidden is None and last is not PRIORITY_ORDER[-1] else None
    if gap is not None and gap > from_id:  # every id below it is here: the page ends there
        kept, through = [m for m in kept if m.msg_id < gap], gap - 1
    elif gap is not None:  # its own first id: no read tells what it was (_first_gap)
        hidden = _hidden(from_id, kept[-1].msg_id, _GAP)
    if through == math.inf and len(kept) == len(found):
        return Page(kept, None, hidden=hidden)
    return Page(kept, (kept[-1].msg_id if kept else from_id) + 1, hidden=hidden)


_GAP = (
    "an id this page lacks is a deleted or expired message or one the broker's cut answer hid, "
    "which no read tells apart"
)


def _first_gap(from_id: int, kept: list[Message]) -> int | None:
    """The first msg_id from ``from_id`` missing below the highest of a page none of whose
    messages is normal (its less urgent lanes went unread), None: none is. A mailbox's msg_ids
    are consecutive (RobustMQ numbers each from 0 without gaps; every store here too), so a
    missing one is a message deleted or expired, or a less urgent one the broker's answer was
    cut before, right after the more urgent lane's last message (which ``_went_on`` cannot
    see). Above ``from_id`` the page ends before it, whole in every lane, and the next page
    is the read from it: fewer more urgent messages come first there, so it may reach the
    less urgent lanes. At ``from_id`` itself that read is this one again (a FETCH's num_msgs
    counts across lanes, and QUERY's since does nothing, docs/protocol-commands.md §5.5): a deleted
    message and a hidden one look alike, so the page says they may be missing. Costs no
    request; past the highest ``_went_on`` found nothing, so the page may still be the end."""
    held = {m.msg_id for m in kept}
    top = max(held, default=from_id)
    # at most len(kept) + 1 ids looked at: it stops at the first missing one
    return next((i for i in range(from_id, top) if i not in held), None)


async def _fetch_from(
    client: Mq9ClientLike, address: str, from_id: int, asked: int
) -> list[Message]:
    """A stateless FETCH of ``asked`` from ``from_id``: its messages from there on, by id
    (from an id past the end the broker answers the newest message: not from from_id on)."""
    answer = await client.fetch(
        address, deliver="from_id", from_id=from_id, num_msgs=asked, max_wait_ms=0
    )
    return sorted((m for m in answer if m.msg_id >= from_id), key=lambda m: m.msg_id)


async def _went_on(client: Mq9ClientLike, address: str, found: list[Message], read_to: int) -> bool:
    """Whether a FETCH from ``read_to`` + 1 finds a message ``found`` does not hold: then the
    answer was cut (or a message came since) and is sure only through ``read_to``. The more
    urgent lanes answer first again: asked for one more than ``found`` holds past read_to,
    the probe reaches the lane that ended the answer. A cut right after that lane's last
    message that hid only less urgent ones below it leaves nothing a read from past it finds
    (the bundled broker cuts so; RobustMQ sends what it read, uncut): ``_first_gap`` tells
    that one from the ids missing below."""
    past = sum(1 for m in found if m.msg_id > read_to)
    probe = await _fetch_from(client, address, read_to + 1, min(past + 1, MAX_NUM_MSGS))
    held = {m.msg_id for m in found}
    return any(m.msg_id not in held for m in probe)


def _hidden(from_id: int, through: int, cause: str) -> str:
    return (
        f"less urgent messages between msg_id {from_id} and {through} may be missing here: "
        f"{cause}, and a read from an id answers the most urgent first"
    )
