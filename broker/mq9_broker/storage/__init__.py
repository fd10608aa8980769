"""The engine's storage: one store interface and the stores beside it.

- ``mailbox_store.py``: ``MailboxStore``, the interface the engine (engine/engine.py) runs
  over, and the values it speaks in. Every store implements it; it imports none of them.
- ``jetstream/``: ``ClusterStore``, the state kept in JetStream (``--store jetstream``).
- ``in_process.py``: ``ProcessStore``, the state held in this process (process_state.py, its
  lock and clock; housekeeping.py, expiry, delays and retention on it), which tells each
  change to a ``Storage`` (persistence.py): ``MemoryStorage`` keeps nothing (``memory://``),
  ``SqliteStorage`` (sqlite.py, with its request log, request_log.py) one file (``--data``).
- Helpers: sent_keys.py (the keyed SENDs answered in this process), key_parties.py (whose a
  key is, both stores'), loop_thread.py (NATS asked from synchronous code: the identities'
  bucket).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_names

if TYPE_CHECKING:
    from .mailbox_store import StorageError
    from .persistence import MemoryStorage, Restorable, Storage
    from .sqlite import (
        DEFAULT_FILE_NAME,
        SCHEMA_VERSION,
        SqliteStorage,
        data_file,
        wal_commits_lost,
    )

# name -> the module of this package that defines it
_LAZY = {
    "Restorable": "persistence",
    "Storage": "persistence",
    "StorageError": "mailbox_store",
    "MemoryStorage": "persistence",
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
