"""The handlers that take a mailbox's messages in turn: ``fetch_messages`` hands them to the
model (through its group's reading, or as a look that takes nothing in read-only mode) and
``ack_messages`` confirms them, or sets one aside in the dead-letter mailbox
(docs/groups.md).
"""

from __future__ import annotations

from mq9_wire.protocol import Message, err_not_awaiting_ack
from mq9_wire.protocol.errors import NotAwaitingAck

from ..client.api import Mq9ClientLike
from ..groups.reader import GroupReader
from .context import CallContext
from .message_answers import fitted_messages, next_call
from .policy import GroupReading
from .results import MessagesAcked, MessagesFetched, Outcome
from .schemas import AckMessagesInput, FetchMessagesInput
from .views import DATA_NOTE, MessageView


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

    result, written = fitted_messages(messages, policy, answer)
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
    if args.msg_id not in waiting:  # its own class: a face decides on it, not on words
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
