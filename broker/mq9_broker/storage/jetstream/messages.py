"""The message log's writes and where its messages are: a SEND appended with its mailbox's
next msg_id (numbering.py numbers and batches it), a message deleted, a mailbox's newest
number and a message's stream sequence, read from the stream's leader (current)."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from mq9_wire.nats_floor.jetstream.api import (
    EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT,
    ROLLUP,
    ROLLUP_SUBJECT,
    ErrorCode,
    StoredEntry,
    expecting,
)

from ..mailbox_store import Mark, Once
from .mapping import (
    DELETED,
    EXPIRE_AT,
    LANES,
    NO_KEY,
    TAGS,
    Layout,
    frame,
    lanes_of,
    msg_id_of,
    set_ttl,
    token,
)
from .numbering import Numbering, Write
from .requests import StorageJetStreamError
from .sizes import LISTED_FROM, SMALL_ENTRY, HeadSizes, largest_of
from .window import sized

if TYPE_CHECKING:
    from ...state.mailbox import StoredMessage
    from .requests import StorageRequests

_HEAD_TRIES = 8  # a head written again after a deletion, refused that often: left as it is


class Messages:
    """The writes into ``layout``'s message stream, numbered by ``numbering``."""

    def __init__(self, requests: StorageRequests, layout: Layout, numbering: Numbering) -> None:
        self.requests, self.layout, self.numbering = requests, layout, numbering

    async def append(
        self,
        mailbox: str,
        message: StoredMessage,
        *,
        now: int,
        room: int | None = None,
        once: Once | None = None,
    ) -> int:
        """Store ``message`` in ``mailbox``'s log with the mailbox's next msg_id (RobustMQ's
        numbering: from 0, one after another, never given twice); that msg_id. A key
        replaces the key's older message, of any priority. ``room``: the most messages the
        log may hold before it (``Full`` when it does, decided in the write's own step).

        The SENDs a broker holds for one mailbox go as one atomic batch, the first expecting
        the mailbox's last sequence: one round trip for all of them, and when another broker
        wrote first, JetStream refuses the whole batch and it is numbered again."""
        # (its tags within what its batch holds: the engine refused more, SEND_LIMITS)
        tags = distinct(message.tags)
        headers: dict[str, str] = {}
        if message.tags:
            headers[TAGS] = json.dumps(message.tags)
        data = frame(message.header, message.payload)
        if message.expire_at:
            # (no Nats-TTL: only the retention removes, oldest first, so a mailbox's newest
            # message is the last to go and its msg_id is the next one's base; the broker
            # hides a message from its expire_at second)
            headers[EXPIRE_AT] = str(message.expire_at)
            if len(data) > LISTED_FROM:
                # but a large one goes at its end, the servers removing it, so that the
                # reads of the mailbox are no longer sized for it (sizes.py); its msg_id is kept
                # by the mailbox's head, as a deleted one's
                set_ttl(headers, max(message.expire_at - now + 1, 1))
        write = Write(
            message.priority,
            NO_KEY if message.key is None else token(message.key),
            data,
            headers,
            asyncio.get_running_loop().create_future(),
            tags=tags,
            room=room,
            once=once,
        )
        message.msg_id = await self.numbering.write(token(mailbox), write)
        return message.msg_id

    async def last(self, mailbox: str) -> Mark | None:
        """The mailbox's newest number written (its message deleted or not) and a sequence
        at or below its message and at or above every message of the mailbox, from the
        stream's leader (current): from the head, the one message after the newest of each
        batch; a mailbox with no head (none written since heads, a layout's before) from its
        newest message (a deleted newest one's marker too); None when its log holds none. What
        the head says of its messages' sizes is kept for the reads as of it (sizes.py)."""
        layout = self.layout
        box = token(mailbox)
        stream = layout.box_stream(box)
        head = await self._head(box)
        if head is not None:  # (its lanes, when it says: what a read by lane must reach)
            next_id = int(head.data)
            self.numbering.sizes.saw(box, head.seq, next_id, largest_of(head.headers))
            return Mark(next_id - 1, head.seq - 1, lanes_of(head.headers))
        entry = await self.requests.leader_get(stream, last_by_subject=layout.box_filter(box))
        return None if entry is None else Mark(msg_id_of(entry.subject), entry.seq)

    async def last_id(self, mailbox: str) -> int | None:
        """The newest msg_id written into ``mailbox``'s log (RobustMQ's end offset): its
        newest message's, or (none left) the one before the record's next number."""
        mark = await self.last(mailbox)
        if mark is not None:
            return mark.msg_id
        following = await self.numbering.record_next(token(mailbox))
        return following - 1 if following else None

    async def find(self, mailbox: str, msg_id: int) -> Mark | None:
        """Where ``mailbox``'s message ``msg_id`` is (the leader's: current); None when
        it holds none."""
        entry = await self._message(mailbox, msg_id)
        if entry is None or DELETED in entry.headers:
            return None
        return Mark(msg_id, entry.seq)

    async def _head(self, box: str) -> StoredEntry | None:
        """``box``'s head from the leader, read at its own size."""
        layout = self.layout
        with sized(SMALL_ENTRY):
            return await self.requests.leader_get(
                layout.box_stream(box), last_by_subject=layout.head_subject(box)
            )

    async def _message(self, mailbox: str, msg_id: int) -> StoredEntry | None:
        """``mailbox``'s message ``msg_id`` from the leader, read as large as the mailbox's
        newest head seen says its messages are."""
        layout = self.layout
        with sized(self.numbering.sizes.below_id(token(mailbox), msg_id)):
            return await self.requests.leader_get(
                layout.mailbox_stream(mailbox), last_by_subject=layout.id_filter(mailbox, msg_id)
            )

    async def seq_for(self, mailbox: str, msg_id: int) -> int:
        """A sequence at or below the first of ``mailbox``'s messages numbered ``msg_id`` or
        more (where a read from ``msg_id`` starts): the message's own, as this store wrote
        or read it lately, else the leader's; 0 (the log's start) when it holds none."""
        seq = self.numbering.seq_of(token(mailbox), msg_id)
        if seq is not None:
            return seq
        found = await self.find(mailbox, msg_id)
        if found is None:
            return 0
        self.numbering.remember(token(mailbox), msg_id, found.seq)
        return found.seq

    async def delete(self, mailbox: str, msg_id: int) -> bool:
        """Remove ``mailbox``'s message ``msg_id``; False when it holds none. The mailbox's
        head keeps its next number, so the newest is deleted as any other and its msg_id is
        never given again. A mailbox with no head yet (a layout's before heads) numbers from
        its newest message: that one is replaced by a marker on its subject (a rollup)
        expecting it is still the newest, as that layout did."""
        layout = self.layout
        if msg_id < 0:
            return False
        stream = layout.mailbox_stream(mailbox)
        entry, head = await asyncio.gather(
            self._message(mailbox, msg_id),
            self._head(token(mailbox)),
        )
        if entry is None or DELETED in entry.headers:
            return False
        if head is None and await self._marked_newest(mailbox, entry):
            return True
        try:
            await self.requests.api(
                f"STREAM.MSG.DELETE.{stream}", {"seq": entry.seq, "no_erase": True}
            )
        except StorageJetStreamError as exc:
            if exc.code == 404 or exc.err_code == ErrorCode.MESSAGE_NOT_FOUND:
                return False  # deleted meanwhile
            raise
        if head is not None:
            await self._unlisted(token(mailbox), msg_id, head)
        return True

    async def _unlisted(self, box: str, msg_id: int, head: StoredEntry) -> None:
        """``box``'s head written again without message ``msg_id`` (deleted) when it
        lists it (sizes.py), expecting the head read: another broker's write or deletion
        since has it read again. One the servers refuse every time leaves the message listed:
        its mailbox's reads sized for it until it would have been removed (never smaller)."""
        layout = self.layout
        for _ in range(_HEAD_TRIES):
            held = HeadSizes.of(head.headers)
            if held is None or not held.lists(msg_id):
                return
            held = held.without(msg_id)
            said = {ROLLUP: ROLLUP_SUBJECT, **held.headers()}
            if LANES in head.headers:
                said[LANES] = head.headers[LANES]
            try:
                seq = await self.requests.publish(
                    layout.head_subject(box), head.data, expecting(head.seq, said)
                )
            except StorageJetStreamError as exc:
                if not exc.wrong_last_sequence:
                    raise
                found = await self._head(box)
                if found is None:
                    return
                head = found
                continue
            self.numbering.last.pop(box, None)  # (this broker's next write reads the head)
            self.numbering.sizes.saw(box, seq, int(head.data), held)
            return

    async def _marked_newest(self, mailbox: str, entry: StoredEntry) -> bool:
        """``entry`` replaced by a marker when it is the newest of ``mailbox`` (which has no
        head); False when it is not (or no longer)."""
        headers = expecting(
            entry.seq,
            {
                DELETED: "1",
                ROLLUP: ROLLUP_SUBJECT,
                EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT: self.layout.mailbox_filter(mailbox),
            },
        )
        try:
            await self.requests.publish(entry.subject, b"", headers)
            return True
        except StorageJetStreamError as exc:
            if not exc.wrong_last_sequence:
                raise
        return False


def distinct(tags: Any) -> tuple[str, ...]:
    """A message's tags, each once (one index entry a tag)."""
    if not tags:
        return ()
    return tuple(dict.fromkeys(str(tag) for tag in tags))
