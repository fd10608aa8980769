"""Where each consumer group reads each mailbox, kept in the groups bucket: a position a
group and mailbox (``<group>.<mailbox>``: the log it is in, its msg_id and a sequence to read
from), a marker a group (``<group>._``: the group committed somewhere, RobustMQ looks a group
up by its name) and a count of groups a log (``_count.<mailbox>.groups``, ``--max-groups``)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from mq9_wire.nats_floor.jetstream.api import expecting
from mq9_wire.nats_floor.jetstream.bucket import Bucket, live

from ..mailbox_store import Full, Position, StorageError
from .batches import Batches
from .mapping import Layout, decode_record, encode_record, token
from .requests import StorageJetStreamError

if TYPE_CHECKING:
    from ..mailbox_store import MailboxRecord
    from .requests import StorageRequests

COUNT_TRIES = 64  # counted writes lost in a row to other brokers' before giving up


class Positions:
    """The groups bucket of ``layout``; the groups whose marker this broker wrote or read."""

    def __init__(self, requests: StorageRequests, layout: Layout) -> None:
        self.layout = layout
        self.bucket = Bucket(requests, layout.groups)
        # the ACKs' position writes ready in one turn: one atomic batch into the bucket
        self._writes = Batches(requests)
        # a new group's position and its log's count: one atomic batch
        self._counted = Batches(requests)
        self._marked: set[str] = set()

    async def stop(self) -> None:
        await self._writes.stop()
        await self._counted.stop()

    def forget(self) -> None:
        self._marked.clear()

    async def position(self, group: str, record: MailboxRecord) -> Position:
        """Where ``group`` reads ``record``'s log, from the bucket's leader (current): an ACK
        answered by any broker is seen."""
        layout = self.layout
        mine, marker = await asyncio.gather(
            self.bucket.get(layout.position_key(group, record.name)),
            self.bucket.last(layout.marker_key(group)),
        )
        offset, seq = None, 0
        if mine is not None:
            value = decode_record(mine.data)
            if value.get("log") == record.log:  # a position in a log forgotten since: none
                offset, seq = int(value["offset"]), int(value.get("seq", 0))
        anywhere = marker is not None or offset is not None
        if anywhere:
            self._marked.add(group)
        return Position(offset, anywhere, seq)

    async def commit(
        self, group: str, record: MailboxRecord, offset: int, seq: int = 0, room: int | None = None
    ) -> None:
        """``group``'s position in ``record``'s log is ``offset``, its reads starting at
        sequence ``seq`` (at or below the first message numbered ``offset`` or more; 0: the
        log's start); the last ACK wins, as on RobustMQ, whichever broker it reached.
        ``room``: the most groups the log may hold before a new one (``Full`` when it does)."""
        key = self.bucket.subject(self.layout.position_key(group, record.name))
        value = encode_record({"log": record.log, "offset": offset, "seq": seq})
        if room is not None and await self._counted_group(key, value, record, room):
            await self._mark_once(group)
            return
        if group in self._marked:  # (the steady state: one write, awaited without a task)
            await self._writes.write([(key, value, {})])
            return
        await asyncio.gather(self._writes.write([(key, value, {})]), self._mark(group))
        self._marked.add(group)

    async def _mark_once(self, group: str) -> None:
        if group not in self._marked:
            await self._mark(group)
            self._marked.add(group)

    async def _counted_group(
        self, key: str, value: bytes, record: MailboxRecord, room: int
    ) -> bool:
        """A group new on ``record``'s log: its position written with the log's count of
        groups (``_count.<m>.groups``, ``{log, n}``) in one atomic batch, each expecting its
        last sequence, so no number of brokers adding groups at once passes ``room``;
        True when written so. False when the group holds a position there already (an
        ordinary commit then)."""
        bucket = self.bucket
        count_key = f"_count.{token(record.name)}.groups"
        for _ in range(COUNT_TRIES):
            mine, counted = await asyncio.gather(
                bucket.last(bucket.key_of(key)), bucket.last(count_key)
            )
            if live(mine) and decode_record(mine.data).get("log") == record.log:
                return False
            held = decode_record(counted.data) if counted is not None else {}
            if held.get("log") == record.log:
                count = int(held.get("n", 0))
            else:  # (none yet, or a log forgotten since: counted from the positions)
                count = await self.groups_on(record)
            if count >= room:
                raise Full(room)
            entries = [
                (key, value, expecting(mine.seq if mine else 0)),
                (
                    bucket.subject(count_key),
                    encode_record({"log": record.log, "n": count + 1}),
                    expecting(counted.seq if counted else 0),
                ),
            ]
            try:
                await self._counted.write(entries)
                return True
            except StorageJetStreamError as exc:
                if not exc.wrong_last_sequence:
                    raise
        raise StorageError(f"groups of {record.name!r}: written by others {COUNT_TRIES} times")

    async def groups_on(self, record: MailboxRecord) -> int:
        """How many groups hold a position in ``record``'s log (``--max-groups``)."""
        entries = await self.bucket.last_values(f"*.{token(record.name)}")
        return sum(1 for entry in entries if decode_record(entry.data).get("log") == record.log)

    async def _mark(self, group: str) -> int:
        try:
            return await self.bucket.update(self.layout.marker_key(group), b"", 0)
        except StorageJetStreamError as exc:
            if not exc.wrong_last_sequence:
                raise
            return 0  # marked already, by this broker or another
