"""The cluster store's JetStream requests: the NATS floor's client (``mq9_wire.nats_floor.jetstream
.requests``: one JetStream client for the whole broker), its errors the store's
``StorageError``s, so the engine answers them as any store's failure.

Its names are re-exported here for the store's modules. Each class here is the floor's of the
same name with ``Storage`` before it (``StorageRequests``, ``StorageNoAnswer``, ...): one class
per name, the floor's kept for the floor's other users."""

from __future__ import annotations

from mq9_wire.nats_floor.jetstream import requests as floor
from mq9_wire.nats_floor.jetstream.requests import (
    BATCH_HEADERS,
    ENTRIES_MOST,
    Batch,
    Entry,
    StoredEntry,
    parse_headers,
)

from ..mailbox_store import StorageError

__all__ = [
    "BATCH_HEADERS",
    "ENTRIES_MOST",
    "Batch",
    "Entry",
    "StorageJetStreamError",
    "StorageNoAnswer",
    "StorageRequests",
    "StorageWriteRefused",
    "StoredEntry",
    "parse_headers",
]


class StorageNoAnswer(floor.NoAnswer, StorageError):
    """JetStream did not answer the store in time (or could not be asked)."""


class StorageJetStreamError(floor.JetStreamError, StorageError):
    """A JetStream API error the store got: ``code`` and ``err_code``."""


class StorageWriteRefused(floor.WriteRefused, StorageError):
    """A write the servers could not take, refused by the store before it was sent."""

    WHO = "the cluster store"


class StorageRequests(floor.Requests):
    """The store's JetStream requests on ``connection`` (opened and closed by its owner)."""

    no_answer = StorageNoAnswer
    api_error = StorageJetStreamError
    write_refused = StorageWriteRefused
