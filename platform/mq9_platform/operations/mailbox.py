"""The handlers of the mailbox and message operations. Each takes the call's ``CallContext``
(``context.py``: its client, any with ``Mq9Client``'s methods, ours or the official ``mq9``
SDK's, whose ``Message`` has no key or tags and whose ``query`` takes no tags; the caller's
``ToolPolicy``) and the validated arguments, and returns an ``Outcome`` (``results.py``).

The writes are here: ``create_mailbox``, ``send_message``, ``delete_message``. The reads live by
what they do, imported here so that this path gives every handler (``catalog.py``): taking
messages in turn (``fetching.py``: ``fetch_messages``, ``ack_messages``) and looking at them
(``querying.py``: ``query_messages``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from mq9_wire.protocol import Priority

from ..a2a.store import keyed
from .context import CallContext
from .fetching import ack_messages, fetch_messages
from .message_answers import next_call
from .querying import QUERY_PAGE, hidden_in, query_messages
from .results import MailboxCreated, MessageDeleted, MessageSent, Outcome
from .schemas import CreateMailboxInput, DeleteMessageInput, SendMessageInput


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


# The words a keyed send answers with where the broker said it keeps no keys (RobustMQ)
NO_KEYS_KEPT = "this broker keeps no idempotency keys: a call run again sends again"


def _keeps_no_keys(client: object, address: str) -> bool:
    """Whether the broker's answer to this client's keyed send said it keeps no keys (only
    this package's client learns it: ``keys_recognised_for``)."""
    recognised = getattr(client, "keys_recognised_for", None)
    return callable(recognised) and recognised(address) is False


async def delete_message(ctx: CallContext, args: DeleteMessageInput) -> Outcome[MessageDeleted]:
    client, policy = ctx.client, ctx.policy
    address = policy.own(args.mail_address)
    policy.check(address)
    await client.delete(address, args.msg_id)
    artifact = {"mail_address": address, "msg_id": args.msg_id}
    return Outcome(MessageDeleted(deleted=True, msg_id=args.msg_id), artifact)


__all__ = [  # the handlers, and what registry.py, the faces and the tests import of this path
    "NO_KEYS_KEPT",
    "QUERY_PAGE",
    "ack_messages",
    "create_mailbox",
    "delete_message",
    "fetch_messages",
    "hidden_in",
    "next_call",
    "query_messages",
    "send_message",
]
