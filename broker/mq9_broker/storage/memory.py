"""The store that keeps nothing: the engine's state lives in memory only (``memory://``, and
``mq9-dev-broker`` without ``--data``)."""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager

from mq9_wire.semantic.ranking import AgentEntry

from ..state.mailbox import Mailbox, StoredMessage
from .base import Restorable, Storage


class MemoryStorage(Storage):
    """Every hook does nothing; a restore finds nothing."""

    _NO_TRANSACTION: AbstractContextManager[object] = contextlib.nullcontext()

    def restore(self, engine: Restorable) -> None:
        pass

    def transaction(self) -> AbstractContextManager[object]:
        return self._NO_TRANSACTION

    def mailbox_created(self, mailbox: Mailbox) -> None:
        pass

    def mailbox_expired(self, mailbox: Mailbox) -> None:
        pass

    def mailbox_removed(self, mailbox: Mailbox) -> None:
        pass

    def message_stored(self, mailbox: Mailbox, message: StoredMessage) -> None:
        pass

    def message_removed(self, mailbox: Mailbox, msg_id: int) -> None:
        pass

    def mailbox_start_moved(self, mailbox: Mailbox) -> None:
        pass

    def delayed_added(self, seq: int, due: int, address: str, message: StoredMessage) -> None:
        pass

    def delayed_released(self, seq: int) -> None:
        pass

    def offset_committed(self, lane: str, shard: str, offset: int) -> None:
        pass

    def offset_dropped(self, lane: str, shard: str) -> None:
        pass

    def agent_saved(self, entry: AgentEntry) -> None:
        pass

    def agent_removed(self, entry: AgentEntry) -> None:
        pass

    def index_saved(self, entry: AgentEntry) -> None:
        pass

    def index_removed(self, card_name: str) -> None:
        pass

    def close(self) -> None:
        pass
