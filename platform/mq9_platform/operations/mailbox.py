"""The handlers of the mailbox and message operations. Each takes the call's ``CallContext``
(``context.py``: its client, any with ``Mq9Client``'s methods, ours or the official ``mq9``
SDK's, whose ``Message`` has no key or tags and whose ``query`` takes no tags; the caller's
``ToolPolicy``) and the validated arguments, and returns an ``Outcome`` (``results.py``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypedDict

from mq9_wire.protocol import QUERY_CAP, Message, Priority, err_not_awaiting_ack
from mq9_wire.protocol.errors import NotAwaitingAck

from ..a2a.shapes import JsonObject
from ..a2a.store import keyed
from ..client.api import Mq9ClientLike
from ..groups.reader import GroupReader
from . import pages
from .context import CallContext
from .errors import invalid
from .policy import GroupReading, ToolPolicy
from .results import (
    MailboxCreated,
    MessageDeleted,
    MessagesAcked,
    MessageSent,
    MessagesFetched,
    MessagesQueried,
    Outcome,
)
from .schemas import (
    AckMessagesInput,
    CreateMailboxInput,
    DeleteMessageInput,
    FetchMessagesInput,
    QueryMessagesInput,
    SendMessageInput,
)
from .views import (
    DATA_NOTE,
    MESSAGE_FLOOR,
    MESSAGE_KEPT_IN,
    Answer,
    MessageView,
    fitted,
    message_view,
)

QUERY_PAGE = 10  # messages query_messages shows unless given a limit: a page, not the mailbox


class _Filter(TypedDict, total=False):
    """A query's filter: only what was given (the official SDK's query takes no tags)."""

    key: str
    tags: list[str]


class _Start(TypedDict, total=False):
    """Where a FETCH without a group starts."""

    deliver: str
    from_id: int


def next_call(tool: str, address: str, policy: ToolPolicy, *more: str) -> str:
    """How the model calls ``tool`` next; the mailbox is left out when it is its own."""
    args = [] if address == policy.agent_mailbox else [f"mail_address='{address}'"]
    return f"{tool}({', '.join([*args, *more])})"


async def create_mailbox(ctx: CallContext, args: CreateMailboxInput) -> Outcome[MailboxCreated]:
    client, policy = ctx.client, ctx.policy
    policy.check(args.name or None)
    address = await client.mailbox_create(name=args.name or None, ttl=args.ttl)
    policy.created.add(address)
    next_step = (
        "Give this address to others (e.g. as reply_to in a message) and read it with "
        f"fetch_messages(mail_address='{address}')."
    )
    return Outcome(MailboxCreated(mail_address=address, next_step=next_step), address)


async def send_message(ctx: CallContext, args: SendMessageInput) -> Outcome[MessageSent]:
    client, policy = ctx.client, ctx.policy
    policy.check(args.mail_address)
    # (idempotency_key: our client's alone, where ``keyed`` finds it: Mq9ClientLike has none)
    send: Callable[..., Awaitable[int]] = client.send
    msg_id = await send(
        args.mail_address,
        args.payload,
        # Our Priority, not its name: the official SDK's send reads ``priority.value``.
        priority=Priority(args.priority),
        key=args.key or None,
        delay=args.delay or None,
        ttl=args.ttl or None,
        tags=args.tags or None,
        **keyed(client, args.idempotency_key),  # stored once per key (client/api.py: ours only)
    )
    notes = [f"delayed: visible in {args.delay} s, it gets its msg_id then"] if msg_id == -1 else []
    if args.idempotency_key and _keeps_no_keys(client, args.mail_address):
        notes.append(NO_KEYS_KEPT)
    return Outcome(MessageSent(sent=True, msg_id=msg_id, note="; ".join(notes) or None), msg_id)


# #100: the words a keyed send answers with where the broker said it keeps no keys (RobustMQ)
NO_KEYS_KEPT = "this broker keeps no idempotency keys: a call run again sends again"


def _keeps_no_keys(client: object, address: str) -> bool:
    """Whether the broker's answer to this client's keyed send said it keeps no keys (only
    this package's client learns it: ``keys_recognised_for``)."""
    recognised = getattr(client, "keys_recognised_for", None)
    return callable(recognised) and recognised(address) is False


def _fitted(
    messages: list[Message], policy: ToolPolicy, answer: Callable[[list[MessageView], int], Answer]
) -> tuple[Answer, tuple[JsonObject, str]]:
    """The result ``answer(views, left_out)`` that shows as many of ``messages`` as fit in the
    answer budget (``views.fitted``): in order, each its share, at least one. Beside it, its
    content and the text measured (``Outcome.written``)."""
    views = [message_view(m) for m in messages]
    result, content, text = fitted(
        answer,
        views,
        policy.max_answer_chars,
        chars=policy.max_payload_chars,
        where=MESSAGE_KEPT_IN,
        floor=MESSAGE_FLOOR,
    )
    return result, (content, text)


async def fetch_messages(ctx: CallContext, args: FetchMessagesInput) -> Outcome[MessagesFetched]:
    client, policy = ctx.client, ctx.policy
    address = policy.own(args.mail_address)
    policy.check(address)
    reading = None
    if policy.read_only:  # a look without a group: it consumes nothing
        messages = await client.fetch(
            address,
            deliver=policy.deliver,
            num_msgs=policy.num_msgs,
            max_wait_ms=args.max_wait_ms,
        )
        after = "This look took nothing: the same messages are there to read again."
        left_out = "query_messages pages through them"
        earlier: list[int] = []
    else:
        reading = policy.reading(client, address, policy.default_group)
        earlier = list(reading.unacked)
        messages = await reading.fetch(client, policy.num_msgs, policy.deliver, args.max_wait_ms)
        ack = next_call("ack_messages", address, policy, "msg_id=<the last one handled>")
        after = (
            f"Each message is given to you once. When you have handled them, call {ack}. "
            "Until then none is lost: if you stop first, they are given again (to you, or to "
            "whoever reads this mailbox next)."
        )
        left_out = "they stay waiting, and the next fetch_messages gives them"
    next_step = after if messages else _nothing_yet(args.max_wait_ms, policy.wait_cap_ms)
    aside = next_call("ack_messages", address, policy, "msg_id=<it>", "set_aside='<why>'")
    again = (
        f" handed_out > 1: given before and never acked; one you cannot handle, set aside with "
        f"{aside}."
    )

    def answer(views: list[MessageView], left: int) -> MessagesFetched:
        more = f" {left} more did not fit in this answer: {left_out}." if left else ""
        shown_before = reading is not None and _show_handed_out(views, reading.reader)
        return MessagesFetched(
            count=len(views),
            messages=views,
            note=DATA_NOTE if views else None,
            unacked_earlier=earlier or None,
            next_step=next_step + (again if shown_before else "") + more,
        )

    result, written = _fitted(messages, policy, answer)
    shown, left = messages[: result.count], messages[result.count :]
    if reading is not None:
        await _hand_to_model(reading, client, shown, left)
    return Outcome(result, shown, written)


# What fetch_messages suggests waiting, unless its cap is lower
SUGGESTED_WAIT_MS = 30_000


def _nothing_yet(waited_ms: int, cap_ms: int) -> str:
    """What a fetch that found nothing says: call again (after a wait that ``cap_ms``, the most
    one call waits, may have cut: ``Operation.capped``; an MCP task waits as asked)."""
    if waited_ms == cap_ms > 0:
        return (
            f"No message yet: call again to keep waiting (one call waits at most {cap_ms} ms "
            "here; nothing is lost meanwhile)."
        )
    if waited_ms:
        return f"No message yet within {waited_ms} ms: call again to keep waiting."
    if not cap_ms:
        return "Nothing new: call again later."
    wait = min(SUGGESTED_WAIT_MS, cap_ms)
    return f"Nothing new. To wait for a message, set max_wait_ms (e.g. {wait})."


async def _hand_to_model(
    reading: GroupReading, client: Mq9ClientLike, shown: list[Message], left: list[Message]
) -> None:
    """The model is shown ``shown``: their delivery begins (a death now charges them alone,
    docs/groups.md). ``left``, handed out but cut from the answer, are handed out again by
    the next fetch, charged nothing."""
    reader = reading.reader_for(client)
    if left:
        await reader.release(m.msg_id for m in left)
        del reading.unacked[len(reading.unacked) - len(left) :]  # the fetch put them last
    await reader.begin(m.msg_id for m in shown)


def _show_handed_out(views: list[MessageView], reader: GroupReader) -> bool:
    """Mark the messages handed out before (to a reader that stopped, or that failed them):
    how often, as the broker's records count it. Whether any was."""
    again = False
    for view in views:
        count = reader.handed_out(view["msg_id"])
        if count > 1:
            view["handed_out"] = count
            again = True
    return again


async def ack_messages(ctx: CallContext, args: AckMessagesInput) -> Outcome[MessagesAcked]:
    policy = ctx.policy
    address = policy.own(args.mail_address)
    policy.check(address)
    reading = policy.readings.get((address, policy.default_group))
    if reading is None or args.msg_id not in reading.unacked:
        # Handed out by another process or replica of this reader (a new stdio process per
        # call): the broker's records say what it was handed (docs/groups.md).
        reading = policy.reading(ctx.client, address, policy.default_group)
        await reading.adopt(ctx.client, args.msg_id, policy.deliver)
    waiting = reading.unacked
    if args.msg_id not in waiting:  # its own class (#113): a face decides on it, not on words
        fetch = next_call("fetch_messages", address, policy)
        why = (
            f"{err_not_awaiting_ack(args.msg_id, address)}: fetch_messages did not give it to "
            "you, or it is already acked. "
            + (f"Waiting for an ack: {waiting}; ack one of those." if waiting
               else f"Call {fetch} first and ack a msg_id it returned.")
        )  # fmt: skip
        raise NotAwaitingAck(why, msg_id=args.msg_id, address=address, waiting=tuple(waiting))
    if args.set_aside:
        return await _set_aside(ctx, reading, address, args)
    confirmed = waiting[: waiting.index(args.msg_id) + 1]
    await reading.reader_for(ctx.client).done(confirmed)
    reading.unacked = waiting[len(confirmed) :]  # waiting is reading.unacked; confirmed its head
    still = list(reading.unacked) or None
    return Outcome(MessagesAcked(confirmed=confirmed, still_unacked=still), confirmed)


async def _set_aside(
    ctx: CallContext, reading: GroupReading, address: str, args: AckMessagesInput
) -> Outcome[MessagesAcked]:
    """Move one handed-out message to the dead-letter mailbox instead of acking it: the group
    goes past it, and it stays readable there (docs/groups.md, "Poison messages")."""
    reader = reading.reader_for(ctx.client)
    await reader.dead_letter(args.msg_id, args.set_aside)
    reading.unacked.remove(args.msg_id)
    still = list(reading.unacked) or None
    look = next_call("query_messages", reader.dead_letter_address, ctx.policy)
    next_step = f"msg_id {args.msg_id} was set aside: it is kept, with your reason, in {look}."
    result = MessagesAcked(confirmed=[], still_unacked=still, next_step=next_step)
    return Outcome(result, {"set_aside": args.msg_id, "dead_letter": reader.dead_letter_address})


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
        result, written = _fitted(found, policy, filtered)
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

    result, written = _fitted(page, policy, answer)
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
    oldest ``limit`` per tag (docs/protocol.md §5.5)."""
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


async def delete_message(ctx: CallContext, args: DeleteMessageInput) -> Outcome[MessageDeleted]:
    client, policy = ctx.client, ctx.policy
    address = policy.own(args.mail_address)
    policy.check(address)
    await client.delete(address, args.msg_id)
    artifact = {"mail_address": address, "msg_id": args.msg_id}
    return Outcome(MessageDeleted(deleted=True, msg_id=args.msg_id), artifact)
