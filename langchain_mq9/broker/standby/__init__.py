"""Several brokers on the earlier JetStream-kept state: one serves (it holds the leader lock), the
others stand by.

No broker runs it since issue #72 (``--store jetstream`` serves the cluster store,
storage/cluster/); kept only until the tests and benches that still import it move, then
removed."""

from __future__ import annotations

from .leader import LEASE_ENDED, NOT_SERVING, LeaseEngine, serve_while_leader
from .lock import LOCK_KEY, LeaderLock, lock_bucket

__all__ = [
    "LEASE_ENDED",
    "LOCK_KEY",
    "NOT_SERVING",
    "LeaderLock",
    "LeaseEngine",
    "lock_bucket",
    "serve_while_leader",
]
