"""The store of the state held in this process (``memory://``, and ``--data`` on one file):

- store.py: ``ProcessStore``, the ``MailboxStore`` (storage/mailbox_store.py) over that state;
- process_state.py: ``ProcessState``, the state, its lock and its clock; housekeeping.py, what
  falls due on it (mailboxes expired, delayed messages written, RobustMQ's retention);
  sent_keys.py, the keyed SENDs it answered;
- persistence.py: ``Storage``, what the state tells of each change so that it outlives the
  process, and ``MemoryStorage``, which keeps nothing; sqlite.py, ``SqliteStorage``, one SQLite
  file, with its request log (request_log.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...lazy import lazy_names

if TYPE_CHECKING:
    from .store import ProcessStore

# (imported at its first use: the SQLite file's name, read alone, takes no store)
__getattr__, __dir__ = lazy_names(__name__, {"ProcessStore": "store"})

__all__ = ["ProcessStore"]
