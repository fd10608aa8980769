"""The read window moved to the NATS floor with the JetStream requests:
``mq9_wire.nats_floor.jetstream.window``. Its names, re-exported for the cluster store's modules
(``reader``, who a read is for, which the serving layer sets; ``sized``, the most a
read's messages take, which the store says from a mailbox's head; ``SMALL_ROOM`` and
``SMALL_READ``, the small reads' room beside the window)."""

from mq9_wire.nats_floor.jetstream.window import (
    BATCH_BYTES,
    FILE_RECORD_MOST,
    SMALL_READ,
    SMALL_ROOM,
    ReadWindow,
    batch_bytes,
    batch_share,
    file_record_size,
    json_share,
    largest_entry,
    reader,
    sized,
)

__all__ = [
    "BATCH_BYTES",
    "FILE_RECORD_MOST",
    "SMALL_READ",
    "SMALL_ROOM",
    "ReadWindow",
    "batch_bytes",
    "batch_share",
    "file_record_size",
    "json_share",
    "largest_entry",
    "reader",
    "sized",
]
