"""A snapshot of the engine's state, written into the state stream between the other records.

Its beginning says the stream holds the snapshot's state as of this record; its parts are the
state as change ops (each a record of at most ``PART_BYTES``); its end says how many parts
there are. A snapshot without an end (its broker died, or was fenced) is skipped by a reader
(replay.py); once the end is stored, the records before the beginning are purged (store.py).
This module takes the state (under the engine's lock, copying containers only) and makes the
records (on another thread).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from ....semantic.ranking import AgentEntry
from ...state.mailbox import Mailbox, StoredMessage
from ..base import Restorable
from .records import CHANGE_ROOM, Batch, message_columns, snapshot_head, snapshot_part

# A snapshot's part takes this much at most (a message alone may take more, up to a record's
# size): a request waits for one part at most, and a restore reads smaller JSON documents
# (larger parts take longer to read back: the garbage collector's passes over the state)
PART_BYTES = 256 * 1024


class Engine(Restorable, Protocol):
    """What a snapshot is taken of: a ``BrokerEngine`` as its store sees it."""

    mailboxes: dict[str, Mailbox]  # the live ones
    topics: dict[str, Mailbox]  # every log


@dataclass
class Snapshot:
    """A snapshot being written: of the state as of ``after``, the batch before it."""

    id: str
    after: Batch
    loop: asyncio.AbstractEventLoop  # the serving loop that writes it
    first_seq: int = 0  # its beginning's sequence, once written
    records: deque[bytes] = field(default_factory=deque)  # its parts and end, once made
    size: int = 0  # its parts' bytes

    @property
    def begin(self) -> bytes:
        return snapshot_head(self.id, "begin", 0)

    def may_begin(self) -> bool:
        return not self.first_seq and self.after.done.done()


@dataclass
class Log:
    """A mailbox's log as a snapshot takes it (its fields change once the lock is let go)."""

    address: str
    columns: list[Any]  # shard, create_time, ttl, desc, next_id, start_offset
    live: bool
    messages: dict[int, StoredMessage]


@dataclass
class Taken:
    logs: list[Log]
    offsets: list[tuple[str, str, int]]
    agents: list[AgentEntry]
    index: list[tuple[str, AgentEntry]]
    delayed: list[tuple[int, tuple[str, int, StoredMessage]]]


def capture(engine: Engine, held: dict[int, tuple[str, int, StoredMessage]]) -> Taken:
    """(under the engine's lock) The engine's state, copied as little as it may be: the
    containers the engine changes in place, not the messages and entries, which it never does
    (a delayed message changes when it is released, after its release is told: a record after
    the snapshot's state says so)."""
    live = engine.mailboxes
    logs = [
        Log(
            box.address,
            [box.shard, box.create_time, box.ttl, box.desc, box.next_id, box.start_offset],
            live.get(box.address) is box,
            dict(box.messages),
        )
        for box in engine.topics.values()
    ]
    return Taken(
        logs,
        [
            (lane, shard, n)
            for lane, shards in engine.offsets.items()
            for shard, n in shards.items()
        ],
        list(engine.registry.entries.values()),
        list(engine.registry.index.items()),
        list(held.items()),
    )


def snapshot_parts(taken: Taken, snapshot_id: str, limit: int) -> list[bytes]:
    """``taken`` as the records of snapshot ``snapshot_id``'s parts, of ``limit`` bytes at
    most each (but for a message that alone takes more, which a record holds, see
    ``message_refused``): the change ops that replayed onto nothing give the state."""
    parts: list[bytes] = []
    ops: list[bytes] = []
    blobs = bytearray()
    size = 0

    def encoded(op: list[Any], message: StoredMessage | None) -> bytes:
        if message is not None:  # its blobs' places in this part's
            start = len(blobs)
            header = None if message.header is None else [start, start + len(message.header)]
            at = start + len(message.header or b"")
            payload = [at, at + len(message.payload)]
            op = [*op, message_columns(message, header, payload)]
        return json.dumps(op, ensure_ascii=False).encode()

    def add(op: list[Any], message: StoredMessage | None = None) -> None:
        nonlocal size
        blob = b"" if message is None else (message.header or b"") + message.payload
        text = encoded(op, message)
        if ops and size + len(text) + len(blob) + CHANGE_ROOM > limit:
            parts.append(snapshot_part(snapshot_id, len(parts), ops, blobs))
            ops.clear()
            blobs.clear()
            size = 0
            text = encoded(op, message)
        ops.append(text)
        blobs.extend(blob)
        size += len(text) + len(blob) + 1

    for log_ in taken.logs:
        add(["mc", log_.address, *log_.columns])
        if not log_.live:
            add(["mx", log_.address])
        next_id = log_.columns[4]
        for msg_id in sorted(log_.messages):
            add(["ms", log_.address, next_id, msg_id], log_.messages[msg_id])
    for lane, shard, offset in taken.offsets:
        add(["oc", lane, shard, offset])
    for entry in taken.agents:
        add(["as", entry.name, entry.agent_info, entry.create_time])
    for card, entry in taken.index:
        add(["is", card, entry.name, entry.agent_info, entry.create_time])
    for delayed_id, (address, due, message) in taken.delayed:
        add(["da", delayed_id, address, due], message)
    if ops or not parts:
        parts.append(snapshot_part(snapshot_id, len(parts), ops, blobs))
    return parts
