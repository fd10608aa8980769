"""The engine's storage. One store protocol, ``mailbox_store.MailboxStore``, that the engine
(engine/engine.py) runs over: ``jetstream.ClusterStore`` (the state kept in JetStream) and
``in_process.ProcessStore`` (the state held in this process). Under the state held in this
process, the ``Storage`` it tells of each change (base.py): ``MemoryStorage`` (keeps nothing)
and ``SqliteStorage`` (one SQLite file). base.py tells the two interfaces' story."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_names

if TYPE_CHECKING:
    from .base import Restorable, Storage
    from .mailbox_store import StorageError
    from .memory import MemoryStorage
    from .sqlite import (
        DEFAULT_FILE_NAME,
        SCHEMA_VERSION,
        SqliteStorage,
        data_file,
        wal_commits_lost,
    )

# name -> the module of this package that defines it
_LAZY = {
    "Restorable": "base",
    "Storage": "base",
    "StorageError": "mailbox_store",
    "MemoryStorage": "memory",
    "DEFAULT_FILE_NAME": "sqlite",
    "SCHEMA_VERSION": "sqlite",
    "SqliteStorage": "sqlite",
    "data_file": "sqlite",
    "wal_commits_lost": "sqlite",
}

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


__getattr__, __dir__ = lazy_names(__name__, _LAZY)
