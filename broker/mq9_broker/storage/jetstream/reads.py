"""The message log's reads: a mailbox's messages in order, by priority lane (by msg_id when
few are new), by tag (through the tag index) or by key, each a direct get from any replica,
as of the sequence the caller read from the leader (``upto``): what a newer replica gives
past it is left for the next read. A replica behind the leader answers with what it has
(nats-server 2.12 and later ignore the ``min_last_seq`` asked): a read by msg_id asks the
leader for a hole below one it read, a read by lane for what it lacked short of the lane's
newest msg_id, which the mailbox's head keeps (docs/broker.md, "Reads from replicas"); a
QUERY may miss the newest messages.

Each read is counted in the read window (``nats_floor/jetstream/window.py``) at the largest message
its mailbox holds, as the newest head this broker saw says (sizes.py): a read as of a
head (a FETCH's lanes, a QUERY's walk, a tag's messages) asks with that head's largest; the
index entries and heads at their own small size; a read that may find a message newer than
any head seen (a key's newest, a lane's last asked without a head) at the servers' largest.
A batch may bring one message past the head it was asked as of (the servers stop a batch
after the message that reaches its ``max_bytes``, whatever its size, and take no as-of
sequence for a batch by subject: tried on nats-server 2.15, ``up_to_seq`` is ignored there),
a message written since: the connection's other half is room for it."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mq9_wire.nats_floor.jetstream.api import kv_stream
from mq9_wire.protocol import PRIORITY_ORDER, Priority

from ...state.mailbox import StoredMessage, finds
from ..mailbox_store import Mark
from .mapping import (
    AHEAD,
    DELETED,
    EXPIRE_AT,
    TAGS,
    Layout,
    msg_id_of,
    priority_of,
    stamp_second,
    subject_box,
    token,
    unframe,
)
from .numbering import Numbering
from .sizes import SMALL_ENTRY
from .window import sized

if TYPE_CHECKING:
    from .requests import StorageRequests, StoredEntry

log = logging.getLogger("mq9_broker")

_BATCH = 1000  # messages a batched read asks for at most (the rest in the next one)
_ENDS_KEPT = 65_536  # lanes whose newest is gone a store remembers, then forgets all
# The most msg_ids a lane read asks for one by one: each is a request of the broker's, where
# reading the lanes is six at most, but each costs the servers the same whatever the mailbox
# holds (docs/broker.md, "Reading by msg_id")
BY_ID = 16
_LAST_SECOND = 253_402_300_799  # 9999-12-31T23:59:59Z, the last a timestamp here can say


@dataclass(slots=True)
class _Walk:
    """A walk's messages, the highest msg_id it saw, and the sequence after its last."""

    found: list[StoredMessage]
    reached: int
    seq: int

    def past(self, low: int, seq: int) -> _Walk:
        """Gone as far as ``low`` (the msg_id after the highest seen) and ``seq``."""
        self.reached, self.seq = max(self.reached, low - 1), seq
        return self


