"""Reading every message of a msg_id range with FETCH, exactly (a wake's count, the index).

A FETCH without a group reads the priority lanes critical, urgent, normal, each up to
``num_msgs`` messages from the same msg_id, and stops once it holds ``num_msgs``
(client.fetch): the answer is not "the next N messages". So a page proves only this: a lane
that was read and gave fewer than ``num_msgs`` holds nothing more from the start; a lane that
gave ``num_msgs`` holds nothing unread below its last one; a lane not read (the answer was full
before it) proves nothing. The range proven whole is up to the lowest of those bounds; a page
that proves nothing is asked again for more (up to MAX_NUM_MSGS). Taking the highest msg_id
seen as "read up to" (what wakes did) skips every lower message of a later lane.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from mq9_wire import protocol as p
from mq9_wire.protocol import Message
from mq9_wire.protocol.errors import MailboxNotFound

from ..client import Mq9Client

PAGE = 500  # messages asked per lane and FETCH


async def read_span(
    client: Mq9Client, mailbox: str, first: int, last: int | None = None, page: int = PAGE
) -> AsyncIterator[list[Message]]:
    """The live messages of ``mailbox`` with ``first <= msg_id <= last`` (None: to the end),
    page by page, each page in msg_id order, every one exactly once."""
    start = first
    asked = page
    while last is None or start <= last:
        try:
            found = await client.fetch(
                mailbox, deliver="from_id", from_id=start, num_msgs=asked, max_wait_ms=0
            )
        except MailboxNotFound:
            return
        found = [m for m in found if m.msg_id >= start]  # past the end it gives the newest
        bound = proven(found, asked, start)
        if bound == start and asked < p.MAX_NUM_MSGS:
            asked = min(asked * 4, p.MAX_NUM_MSGS)  # one lane fills a page: ask for more
            continue
        if bound == start:  # over MAX_NUM_MSGS of a lane from here: take what the full
            # lanes prove (a later lane's messages below may be missed: said in docs/wake.md)
            bound = proven(found, asked, start, unread_lanes_count=False)
        taken = sorted(
            (
                m
                for m in found
                if (bound is None or m.msg_id < bound) and (last is None or m.msg_id <= last)
            ),
            key=lambda m: m.msg_id,
        )
        if taken:
            yield taken
        if bound is None:
            return
        start, asked = bound, page


def proven(
    found: list[Message], asked: int, start: int, *, unread_lanes_count: bool = True
) -> int | None:
    """The msg_id below which ``found`` (a FETCH's answer from some start, for ``asked``
    messages a lane) holds every live message of the mailbox; None: every one to the end."""
    held = 0
    bound: int | None = None
    for priority in p.PRIORITY_ORDER:
        lane = [m.msg_id for m in found if m.priority == priority]
        if held >= asked:  # this lane was never read: nothing is known of it
            if unread_lanes_count:
                return start
            break
        held += len(lane)
        if len(lane) >= asked:  # full: more of this lane may follow its last one
            top = max(lane) + 1
            bound = top if bound is None else min(bound, top)
    return bound
