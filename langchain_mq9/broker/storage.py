"""Durable storage for the dev broker: the engine's state in one SQLite file.

The engine stays in-memory logic; storage only *observes* it. At each mutation the engine calls
one of the hooks below (``message_stored``, ``group_changed``, ...), which merely records what to
write; when the engine leaves its lock at the end of a request, ``transaction()`` writes all of
it in one SQLite transaction and commits *before* the reply is sent. So an answered request is
on disk, a request costs one commit however many rows it touched, and a storage failure never
interrupts the engine half-way through a change.

On start, ``restore`` rebuilds the engine from the file: mailboxes (expiry, next msg_id),
messages (priority, key, tags, create_time, TTL expiry), delayed messages not yet due, every
consumer group (floors, acks, leases, batches) and the agent registry (cards, reports, order).

Durability (why WAL with ``synchronous=NORMAL`` by default): a commit appends to the write-ahead
log with write(2) before it returns, so the data is in the kernel's page cache, which killing
the broker process (even ``kill -9``) does not touch; the next open replays the log. Only an OS
crash or power loss can lose the last commits; ``synchronous="full"`` (``--sync full``) fsyncs
every commit to cover that too, at about ten times the cost per write.

The file is opened in SQLite's exclusive locking mode, so a second broker on the same file is
refused instead of corrupting it.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import logging
import os
import sqlite3
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..protocol import PRIORITY_ORDER, Priority
from .mailbox import Group, Mailbox, StoredMessage

if TYPE_CHECKING:
    from .engine import BrokerEngine
    from .registry import AgentEntry

log = logging.getLogger("langchain_mq9.broker")

SCHEMA_VERSION = 1
DEFAULT_FILE_NAME = "mq9-broker.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS mailboxes (
    address    TEXT PRIMARY KEY,
    expires_at REAL,              -- Unix seconds; NULL = never
    next_id    INTEGER NOT NULL   -- msg_ids are never reused, even after the newest is deleted
);
CREATE TABLE IF NOT EXISTS messages (
    mailbox     TEXT NOT NULL,
    msg_id      INTEGER NOT NULL,
    priority    TEXT NOT NULL,
    create_time INTEGER NOT NULL,
    key         TEXT,
    tags        TEXT,             -- JSON list; NULL = no tags
    expires_at  REAL,             -- message TTL; NULL = never
    payload     BLOB NOT NULL,
    PRIMARY KEY (mailbox, msg_id)
);
CREATE INDEX IF NOT EXISTS messages_by_key ON messages (mailbox, key) WHERE key IS NOT NULL;
CREATE TABLE IF NOT EXISTS delayed (
    id       INTEGER PRIMARY KEY, -- release order among messages due at the same time
    mailbox  TEXT NOT NULL,
    due      REAL NOT NULL,
    priority TEXT NOT NULL,
    key      TEXT,
    tags     TEXT,
    ttl      INTEGER,
    payload  BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS delayed_by_mailbox ON delayed (mailbox);
CREATE TABLE IF NOT EXISTS groups (
    mailbox TEXT NOT NULL,
    name    TEXT NOT NULL,
    state   TEXT NOT NULL,        -- JSON: floors, acked, leases, batches
    PRIMARY KEY (mailbox, name)
);
CREATE TABLE IF NOT EXISTS agents (
    seq         INTEGER PRIMARY KEY, -- registration order
    mailbox     TEXT NOT NULL,
    name        TEXT,
    card        TEXT NOT NULL,       -- the card as registered, JSON
    report      TEXT,                -- merged REPORT fields, JSON
    report_time INTEGER
);
CREATE INDEX IF NOT EXISTS agents_by_mailbox ON agents (mailbox);
CREATE INDEX IF NOT EXISTS agents_by_name ON agents (name) WHERE name IS NOT NULL;
"""


class StorageError(Exception):
    """The data file cannot be used (locked by another broker, not a broker file, ...)."""


