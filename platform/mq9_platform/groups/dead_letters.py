"""Dead letters: messages a consumer group's readers could not handle, set aside so the group
moves past them (docs/groups.md, "Poison messages").

A dead letter is an ordinary message in an ordinary mailbox (``<mailbox>.dlq`` by default):
the original payload as it was, its priority, tags and other headers, and one header more,
``mq9-dead-letter``, saying where it came from, how often it failed and why (and who sent it,
where a ``--credentials`` broker vouched for that). So it can be read (``query``,
``query_messages``), consumed (a group, ``consume``) and sent back (``reader.replay``) on any
mq9 broker, and a copy never outgrows the original by more than that header.

``mq9-sender`` is never copied as a header: a broker that vouches writes its own on the copy
(the agent that set it aside), which is what ``replay`` checks.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass

from mq9_wire import protocol as p
from mq9_wire.protocol import Message
from mq9_wire.protocol.errors import MailboxExists, MailboxNotFound, Mq9Error

# A mailbox's default dead letters are named where the broker, which tells whose they are,
# names them (``<mailbox>.dlq``, or its digest form when that is too long)
from mq9_wire.protocol.names import DEAD_LETTER_SUFFIX as DEAD_LETTER_SUFFIX
from mq9_wire.protocol.names import RESERVED_ROOT, is_reserved
from mq9_wire.protocol.names import dead_letter_address as dead_letter_address

from .leases import MailboxClient

DEAD_LETTER_HEADER = "mq9-dead-letter"
# Failures a message may have before it is set aside. With consume's backoff (0.1 s, doubling)
# an always-failing message is dead-lettered about 13 s after its first failure.
DEFAULT_MAX_DELIVERIES = 8
MAX_DELIVERIES = p.QUERY_CAP  # the failures one QUERY can count
MAX_REASON_CHARS = 500  # a reason is stored in a record and a header, and shown to models
# mq9's own headers of a SEND: a copy gets them from the message's fields, never copied as text.
_OWN_HEADERS = {
    p.HEADER_PRIORITY,
    p.HEADER_KEY,
    p.HEADER_DELAY,
    p.HEADER_TTL,
    p.HEADER_TAGS,
    DEAD_LETTER_HEADER,
    # written by a --credentials broker on each message stored, for the agent that sent it
    p.HEADER_SENDER,
}


def check_dead_letter(address: str) -> str:
    """``address`` as a dead-letter mailbox: a valid address outside the reserved root."""
    try:
        p.check_address(address)
    except Mq9Error as exc:  # a bad one given
        raise ValueError(f"dead_letter: {exc.message}; give dead_letter a mailbox") from None
    return check_writable(address, "dead_letter")


def check_writable(address: str, what: str) -> str:
    """``address``, where this module writes messages: never under the reserved root."""
    if is_reserved(address):
        raise ValueError(
            f"{what} {p.quoted(address)} is under '{RESERVED_ROOT}.', which holds this "
            "library's own records: give another mailbox"
        )
    return address


def failure_reason(reason: object) -> str:
    """A reason as stored and shown: an exception's type and text, or the text given, cut."""
    text = f"{type(reason).__name__}: {reason}" if isinstance(reason, BaseException) else reason
    return p.clipped(str(text).strip() or "no reason given", MAX_REASON_CHARS)


@dataclass(frozen=True)
class DeadLetter:
    """A dead letter as read back: where its original was, and why it was set aside."""

    message: Message  # the dead letter itself (its msg_id is the dead-letter mailbox's)
    mailbox: str
    group: str
    msg_id: int  # the original's
    create_time: int
    key: str | None
    attempts: int
    reason: str
    header: dict[str, str]  # the original's other headers, to send back with it
    # the original's sender as the broker vouched for it, when it did (mq9-sender), as the
    # agent that set it aside read it: for the operator's eyes, never sent back as a header
    sender: str | None = None

    @classmethod
    def read(cls, message: Message) -> DeadLetter:
        """The dead letter ``message`` carries; ``ValueError`` when it carries none."""
        try:
            about = json.loads(message.header[DEAD_LETTER_HEADER])
            return cls(
                message=message,
                mailbox=about["mailbox"],
                group=about["group"],
                msg_id=about["msg_id"],
                create_time=about["create_time"],
                key=about.get("key"),
                attempts=about["attempts"],
                reason=about["reason"],
                header={k: v for k, v in message.header.items() if k not in _OWN_HEADERS},
                sender=_text_or_none(about.get("sender")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"message {message.msg_id} is not a dead letter (no valid {DEAD_LETTER_HEADER} "
                f"header: {exc!r})"
            ) from None


async def store(
    client: MailboxClient,
    address: str,
    message: Message,
    *,
    mailbox: str,
    group: str,
    attempts: int,
    reason: str,
) -> int:
    """Copy ``message`` (read from ``mailbox`` by ``group``) into the dead-letter mailbox
    ``address``, made (without a TTL) if it is not there; its msg_id there."""
    about = {
        "mailbox": mailbox,
        "group": group,
        "msg_id": message.msg_id,
        "create_time": message.create_time,
        "key": message.key,
        "attempts": attempts,
        "reason": failure_reason(reason),
    }
    sender = message.header.get(p.HEADER_SENDER)
    if sender is not None:
        about["sender"] = sender
    # ASCII JSON: one header line whatever the reason holds (a header value is one line).
    headers = {**_copied_headers(message), DEAD_LETTER_HEADER: json.dumps(about)}

    async def send_copy() -> int:
        return await client.send(
            address,
            p.payload_text(message.payload),
            priority=message.priority,
            tags=message.tags or None,
            headers=headers,
        )

    try:
        return await send_copy()
    except MailboxNotFound:
        with contextlib.suppress(MailboxExists):
            await client.mailbox_create(name=address, ttl=0)
        return await send_copy()


def _text_or_none(value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"sender {value!r} is not a string")
    return value


def _copied_headers(message: Message) -> dict[str, str]:
    """The original's headers beside mq9's own (an A2A request's reply-to, say) that a SEND
    can carry again; the few a foreign client wrote that it cannot are left out."""
    kept: dict[str, str] = {}
    for name, value in message.header.items():
        if name not in _OWN_HEADERS:
            with contextlib.suppress(Mq9Error):
                kept |= p.extra_headers({name: value})
    return kept
