"""The engine's state in a NATS JetStream stream: the store (store.py), a request's changes as
ops (changes.py), the record format (records.py), snapshots (snapshot.py), reading the stream
back (replay.py) and the serving loop's record writer (writer.py).

No broker runs it since issue #72 (``--store jetstream`` serves the cluster store,
storage/cluster/); kept only until the tests and benches that still import it move, then
removed."""

from __future__ import annotations

from .records import RECORD_VERSION, SNAPSHOT_VERSION, message_op_bound
from .store import (
    DEFAULT_COMMIT_TIMEOUT,
    DEFAULT_SNAPSHOT_BYTES,
    DEFAULT_STREAM,
    SUBJECT_PREFIX,
    JetStreamStorage,
)

__all__ = [
    "DEFAULT_COMMIT_TIMEOUT",
    "DEFAULT_SNAPSHOT_BYTES",
    "DEFAULT_STREAM",
    "RECORD_VERSION",
    "SNAPSHOT_VERSION",
    "SUBJECT_PREFIX",
    "JetStreamStorage",
    "message_op_bound",
]