class Storage:
    """What a ``BrokerEngine`` tells its storage. This base class keeps nothing: in memory only.

    The engine calls every hook with its lock held, inside ``transaction()``.
    """

    _NO_TRANSACTION: AbstractContextManager[Any] = contextlib.nullcontext()

    def restore(self, engine: BrokerEngine) -> None:
        """Load the stored state into a freshly built ``engine``."""

    def transaction(self) -> AbstractContextManager[Any]:
        """Wraps one request's changes; on exit they are durable."""
        return self._NO_TRANSACTION

    def mailbox_created(self, mailbox: Mailbox) -> None: ...

    def mailbox_removed(self, mailbox: Mailbox) -> None: ...

    def message_stored(
        self, mailbox: Mailbox, message: StoredMessage, expires_at: float | None
    ) -> None: ...

    def message_removed(self, mailbox: Mailbox, msg_id: int) -> None: ...

    def delayed_added(self, seq: int, due: float, mailbox: Mailbox, delayed: Any) -> None: ...

    def delayed_released(self, seq: int) -> None: ...

    def group_changed(self, mailbox: Mailbox, name: str) -> None: ...

    def agent_saved(self, entry: AgentEntry) -> None: ...

    def agent_removed(self, entry: AgentEntry) -> None: ...

    def close(self) -> None: ...


