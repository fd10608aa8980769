"""What a request changed, as the state stream's change ops: the engine's hooks (``Storage``).

Each hook, told under the engine's lock, adds one op (``[kind, ...]``, replay.py applies each
kind) to the request's ``_ops``, and the bytes of a payload or header to its ``_blobs``, the op
naming them as ``[start, end]``; the store takes both on leaving ``transaction()``. A delayed
message gets an id of the stream's own, its engine seq mapped to it until it is released.
"""

from __future__ import annotations

from typing import Any

from ....semantic.ranking import AgentEntry
from ...state.mailbox import Mailbox, StoredMessage
from .records import message_columns


class ChangeNotes:
    """The ``Storage`` hooks as change ops, for the JetStream store."""

    def __init__(self) -> None:
        self._ops: list[list[Any]] = []
        self._blobs = bytearray()
        self._delayed_ids: dict[int, int] = {}  # engine heap seq -> the record's delayed id
        self._held: dict[int, tuple[str, int, StoredMessage]] = {}  # delayed id -> its message
        self._next_delayed_id = 1

    def _note(self, *op: Any) -> None:
        self._ops.append(list(op))

    def _blob(self, data: bytes | None) -> list[int] | None:
        if data is None:
            return None
        start = len(self._blobs)
        self._blobs += data
        return [start, len(self._blobs)]

    def _message(self, message: StoredMessage) -> list[Any]:
        return message_columns(message, self._blob(message.header), self._blob(message.payload))

    def mailbox_created(self, mailbox: Mailbox) -> None:
        self._note(
            "mc",
            mailbox.address,
            mailbox.shard,
            mailbox.create_time,
            mailbox.ttl,
            mailbox.desc,
            mailbox.next_id,
            mailbox.start_offset,
        )

    def mailbox_expired(self, mailbox: Mailbox) -> None:
        self._note("mx", mailbox.address)

    def mailbox_removed(self, mailbox: Mailbox) -> None:
        self._note("mr", mailbox.address)

    def message_stored(self, mailbox: Mailbox, message: StoredMessage) -> None:
        self._note("ms", mailbox.address, mailbox.next_id, message.msg_id, self._message(message))

    def message_removed(self, mailbox: Mailbox, msg_id: int) -> None:
        self._note("md", mailbox.address, msg_id)

    def mailbox_start_moved(self, mailbox: Mailbox) -> None:
        self._note("mo", mailbox.address, mailbox.start_offset)

    def delayed_added(self, seq: int, due: int, address: str, message: StoredMessage) -> None:
        delayed_id = self._next_delayed_id
        self._next_delayed_id += 1
        self._delayed_ids[seq] = delayed_id
        self._held[delayed_id] = (address, due, message)
        self._note("da", delayed_id, address, due, self._message(message))

    def delayed_released(self, seq: int) -> None:
        delayed_id = self._delayed_ids.pop(seq, None)
        if delayed_id is not None:
            self._held.pop(delayed_id, None)
            self._note("dr", delayed_id)

    def offset_committed(self, lane: str, shard: str, offset: int) -> None:
        self._note("oc", lane, shard, offset)

    def offset_dropped(self, lane: str, shard: str) -> None:
        self._note("od", lane, shard)

    def agent_saved(self, entry: AgentEntry) -> None:
        self._note("as", entry.name, entry.agent_info, entry.create_time)

    def agent_removed(self, entry: AgentEntry) -> None:
        self._note("ar", entry.name)

    def index_saved(self, entry: AgentEntry) -> None:
        self._note("is", entry.card_name, entry.name, entry.agent_info, entry.create_time)

    def index_removed(self, card_name: str) -> None:
        self._note("ir", card_name)
