"""The read window moved to the NATS floor with the JetStream requests (issue #92):
``mq9_wire._nats.jetstream.window``. Its names, re-exported for the cluster store's modules."""

from mq9_wire._nats.jetstream.window import (
    BATCH_BYTES,
    FILE_RECORD_MOST,
    ReadWindow,
    batch_bytes,
    batch_share,
    file_record_size,
    json_share,
    largest_entry,
)

__all__ = [
    "BATCH_BYTES",
    "FILE_RECORD_MOST",
    "ReadWindow",
    "batch_bytes",
    "batch_share",
    "file_record_size",
    "json_share",
    "largest_entry",
]