class SqliteStorage(Storage):
    """The engine's state in one SQLite file (WAL mode), written once per request.

    >>> storage = SqliteStorage("broker.sqlite3")
    >>> engine = BrokerEngine(storage=storage)   # restores what the file holds
    """

    def __init__(self, path: str | Path, *, synchronous: str = "normal") -> None:
        named_dir = str(path).endswith(("/", os.sep))
        path = Path(path)
        if named_dir or path.is_dir():
            path = path / DEFAULT_FILE_NAME
        if synchronous.lower() not in ("normal", "full"):
            raise ValueError("synchronous must be 'normal' or 'full'")
        self.path = path
        self.synchronous = synchronous.lower()
        self.restored = {"mailboxes": 0, "messages": 0, "delayed": 0, "groups": 0, "agents": 0}
        self._ops: list[tuple[str, tuple]] = []
        self._groups: dict[tuple[int, str], tuple[Mailbox, str]] = {}
        self._delayed_rows: dict[int, int] = {}  # engine heap seq -> delayed.id
        self._next_delayed_id = 1
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # timeout=0: the file's lock is held for a broker's lifetime, waiting is pointless
            self._db = sqlite3.connect(str(path), timeout=0, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"cannot open the data file {path}: {exc}") from None
        try:
            self._open()
        except sqlite3.Error as exc:
            self._db.close()
            if "locked" in str(exc):
                raise StorageError(
                    f"the data file {path} is in use by another mq9 dev broker"
                ) from None
            raise StorageError(f"cannot use {path} as broker data: {exc}") from None

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
            db.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}PRAGMA user_version={SCHEMA_VERSION};")
        elif version != SCHEMA_VERSION:
            db.rollback()
            raise sqlite3.DatabaseError(
                f"it is not an mq9 dev-broker data file (schema version {version}, "
                f"expected {SCHEMA_VERSION})"
            )
        db.commit()
        row = db.execute("SELECT max(id) FROM delayed").fetchone()
        self._next_delayed_id = (row[0] or 0) + 1

    # -- writing -----------------------------------------------------------------------------

    def transaction(self) -> SqliteStorage:
        return self

    def __enter__(self) -> SqliteStorage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self._ops and not self._groups:
            return
        ops, self._ops = self._ops, []
        groups, self._groups = self._groups, {}
        try:
            with self._db:  # one transaction: commit on success, roll back on error
                for sql, params in ops:
                    self._db.execute(sql, params)
                for mailbox, name in groups.values():
                    group = mailbox.groups.get(name)
                    if group is not None:
                        self._db.execute(
                            "INSERT OR REPLACE INTO groups (mailbox, name, state) VALUES (?,?,?)",
                            (mailbox.address, name, _group_to_json(group)),
                        )
        except sqlite3.Error as exc:
            # The engine's memory has the change but the file does not: say so loudly, and let
            # the request fail, so its sender does not take it as durable.
            log.error("could not write to %s: %s", self.path, exc)
            raise StorageError(f"the broker could not save the change: {exc}") from None

    def mailbox_created(self, mailbox: Mailbox) -> None:
        self._ops.append(
            (
                "INSERT OR REPLACE INTO mailboxes (address, expires_at, next_id) VALUES (?,?,?)",
                (mailbox.address, mailbox.expires_at, mailbox.next_id),
            )
        )

    def mailbox_removed(self, mailbox: Mailbox) -> None:
        address = (mailbox.address,)
        for table, column in (
            ("mailboxes", "address"),
            ("messages", "mailbox"),
            ("delayed", "mailbox"),
            ("groups", "mailbox"),
        ):
            self._ops.append((f"DELETE FROM {table} WHERE {column} = ?", address))
        for key in [k for k, (m, _) in self._groups.items() if m is mailbox]:
            del self._groups[key]

    def message_stored(
        self, mailbox: Mailbox, message: StoredMessage, expires_at: float | None
    ) -> None:
        if message.key is not None:  # the mailbox keeps only the newest message with a key
            self._ops.append(
                (
                    "DELETE FROM messages WHERE mailbox = ? AND key = ?",
                    (mailbox.address, message.key),
                )
            )
        self._ops.append(
            (
                "INSERT OR REPLACE INTO messages (mailbox, msg_id, priority, create_time, key,"
                " tags, expires_at, payload) VALUES (?,?,?,?,?,?,?,?)",
                (
                    mailbox.address,
                    message.msg_id,
                    message.priority.value,
                    message.create_time,
                    message.key,
                    _tags_to_json(message.tags),
                    expires_at,
                    message.payload,
                ),
            )
        )
        self._ops.append(
            (
                "UPDATE mailboxes SET next_id = ? WHERE address = ?",
                (mailbox.next_id, mailbox.address),
            )
        )

    def message_removed(self, mailbox: Mailbox, msg_id: int) -> None:
        self._ops.append(
            ("DELETE FROM messages WHERE mailbox = ? AND msg_id = ?", (mailbox.address, msg_id))
        )

    def delayed_added(self, seq: int, due: float, mailbox: Mailbox, delayed: Any) -> None:
        row_id = self._next_delayed_id
        self._next_delayed_id += 1
        self._delayed_rows[seq] = row_id
        self._ops.append(
            (
                "INSERT INTO delayed (id, mailbox, due, priority, key, tags, ttl, payload)"
                " VALUES (?,?,?,?,?,?,?,?)",
                (
                    row_id,
                    mailbox.address,
                    due,
                    delayed.priority.value,
                    delayed.key,
                    _tags_to_json(delayed.tags),
                    delayed.ttl,
                    delayed.payload,
                ),
            )
        )

    def delayed_released(self, seq: int) -> None:
        row_id = self._delayed_rows.pop(seq, None)
        if row_id is not None:
            self._ops.append(("DELETE FROM delayed WHERE id = ?", (row_id,)))

    def group_changed(self, mailbox: Mailbox, name: str) -> None:
        # Written once at the end of the request, however often it changed during it.
        self._groups[(id(mailbox), name)] = (mailbox, name)

    def agent_saved(self, entry: AgentEntry) -> None:
        card = entry.card
        name = card.get("name") if isinstance(card.get("name"), str) else None
        # REGISTER replaces the agents with the same mailbox or name (the registry keeps the
        # replaced entry's position, so this entry's seq is one of theirs or a new one).
        self._ops.append(
            (
                "DELETE FROM agents WHERE (mailbox = ? OR name = ?) AND seq != ?",
                (card["mailbox"], name, entry.seq),
            )
        )
        self._ops.append(
            (
                "INSERT OR REPLACE INTO agents (seq, mailbox, name, card, report, report_time)"
                " VALUES (?,?,?,?,?,?)",
                (
                    entry.seq,
                    card["mailbox"],
                    name,
                    _dumps(card),
                    None if entry.report is None else _dumps(entry.report),
                    entry.report_time,
                ),
            )
        )

    def agent_removed(self, entry: AgentEntry) -> None:
        self._ops.append(("DELETE FROM agents WHERE seq = ?", (entry.seq,)))

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.close()

    # -- reading back --------------------------------------------------------------------------

    def restore(self, engine: BrokerEngine) -> None:
        try:
            self._restore(engine)
        except (sqlite3.Error, ValueError, KeyError, TypeError) as exc:
            raise StorageError(
                f"cannot restore the broker's state from {self.path}: {type(exc).__name__}: "
                f"{exc} (the file is damaged; move it away to start empty)"
            ) from None

    def _restore(self, engine: BrokerEngine) -> None:
        from .engine import _Delayed  # the engine's own record of a delayed SEND

        db = self._db
        counts = self.restored
        mailboxes: dict[str, Mailbox] = {}
        next_ids: dict[str, int] = {}
        for address, expires_at, next_id in db.execute(
            "SELECT address, expires_at, next_id FROM mailboxes"
        ):
            mailbox = Mailbox(address, created_at=0, ttl=0)
            mailbox.expires_at = expires_at
            next_ids[address] = next_id
            mailboxes[address] = engine.mailboxes[address] = mailbox
            if expires_at is not None:
                heapq.heappush(engine._mailbox_expiry, (expires_at, next(engine._seq), mailbox))
            counts["mailboxes"] += 1
        for row in db.execute(
            "SELECT mailbox, msg_id, priority, create_time, key, tags, expires_at, payload"
            " FROM messages ORDER BY mailbox, msg_id"
        ):
            address, msg_id, priority, create_time, key, tags, expires_at, payload = row
            mailbox = mailboxes[address]
            mailbox.insert(
                StoredMessage(
                    msg_id,
                    bytes(payload),
                    Priority(priority),
                    create_time,
                    key,
                    _tags_from_json(tags),
                )
            )
            if expires_at is not None:
                heapq.heappush(
                    engine._message_expiry, (expires_at, next(engine._seq), mailbox, msg_id)
                )
            counts["messages"] += 1
        for address, next_id in next_ids.items():  # ids of deleted messages stay used
            mailboxes[address].next_id = max(next_id, mailboxes[address].next_id)
        for address, name, state in db.execute("SELECT mailbox, name, state FROM groups"):
            mailboxes[address].groups[name] = _group_from_json(state)
            counts["groups"] += 1
        for row in db.execute(
            "SELECT id, mailbox, due, priority, key, tags, ttl, payload FROM delayed ORDER BY id"
        ):
            row_id, address, due, priority, key, tags, ttl, payload = row
            seq = next(engine._seq)
            delayed = _Delayed(bytes(payload), Priority(priority), key, _tags_from_json(tags), ttl)
            heapq.heappush(engine._delayed, (due, seq, mailboxes[address], delayed))
            self._delayed_rows[seq] = row_id
            counts["delayed"] += 1
        self._restore_agents(engine)

    def _restore_agents(self, engine: BrokerEngine) -> None:
        rows = self._db.execute(
            "SELECT seq, card, report, report_time FROM agents ORDER BY seq"
        ).fetchall()
        registry = engine.registry
        renumbered = []
        for old_seq, card, report, report_time in rows:
            card = json.loads(card)
            registry.register(card)
            entry = registry.find(card["mailbox"], None)
            assert entry is not None
            if report is not None:
                entry.report, entry.report_time = json.loads(report), report_time
            if entry.seq != old_seq:
                renumbered.append((entry.seq, old_seq))
        # The registry numbers entries 0, 1, ... in the stored order; rows take the same seq
        # (ascending, so a new seq never collides with a row not yet renumbered).
        if renumbered:
            with self._db:
                self._db.executemany("UPDATE agents SET seq = ? WHERE seq = ?", renumbered)
        self.restored["agents"] = len(rows)


