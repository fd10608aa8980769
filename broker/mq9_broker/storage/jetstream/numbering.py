"""RobustMQ's msg_ids in the cluster store: each mailbox numbers its messages from 0, one
after another, never giving a number twice, whichever broker writes (docs/broker.md, "The
alternatives weighed").

A message's msg_id is the last token of its subject (``m.<mailbox>.<priority>.<key>.<msg_id>``).
Every write of a mailbox ends with its head (``h.<mailbox>``: the next msg_id, rolling the
head before it up) expecting the head's last sequence (``Nats-Expected-Last-Subject-Sequence``):
JetStream takes one of two racing writes, so within a mailbox stream order is msg_id order,
and the expectation is on one literal subject, which the server looks up at once (a filter
over the mailbox's messages has it match every one of them: a write's cost grew with the
mailbox). A broker keeps each mailbox's head sequence and next msg_id from its own writes: one
request a write while one broker writes a mailbox; when another wrote first, the write is
refused, the leader is asked for the head, and the write is numbered again.

The writes a broker holds for one mailbox go as one atomic batch (``allow_atomic``), the head
last: one round trip for all of them, so one mailbox's rate is not one round trip a message.
While a batch is under way the next ones gather (the servers refuse a second expectation of
a subject while one is in process, so one batch of a mailbox is in flight at a time). A
message's tag index entries go right before it in its batch (``Mq9-Ahead`` says how far
ahead it is): stored with it or not at all.

A mailbox's bound on messages (``--max-messages``, a write's ``room``) is decided in the same
step: the messages a write admits are counted as of the head it expects, so a write another
broker's came before is refused whole and counted again, and no number of brokers or SENDs
at once stores more than the bound. The count a broker keeps from its own writes is an
upper bound (deletes, keys and the retention only remove), read again from the stream when
it says full.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from mq9_wire.nats_floor.jetstream.api import (
    ROLLUP,
    ROLLUP_SUBJECT,
    TTL,
    ErrorCode,
    StoredEntry,
    expecting,
)
from mq9_wire.nats_floor.jetstream.bucket import Bucket
from mq9_wire.protocol import PRIORITY_ORDER, Priority

from ..mailbox_store import Full, Lanes, StorageError
from .batches import ENTRIES_MOST, Batches, Entry
from .keyed import key_entry, keys_found, one_per_key
from .mapping import (
    AHEAD,
    DELETED,
    LANES,
    NO_KEY,
    NO_LANES,
    RETENTION_SECONDS,
    Layout,
    decode_record,
    encode_record,
    lanes_of,
    lanes_text,
    msg_id_of,
    set_ttl,
)
from .queueing import Queues, Write
from .requests import StorageJetStreamError
from .sizes import SMALL_ENTRY, TTL_MARGIN, HeadSizes, Sizes, stored_size
from .window import sized

if TYPE_CHECKING:
    from .requests import StorageRequests

log = logging.getLogger("mq9_broker")

__all__ = ["RETENTION_SECONDS", "TAGS_MOST", "Numbering", "Write", "every"]

TAGS_MOST = ENTRIES_MOST - 2  # a message's distinct tags at most: its batch holds it and a head
KEPT = 65_536  # mailboxes (and sequences of msg_ids) a broker remembers, then forgets all
_TRIES = 64  # batches refused in a row (other brokers writing the mailbox) before giving up


class Numbering:
    """The writes of one store, numbered per mailbox (``box``: the mailbox's token)."""

    def __init__(self, requests: StorageRequests, layout: Layout) -> None:
        self.requests, self.layout = requests, layout
        # box -> (last sequence, next msg_id, each lane's newest msg_id, what its messages
        # take as it says: None when it does not): its head
        self.last: dict[str, tuple[int, int, Lanes, HeadSizes | None]] = {}
        self.sizes = Sizes()  # each mailbox's newest head seen, for its reads (sizes.py)
        self.seqs: dict[tuple[str, int], int] = {}  # (box, msg_id) -> sequence, lately seen
        self.written: set[str] = set()  # boxes written since the last high mark
        # box -> at least how many messages it holds as of its head in ``last`` (bounded
        # writes only)
        self.counts: dict[str, int] = {}
        self._queues = Queues(self._write)  # each mailbox's writes waiting, one batch at a time
        # the mailboxes ready in one turn: one batch (one a stream, answered together)
        self._batches = Batches(requests)
        self._records = Bucket(requests, layout.mailboxes)

    def forget(self) -> None:
        """Drop what it knows of mailboxes' heads and messages' sequences (read again as
        needed)."""
        self.last.clear()
        self.seqs.clear()
        self.sizes.forget()

    def seq_of(self, box: str, msg_id: int) -> int | None:
        """``box``'s message ``msg_id``'s sequence, when written or read lately."""
        return self.seqs.get((box, msg_id))

    def remember(self, box: str, msg_id: int, seq: int) -> None:
        """``box``'s message ``msg_id`` is at ``seq`` (an ACK's read start, without asking)."""
        if len(self.seqs) >= KEPT:
            self.seqs.clear()
        self.seqs[(box, msg_id)] = seq

    def enqueue(self, box: str, write: Write) -> None:
        """``write`` goes in ``box``'s next batch (sent now when none is under way)."""
        self._queues.enqueue(box, write)

    async def write(self, box: str, write: Write) -> int:
        """``write`` numbered and written in ``box``'s next batch; its msg_id."""
        return await self._queues.write(box, write)

    async def stop(self) -> None:
        await self._queues.stop()
        await self._batches.stop()

    async def _write(self, box: str, batch: list[Write]) -> None:
        state = self.last.get(box)
        marker = 0  # a deleted newest message's marker the write makes needless
        whole, held = batch, None
        for _ in range(_TRIES):
            if state is None:
                state, marker = await self.read_last(box)
                self.counts.pop(box, None)
            expected, first_id, lanes, largest = state
            batch = whole = [write for write in whole if not write.future.done()]
            # a key once a batch: a second SEND of it goes in the next, which finds it
            whole, later = one_per_key(whole)
            for write in later:
                self._queues.enqueue(box, write)
            batch = whole
            if any(write.room is not None for write in whole):
                # which fit, counted as of the head this write expects
                held = await self._held(box, expected, whole)
                batch = _admitted(whole, held)
            if not batch:
                return  # (each answered already: refused as full)
            after = _lanes_after(lanes, batch, first_id)
            try:
                last_seq, largest = await self._publish(
                    box, batch, expected, first_id, after, largest
                )
            except StorageJetStreamError as exc:
                duplicate = exc.err_code == ErrorCode.DUPLICATE_IN_BATCH
                if duplicate and len(batch) == 1 and batch[0].staged:
                    # a delayed message numbered before, by a broker gone before it removed
                    # the staged copy (its Nats-Msg-Id): only that removal is left
                    await self._delete(box, batch[0].staged)
                    if not batch[0].future.done():
                        batch[0].future.set_result(-1)
                    return
                if not exc.wrong_last_sequence:
                    raise
                # another broker wrote: read again; or a key was sent before: answered
                # from it, the rest written again expecting the same head (refused again if
                # another broker wrote too)
                keyed = any(write.once is not None for write in batch)
                if not keyed or not await keys_found(self.requests, self.layout, box, batch):
                    state = None
                continue
            count = len(batch)
            if len(self.last) >= KEPT:
                self.last.clear()
                self.counts.clear()
            if held is not None:
                self.counts[box] = held + count
            # (the batch's last entry is the head: the mailbox's last sequence)
            self.last[box] = (last_seq, first_id + count, after, largest)
            self.sizes.saw(box, last_seq, first_id + count, largest)
            self.written.add(box)
            seqs = self.seqs
            if len(seqs) >= KEPT:
                seqs.clear()
            keys: dict[str, int] = {}
            # an atomic batch is stored in one piece, each message after its index entries,
            # the head after them all
            seq = last_seq - 1 - sum(write.entries for write in batch)
            for index, write in enumerate(batch):
                seq += write.entries
                seqs[(box, first_id + index)] = seq
                if write.key_token != NO_KEY:
                    keys[write.key_token] = seq
            if keys or marker or any(write.staged for write in batch):
                try:
                    await self._tidy(box, batch, keys, marker)
                except Exception as exc:  # stored all the same: answered with their msg_ids
                    log.warning("a mailbox's older copies are removed later: %s", exc)
            for index, write in enumerate(batch):
                if not write.future.done():
                    write.future.set_result(first_id + index)
            return
        raise StorageError(f"a mailbox written by other brokers {_TRIES} times in a row")

    async def _held(self, box: str, expected: int, batch: list[Write]) -> int:
        """At least how many messages ``box`` holds as of its head sequence ``expected``: the
        count kept from this broker's writes while the batch fits under it, else the
        stream's (a replica at least that new: one newer counts writes whose head this
        write's expectation refuses)."""
        held = self.counts.get(box)
        rooms = [write.room for write in batch if write.room is not None]
        if held is not None and held + len(batch) <= min(rooms):
            return held
        request: dict[str, Any] = {"seq": 1, "next_by_subj": self.layout.box_filter(box)}
        request["batch"] = 1
        if expected:
            request["min_last_seq"] = expected
        found = await self.requests.direct_batch(self.layout.box_stream(box), request)
        held = len(found.entries) + found.pending
        self.counts[box] = held
        return held

    async def _tidy(self, box: str, batch: list[Write], keys: dict[str, int], marker: int) -> None:
        """What a stored batch makes needless: each key's older messages, of any priority,
        removed below the new one's sequence (a failure leaves them until the key's next
        SEND; reads by key take the newest), the delayed messages it numbered, the marker
        of a deleted newest message it passed."""
        layout = self.layout
        purges = [
            self.requests.api(
                f"STREAM.PURGE.{layout.box_stream(box)}",
                {"filter": layout.box_key_filter(box, key), "seq": seq},
            )
            for key, seq in keys.items()
        ]
        gone = [write.staged for write in batch if write.staged]
        if marker:
            gone.append(marker)
        await asyncio.gather(*purges, *(self._delete(box, seq) for seq in gone))

    async def _publish(
        self,
        box: str,
        batch: list[Write],
        expected: int,
        first_id: int,
        lanes: Lanes,
        largest: HeadSizes | None,
    ) -> tuple[int, HeadSizes | None]:
        """The batch numbered from ``first_id``, then the head (with each lane's newest msg_id,
        ``lanes``), expecting ``expected`` as the head's last sequence (0: no head yet); the
        head's sequence. The mailboxes whose
        batches are ready in one turn of the event loop go as one atomic batch, each its
        own head and expectation (``Batches``): one request, one acknowledgement for all.
        The head says what the mailbox's messages take (sizes.py) when the one
        before did (``largest``), this batch's messages with it; the head's sequence, and
        what it says."""
        layout = self.layout
        entries: list[Entry] = []
        written: list[tuple[int, int, int]] = []  # each message: msg_id, size, until
        now = int(time.time())
        for index, write in enumerate(batch):
            if write.once is not None:  # its key, expecting none: stored with it or not
                entries.append(key_entry(layout, box, write.once, first_id + index))
            for place, tag in enumerate(write.tags):
                ahead = {AHEAD: str(len(write.tags) - place)}
                entries.append((layout.tag_subject(box, tag), tag.encode(), ahead))
            subject = layout.message_subject(box, write.priority, write.key_token, first_id + index)
            entries.append((subject, write.data, write.headers))
            if largest is not None:
                size = stored_size(subject, write.data, write.headers)
                written.append((first_id + index, size, _until(write.headers, now)))
        # (a rollup: one head a mailbox, the one before goes)
        said = {ROLLUP: ROLLUP_SUBJECT, LANES: lanes_text(lanes)}
        if largest is not None:
            largest = largest.written(written, now)
            said.update(largest.headers())
        head = expecting(expected, said)
        entries.append((layout.head_subject(box), str(first_id + len(batch)).encode(), head))
        return await self._batches.write(entries, layout.stream_of(box)), largest

    async def read_last(self, box: str) -> tuple[tuple[int, int, Lanes, HeadSizes | None], int]:
        """``box``'s head sequence, next msg_id and lanes from the leaders: the head's (the
        record's next number when above it); no head (a mailbox no write reached since this
        layout wrote heads, or one silent past the retention): 0 and the number after its
        newest message, else the record's; and, then, the sequence of a deleted newest
        message's marker, when the newest is one (a layout's before heads), else 0. With them the
        largest message the head says (None when it does not; 0 for a mailbox holding
        none, whose first head then says)."""
        layout = self.layout
        stream = layout.box_stream(box)
        head, following = await asyncio.gather(self._head(box), self.record_next(box))
        if head is not None:
            lanes = lanes_of(head.headers) or await self._lanes_stored(box)
            largest = HeadSizes.of(head.headers)
            self.sizes.saw(box, head.seq, int(head.data), largest)
            return (head.seq, max(int(head.data), following), lanes, largest), 0
        entry = await self.requests.leader_get(stream, last_by_subject=layout.box_filter(box))
        if entry is None:
            return (0, following, NO_LANES, HeadSizes()), 0
        marker = entry.seq if DELETED in entry.headers else 0
        lanes = await self._lanes_stored(box)
        return (0, max(msg_id_of(entry.subject) + 1, following), lanes, None), marker

    async def _head(self, box: str) -> StoredEntry | None:
        """``box``'s head from the leader, read at its own size."""
        layout = self.layout
        with sized(SMALL_ENTRY):
            return await self.requests.leader_get(
                layout.box_stream(box), last_by_subject=layout.head_subject(box)
            )

    async def _lanes_stored(self, box: str) -> Lanes:
        """Each lane's newest msg_id stored, from the leader, for a head that does not say
        (written before heads carried them): asked after the head, so no lane is older than
        it (one newer belongs to a write that this one's expectation will be refused by)."""
        stream = self.layout.box_stream(box)
        newest = await asyncio.gather(
            *(
                self.requests.leader_get(
                    stream, last_by_subject=self.layout.box_lane_filter(box, priority)
                )
                for priority in PRIORITY_ORDER
            )
        )
        critical, urgent, normal = (
            -1 if entry is None else msg_id_of(entry.subject) for entry in newest
        )
        return critical, urgent, normal

    async def record_next(self, box: str) -> int:
        """The next msg_id the mailbox record keeps (0 when none): the number its log had
        reached when a broker last wrote it there, for a log the retention emptied."""
        entry = await self._record_entry(box)
        if entry is None:
            return 0
        return int(decode_record(entry.data).get("next", 0))

    async def _record_entry(self, box: str) -> StoredEntry | None:
        return await self._records.get(box)

    async def mark_high(self, now: int) -> None:
        """Write each mailbox this broker wrote since the last call its next msg_id into the
        record (when above the record's): the retention removes a mailbox's messages oldest
        first, and once a live mailbox's every message is gone, the record keeps its number."""
        boxes, self.written = self.written, set()
        for box in boxes:
            state = self.last.get(box)
            if state is not None:
                await self._raise_next(box, state[1], now)

    async def _raise_next(self, box: str, following: int, now: int) -> None:
        for _ in range(8):  # a record another broker wrote meanwhile: read again
            entry = await self._record_entry(box)
            if entry is None:
                return  # forgotten (its log empty by then): a new log starts at 0
            value = decode_record(entry.data)
            if int(value.get("next", 0)) >= following:
                return
            value["next"] = following
            headers: dict[str, str] = {}
            if int(value.get("ttl", 0)):  # the record's TTL: what was left of it
                left = int(value["create_time"]) + int(value["ttl"]) + RETENTION_SECONDS - now
                set_ttl(headers, max(left, 1))  # (a longer one: none, as the record was made)
            try:
                await self._records.update(box, encode_record(value), entry.seq, headers)
                return
            except StorageJetStreamError as exc:
                if not exc.wrong_last_sequence:
                    raise

    async def _delete(self, box: str, seq: int) -> None:
        try:
            await self.requests.api(
                f"STREAM.MSG.DELETE.{self.layout.box_stream(box)}", {"seq": seq, "no_erase": True}
            )
        except StorageJetStreamError as exc:
            if exc.code != 404 and exc.err_code != ErrorCode.MESSAGE_NOT_FOUND:
                raise


def _until(headers: dict[str, str], now: int) -> int:
    """The second after which the servers hold a message written at ``now`` no more,
    a while after: its TTL's end (a ``Nats-TTL``: messages.py gives a large one with a TTL
    one), else the retention's."""
    ttl = headers.get(TTL, "")
    if ttl.endswith("s") and ttl[:-1].isdigit():
        return now + int(ttl[:-1]) + TTL_MARGIN
    return now + RETENTION_SECONDS + TTL_MARGIN


def _lanes_after(lanes: Lanes, batch: list[Write], first_id: int) -> Lanes:
    """Each lane's newest msg_id once ``batch`` is written, numbered from ``first_id``."""
    critical, urgent, normal = lanes
    for index, write in enumerate(batch):
        msg_id = first_id + index
        if write.priority is Priority.CRITICAL:
            critical = msg_id
        elif write.priority is Priority.URGENT:
            urgent = msg_id
        else:
            normal = msg_id
    return critical, urgent, normal


def _admitted(batch: list[Write], held: int) -> list[Write]:
    """The writes of ``batch`` that fit, in order, its mailbox holding ``held`` messages
    before them (each bounded write: fewer than its ``room`` before it, the memory engine's
    rule); the others answered ``Full``."""
    admitted = []
    for write in batch:
        if write.room is not None and held >= write.room:
            if not write.future.done():
                write.future.set_exception(Full(write.room))
            continue
        admitted.append(write)
        held += 1
    return admitted


async def every(seconds: float, work: Callable[[], Awaitable[None]]) -> None:
    """``work`` every ``seconds`` until cancelled; a failure is tried again next time."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await work()
        except Exception:  # the cluster unreachable a moment: the next turn writes it
            continue
