"""The state kept in the NATS cluster, not in the broker: ``ClusterStore`` over
JetStream streams of messages (one, or several) and key-value buckets (store.py), its
layout (mapping.py) and its requests (requests.py). docs/broker.md, "The JetStream store kept
in the cluster". The values it speaks in are the store interface's (storage/mailbox_store.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...lazy import lazy_names

if TYPE_CHECKING:
    from .mapping import DEFAULT_NAME, STREAMS_MOST, Layout, token
    from .opening import StreamCount
    from .store import ClusterStore

# name -> the module of this package that defines it
_LAZY = {
    "DEFAULT_NAME": "mapping",
    "STREAMS_MOST": "mapping",
    "Layout": "mapping",
    "token": "mapping",
    "StreamCount": "opening",
    "ClusterStore": "store",
}

__all__ = [
    "DEFAULT_NAME",
    "STREAMS_MOST",
    "ClusterStore",
    "Layout",
    "StreamCount",
    "token",
]


__getattr__, __dir__ = lazy_names(__name__, _LAZY)