# -- encoding ------------------------------------------------------------------------------------


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _tags_to_json(tags: tuple[str, ...]) -> str | None:
    return _dumps(list(tags)) if tags else None


def _tags_from_json(text: str | None) -> tuple[str, ...]:
    return tuple(json.loads(text)) if text else ()


def _group_to_json(group: Group) -> str:
    # A FETCH's batch is one tuple shared by its messages: store each batch once, with the
    # msg_ids still pointing at it, so the size stays that of the group's in-flight window.
    batches: dict[int, tuple[tuple[int, ...], list[int]]] = {}
    for msg_id, batch in group.batches.items():
        batches.setdefault(id(batch), (batch, []))[1].append(msg_id)
    return _dumps(
        {
            "floors": {priority.value: floor for priority, floor in group.floors.items()},
            "acked": list(group.acked),
            "leases": [[msg_id, until] for msg_id, until in group.leases.items()],
            "batches": [[list(batch), members] for batch, members in batches.values()],
        }
    )


def _group_from_json(text: str) -> Group:
    state = json.loads(text)
    floors = {priority: state["floors"][priority.value] for priority in PRIORITY_ORDER}
    batches: dict[int, tuple[int, ...]] = {}
    for batch, members in state["batches"]:
        shared = tuple(batch)
        for msg_id in members:
            batches[msg_id] = shared
    return Group(
        floors=floors,
        acked=set(state["acked"]),
        leases={msg_id: until for msg_id, until in state["leases"]},
        batches=batches,
    )