class Reads:
    """Reads of ``layout``'s message stream; the sequences they pass go to ``numbering``."""

    def __init__(self, requests: StorageRequests, layout: Layout, numbering: Numbering) -> None:
        self.requests, self.layout, self.numbering = requests, layout, numbering
        # a group's position and marker (positions.py: a few numbers) are read at
        # their own size: each FETCH of a group reads both
        requests.entry_most[kv_stream(layout.groups)] = SMALL_ENTRY
        self._unreadable: set[int] = set()  # sequences said to be no message (said once)
        # (a lane's filter, its newest msg_id as its head said) -> the msg_id the leader said
        # the lane ends at below it: that newest message deleted since
        self._ends: dict[tuple[str, int], int] = {}

    def forget(self) -> None:
        self._unreadable.clear()
        self._ends.clear()

    def _most(self, mailbox: str, upto: int | None = None) -> int | None:
        """The most a message of ``mailbox`` takes, as of sequence ``upto`` (None: as of the
        newest head seen); None when no head seen says (sizes.py). Never less for a
        read from a msg_id: its batches start at a sequence at or below it, the log's start
        when the position's message is gone, and may bring any message before it."""
        sizes = self.numbering.sizes
        box = token(mailbox)
        return sizes.largest(box) if upto is None else sizes.below_seq(box, upto)

    def _message(self, entry: StoredEntry) -> StoredMessage:
        header, payload = unframe(entry.data)
        tags = entry.headers.get(TAGS)
        return StoredMessage(
            msg_id_of(entry.subject),
            payload,
            priority_of(entry.subject),
            stamp_second(entry.time),
            tags=tuple(json.loads(tags)) if tags else (),
            header=header,
            expire_at=int(entry.headers.get(EXPIRE_AT) or 0),
        )

    def _readable(self, entry: StoredEntry) -> StoredMessage | None:
        """``entry`` as a message; None for a deleted newest message's marker, and (said once
        in the log) for what is not a message (written into the stream by something other
        than a broker): not served, the rest is."""
        if DELETED in entry.headers:
            return None
        try:
            return self._message(entry)
        except (ValueError, KeyError) as exc:
            if entry.seq not in self._unreadable:
                self._unreadable.add(entry.seq)
                log.error("stream message %d (%s) is not served: %s", entry.seq, entry.subject, exc)
            return None

    async def first(self, mailbox: str, *, at_time: int | None = None) -> Mark | None:
        """The oldest stored message (written at or after ``at_time``, when given)."""
        request: dict[str, Any] = {"next_by_subj": self.layout.mailbox_filter(mailbox), "batch": 1}
        if at_time is None:
            request["seq"] = 1
        elif at_time > _LAST_SECOND:
            return None  # (after year 9999: nothing was written then)
        else:
            request["start_time"] = datetime.fromtimestamp(max(at_time, 0), UTC).isoformat()
        stream = self.layout.mailbox_stream(mailbox)
        with sized(self._most(mailbox)):
            batch = await self.requests.direct_batch(stream, request)
        if not batch.entries:
            return None
        entry = batch.entries[0]
        return Mark(msg_id_of(entry.subject), entry.seq)

    async def count(self, mailbox: str) -> int:
        """How many messages ``mailbox``'s log holds."""
        request = {"seq": 1, "next_by_subj": self.layout.mailbox_filter(mailbox), "batch": 1}
        stream = self.layout.mailbox_stream(mailbox)
        with sized(self._most(mailbox)):
            batch = await self.requests.direct_batch(stream, request)
        return len(batch.entries) + batch.pending

    async def read_lanes(
        self,
        mailbox: str,
        start: Mark,
        limit: int,
        *,
        upto: Mark,
        now: int,
        lane_starts: Sequence[Mark] | None = None,
    ) -> list[list[StoredMessage]]:
        """Each priority's live messages from ``start`` on (msg_ids from ``start.msg_id``,
        read from sequence ``start.seq``), up to ``limit`` a lane, critical first, as of
        ``upto`` (the mailbox's newest msg_id and a sequence at its end, from the leader).

        A read with no msg_id written from ``start`` on asks the servers nothing: the FETCH
        of a reader caught up with its mailbox, the most frequent of all. The first
        ``BY_ID`` msg_ids from ``start`` are asked for by msg_id (``_by_ids``), which costs
        the servers the same in a mailbox of 64,000 as of 1,000; a lane those did not fill,
        when more were written, is read on past them (``_lane``). A read of ``BY_ID`` or
        more a lane reads each lane from ``start``: a window would hold too few of one. A
        lane read, whichever replica answers it, reaches the lane's newest msg_id as of
        ``upto`` or ``limit`` (``_lane``). ``lane_starts``: each lane read from its own."""
        if lane_starts is not None:
            starts = zip(PRIORITY_ORDER, lane_starts, strict=True)
            own = [self._lane(mailbox, p, begin, limit, upto, now) for p, begin in starts]
            return list(await asyncio.gather(*own))
        waiting = upto.msg_id - start.msg_id + 1  # msg_ids written from ``start`` on
        if waiting <= 0:
            return [[] for _ in PRIORITY_ORDER]
        if waiting > BY_ID and limit >= BY_ID:
            reads = [self._lane(mailbox, p, start, limit, upto, now) for p in PRIORITY_ORDER]
            return list(await asyncio.gather(*reads))
        window = Mark(min(upto.msg_id, start.msg_id + BY_ID - 1), upto.seq)
        beyond = window.msg_id < upto.msg_id  # more written than the window holds
        lanes, after = await self._by_ids(mailbox, start, window, limit, now, beyond=beyond)
        if not beyond:
            return lanes
        # A backlog: a lane the window filled is done (usually the normal one, the lane
        # whose reads cost the servers the most); the others are read on past the window
        rest = Mark(window.msg_id + 1, after)
        more = [
            self._lane(mailbox, p, rest, limit - len(lane), upto, now)
            for p, lane in zip(PRIORITY_ORDER, lanes, strict=True)
            if len(lane) < limit
        ]
        read = iter(await asyncio.gather(*more))
        return [lane if len(lane) >= limit else lane + next(read) for lane in lanes]

    async def _by_ids(
        self, mailbox: str, start: Mark, upto: Mark, limit: int, now: int, *, beyond: bool
    ) -> tuple[list[list[StoredMessage]], int]:
        """The lanes of msg_ids ``start.msg_id`` to ``upto.msg_id``, each message read by its
        msg_id at once (the last on ``m.<mailbox>.*.*.<msg_id>``: the servers find the one
        subject in their subject index), and the sequence after the last of them read
        (``start.seq`` when none was). A lane's reads (``_lane``) cost the servers more the
        more messages the lane holds: its last message and every batch's count match every
        subject of the lane, one a message (docs/broker.md, "A read behind a backlog").

        A direct get of one message takes no as-of sequence that stays cheap (``up_to_seq``
        with ``multi_last`` walks every subject of a block), so what one replica gives past
        ``upto.seq`` is left out: a newest message's deletion marker written since, read
        as the message gone.

        Each get may be answered by another replica, and one behind the leader lacks the
        newest messages (nats-server 2.12 and later ignore ``min_last_seq``: docs/broker.md,
        "Reads from replicas"). A msg_id one replica had no message for, below one another
        had, would be a hole a reader acking past it never reads: each such msg_id is asked
        of the leader again (deleted, replaced or gone with the retention: rare). So is
        every msg_id with none when messages ``beyond`` these were written (their lanes are
        read on past them)."""
        layout = self.layout
        box = token(mailbox)
        stream = layout.box_stream(box)
        ids = range(start.msg_id, upto.msg_id + 1)
        filters = [layout.box_id_filter(box, msg_id) for msg_id in ids]
        requests = self.requests
        most = self._most(mailbox, upto.seq)
        reads = [requests.direct_last(stream, f, min_last_seq=upto.seq) for f in filters]
        with sized(most):
            entries = list(await asyncio.gather(*reads))
        found = [n for n, entry in enumerate(entries) if entry is not None]
        below = len(entries) if beyond else (found[-1] if found else 0)
        holes = [n for n in range(below) if entries[n] is None]
        again = [requests.leader_get(stream, last_by_subject=filters[n]) for n in holes]
        with sized(most):
            gotten = await asyncio.gather(*again)
        for n, entry in zip(holes, gotten, strict=True):
            entries[n] = entry
        lanes: dict[Priority, list[StoredMessage]] = {p: [] for p in PRIORITY_ORDER}
        after = start.seq
        remember = self.numbering.remember
        for entry in entries:
            if entry is None or entry.seq > upto.seq:
                continue  # deleted, or a deletion's marker since
            after = max(after, entry.seq + 1)  # (msg_ids follow the stream's order)
            message = self._readable(entry)
            if message is None:
                continue
            remember(box, message.msg_id, entry.seq)
            lane = lanes[message.priority]
            if len(lane) < limit and not message.expired(now):
                lane.append(message)
        return [lanes[priority] for priority in PRIORITY_ORDER], after

    async def read(
        self, mailbox: str, start: Mark, limit: int, *, upto: Mark | None, now: int
    ) -> list[StoredMessage]:
        """Up to ``limit`` live messages of any priority from ``start`` on, as of ``upto``
        (the mailbox's last mark) when given. That mark is where the mailbox's subject ends:
        its newest msg_id is the subject's last message (a deleted newest one leaves its
        marker there), at or below its sequence; no request asks it again (``_end``, on a
        filter matching every subject of the mailbox, costs more the more it holds)."""
        layout = self.layout
        subject = layout.mailbox_filter(mailbox)
        stream = layout.mailbox_stream(mailbox)
        if upto is None:
            return (await self._walk(stream, subject, start, limit, None, now, None)).found
        most = self._most(mailbox, upto.seq)
        walk = await self._walk(stream, subject, start, limit, upto.seq, now, upto, most)
        return walk.found

    async def _lane(
        self, mailbox: str, priority: Priority, start: Mark, limit: int, upto: Mark, now: int
    ) -> list[StoredMessage]:
        """``priority``'s lane from ``start``, up to ``limit``, as of ``upto``, read until it
        holds ``limit`` or reaches the lane's newest msg_id as of ``upto`` (its head says
        which: ``upto.lanes``), whichever replica answers.

        A replica behind the leader answers a lane's batch short without saying so, and a
        reader takes a lane of fewer than it asked for as read to its end (protocol.md
        §5.4): the group's position would pass what the replica lacked, for good. A read
        short of the lane's newest asks the leader for the lane's next message from where
        it stopped: one at or below ``upto.seq`` is what the replica lacked, and the lane
        is read on from it; none says the newest was deleted since (then remembered, so the
        next read short of it by as much asks nothing). A lane whose newest is below
        ``start`` is not read at all; a head that does not say (written before heads
        carried lanes) has every short read checked."""
        layout = self.layout
        stream = layout.mailbox_stream(mailbox)
        subject = layout.lane_filter(mailbox, priority)
        newest = None if upto.lanes is None else upto.lanes[PRIORITY_ORDER.index(priority)]
        if newest is not None and newest < start.msg_id:
            return []  # nothing written on this lane from ``start`` on: nothing asked
        end = None if newest is None else Mark(newest, upto.seq)
        found: list[StoredMessage] = []
        at = start
        most = self._most(mailbox, upto.seq) if end is not None else None
        while True:  # (each turn reads on from a later sequence, up to upto.seq at most)
            wanted = limit - len(found)
            walk = await self._walk(stream, subject, at, wanted, upto.seq, now, end, most)
            found += walk.found
            if len(found) >= limit or (newest is not None and walk.reached >= newest):
                break
            if newest is not None and self._ends.get((subject, newest), newest) <= walk.reached:
                break  # the newest deleted: the leader said the lane ends here
            with sized(most):
                entry = await self.requests.leader_get(
                    stream, seq=walk.seq, next_by_subject=subject
                )
            if entry is None or entry.seq > upto.seq:
                if newest is not None:
                    if len(self._ends) >= _ENDS_KEPT:
                        self._ends.clear()
                    self._ends[(subject, newest)] = walk.reached
                break
            # what the replica lacked: taken, and the lane read on after it
            message = self._readable(entry)
            if message is not None and message.msg_id >= start.msg_id:
                self.numbering.remember(subject_box(entry.subject), message.msg_id, entry.seq)
                if not message.expired(now):
                    found.append(message)
            at = Mark(msg_id_of(entry.subject) + 1, entry.seq + 1)
        return found[:limit]

    async def _walk(
        self,
        stream: str,
        subject: str,
        start: Mark,
        limit: int,
        upto: int | None,
        now: int,
        end: Mark | None,
        most: int | None = None,
    ) -> _Walk:
        """``subject``'s messages (a filter of one mailbox's, in its ``stream``) from
        ``start``, as of ``upto``; ``end``, when the caller knows it, the subject's last
        message (else asked, as of ``upto``). With them, how far it went: the highest msg_id
        it saw (``start.msg_id - 1`` when none) and the sequence after its last entry.
        ``most``: the most one of its messages takes (None: unknown, the servers' largest)."""
        found: list[StoredMessage] = []
        seq = max(start.seq, 1)
        low = start.msg_id - 1  # (the message at start.seq may be the one below start)
        walk = _Walk(found, low, seq)
        if end is None and upto is not None:
            end = await self._end(stream, subject, upto)
        if upto is not None and (end is None or end.seq < seq or end.msg_id < start.msg_id):
            return walk  # nothing on ``subject`` from ``start`` on: no walk asked for
        remember = self.numbering.remember
        while len(found) < limit and (upto is None or seq <= upto):
            request: dict[str, Any] = {"seq": seq, "next_by_subj": subject}
            request["batch"] = min(limit - len(found), _BATCH)
            if end is not None:
                # no more than the msg_ids up to the last one can match: a batch asking for
                # more would have the servers walk the rest of the stream for them
                request["batch"] = max(1, min(request["batch"], end.msg_id - low + 1))
                request["min_last_seq"] = upto
            with sized(most):
                batch = await self.requests.direct_batch(stream, request)
            for entry in batch.entries:
                if upto is not None and entry.seq > upto:
                    return walk.past(low, seq)
                low = max(low, msg_id_of(entry.subject) + 1)
                seq = entry.seq + 1
                message = self._readable(entry)
                if message is None or message.msg_id < start.msg_id:
                    continue  # (below a position's msg_id: acknowledged)
                remember(subject_box(entry.subject), message.msg_id, entry.seq)
                if not message.expired(now):
                    found.append(message)  # (one whose TTL ended: hidden until it ages out)
            if not batch.entries or batch.pending == 0:
                break
            if end is not None and (seq > end.seq or low > end.msg_id):
                break  # past the last message on the subject
        del found[limit:]
        return walk.past(low, seq)

    async def _end(self, stream: str, subject: str, upto: int) -> Mark | None:
        """The last message on ``subject`` (a filter of a mailbox's messages) as of ``upto``
        or later. A filtered read makes the servers walk the stream from its start until its
        batch is full (nats-server scans the blocks for a wildcard filter): for a subject with
        nothing left from there, or fewer messages than the batch, the walk is the rest of
        the stream, every mailbox's, however little it returns (what a priority lane a FETCH
        finds empty costs the servers grows with the messages after its position: docs/
        broker.md). The subject's last message, from the servers' subject index at once,
        says whether there is anything to read and bounds each batch."""
        entry = await self.requests.direct_last(stream, subject, min_last_seq=upto)
        return None if entry is None else Mark(msg_id_of(entry.subject), entry.seq)

    async def by_tags(
        self, mailbox: str, tags: list[str], limit: int, *, upto: int, now: int
    ) -> list[list[StoredMessage]]:
        """For each of ``tags``: the live messages carrying it or a tag below it (``X/...``),
        in RobustMQ's order (by the tag they carry, then msg_id), up to ``limit``, as of
        sequence ``upto`` (the mailbox's last sequence the leader gave). Read through the
        index: each tag's entries ∥, then the messages they point at ∥, in that order until
        ``limit`` are found (a message deleted or replaced by its key leaves its entries)."""
        indexes = await asyncio.gather(*(self._index_of(mailbox, tag, upto) for tag in tags))
        read: dict[int, StoredMessage | None] = {}
        answers: list[list[StoredMessage]] = []
        for tag, pointers in zip(tags, indexes, strict=True):
            found: list[StoredMessage] = []
            at = 0
            while len(found) < limit and at < len(pointers):
                # the next pointers, as many as messages still wanted, read at once
                some = pointers[at : at + limit - len(found)]
                at += len(some)
                wanted = sorted({seq for _, seq in some if seq not in read})
                most = self._most(mailbox, upto)
                messages = await asyncio.gather(
                    *(self._message_at(mailbox, seq, upto, most) for seq in wanted)
                )
                read.update(zip(wanted, messages, strict=True))
                for own, seq in some:
                    message = read[seq]
                    # (the message at that sequence carries the tag, one the read finds: an
                    # entry never points elsewhere, nor does the subject filter find another
                    # tag, but what is served is checked against what was asked)
                    if (
                        message is not None
                        and own in message.tags
                        and finds(tag, own)
                        and not message.expired(now)
                    ):
                        found.append(message)
            answers.append(found[:limit])
        return answers

    async def _index_of(self, mailbox: str, tag: str, upto: int) -> list[tuple[str, int]]:
        """``tag``'s index entries (its own and those below it) in ``mailbox`` as of ``upto``:
        each one's tag and its message's sequence, by tag then sequence (msg_id order)."""
        subject = self.layout.tag_filter(mailbox, tag)
        stream = self.layout.mailbox_stream(mailbox)
        pointers: list[tuple[str, int]] = []
        seq = 1
        # The first entry alone, found from the servers' subject index, says how many follow
        # (its batch's ``Nats-Num-Pending``); each batch after asks for no more than are left:
        # a batch larger than what is left has the servers walk the rest of the stream, every
        # mailbox's messages, for the entries it cannot find (see ``_end``)
        wanted = 1
        while seq <= upto:
            request = {"seq": seq, "next_by_subj": subject, "batch": wanted, "min_last_seq": upto}
            with sized(SMALL_ENTRY):
                batch = await self.requests.direct_batch(stream, request)
            for entry in batch.entries:
                target = entry.seq + int(entry.headers.get(AHEAD) or 0)
                if target <= upto:  # (one written after: the next QUERY's)
                    pointers.append((entry.data.decode(errors="replace"), target))
            if not batch.entries or batch.pending == 0:
                break
            seq = batch.entries[-1].seq + 1
            wanted = min(batch.pending, _BATCH)
        pointers.sort()
        return pointers

    async def _message_at(
        self, mailbox: str, seq: int, upto: int, most: int | None = None
    ) -> StoredMessage | None:
        """``mailbox``'s message at sequence ``seq``; None when it is gone (or a marker)."""
        request = {
            "seq": seq,
            "next_by_subj": self.layout.mailbox_filter(mailbox),
            "batch": 1,
            "min_last_seq": upto,
        }
        stream = self.layout.mailbox_stream(mailbox)
        with sized(most):
            batch = await self.requests.direct_batch(stream, request)
        if not batch.entries or batch.entries[0].seq != seq:
            return None
        return self._readable(batch.entries[0])

    async def by_key(self, mailbox: str, key: str, *, now: int) -> StoredMessage | None:
        layout = self.layout
        entry = await self.requests.leader_get(
            layout.mailbox_stream(mailbox), last_by_subject=layout.key_filter(mailbox, key)
        )
        message = None if entry is None else self._readable(entry)
        return None if message is None or message.expired(now) else message
