"""The engine's storage. One store protocol, ``mailbox_store.MailboxStore``, that the engine
(engine/engine.py) runs over: ``jetstream.ClusterStore`` (the state kept in JetStream) and
``in_process.ProcessStore`` (the state held in this process). Under the state held in this
process, the ``Storage`` it tells of each change (base.py): ``MemoryStorage`` (keeps nothing)
and ``SqliteStorage`` (one SQLite file). base.py tells the two interfaces' story."""

from __future__ import annotations

from .base import Restorable, Storage, StorageError
from .memory import MemoryStorage
from .sqlite import DEFAULT_FILE_NAME, SCHEMA_VERSION, SqliteStorage, data_file, wal_commits_lost

__all__ = [
    "DEFAULT_FILE_NAME",
    "SCHEMA_VERSION",
    "MemoryStorage",
    "Restorable",
    "SqliteStorage",
    "Storage",
    "StorageError",
    "data_file",
    "wal_commits_lost",
]
