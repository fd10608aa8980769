"""The handlers of the mailbox and message operations. Each takes any client with
``Mq9Client``'s methods (ours, or the official ``mq9`` SDK's, whose ``Message`` has no key or
tags and whose ``query`` takes no tags), the validated arguments and the caller's
``ToolPolicy``, and returns an ``Outcome`` (``tool_results.py``).
"""

from __future__ import annotations

from typing import Any

from .data_views import DATA_NOTE, message_view
from .protocol import QUERY_CAP, Priority
from .schemas import (
    AckMessagesInput,
    CreateMailboxInput,
    DeleteMessageInput,
    FetchMessagesInput,
    QueryMessagesInput,
    SendMessageInput,
)
from .tool_errors import OperationError, invalid
from .tool_policy import ToolPolicy
from .tool_results import (
    MailboxCreated,
    MessageDeleted,
    MessagesAcked,
    MessageSent,
    MessagesFetched,
    MessagesQueried,
    Outcome,
)


def next_call(tool: str, address: str, policy: ToolPolicy, *more: str) -> str:
    """How the model calls ``tool`` next; the mailbox is left out when it is its own."""
    args = [] if address == policy.agent_mailbox else [f"mail_address='{address}'"]
    return f"{tool}({', '.join([*args, *more])})"


async def create_mailbox(
    client: Any, args: CreateMailboxInput, policy: ToolPolicy
) -> Outcome[MailboxCreated]:
    policy.check(args.name or None)
    address = await client.mailbox_create(name=args.name or None, ttl=args.ttl)
    policy.created.add(address)
    next_step = (
        "Give this address to others (e.g. as reply_to in a message) and read it with "
        f"fetch_messages(mail_address='{address}')."
    )
    return Outcome(MailboxCreated(mail_address=address, next_step=next_step), address)


async def send_message(
    client: Any, args: SendMessageInput, policy: ToolPolicy
) -> Outcome[MessageSent]:
    policy.check(args.mail_address)
    msg_id = await client.send(
        args.mail_address,
        args.payload,
        # Our Priority, not its name: the official SDK's send reads ``priority.value``.
        priority=Priority(args.priority),
        key=args.key or None,
        delay=args.delay or None,
        ttl=args.ttl or None,
        tags=args.tags or None,
    )
    delayed = f"delayed: visible in {args.delay} s, it gets its msg_id then"
    return Outcome(
        MessageSent(sent=True, msg_id=msg_id, note=delayed if msg_id == -1 else None), msg_id
    )


def _views(messages: list, policy: ToolPolicy) -> dict[str, Any]:
    """The messages as the model sees them, with the note that they are data."""
    return {
        "count": len(messages),
        "messages": [message_view(m, policy.max_payload_chars) for m in messages],
        "note": DATA_NOTE if messages else None,
    }


async def fetch_messages(
    client: Any, args: FetchMessagesInput, policy: ToolPolicy
) -> Outcome[MessagesFetched]:
    address = policy.own(args.mail_address)
    policy.check(address)
    reader = None
    if policy.read_only:  # a look without a group: it consumes nothing
        messages = await client.fetch(
            address,
            deliver=policy.deliver,
            num_msgs=policy.num_msgs,
            max_wait_ms=args.max_wait_ms,
        )
        after = "This look took nothing: the same messages are there to read again."
        earlier: list[int] = []
    else:
        reading = policy.reading(client, address, policy.default_group)
        reader = reading.reader
        earlier = list(reading.unacked)
        messages = await reading.fetch(policy.num_msgs, policy.deliver, args.max_wait_ms)
        ack = next_call("ack_messages", address, policy, "msg_id=<the last one handled>")
        after = (
            f"Each message is given to you once. When you have handled them, call {ack}. "
            "Until then none is lost: if you stop first, they are given again (to you, or to "
            "whoever reads this mailbox next)."
        )
    if messages:
        next_step = after
    elif args.max_wait_ms:
        next_step = f"Nothing arrived within {args.max_wait_ms} ms; call again to keep waiting."
    else:
        next_step = "Nothing new. To wait for a message, set max_wait_ms (e.g. 30000)."
    result = MessagesFetched(
        **_views(messages, policy), unacked_earlier=earlier or None, next_step=next_step
    )
    if reader is not None and _show_handed_out(result.messages, reader):
        aside = next_call("ack_messages", address, policy, "msg_id=<it>", "set_aside='<why>'")
        result.next_step = (
            f"{next_step} handed_out > 1: given before and never acked; one you cannot "
            f"handle, set aside with {aside}."
        )
    return Outcome(result, messages)


