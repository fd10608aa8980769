"""The state kept in the NATS cluster, not in the broker (issue #72): ``ClusterStore`` over one
JetStream stream of messages and key-value buckets (store.py), its layout (mapping.py) and
its requests (requests.py). docs/broker.md, "The JetStream store kept in the cluster"."""

from __future__ import annotations

from .mapping import DEFAULT_NAME, Layout, token
from .numbering import Full, Mark
from .store import ClusterStore, MailboxRecord, Position

__all__ = [
    "DEFAULT_NAME",
    "ClusterStore",
    "Full",
    "Layout",
    "MailboxRecord",
    "Mark",
    "Position",
    "token",
]
