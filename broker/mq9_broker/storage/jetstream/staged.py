"""Delayed messages in the cluster store: a SEND with a delay is handed to the servers as a
schedule (``Nats-Schedule``), which they write when due, unnumbered, on the mailbox's staged
subject; a durable consumer every broker of the layout shares hands each to one broker, which
numbers it into its mailbox (its msg_id the next when written, RobustMQ's)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from nats.errors import TimeoutError as NatsTimeout

from mq9_wire.nats_floor.jetstream.api import MSG_ID, SCHEDULE, SCHEDULE_TARGET
from mq9_wire.protocol import Priority

from ..mailbox_store import Once, StorageError
from .keyed import key_entry, key_written
from .mapping import NO_KEY, TAGS, Layout, frame, schedule_id, set_ttl, token
from .messages import distinct
from .numbering import Numbering, Write
from .requests import StorageJetStreamError

if TYPE_CHECKING:
    from ...state.mailbox import StoredMessage
    from .requests import StorageRequests

log = logging.getLogger("mq9_broker")

_STAGED_WAIT = 5.0  # seconds a wait for delayed messages to number lasts before the next


def consumer_name(layout: Layout, index: int = 0) -> str:
    """The durable consumer every broker of ``layout`` takes the delayed messages of its
    message stream ``index`` from (a consumer is one stream's: one a stream)."""
    return f"{layout.name}_STAGED" if index == 0 else f"{layout.name}_STAGED_{index}"


class Staged:
    """``layout``'s delayed messages: held for the servers, numbered when due."""

    def __init__(self, requests: StorageRequests, layout: Layout, numbering: Numbering) -> None:
        self.requests, self.layout, self.numbering = requests, layout, numbering
        self.closing = False

    async def hold(
        self, mailbox: str, message: StoredMessage, *, due: int, now: int, once: Once | None = None
    ) -> None:
        """Have the servers write ``message`` for ``mailbox`` at second ``due``
        (``Nats-Schedule``), unnumbered, where a broker numbers it into the mailbox (its
        msg_id is the next when written, RobustMQ's); one whose TTL ends first is never
        written (RobustMQ)."""
        layout = self.layout
        when = datetime.fromtimestamp(max(due, 0), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        headers = {
            SCHEDULE: f"@at {when}",
            SCHEDULE_TARGET: layout.staged_subject(mailbox, message.priority),
            MSG_ID: uuid.uuid4().hex,
        }
        if message.tags:
            headers[TAGS] = json.dumps(message.tags)
        if message.expire_at:
            if message.expire_at < max(due, now):
                return  # its TTL ends before it is due: never delivered
            set_ttl(headers, message.expire_at - now + 1)
        subject = layout.schedule_subject(mailbox, schedule_id(due, uuid.uuid4().hex))
        entry = (subject, frame(message.header, message.payload), headers)
        if once is None:
            await self.requests.publish(*entry)
            return
        # its key and its schedule stored together or neither; a key that lives: held
        # before (or another SEND's, refused)
        box = token(mailbox)
        for _ in range(2):  # (a key found gone on the look: its window ended meanwhile)
            try:
                await self.requests.publish_batch([key_entry(layout, box, once, -1), entry])
                return
            except StorageJetStreamError as exc:
                if not exc.wrong_last_sequence:
                    raise
            if await key_written(self.requests, layout, box, once) is not None:
                return
        raise StorageError("a delayed SEND's key was refused and then not found")

    async def number(self, index: int = 0) -> None:
        """Number the delayed messages the servers wrote when due into the mailboxes of
        message stream ``index`` (any broker: the consumer hands each to one; one handed
        again after a broker died is written once, by its ``Nats-Msg-Id``)."""
        layout = self.layout
        connection = self.requests.connection
        subscription = await connection.jetstream().pull_subscribe_bind(
            durable=consumer_name(layout, index), stream=layout.stream_name(index)
        )
        try:
            # (and not closing: a cancel that nats-py's wait_for loses on Python 3.11, as a
            # fetch's answer comes, would leave the loop and the store's close waiting)
            while not connection.is_closed and not self.closing:
                try:
                    messages = await subscription.fetch(64, timeout=_STAGED_WAIT)
                except asyncio.CancelledError:
                    raise
                except NatsTimeout:  # nothing due
                    continue
                except Exception:  # the cluster away a moment: asked again a little later
                    await asyncio.sleep(1.0)
                    continue
                for staged in messages:
                    try:
                        await self._number_one(staged)
                        await staged.ack()
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:  # handed again after ack_wait
                        log.warning("a delayed message is numbered later: %s", exc)
        finally:
            if not connection.is_closed:  # (a store closed on a connection kept open)
                with contextlib.suppress(Exception):
                    await subscription.unsubscribe()

    async def _number_one(self, staged: Any) -> None:
        box, priority = staged.subject.rsplit(".", 2)[1:]
        seq = staged.metadata.sequence.stream
        headers = {
            name: value
            for name, value in (staged.headers or {}).items()
            if name == TAGS  # written without its key and expire_at (RobustMQ)
        }
        headers[MSG_ID] = f"staged-{seq}"
        write = Write(
            Priority(priority),
            NO_KEY,
            staged.data,
            headers,
            asyncio.get_running_loop().create_future(),
            staged=seq,
            tags=distinct(json.loads(headers[TAGS])) if TAGS in headers else (),
        )
        self.numbering.enqueue(box, write)
        await write.future