def _show_handed_out(views: list[dict[str, Any]], reader: Any) -> bool:
    """Mark the messages handed out before (to a reader that stopped, or that failed them):
    how often, as the broker's records count it. Whether any was."""
    again = False
    for view in views:
        count = reader.handed_out(view["msg_id"])
        if count > 1:
            view["handed_out"] = count
            again = True
    return again


async def ack_messages(
    client: Any, args: AckMessagesInput, policy: ToolPolicy
) -> Outcome[MessagesAcked]:
    address = policy.own(args.mail_address)
    policy.check(address)
    reading = policy.readings.get((address, policy.default_group))
    waiting = reading.unacked if reading is not None else []
    if args.msg_id not in waiting:  # so reading is not None below
        why = (
            f"msg_id {args.msg_id} is not waiting for an ack in {address}: fetch_messages did "
            "not give it to you, or it is already acked. "
        )
        if waiting:
            raise OperationError(why + f"Waiting for an ack: {waiting}; ack one of those.")
        fetch = next_call("fetch_messages", address, policy)
        raise OperationError(why + f"Call {fetch} first and ack a msg_id it returned.")
    if args.set_aside:
        return await _set_aside(reading, address, args, policy)
    confirmed = waiting[: waiting.index(args.msg_id) + 1]
    await reading.reader.done(confirmed)
    reading.unacked = waiting[len(confirmed) :]  # waiting is reading.unacked; confirmed its head
    still = list(reading.unacked) or None
    return Outcome(MessagesAcked(confirmed=confirmed, still_unacked=still), confirmed)


async def _set_aside(
    reading: Any, address: str, args: AckMessagesInput, policy: ToolPolicy
) -> Outcome[MessagesAcked]:
    """Move one handed-out message to the dead-letter mailbox instead of acking it: the group
    goes past it, and it stays readable there (docs/groups.md, "Poison messages")."""
    reader = reading.reader
    await reader.dead_letter(args.msg_id, args.set_aside)
    reading.unacked.remove(args.msg_id)
    still = list(reading.unacked) or None
    look = next_call("query_messages", reader.dead_letter_address, policy)
    next_step = f"msg_id {args.msg_id} was set aside: it is kept, with your reason, in {look}."
    result = MessagesAcked(confirmed=[], still_unacked=still, next_step=next_step)
    return Outcome(result, {"set_aside": args.msg_id, "dead_letter": reader.dead_letter_address})


async def query_messages(
    client: Any, args: QueryMessagesInput, policy: ToolPolicy
) -> Outcome[MessagesQueried]:
    address = policy.own(args.mail_address)
    policy.check(address)
    given = {k: v for k, v in (("key", args.key), ("tags", args.tags)) if v}
    if args.from_id:
        if given:
            raise invalid("from_id reads every message, without key or tags: give either")
        # A look from a position, without a group: it consumes nothing.
        found = await client.fetch(
            address, deliver="from_id", from_id=args.from_id, num_msgs=QUERY_CAP, max_wait_ms=0
        )
        messages = sorted(found, key=lambda m: m.msg_id)[:QUERY_CAP]
    else:
        # Only what was given: the official SDK's query takes no tags.
        messages = await client.query(address, **given)
    result = MessagesQueried(**_views(messages, policy))
    if len(given) > 1:  # both key and tags: the broker applies key, else tags
        result.filter_used = "only key: the broker applies one filter"
    if len(messages) >= QUERY_CAP and not given:
        more = next_call("query_messages", address, policy, f"from_id={messages[-1].msg_id + 1}")
        result.next_step = f"There may be more: look further with {more}."
    return Outcome(result, messages)


async def delete_message(
    client: Any, args: DeleteMessageInput, policy: ToolPolicy
) -> Outcome[MessageDeleted]:
    address = policy.own(args.mail_address)
    policy.check(address)
    await client.delete(address, args.msg_id)
    artifact = {"mail_address": address, "msg_id": args.msg_id}
    return Outcome(MessageDeleted(deleted=True, msg_id=args.msg_id), artifact)
