"""The engine's storage: one store interface and the stores beside it.

- ``mailbox_store.py``: ``MailboxStore``, the interface the engine (engine/engine.py) runs
  over, and the values it speaks in. Every store implements it; it imports none of them.
- ``jetstream/``: ``ClusterStore``, the state kept in JetStream (``--store jetstream``).
- ``in_process/``: ``ProcessStore``, the state held in this process, which tells each change
  to a ``Storage`` (in_process/persistence.py): ``MemoryStorage`` keeps nothing
  (``memory://``), ``SqliteStorage`` one file (``--data``).
- Helpers: key_parties.py (whose an idempotency key is, both stores'), loop_thread.py (NATS
  asked from synchronous code: the identities' bucket).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_names

if TYPE_CHECKING:
    from .in_process.persistence import MemoryStorage, Restorable, Storage
    from .in_process.sqlite import (
        DEFAULT_FILE_NAME,
        SCHEMA_VERSION,
        SqliteStorage,
        data_file,
        wal_commits_lost,
    )
    from .mailbox_store import StorageError

# name -> the module of this package that defines it
_LAZY = {
    "Restorable": "in_process.persistence",
    "Storage": "in_process.persistence",
    "StorageError": "mailbox_store",
    "MemoryStorage": "in_process.persistence",
    "DEFAULT_FILE_NAME": "in_process.sqlite",
    "SCHEMA_VERSION": "in_process.sqlite",
    "SqliteStorage": "in_process.sqlite",
    "data_file": "in_process.sqlite",
    "wal_commits_lost": "in_process.sqlite",
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
