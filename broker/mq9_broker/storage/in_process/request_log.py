"""The SQLite store's request log: what each request changed, appended before its answer.

The file: a header (8 bytes of magic, the generation as a u64), then records, each a u32
length, the crc32 of the body and the body (``encode_changes``). The generation ties a log to
its data file: SQLite keeps which generation it has folded, up to which offset, in the same
transaction as the fold, so each record is folded exactly once; a new generation starts in a
new file, swapped in whole (``start``). A record whose length or crc32 does not hold ends what
can be read (the records after it are counted, not replayed); damage in the last record alone
is only logged (a write cut short, whose request was not answered). Why a file of our own in
front of SQLite: docs/broker.md ("Inside the SQLite store").
"""

from __future__ import annotations

import contextlib
import marshal
import os
import struct
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

MAGIC = b"mq9-log\x01"
_HEADER = struct.Struct("<8sQ")  # magic, generation
_RECORD = struct.Struct("<II")  # body length, crc32 of the body
HEADER_SIZE = _HEADER.size
# marshal's format 4 is read by every Python this package supports (it only grows)
_MARSHAL_VERSION = 4

# One change: a statement's number and its parameters
Change = tuple[int, tuple[object, ...]]


def encode_changes(changes: Sequence[Change]) -> bytes:
    """A record's body: the request's changes (statement numbers, parameters of None, int,
    str and bytes) in marshal's format, which the C library writes and reads in one call."""
    marshallable: Any = tuple(changes)  # (typed as objects: marshal takes what they are)
    return marshal.dumps(marshallable, _MARSHAL_VERSION)


def decode_changes(body: bytes | memoryview, known: Callable[[int], bool]) -> list[Change] | None:
    """The changes of a record's body, or None when they are not what ``encode_changes``
    writes (a statement ``known`` does not know, a value of another type)."""
    try:
        changes = marshal.loads(body)
    except (EOFError, ValueError, TypeError):
        return None
    if type(changes) is not tuple:
        return None
    for change in changes:
        if type(change) is not tuple or len(change) != 2:
            return None
        statement, params = change
        if type(statement) is not int or not known(statement) or type(params) is not tuple:
            return None
        if any(type(value) not in _VALUE_TYPES for value in params):
            return None
    return list(changes)


_VALUE_TYPES = frozenset({type(None), int, str, bytes})


class LogRead(NamedTuple):
    """What ``RequestLog.read`` found from an offset on."""

    records: list[tuple[int, list[Change]]]  # (the offset a record ends at, its changes)
    lost: int  # records after damage: intact but not replayed
    damaged: bool  # something after the last good record (damage or a cut-short write)


class RequestLog:
    """The log file beside a data file (``<data file>-log``), open for appending.

    >>> log = RequestLog(Path("mq9-broker.sqlite3-log"), sync=False)
    >>> log.generation            # None: a new or unreadable file
    >>> log.append(encode_changes([(1, ("box",))]))
    """

    def __init__(self, path: Path, *, sync: bool) -> None:
        self.path = path
        self.sync = sync
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        size = os.fstat(self._fd).st_size
        header = os.pread(self._fd, HEADER_SIZE, 0)
        self.generation: int | None = None
        if len(header) == HEADER_SIZE:
            magic, generation = _HEADER.unpack(header)
            if magic == MAGIC:
                self.generation = generation
        self.size = size  # what the file held when opened
        self.end = size  # where the next record goes

    def read(self, start: int, known: Callable[[int], bool]) -> LogRead:
        """The records from offset ``start`` (where a record begins) to the first damage."""
        data = _read_all(self._fd, self.size)
        records = _records(data, start, known)
        end = records[-1][0] if records else start
        self.end = max(end, HEADER_SIZE)
        if end >= len(data):
            return LogRead(records, 0, False)
        # The record at ``end`` is damaged or cut short; count the intact ones behind it
        lost = 0
        if end + _RECORD.size <= len(data):
            length, _ = _RECORD.unpack_from(data, end)
            after = end + _RECORD.size + length
            if after <= len(data):
                behind = _records(data, after, known)
                lost = 1 + len(behind) if behind else 0
        return LogRead(records, lost, True)

    def append(self, body: bytes) -> None:
        """Write one record after the last; raises ``OSError`` (the record is then not in the
        log: a part that was written is cut off, or overwritten by the next record)."""
        record = _RECORD.pack(len(body), zlib.crc32(body)) + body
        at = self.end
        try:
            written = self._pwrite(self._fd, record, at)
            while written < len(record):  # a short write: the disk filled up meanwhile
                written += self._pwrite(self._fd, record[written:], at + written)
            if self.sync:
                os.fdatasync(self._fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, at)
            raise
        self.end = at + len(record)

    # The one write of a record (a test's full disk replaces it)
    _pwrite = staticmethod(os.pwrite)

    def start(self, generation: int) -> Path:
        """Write an empty log of ``generation`` beside this one (``<path>.new``), to be
        swapped in by ``swap``; raises ``OSError``."""
        fresh = self.path.with_name(self.path.name + ".new")
        fd = os.open(fresh, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.pwrite(fd, _HEADER.pack(MAGIC, generation), 0)
            if self.sync:
                os.fdatasync(fd)
        except OSError:
            os.close(fd)
            raise
        os.close(fd)
        return fresh

    def swap(self, fresh: Path, generation: int, *, keep_old_as: Path | None) -> None:
        """Make ``fresh`` (from ``start``) this log; the old file is kept as ``keep_old_as``
        (a damaged log, for whoever wants to look at it) or dropped."""
        if keep_old_as is not None:
            os.replace(self.path, keep_old_as)
        os.replace(fresh, self.path)
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        if self.sync:
            _sync_directory(self.path.parent)
        self.generation = generation
        self.size = self.end = HEADER_SIZE

    def close(self, *, remove: bool) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)
        if remove:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


def set_aside_name(path: Path) -> Path:
    """A name beside ``path`` for a damaged log, not taken yet."""
    candidate = path.with_name(path.name + ".damaged")
    number = 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}.damaged.{number}")
        number += 1
    return candidate


def _records(data: bytes, at: int, known: Callable[[int], bool]) -> list[tuple[int, list[Change]]]:
    records = []
    view = memoryview(data)
    while at + _RECORD.size <= len(data):
        length, crc = _RECORD.unpack_from(data, at)
        body_end = at + _RECORD.size + length
        if body_end > len(data):
            break
        body = view[at + _RECORD.size : body_end]
        changes = decode_changes(body, known) if zlib.crc32(body) == crc else None
        if changes is None:
            break
        records.append((body_end, changes))
        at = body_end
    return records


def _read_all(fd: int, size: int) -> bytes:
    parts, at = [], 0
    while at < size:
        part = os.pread(fd, size - at, at)
        if not part:
            break
        parts.append(part)
        at += len(part)
    return b"".join(parts)


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
