"""The dev broker's durable store: the engine's state in one SQLite file.

The store observes the engine: each change calls a hook (``message_stored``, ...); on leaving
``transaction()`` the request's changes are appended as one record to the request log
(``request_log.py``) before the reply is sent, and folded into SQLite ``fold_every`` at a time.
``restore`` rebuilds the engine from the file and the records not folded yet. The file and its
log are the truth: a record that cannot be written fails its request and the engine restores
itself; a fold that cannot be written fails nothing (its records stay in the log). A row whose
crc32 does not hold is logged and not served. The file is opened in SQLite's exclusive locking
mode: a second broker on it is refused. docs/broker.md ("Inside the SQLite store") tells the
rest: durability, u64s as signed integers.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import sqlite3
import tempfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from mq9_wire.protocol import Priority
from mq9_wire.semantic.ranking import AgentEntry

from ...state.mailbox import Mailbox, StoredMessage
from ..mailbox_store import StorageError
from .persistence import Restorable, Storage, restore_agents
from .request_log import HEADER_SIZE, Change, RequestLog, encode_changes, set_aside_name

log = logging.getLogger("mq9_broker")


def sqlite_busy(exc: sqlite3.Error) -> bool:
    """Whether SQLite refused because another process holds the database (locked/busy)."""
    return _sqlite_code(exc, ("SQLITE_BUSY", "SQLITE_LOCKED"))


def sqlite_readonly(exc: sqlite3.Error) -> bool:
    """Whether SQLite refused to write a database it may only read."""
    return _sqlite_code(exc, ("SQLITE_READONLY",))


def _sqlite_code(exc: sqlite3.Error, names: tuple[str, ...]) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)  # set on errors SQLite itself raised
    return code is not None and any(code & 0xFF == getattr(sqlite3, name) for name in names)


# 3: RobustMQ's model (offsets, not leases; registry by name; logs outlive their mailbox)
# 4: a crc32 per message and delayed row (version 3 files are upgraded in place)
# 5: the request log (log_folded; versions 3 and 4 are upgraded in place)
# 6: the keyed SENDs (sent_keys)
# 7: their windows end on a millisecond (until_ms; version 6 upgraded in place)
SCHEMA_VERSION = 8
DEFAULT_FILE_NAME = "mq9-broker.sqlite3"
LOG_SUFFIX = "-log"  # the request log: beside SQLite's own "-wal"
FOLD_EVERY = 64  # records folded into SQLite together
FOLD_BYTES = 1 << 20  # ... or fewer, when they hold this much
LOG_LIMIT = 8 << 20  # a log this long, all folded, starts over

_SCHEMA = """
CREATE TABLE IF NOT EXISTS mailboxes (
    address     TEXT PRIMARY KEY,
    shard       TEXT NOT NULL,    -- the log's identity, which group offsets refer to
    create_time INTEGER NOT NULL,
    ttl         INTEGER NOT NULL, -- seconds; 0 = never expires
    descr       TEXT NOT NULL,
    next_id     INTEGER NOT NULL, -- at least: restore adds the newest stored msg_id + 1
    start_offset INTEGER NOT NULL DEFAULT 0, -- the earliest offset, moved by the retention
    live        INTEGER NOT NULL DEFAULT 1  -- 0: expired, only its log remains
);
CREATE TABLE IF NOT EXISTS messages (
    mailbox     TEXT NOT NULL,
    msg_id      INTEGER NOT NULL,
    priority    TEXT NOT NULL,
    create_time INTEGER NOT NULL,
    key         TEXT,
    tags        TEXT,             -- JSON list; NULL = no tags
    header      BLOB,             -- the SEND's NATS header block; NULL = none
    expire_at   INTEGER NOT NULL, -- message TTL in whole seconds; 0 = never
    payload     BLOB NOT NULL,
    crc         INTEGER NOT NULL DEFAULT 0, -- _checksum of the row
    PRIMARY KEY (mailbox, msg_id)
);
CREATE TABLE IF NOT EXISTS delayed (
    id        INTEGER PRIMARY KEY, -- release order among messages due at the same time
    mailbox   TEXT NOT NULL,
    due       INTEGER NOT NULL, -- whole seconds (u64)
    priority  TEXT NOT NULL,
    create_time INTEGER NOT NULL,
    key       TEXT,
    tags      TEXT,
    header    BLOB,
    expire_at INTEGER NOT NULL,
    payload   BLOB NOT NULL,
    crc       INTEGER NOT NULL DEFAULT 0 -- _checksum of the row, with due for the msg_id
);
CREATE TABLE IF NOT EXISTS offsets (
    lane   TEXT NOT NULL,         -- "{group}-{priority}"
    shard  TEXT NOT NULL,
    offset INTEGER NOT NULL,      -- the next msg_id the lane reads
    PRIMARY KEY (lane, shard)
);
CREATE TABLE IF NOT EXISTS agents (
    name        TEXT PRIMARY KEY,  -- rowid order = registration order
    agent_info  TEXT NOT NULL,
    create_time INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS agent_index ( -- the search index: one row per A2A card name
    card_name   TEXT PRIMARY KEY,  -- rowid order = the order rows were written
    name        TEXT NOT NULL,     -- the registration that wrote it (it may be gone since)
    agent_info  TEXT NOT NULL,
    create_time INTEGER NOT NULL
);
"""
# (schema 6) The keyed SENDs answered, each until its window ends (millisecond
# ``until_ms`` since schema 7; second ``until_s`` before), and (schema 8) the party
# it counts against where not the sender it is scoped to (a carrier's caller and share, an
# address): restored counted as before the restart, so a tenant's share holds across it
_SENT_KEYS = """
CREATE TABLE IF NOT EXISTS sent_keys (
    mailbox     TEXT NOT NULL,
    key         TEXT NOT NULL,
    msg_id      INTEGER NOT NULL, -- the first SEND's (-1: delayed)
    fingerprint BLOB NOT NULL,
    until_ms    INTEGER NOT NULL,
    party       TEXT,
    PRIMARY KEY (mailbox, key)
);
"""
# One row: how far this file holds the request log (its generation, the offset folded up to)
_LOG_FOLDED = """
CREATE TABLE IF NOT EXISTS log_folded (generation INTEGER NOT NULL, folded INTEGER NOT NULL);
INSERT INTO log_folded SELECT 0, 0 WHERE NOT EXISTS (SELECT 1 FROM log_folded);
"""
_SET_FOLDED = "UPDATE log_folded SET generation = ?, folded = ?"

# A message's columns, in this order in every row (after mailbox and msg_id, or due if delayed)
_COLUMNS = "priority, create_time, key, tags, header, expire_at, payload"

# The statements a record names by number. The numbers are the request log's format: a number
# is never given to another statement (a changed statement takes a new number).
_SQL: dict[int, str] = {}


def _statement(number: int, sql: str) -> int:
    assert number not in _SQL, number
    _SQL[number] = sql
    return number


# A new log (no row yet) must not take up message rows an interrupted write left under its
# name: they would come back as its messages at the next start
_DROP_STRAY_MESSAGES = _statement(
    1,
    "DELETE FROM messages WHERE mailbox = ?"
    " AND NOT EXISTS (SELECT 1 FROM mailboxes WHERE address = ?)",
)
_PUT_MAILBOX = _statement(
    2,
    "INSERT OR REPLACE INTO mailboxes (address, shard, create_time, ttl, descr, next_id,"
    " start_offset, live) VALUES (?,?,?,?,?,?,?,1)",
)
_EXPIRE_MAILBOX = _statement(3, "UPDATE mailboxes SET live = 0 WHERE address = ?")
_DROP_MAILBOX = _statement(4, "DELETE FROM mailboxes WHERE address = ?")
_DROP_MAILBOX_MESSAGES = _statement(5, "DELETE FROM messages WHERE mailbox = ?")
_PUT_MESSAGE = _statement(
    6,
    f"INSERT OR REPLACE INTO messages (mailbox, msg_id, {_COLUMNS}, crc)"
    " VALUES (?,?,?,?,?,?,?,?,?,?)",
)
_DROP_MESSAGE = _statement(7, "DELETE FROM messages WHERE mailbox = ? AND msg_id = ?")
_SET_NEXT_ID = _statement(8, "UPDATE mailboxes SET next_id = ? WHERE address = ?")
_SET_START = _statement(9, "UPDATE mailboxes SET start_offset = ? WHERE address = ?")
_PUT_DELAYED = _statement(
    10,
    f"INSERT INTO delayed (id, mailbox, due, {_COLUMNS}, crc) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
)
_DROP_DELAYED = _statement(11, "DELETE FROM delayed WHERE id = ?")
_PUT_OFFSET = _statement(12, "INSERT OR REPLACE INTO offsets (lane, shard, offset) VALUES (?,?,?)")
_DROP_OFFSET = _statement(13, "DELETE FROM offsets WHERE lane = ? AND shard = ?")
_PUT_AGENT = _statement(
    14, "INSERT OR REPLACE INTO agents (name, agent_info, create_time) VALUES (?,?,?)"
)
_DROP_AGENT = _statement(15, "DELETE FROM agents WHERE name = ?")
_PUT_INDEX = _statement(
    16,
    "INSERT INTO agent_index (card_name, name, agent_info, create_time) VALUES (?,?,?,?)",
)
_DROP_INDEX = _statement(17, "DELETE FROM agent_index WHERE card_name = ?")
_PUT_SENT_KEY = _statement(
    18,
    "INSERT OR REPLACE INTO sent_keys (mailbox, key, msg_id, fingerprint, until_ms)"
    " VALUES (?,?,?,?,?)",
)
_DROP_SENT_KEYS = _statement(19, "DELETE FROM sent_keys WHERE until_ms <= ?")
# with its party; 18 stays for the records a log written before holds
_PUT_PARTY_KEY = _statement(
    20,
    "INSERT OR REPLACE INTO sent_keys (mailbox, key, msg_id, fingerprint, until_ms, party)"
    " VALUES (?,?,?,?,?,?)",
)
_INT64 = 1 << 63


def data_file(path: str | Path) -> Path:
    """The SQLite file a ``--data PATH`` names: ``mq9-broker.sqlite3`` in a directory (one
    that exists, ends in a separator, or a new path without a suffix), else the file itself."""
    named_dir = str(path).endswith(("/", os.sep))
    path = Path(path)
    if named_dir or path.is_dir() or (not path.exists() and not path.suffix):
        return path / DEFAULT_FILE_NAME
    return path


class SqliteStorage(Storage):
    """The engine's state in one SQLite file (WAL mode) and its request log.

    >>> storage = SqliteStorage("broker.sqlite3")
    >>> engine = BrokerEngine(storage=storage)   # restores what the file and its log hold

    ``fold_every`` and ``log_limit`` (records folded together, the log's length before it starts
    over) are this module's ``FOLD_EVERY`` and ``LOG_LIMIT`` unless a test wants them smaller.
    """

    request_log: ClassVar[type[RequestLog]] = RequestLog  # a test's full disk replaces it

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "normal",
        fold_every: int = FOLD_EVERY,
        log_limit: int = LOG_LIMIT,
    ) -> None:
        path = data_file(path)
        if synchronous.lower() not in ("normal", "full"):
            raise ValueError("synchronous must be 'normal' or 'full'")
        self.path = path
        self.synchronous = synchronous.lower()
        self.fold_every, self.log_limit = fold_every, log_limit
        self.restored = dict.fromkeys(_COUNTS, 0)
        self._ops: list[Change] = []
        self._next_ids_noted: dict[str, int] = {}  # this transaction's next_id UPDATEs
        self._delayed_rows: dict[int, int] = {}  # engine heap seq -> delayed.id
        self._next_delayed_id = 1
        self._unfolded: list[Change] = []  # in the log, not in SQLite yet
        self._unfolded_records = self._unfolded_bytes = 0
        self._fold_at = fold_every  # records; moved on when a fold failed
        self._broken: StorageError | None = None  # the log could not be switched: no writes
        # Read before SQLite opens the file: its recovery drops what follows a damaged frame
        wal_damage = wal_commits_lost(path.with_name(path.name + "-wal"))
        if path.is_file() and path.stat().st_size == 0:
            # SQLite would take it for a new database and the broker would start empty
            raise StorageError(
                f"the data file {path} is empty (0 bytes): a broker never leaves its file "
                "empty, so it was truncated or made by something else; put the data back from "
                "a copy, or delete it to start an empty broker"
            )
        _check_writable(path.parent)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # timeout=0: the file's lock is held for a broker's lifetime, waiting is pointless
            self._db = sqlite3.connect(str(path), timeout=0, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"cannot open the data file {path}: {exc}") from None
        try:
            self._open()
            self._writer = self._db.cursor()  # every write's: no cursor made per statement
            self._generation, folded = self._db.execute(
                "SELECT generation, folded FROM log_folded"
            ).fetchone()
        except sqlite3.Error as exc:
            self._db.close()
            if sqlite_busy(exc):
                raise StorageError(
                    f"the data file {path} is in use by another mq9 dev broker"
                ) from None
            if sqlite_readonly(exc):
                raise StorageError(
                    f"the data file {path} is read-only: make it writable, or pass another --data"
                ) from None
            raise StorageError(f"cannot use {path} as broker data: {exc}") from None
        try:
            self._open_log(folded, wal_damage)
        except (OSError, StorageError) as exc:
            self._db.close()
            if isinstance(exc, StorageError):
                raise
            raise StorageError(f"cannot use the request log beside {path}: {exc}") from None

    def _open(self) -> None:
        db = self._db
        # Exclusive locking before WAL: no shared-memory file, and the lock taken by the first
        # write below is held until close, so a second broker on this file is refused.
        db.execute("PRAGMA locking_mode=EXCLUSIVE")
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise sqlite3.OperationalError(f"cannot switch to WAL mode (got {mode})")
        db.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
        db.execute("BEGIN IMMEDIATE")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = db.execute("SELECT count(*) FROM sqlite_master WHERE type='table'").fetchone()[0]
        if version == 0 and tables == 0:
            # executescript commits first; its own BEGIN makes the schema appear all at once
            db.executescript(
                f"BEGIN IMMEDIATE;{_SCHEMA}{_SENT_KEYS}{_LOG_FOLDED}"
                f"PRAGMA user_version={SCHEMA_VERSION};"
            )
        elif version in (3, 4, 5, 6, 7):
            if version == 3:
                _add_checksums(db)
            if version < 5:
                for statement in _LOG_FOLDED.strip().split(";\n"):
                    db.execute(statement)
            if version == 6:  # the same windows' ends, in milliseconds
                db.execute("ALTER TABLE sent_keys RENAME COLUMN until_s TO until_ms")
                db.execute("UPDATE sent_keys SET until_ms = until_ms * 1000")
            db.execute(_SENT_KEYS)
            columns = {row[1] for row in db.execute("PRAGMA table_info(sent_keys)")}
            if "party" not in columns:  # (schema 8: each key's party, none known before)
                db.execute("ALTER TABLE sent_keys ADD COLUMN party TEXT")
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        elif version in (1, 2):
            raise sqlite3.DatabaseError(
                f"it was written by an older langchain-mq9 (schema version {version}, before "
                "the broker followed RobustMQ's semantics); move it away to start empty"
            )
        elif version != SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"it is not an mq9 dev-broker data file (schema version {version}, "
                f"expected {SCHEMA_VERSION}: a newer langchain-mq9 may have written it)"
            )
        db.commit()

    def _open_log(self, folded: int, wal_damage: int) -> None:
        """Open the request log and take up the records SQLite does not hold yet (``restore``
        folds them); decide whether the log must start over before the broker serves."""
        log_path = self.path.with_name(self.path.name + LOG_SUFFIX)
        with contextlib.suppress(FileNotFoundError):  # a new log never swapped in
            log_path.with_name(log_path.name + ".new").unlink()
        self._log = self.request_log(log_path, sync=self.synchronous == "full")
        generation = self._log.generation
        self._keep_damaged = False
        if generation is not None and generation > self._generation:
            self._log.close(remove=False)
            raise StorageError(
                f"the request log {log_path} is newer than the data file {self.path} (its "
                f"generation {generation}, the file's {self._generation}): the data file was "
                "put back from an older copy without its log? Put both back from the same "
                "copy, or move the log away to start from the data file alone"
            )
        counts = self.restored
        if generation == self._generation and folded > self._log.size:
            self._log_stale = True  # shorter than what was folded of it: nothing left to read
            self._keep_damaged = True
        elif generation == self._generation:
            found = self._log.read(max(folded, HEADER_SIZE), _SQL.__contains__)
            for _, changes in found.records:
                self._unfolded.extend(changes)
                self._unfolded_records += 1
            self._keep_damaged = found.lost > 0
            self._log_stale = found.damaged
            counts["log_lost"] = found.lost
            counts["wal_redone"] = wal_damage  # its folds are still in this log
        else:
            # None: a new data file, or a log that is missing or whose header is unreadable;
            # older: a log folded whole before the file moved on to a new one (nothing to read)
            self._log_stale = True
            self._keep_damaged = generation is None and self._log.size > HEADER_SIZE
            counts["wal_lost"] = wal_damage
            if self._keep_damaged:
                # records of no known generation: they cannot be placed, only kept
                found = self._log.read(HEADER_SIZE, _SQL.__contains__)
                counts["log_lost"] = len(found.records) + found.lost
        self._found = {key: counts[key] for key in ("log_lost", "wal_redone", "wal_lost")}
        if counts["log_lost"]:
            log.error(
                "%s: the request log is damaged: %d acknowledged writes after the damage were "
                "NOT restored (the log is kept as %s)",
                log_path,
                counts["log_lost"],
                set_aside_name(log_path),
            )
        elif generation == self._generation and self._log_stale and not self._keep_damaged:
            log.warning("%s: the newest record is incomplete or damaged (never answered)", log_path)
        if counts["wal_lost"]:
            log.error(
                "%s: the write-ahead log is damaged: %d acknowledged writes after the damage "
                "were NOT restored",
                self.path,
                counts["wal_lost"],
            )
        elif counts["wal_redone"]:
            log.warning(
                "%s: the write-ahead log is damaged: the %d writes after the damage are "
                "restored from the request log",
                self.path,
                counts["wal_redone"],
            )

    # -- writing -----------------------------------------------------------------------------

    def transaction(self) -> SqliteStorage:
        return self

    def __enter__(self) -> SqliteStorage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._next_ids_noted.clear()
        if not self._ops:
            return
        changes, self._ops = self._ops, []
        if self._broken is not None:
            raise self._broken
        try:
            _check_storable(changes)
            body = encode_changes(changes)
            self._log.append(body)
        except (OSError, OverflowError, UnicodeEncodeError) as exc:
            # Not in the log: the engine restores itself from the file and the request fails
            log.error("could not write to %s: %s", self._log.path, exc)
            raise StorageError(
                f"the broker could not save the change, so it did not make it: {exc}"
            ) from None
        self._unfolded.extend(changes)
        self._unfolded_records += 1
        self._unfolded_bytes += len(body)
        if self._unfolded_records >= self._fold_at or self._unfolded_bytes >= FOLD_BYTES:
            self._fold_quietly()

    def _fold_quietly(self) -> None:
        """Fold the log into SQLite; a failure fails no request (the records are in the log):
        it is logged, and the fold tried again ``fold_every`` records later."""
        try:
            self.fold()
        except (sqlite3.Error, OSError, StorageError) as exc:
            self._fold_at = self._unfolded_records + self.fold_every
            log.error(
                "%s: could not fold %d records of the request log into SQLite (they stay in "
                "the log; tried again later): %s",
                self.path,
                self._unfolded_records,
                exc,
            )

    def fold(self) -> None:
        """Write the records not folded yet into SQLite, in one transaction; start a new log
        when this one is long. Raises ``sqlite3.Error``, ``OSError`` or ``StorageError``."""
        if self._unfolded:
            self._write(self._unfolded, self._log.end)
            self._folded()
        if self._log.end >= self.log_limit:
            self._new_log()

    def _folded(self) -> None:
        self._unfolded = []
        self._unfolded_records = self._unfolded_bytes = 0
        self._fold_at = self.fold_every

    def _write(self, changes: list[Change], folded: int, generation: int | None = None) -> None:
        """One transaction: ``changes``, and the log folded up to ``folded`` of ``generation``
        (None: this one). BEGIN and COMMIT as statements: the sqlite3 module's own
        (``with db:``) prepares its BEGIN anew for each transaction."""
        db, writer = self._db, self._writer
        writer.execute("BEGIN")
        try:
            self._apply(changes, folded, generation)
            self._commit()
        except BaseException:
            if db.in_transaction:  # a failed COMMIT may have rolled back already
                db.rollback()
            raise

    def _apply(self, changes: list[Change], folded: int, generation: int | None = None) -> None:
        execute = self._writer.execute
        for statement, params in changes:
            execute(_SQL[statement], params)
        execute(_SET_FOLDED, (self._generation if generation is None else generation, folded))

    def _commit(self) -> None:
        """Where SQLite writes (a test's full disk makes it fail)."""
        self._writer.execute("COMMIT")

    def _new_log(self) -> None:
        """Start the next generation of the log (everything folded): the data file says so
        first, and a checkpoint puts what was folded into it and syncs it, then the new log
        takes the old one's place. After the file moved on, the log must follow: if it cannot,
        the store takes no more writes (a restart drops the old log, folded whole)."""
        generation = self._generation + 1
        fresh = self._log.start(generation)
        try:
            self._write([], HEADER_SIZE, generation)
        except BaseException:
            with contextlib.suppress(OSError):
                fresh.unlink()
            raise
        self._generation = generation
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:  # it stays in the WAL, safe from all but an OS crash
            log.error("%s: checkpoint before a new request log failed: %s", self.path, exc)
        keep_as = set_aside_name(self._log.path) if self._keep_damaged else None
        try:
            self._log.swap(fresh, generation, keep_old_as=keep_as)
        except OSError as exc:
            self._broken = StorageError(
                f"the broker could not start a new request log beside {self.path} ({exc}): "
                "it takes no more changes until it is restarted"
            )
            raise self._broken from None
        self._keep_damaged = self._log_stale = False

    def _note(self, statement: int, *params: object) -> None:
        """Keep a change for the request's record."""
        self._ops.append((statement, params))

    def mailbox_created(self, mailbox: Mailbox) -> None:
        self._note(_DROP_STRAY_MESSAGES, mailbox.address, mailbox.address)
        self._note(
            _PUT_MAILBOX,
            mailbox.address,
            mailbox.shard,
            mailbox.create_time,
            _signed(mailbox.ttl),
            mailbox.desc,
            mailbox.next_id,
            mailbox.start_offset,
        )

    def mailbox_expired(self, mailbox: Mailbox) -> None:
        self._note(_EXPIRE_MAILBOX, mailbox.address)

    def mailbox_removed(self, mailbox: Mailbox) -> None:
        self._note(_DROP_MAILBOX, mailbox.address)
        self._note(_DROP_MAILBOX_MESSAGES, mailbox.address)

    def message_stored(self, mailbox: Mailbox, message: StoredMessage) -> None:
        self._note(_PUT_MESSAGE, *_row(mailbox.address, message.msg_id, message))
        # No next_id UPDATE here (a third page in every fold's SEND): while the newest
        # message is stored, restore takes next_id from it; message_removed writes next_id
        # before the newest can go

    def message_removed(self, mailbox: Mailbox, msg_id: int) -> None:
        self._note(_DROP_MESSAGE, mailbox.address, msg_id)
        if self._next_ids_noted.get(mailbox.address) != mailbox.next_id:  # once a retention scan
            self._next_ids_noted[mailbox.address] = mailbox.next_id
            self._note(_SET_NEXT_ID, mailbox.next_id, mailbox.address)

    def mailbox_start_moved(self, mailbox: Mailbox) -> None:
        self._note(_SET_START, mailbox.start_offset, mailbox.address)

    def delayed_added(self, seq: int, due: int, address: str, message: StoredMessage) -> None:
        row_id = self._next_delayed_id
        self._next_delayed_id += 1
        self._delayed_rows[seq] = row_id
        self._note(_PUT_DELAYED, row_id, *_row(address, _signed(due), message))

    def delayed_released(self, seq: int) -> None:
        row_id = self._delayed_rows.pop(seq, None)
        if row_id is not None:
            self._note(_DROP_DELAYED, row_id)

    def offset_committed(self, lane: str, shard: str, offset: int) -> None:
        self._note(_PUT_OFFSET, lane, shard, _signed(offset))

    def offset_dropped(self, lane: str, shard: str) -> None:
        self._note(_DROP_OFFSET, lane, shard)

    def agent_saved(self, entry: AgentEntry) -> None:
        self._note(_PUT_AGENT, entry.name, entry.agent_info, entry.create_time)

    def agent_removed(self, entry: AgentEntry) -> None:
        self._note(_DROP_AGENT, entry.name)

    def index_saved(self, entry: AgentEntry) -> None:
        # DELETE first: a replaced row goes to the end of the rowid order, as in the index
        self.index_removed(entry.card_name)
        self._note(_PUT_INDEX, entry.card_name, entry.name, entry.agent_info, entry.create_time)

    def index_removed(self, card_name: str) -> None:
        self._note(_DROP_INDEX, card_name)

    def key_sent(
        self,
        address: str,
        key: str,
        msg_id: int,
        fingerprint: bytes,
        until: int,
        party: str | None = None,
    ) -> None:
        self._note(_PUT_PARTY_KEY, address, key, msg_id, fingerprint, _signed(until), party)

    def keys_expired(self, now: int) -> None:
        self._note(_DROP_SENT_KEYS, _signed(now))

    def close(self) -> None:
        """Fold what is left; the log goes when all of it is in the file (a clean stop leaves
        the data file alone), else it stays for the next start to replay."""
        folded = False
        if self._broken is None:
            try:
                if self._unfolded:
                    self._write(self._unfolded, self._log.end)
                    self._folded()
                folded = not self._log_stale
            except sqlite3.Error as exc:
                log.error(
                    "%s: the request log stays to be replayed at the next start: %s", self.path, exc
                )
        with contextlib.suppress(sqlite3.Error):
            self._db.close()  # SQLite checkpoints its WAL into the file and syncs it
        self._log.close(remove=folded)

    # -- reading back --------------------------------------------------------------------------

    def restore(self, engine: Restorable) -> None:
        """Fold the records SQLite does not hold yet and read everything back, in one
        transaction: if its commit fails (a full disk), the engine still gets the whole state
        and the records stay in the log, to be folded later."""
        # Also after a failed write: what was noted since the last restore is void
        self.restored = dict.fromkeys(_COUNTS, 0)
        self.restored.update(self._found)
        self._ops.clear()
        self._delayed_rows.clear()
        if self._broken is not None:
            raise self._broken
        db, writer = self._db, self._writer
        try:
            writer.execute("BEGIN")
            if self._unfolded:
                self._apply(self._unfolded, self._log.end)
            self._restore(engine)
        except (sqlite3.Error, ValueError, KeyError, TypeError) as exc:
            if db.in_transaction:
                db.rollback()
            raise StorageError(
                f"cannot restore the broker's state from {self.path}: {type(exc).__name__}: "
                f"{exc} (the file is damaged; move it away to start empty)"
            ) from None
        try:
            self._commit()
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.rollback()
            if self._log_stale:  # the log must start over before the broker writes to it
                raise StorageError(f"cannot write to the data file {self.path}: {exc}") from None
            log.error("%s: could not fold the request log (it stays): %s", self.path, exc)
            return
        self._folded()
        if self._log_stale:
            try:
                self._new_log()
            except (sqlite3.Error, OSError) as exc:
                raise StorageError(
                    f"cannot start the request log beside {self.path}: {exc}"
                ) from None

    def _restore(self, engine: Restorable) -> None:
        db = self._db
        counts = self.restored
        mailboxes: dict[str, Mailbox] = {}
        next_ids: dict[str, int] = {}
        for address, shard, create_time, ttl, desc, next_id, start_offset, live in db.execute(
            "SELECT address, shard, create_time, ttl, descr, next_id, start_offset, live"
            " FROM mailboxes"
        ):
            mailbox = Mailbox(
                address, create_time=create_time, ttl=_unsigned(ttl), desc=desc, shard=shard
            )
            mailbox.start_offset = start_offset
            next_ids[address] = next_id
            mailboxes[address] = mailbox
            engine.add_mailbox(mailbox, live=bool(live))
            counts["mailboxes"] += 1
        orphans: dict[str, int] = {}
        for address, msg_id, *columns, crc in db.execute(
            f"SELECT mailbox, msg_id, {_COLUMNS}, crc FROM messages ORDER BY mailbox, msg_id"
        ):
            owner = mailboxes.get(address)
            if owner is None:  # no mailbox row: the log cannot be placed (nor read)
                orphans[address] = orphans.get(address, 0) + 1
            elif self._intact(crc, address, msg_id, columns, f"message {msg_id}"):
                owner.insert(_message_from(msg_id, columns))
                counts["messages"] += 1
            else:  # not served, but its msg_id was handed out: never again
                owner.next_id = max(owner.next_id, msg_id + 1)
        for address, count in orphans.items():
            log.warning(
                "%s: skipped %d message%s of mailbox %r, which is not stored",
                self.path,
                count,
                "s" if count > 1 else "",
                address,
            )
            counts["skipped"] += count
        for address, next_id in next_ids.items():  # ids of deleted messages stay used
            mailboxes[address].next_id = max(next_id, mailboxes[address].next_id)
        for lane, shard, offset in db.execute("SELECT lane, shard, offset FROM offsets"):
            engine.offsets.setdefault(lane, {})[shard] = _unsigned(offset)
            counts["offsets"] += 1
        self._next_delayed_id = 1
        for row_id, address, due, *columns, crc in db.execute(
            f"SELECT id, mailbox, due, {_COLUMNS}, crc FROM delayed ORDER BY id"
        ):
            self._next_delayed_id = row_id + 1
            if self._intact(crc, address, due, columns, f"delayed message (row {row_id})"):
                seq = engine.hold_delayed(_unsigned(due), address, _message_from(-1, columns))
                self._delayed_rows[seq] = row_id
                counts["delayed"] += 1
        for address, key, msg_id, fingerprint, until, party in db.execute(
            "SELECT mailbox, key, msg_id, fingerprint, until_ms, party FROM sent_keys"
            " ORDER BY until_ms"
        ):
            # counted against its party again (a carrier's caller's share too)
            engine.sent_keys.put(address, key, msg_id, bytes(fingerprint), _unsigned(until), party)
        counts["agents"] += restore_agents(
            engine,
            db.execute("SELECT name, agent_info, create_time FROM agents ORDER BY rowid"),
            db.execute("SELECT name, agent_info, create_time FROM agent_index ORDER BY rowid"),
        )

    def _intact(
        self, crc: int, address: str, number: int, columns: Sequence[Any], what: str
    ) -> bool:
        """Whether a row still holds what was written; a damaged one is logged, not served."""
        if _checksum(address, number, columns) == crc:
            return True
        log.error(
            "%s: %s of mailbox %r is damaged (its checksum does not match): not served",
            self.path,
            what,
            address,
        )
        self.restored["damaged"] += 1
        return False


_COUNTS = (
    "mailboxes", "messages", "delayed", "offsets", "agents", "damaged", "skipped",
    "wal_lost", "wal_redone", "log_lost",
)  # fmt: skip

_ByteOrder = Literal["little", "big"]
_WAL_MAGIC = (0x377F0682, 0x377F0683)  # checksums little-endian, big-endian
_WAL_HEADER, _FRAME_HEADER = 32, 24


def wal_commits_lost(wal: Path) -> int:
    """How many committed transactions the write-ahead log ``wal`` holds that SQLite will not
    replay because a frame before them is damaged.

    SQLite replays a WAL's frames (https://sqlite.org/fileformat2.html#walformat) up to the
    first whose salts or cumulative checksum do not match, and silently drops the rest: after a
    kill -9 those are the newest acknowledged writes. A frame of this log's generation (its
    salts match the header's) that carries a commit mark (a database size) after that point is
    one such transaction. A damaged header drops the whole log. Damage in the newest
    transaction alone is only logged: a kill mid-write, before the answer, looks the same."""
    try:
        data = wal.read_bytes()
    except OSError:
        return 0
    if len(data) < _WAL_HEADER:
        return 0
    magic = int.from_bytes(data[:4], "big")
    if magic not in _WAL_MAGIC:
        return 0  # not a WAL SQLite would read either: nothing it would have replayed
    order: _ByteOrder = "big" if magic & 1 else "little"
    page = int.from_bytes(data[8:12], "big")
    salts = data[16:24]
    sums = _wal_checksum(data[:24], (0, 0), order)
    intact = sums == (int.from_bytes(data[24:28], "big"), int.from_bytes(data[28:32], "big"))
    lost = 0
    frame = _FRAME_HEADER + page
    for at in range(_WAL_HEADER, len(data) - frame + 1, frame):
        head = data[at : at + _FRAME_HEADER]
        ours = head[8:16] == salts  # else an older generation's frame, or damaged salts
        if intact:
            sums = _wal_checksum(head[:8] + data[at + _FRAME_HEADER : at + frame], sums, order)
            stored = (int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big"))
            intact = ours and sums == stored  # SQLite replays up to the first frame failing
        if not intact and ours and int.from_bytes(head[4:8], "big"):
            lost += 1
    if lost == 1:
        log.warning("%s: the newest write in the write-ahead log is incomplete or damaged", wal)
        return 0
    return lost


def _wal_checksum(data: bytes, sums: tuple[int, int], order: _ByteOrder) -> tuple[int, int]:
    s0, s1 = sums
    for i in range(0, len(data), 8):
        s0 = (s0 + int.from_bytes(data[i : i + 4], order) + s1) & 0xFFFFFFFF
        s1 = (s1 + int.from_bytes(data[i + 4 : i + 8], order) + s0) & 0xFFFFFFFF
    return s0, s1


def _check_writable(directory: Path) -> None:
    """Refuse a read-only data directory in those words (SQLite says "disk I/O error"): the
    directory, or the nearest existing one it would be created in."""
    while not directory.exists() and directory != directory.parent:
        directory = directory.parent
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            return  # not about permissions: opening the file reports it
        raise StorageError(
            f"the data directory {directory} is read-only ({exc.strerror}): the broker writes "
            "its file and a write-ahead log there; make it writable, or pass another --data"
        ) from None


def _add_checksums(db: sqlite3.Connection) -> None:
    """Version 3 to 4, inside the caller's transaction: a checksum for every row held."""
    for table, number in (("messages", "msg_id"), ("delayed", "due")):
        db.execute(f"ALTER TABLE {table} ADD COLUMN crc INTEGER NOT NULL DEFAULT 0")
        rows = db.execute(f"SELECT rowid, mailbox, {number}, {_COLUMNS} FROM {table}").fetchall()
        db.executemany(
            f"UPDATE {table} SET crc = ? WHERE rowid = ?",
            [(_checksum(address, n, columns), rowid) for rowid, address, n, *columns in rows],
        )


# -- encoding ------------------------------------------------------------------------------------

# The values of those columns, as written
_Columns = tuple[str, int, str | None, str | None, bytes | None, int, bytes]


def _checksum(address: str, number: int, columns: Sequence[Any]) -> int:
    """crc32 of a row as stored: where it belongs (mailbox, msg_id or due) and every column."""
    *fields, payload = columns
    return zlib.crc32(bytes(payload), zlib.crc32(repr((address, number, *fields)).encode()))


def _check_storable(changes: list[Change]) -> None:
    """Refuse, before it is logged, what SQLite could not take when it is folded: an integer
    beyond 64 bits (``OverflowError``), a string that is no UTF-8 (``UnicodeEncodeError``)."""
    for _, params in changes:
        for value in params:
            if type(value) is int:
                if not -_INT64 <= value < _INT64:
                    raise OverflowError(f"{value} does not fit a 64-bit integer")
            elif type(value) is str and not value.isascii():
                value.encode()


def _row(address: str, number: int, message: StoredMessage) -> tuple[object, ...]:
    columns = _message_columns(message)
    return (address, number, *columns, _checksum(address, number, columns))


def _signed(number: int) -> int:
    """A u64 as the SQLite INTEGER with the same 64 bits."""
    return number - 2**64 if number >= 2**63 else number


def _unsigned(number: int) -> int:
    return number + 2**64 if number < 0 else number


def _message_columns(message: StoredMessage) -> _Columns:
    """priority, create_time, key, tags, header, expire_at, payload: as the tables hold them."""
    return (
        message.priority.value,
        message.create_time,
        message.key,
        json.dumps(list(message.tags), ensure_ascii=False) if message.tags else None,
        message.header,
        _signed(message.expire_at),
        message.payload,
    )


def _message_from(msg_id: int, columns: Sequence[Any]) -> StoredMessage:
    priority, create_time, key, tags, header, expire_at, payload = columns
    return StoredMessage(
        msg_id,
        bytes(payload),
        Priority(priority),
        create_time,
        key,
        tuple(json.loads(tags)) if tags else (),
        None if header is None else bytes(header),
        _unsigned(expire_at),
    )
