"""The JetStream API's names, written once: request subjects, the headers a publish or a
stored message carries, and the error codes (``err_code``) the servers answer with.

Plain data, and the few pure readings of it every user needs (is this entry a deleted key,
does this error say another write came first), so the store, the identities' bucket and the
cluster survey never spell a header or a number themselves.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final

API_PREFIX: Final = "$JS.API."  # every JetStream API request's subject starts so
KV_STREAM_PREFIX: Final = "KV_"  # a bucket's stream is KV_<bucket>
KV_SUBJECT_PREFIX: Final = "$KV."  # a bucket's key is the subject $KV.<bucket>.<key>

# -- request headers (a publish's) ----------------------------------------------------------
EXPECTED_LAST_SUBJECT_SEQUENCE: Final = "Nats-Expected-Last-Subject-Sequence"
# (with it: the subject, a filter, whose last sequence the expectation is on)
EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT: Final = "Nats-Expected-Last-Subject-Sequence-Subject"
MSG_ID: Final = "Nats-Msg-Id"  # a publish's id: one written twice within the window is once
ROLLUP: Final = "Nats-Rollup"
ROLLUP_SUBJECT: Final = "sub"  # (a rollup's value: the subject's earlier messages go)
TTL: Final = "Nats-TTL"  # a message's own age limit ("<n>s"), on a stream allowing it
SCHEDULE: Final = "Nats-Schedule"  # "@at <RFC 3339>": the server writes it then
SCHEDULE_TARGET: Final = "Nats-Schedule-Target"  # where a schedule's message is written
SCHEDULER: Final = "Nats-Scheduler"  # on a message the server wrote from a schedule
BATCH_ID: Final = "Nats-Batch-Id"  # an atomic batch's id, on each of its messages
BATCH_SEQUENCE: Final = "Nats-Batch-Sequence"  # its place in the batch, from 1
BATCH_COMMIT: Final = "Nats-Batch-Commit"  # "1" on the batch's last message: store them all
KV_OPERATION: Final = "KV-Operation"  # a bucket's delete or purge marker
KV_DELETE: Final = "DEL"
KV_PURGE: Final = "PURGE"

# -- headers of a stored message as a direct get answers it ----------------------------------
STATUS: Final = "Status"  # "204": a batch's end; "404": nothing matched
DESCRIPTION: Final = "Description"
NUM_PENDING: Final = "Nats-Num-Pending"
SEQUENCE: Final = "Nats-Sequence"
SUBJECT: Final = "Nats-Subject"
TIME_STAMP: Final = "Nats-Time-Stamp"

NANOSECONDS: Final = 1_000_000_000  # a duration in a config is in nanoseconds


class ErrorCode(IntEnum):
    """JetStream's ``err_code``s the broker tells apart."""

    NO_PEERS_YET = 10005  # not enough servers joined yet (a cluster forming)
    JETSTREAM_UNAVAILABLE = 10008  # no JetStream leader elected yet
    NO_MESSAGE_FOUND = 10037  # a read of a message that is not there
    NOT_ENABLED_FOR_ACCOUNT = 10039  # JetStream off in the account the client logged in to
    MESSAGE_NOT_FOUND = 10057  # a delete of a message that is not there
    STREAM_NAME_IN_USE = 10058  # a STREAM.CREATE of a name another config holds
    WRONG_LAST_SEQUENCE = 10071  # an expected last (subject) sequence that is not the last
    INSUFFICIENT_RESOURCES = 10074  # more replicas than the servers hold, say: never
    MAXIMUM_MESSAGES_EXCEEDED = 10077  # a bound (max_msgs, discard new) refused a new key
    DUPLICATE_IN_BATCH = 10201  # an atomic batch holding a message id already stored


def err_code(exc: BaseException) -> int:
    """The JetStream ``err_code`` an exception carries (ours or nats-py's), 0 when none."""
    return int(getattr(exc, "err_code", 0) or 0)


def wrong_last_sequence(exc: BaseException) -> bool:
    """Whether ``exc`` says an expected last sequence was not the last: another write came
    first. A clustered stream says so with another code and no number, in words."""
    return err_code(exc) == ErrorCode.WRONG_LAST_SEQUENCE or "wrong last sequence" in str(exc)


def removal(operation: str | None) -> bool:
    """Whether a bucket entry's ``KV-Operation`` (nats-py's ``entry.operation``) says a
    delete or purge marker: the key holds no value."""
    return operation in (KV_DELETE, KV_PURGE)


def deleted(headers: Mapping[str, str] | None) -> bool:
    """Whether a bucket's entry with ``headers`` is a delete or purge marker (no value)."""
    return removal((headers or {}).get(KV_OPERATION))


def expecting(seq: int, headers: Mapping[str, str] | None = None) -> dict[str, str]:
    """``headers`` and the expectation that ``seq`` is the subject's last sequence (0: none
    written yet)."""
    return {**(headers or {}), EXPECTED_LAST_SUBJECT_SEQUENCE: str(seq)}


def ttl(seconds: int) -> dict[str, str]:
    """The ``Nats-TTL`` header of ``seconds``."""
    return {TTL: f"{seconds}s"}


def kv_stream(bucket: str) -> str:
    return KV_STREAM_PREFIX + bucket


def kv_subject(bucket: str, key: str) -> str:
    return f"{KV_SUBJECT_PREFIX}{bucket}.{key}"


@dataclass
class StoredEntry:
    """One message of a stream as a read returned it."""

    seq: int
    subject: str
    data: bytes
    headers: dict[str, str] = field(default_factory=dict)
    time: str = ""  # JetStream's timestamp, RFC 3339 in UTC


@dataclass
class Batch:
    """A batched direct get's messages, oldest first, and how many more match after them."""

    entries: list[StoredEntry]
    pending: int


_HEADER_LINE = b"NATS/1.0"


def parse_headers(block: bytes) -> dict[str, str]:
    """A raw NATS header block (``NATS/1.0\\r\\nName: value\\r\\n...``) as a dict."""
    headers: dict[str, str] = {}
    for line in block.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon:
            headers[name.decode(errors="replace").strip()] = value.decode(errors="replace").strip()
    return headers


def gotten(message: Mapping[str, object]) -> StoredEntry:
    """The ``message`` of a ``STREAM.MSG.GET`` answer (base64 data and header block)."""
    hdrs, data = message.get("hdrs"), message.get("data")
    raw = base64.b64decode(str(hdrs)) if hdrs else b""
    return StoredEntry(
        seq=int(str(message["seq"])),
        subject=str(message["subject"]),
        data=base64.b64decode(str(data or "")),
        headers=parse_headers(raw) if raw.startswith(_HEADER_LINE) else {},
        time=str(message.get("time", "")),
    )


def direct_entry(data: bytes, headers: Mapping[str, str]) -> StoredEntry:
    """One message of a direct get's answer (its place in the headers)."""
    return StoredEntry(
        seq=int(headers.get(SEQUENCE) or 0),
        subject=headers.get(SUBJECT, ""),
        data=data,
        headers=dict(headers),
        time=headers.get(TIME_STAMP, ""),
    )
