"""The state kept in the NATS cluster, not in the broker (issue #72): ``ClusterStore`` over
JetStream streams of messages (one, or several: #81) and key-value buckets (store.py), its
layout (mapping.py) and its requests (requests.py). docs/broker.md, "The JetStream store kept
in the cluster"."""

from __future__ import annotations

from .mapping import DEFAULT_NAME, STREAMS_MOST, Layout, token
from .numbering import Full, Mark
from .opening import StreamCount
from .store import ClusterStore, MailboxRecord, Position

__all__ = [
    "DEFAULT_NAME",
    "STREAMS_MOST",
    "ClusterStore",
    "Full",
    "Layout",
    "MailboxRecord",
    "Mark",
    "Position",
    "StreamCount",
    "token",
]
