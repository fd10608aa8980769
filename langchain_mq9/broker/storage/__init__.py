"""The engine's storage: one interface (``base.Storage``) and the stores behind it, beside
each other: ``MemoryStorage`` (keeps nothing) and ``SqliteStorage`` (one SQLite file). The
state ``--store jetstream`` keeps in the cluster is ``cluster.ClusterStore``'s, under an engine
of its own (``engine/over_store.py``): no Storage, since no broker process holds it."""

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
