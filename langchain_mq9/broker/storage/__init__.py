"""The engine's storage: one interface (``base.Storage``) and the stores behind it, beside
each other: ``MemoryStorage`` (keeps nothing), ``SqliteStorage`` (one SQLite file) and
``JetStreamStorage`` (the earlier JetStream store, a log of changes in one stream: no broker runs
it since issue #72, whose state is kept in the cluster by ``cluster.ClusterStore`` under its own
engine; kept only until the tests and benches that still import it move, then removed)."""

from __future__ import annotations

from .base import Restorable, Storage, StorageError
from .jetstream import JetStreamStorage
from .memory import MemoryStorage
from .sqlite import DEFAULT_FILE_NAME, SCHEMA_VERSION, SqliteStorage, data_file, wal_commits_lost

__all__ = [
    "DEFAULT_FILE_NAME",
    "SCHEMA_VERSION",
    "JetStreamStorage",
    "MemoryStorage",
    "Restorable",
    "SqliteStorage",
    "Storage",
    "StorageError",
    "data_file",
    "wal_commits_lost",
]
