"""The state stream's record format: what one stream message holds, written and read.

A record (version 2) is the UTF-8 JSON ``{"v": 2, "blobs": [n, ...], "changes": [ops, ...]}``,
a newline, then the bytes of every payload and header the ops refer to: each request's ops
(``[[kind, ...], ...]``) refer to theirs as ``[start, end]`` into its own ``n`` bytes, which
follow those of the requests before it. Version 1 (``{"v": 1, "ops": ops}``, one request a
record) is still read. A snapshot's records (version 3) are
``{"v": 3, "snap": [id, "begin" | "part" | "end", n], ...}``, a part's other keys those of a
version 2 record. docs/broker.md tells why the format is so.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from ....protocol import Priority
from ...state.mailbox import StoredMessage

RECORD_VERSION = 2  # 1: one request's changes a record (still read)
SNAPSHOT_VERSION = 3  # a snapshot's records: its begin, its parts, its end
# Bytes a record takes beyond its changes' ops and blobs: the NATS headers (a Nats-Msg-Id of
# 32 hex digits and a count, an expected sequence, "NATS/1.0" and line ends) and the JSON
# framing; and each change's share of it (its blob size, commas)
RECORD_ROOM = 256
CHANGE_ROOM = 24
# A delayed message's release beside its write, at its widest: ["dr",<a u64>],
RELEASE_ROOM = len('["dr",18446744073709551615],')
# A request's ops as a record holds them: made once (json.dumps with an option makes one a call)
OPS_ENCODER = json.JSONEncoder(ensure_ascii=False)


@dataclass
class Change:
    """One request's changes: its ops as JSON (blob places relative to ``blobs``)."""

    ops: bytes
    blobs: bytes

    @property
    def size(self) -> int:
        return len(self.ops) + len(self.blobs) + CHANGE_ROOM


# A stored message's op beyond its text: its numbers (u64s and a blob's places at their widest,
# 20 digits each), the priority, "null"s, quotes, commas and brackets; and a text's character at
# its widest in JSON (a control character as \uXXXX)
_MESSAGE_OP_ROOM = 512
_WIDEST_CHARACTER = 6


def message_op_bound(address: str, message: StoredMessage) -> int:
    """At least the bytes a stored message's op takes in a record's JSON, its blobs aside,
    from lengths alone (``JetStreamStorage.message_refused`` writes it only when near the
    limit)."""
    texts = len(address) + len(message.key or "") + sum(len(tag) + 1 for tag in message.tags)
    return _WIDEST_CHARACTER * texts + _MESSAGE_OP_ROOM


@dataclass
class Batch:
    """Requests' changes stored together in one record; ``done`` is set once JetStream
    acknowledged it (None: stored outside any event loop)."""

    done: asyncio.Future[None] | Any
    changes: int = 0
    size: int = 0
    sent: bool = False
    closed: bool = False  # no more changes join it (a snapshot holds the state up to it)
    _ops: list[bytes] = field(default_factory=list)
    _blobs: list[bytes] = field(default_factory=list)

    def add(self, change: Change) -> None:
        self._ops.append(change.ops)
        self._blobs.append(change.blobs)
        self.changes += 1
        self.size += change.size

    def record(self) -> bytes:
        sizes = ",".join(str(len(blobs)) for blobs in self._blobs)
        head = b'{"v":%d,"blobs":[%s],"changes":[%s]}\n' % (
            RECORD_VERSION,
            sizes.encode(),
            b",".join(self._ops),
        )
        return head + b"".join(self._blobs)


def snapshot_head(snapshot_id: str, kind: str, n: int) -> bytes:
    return b'{"v":%d,"snap":["%s","%s",%d]}\n' % (
        SNAPSHOT_VERSION,
        snapshot_id.encode(),
        kind.encode(),
        n,
    )


def snapshot_part(snapshot_id: str, n: int, ops: list[bytes], blobs: bytearray) -> bytes:
    head = b'{"v":%d,"snap":["%s","part",%d],"blobs":[%d],"changes":[[%s]]}\n' % (
        SNAPSHOT_VERSION,
        snapshot_id.encode(),
        n,
        len(blobs),
        b",".join(ops),
    )
    return head + bytes(blobs)


def message_columns(
    message: StoredMessage, header: list[int] | None, payload: list[int] | None
) -> list[Any]:
    """A stored message's op columns, its header and payload as places in the blobs."""
    return [
        message.priority.value,
        message.create_time,
        message.key,
        list(message.tags) if message.tags else None,
        header if message.header is not None else None,
        message.expire_at,
        payload,
    ]


def message_from(msg_id: int, cols: list[Any], blobs: bytes) -> StoredMessage:
    priority, create_time, key, tags, header, expire_at, payload = cols
    return StoredMessage(
        msg_id,
        _slice(blobs, payload) or b"",
        Priority(priority),
        create_time,
        key,
        tuple(tags) if tags else (),
        _slice(blobs, header),
        expire_at,
    )


def _slice(blobs: bytes, where: list[int] | None) -> bytes | None:
    return None if where is None else blobs[where[0] : where[1]]
