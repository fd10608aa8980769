"""The handler that looks at a mailbox's messages without taking them: ``query_messages``, a
page by msg_id (the console's pages too, ``pages.py``) or a filter by key or tags, each answer
with the exact calls that page on; and ``hidden_in``, what a person is shown of the words a page
says about the messages it may miss.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypedDict

from mq9_wire.protocol import QUERY_CAP, Message

from ..client.api import Mq9ClientLike
from . import pages
from .context import CallContext
from .errors import invalid
from .message_answers import fitted_messages, next_call
from .policy import ToolPolicy
from .results import MessagesQueried, Outcome
from .schemas import QueryMessagesInput
from .views import DATA_NOTE, MessageView

QUERY_PAGE = 10  # messages query_messages shows unless given a limit: a page, not the mailbox


class _Filter(TypedDict, total=False):
    """A query's filter: only what was given (the official SDK's query takes no tags)."""

    key: str
    tags: list[str]


class _Start(TypedDict, total=False):
    """Where a FETCH without a group starts."""

    deliver: str
    from_id: int


async def query_messages(ctx: CallContext, args: QueryMessagesInput) -> Outcome[MessagesQueried]:
    client, policy = ctx.client, ctx.policy
    address = policy.own(args.mail_address)
    policy.check(address)
    given: _Filter = {}
    if args.key:
        given["key"] = args.key
    if args.tags:
        given["tags"] = args.tags
    limit = args.limit or QUERY_PAGE
    if given:
        if args.from_id:
            raise invalid("from_id reads every message, without key or tags: give either")
        # Only what was given: the official SDK's query takes no tags (Mq9ClientLike's none).
        query: Callable[..., Awaitable[list[Message]]] = client.query
        found = await query(address, **given, limit=limit)
        filtered = _filtered_answer(address, args, policy, limit, found)
        result, written = fitted_messages(found, policy, filtered)
        if len(given) > 1:  # both key and tags: the broker applies key, else tags
            result.filter_used = "only key: the broker applies one filter"
        return Outcome(result, found[: result.count], written)
    # The console's pages too (pages.py): an answer the broker cut to its answer size is not
    # the mailbox's end, and a page that may miss less urgent messages says so.
    read = await pages.page(client, address, args.from_id, limit)
    page = read.messages
    newest = None
    if read.next_from is not None or (not page and args.from_id):  # for the next calls
        newest = await _newest_id(client, address, page[-1].msg_id if page else -1)

    gaps = None
    if read.hidden:
        gaps = f"{read.hidden[0].upper()}{read.hidden[1:]}; {_reaching(policy)}"

    def answer(views: list[MessageView], left: int) -> MessagesQueried:
        step = _page_step(address, policy, args, page[: len(views)], page[len(views) :], newest)
        return MessagesQueried(
            count=len(views),
            messages=views,
            note=" ".join(filter(None, [DATA_NOTE if views else None, gaps])) or None,
            next_step=step,
        )

    result, written = fitted_messages(page, policy, answer)
    return Outcome(result, page[: result.count], written)


def hidden_in(note: str | None, policy: ToolPolicy) -> str | None:
    """A page's "may be missing" words in the note ``query_messages`` wrote with ``policy``
    (None: the page said nothing may be missing): what a person is shown of that note, without
    the model's advice (mq9 query shows it as a warning)."""
    gaps = (note or "").removeprefix(DATA_NOTE).strip()
    gaps = gaps.removesuffix(f"; {_reaching(policy)}")
    return f"{gaps[0].lower()}{gaps[1:]}" if gaps else None


def _reaching(policy: ToolPolicy) -> str:
    """What reads the less urgent messages a page may miss, in this toolkit's mode."""
    if policy.read_only:  # a FETCH without a group: from the same start each call, no turns
        return (
            "fetch_messages here is a look from the same start each call (deliver), most "
            "urgent first, that takes nothing, so it does not reach them either; a page from "
            "a later msg_id among these may."
        )
    return "fetch_messages takes every one in turn."


def _filtered_answer(
    address: str, args: QueryMessagesInput, policy: ToolPolicy, limit: int, found: list[Message]
) -> Callable[[list[MessageView], int], MessagesQueried]:
    """The answer to a query by key or tags, which the broker cannot page: it answers the
    oldest ``limit`` per tag (docs/protocol-commands.md §5.5)."""
    steps = []
    if args.tags and not args.key and len(found) >= limit:
        wider = next_call("query_messages", address, policy, f"tags={args.tags!r}", "limit=100")
        steps.append(
            "The broker answers the oldest messages per tag, up to limit: there may be more"
            + (f" ({wider} shows up to 100)." if limit < QUERY_CAP else ".")
        )

    def answer(views: list[MessageView], left: int) -> MessagesQueried:
        more = [f"{left} more did not fit in this answer: query fewer tags."] if left else []
        return MessagesQueried(
            count=len(views),
            messages=views,
            note=DATA_NOTE if views else None,
            next_step=" ".join(steps + more) or None,
        )

    return answer


async def _newest_id(client: Mq9ClientLike, address: str, known: int) -> int | None:
    """The msg_id of the newest message in the mailbox (None: it is empty), ``known`` being
    one there (or -1).

    A FETCH without a group from ``latest`` hands out the newest message written (RobustMQ
    starts at the shard's end), unless it is gone (deleted, expired): then the ids above
    ``known`` are searched, each look a FETCH of one message from an id."""

    async def first_from(msg_id: int | None) -> int | None:
        start: _Start = {"deliver": "latest"}
        if msg_id is not None:
            start = {"deliver": "from_id", "from_id": msg_id}
        found = await client.fetch(address, num_msgs=1, max_wait_ms=0, **start)
        ids = [m.msg_id for m in found if msg_id is None or m.msg_id >= msg_id]
        return max(ids, default=None)

    newest = await first_from(None)
    if newest is not None and newest >= known:
        return newest
    low, step = known, 1  # a message at low
    high: int | None = None  # none from high on (None: not found yet)
    while high is None or high - low > 1:
        probe = low + step if high is None else (low + high) // 2
        found = await first_from(probe)
        if found is None:
            high = probe
        else:
            low, step = found, step * 2
    return None if low < 0 else low


def _page_step(
    address: str,
    policy: ToolPolicy,
    args: QueryMessagesInput,
    shown: list[Message],
    left: list[Message],
    newest: int | None,
) -> str | None:
    """What else is in the mailbox, and the exact calls that page to it: ``left`` are the
    page's messages the answer had no room for, ``newest`` the newest msg_id when looked up."""
    size = args.limit or QUERY_PAGE
    extra = [f"limit={args.limit}"] if args.limit else []

    def page_at(msg_id: int) -> str:
        return next_call("query_messages", address, policy, f"from_id={max(msg_id, 0)}", *extra)

    steps = []
    if shown and args.from_id:
        steps.append(f"Earlier: {page_at(shown[0].msg_id - size)}.")
    last = shown[-1].msg_id if shown else args.from_id - 1
    if left or (newest is not None and newest > last):
        following = left[0].msg_id if left else last + 1
        up_to = f", up to msg_id {newest}" if newest is not None else ""
        step = f"More follow{up_to}: next page {page_at(following)}"
        if newest is not None and newest - size + 1 > following:
            step += f", the newest {page_at(newest - size + 1)}"
        steps.append(step + ".")
    elif not shown and args.from_id:
        newest_page = f": the newest are {page_at(newest - size + 1)}" if newest is not None else ""
        steps.append(f"No message from msg_id {args.from_id} on{newest_page}.")
    return " ".join(steps) or None
