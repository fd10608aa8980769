"""``Storage``: how the state held in this process (a ``ProcessStore``'s, store.py, or a
``BrokerEngine``'s) outlives the process. It is not the store interface: that is
``MailboxStore`` (mailbox_store.py), which the engine runs over; ``Storage`` sits one level
below, under the in-process store only (the JetStream store keeps its state in the servers).

Two implement it: ``MemoryStorage`` (below: keeps nothing, ``memory://``) and
``SqliteStorage`` (sqlite.py: one SQLite file, ``--data``). A ``Storage`` only *observes* that
state: each change calls a hook below, under its owner's lock inside ``transaction()``
(``BrokerEngine``, and ``ProcessStore`` inside each of its calls); what the request changed is
stored before its answer is sent. ``restore`` rebuilds a fresh state from what is stored. The
state never reads a ``Storage`` otherwise, so an implementation is free in how it keeps it.

A store writes a request's changes before ``transaction()`` returns (SQLite: one commit per
request, which waits for it; memory: at once), so no answer promises, or shows, a change that
is not stored. A write that fails raises: the state restores itself from the store then.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import Protocol

from mq9_wire.semantic.ranking import AgentEntry

from ...state.mailbox import Mailbox, StoredMessage
from ...state.registry import AgentRegistry
from .sent_keys import SentKeys


class Restorable(Protocol):
    """What ``restore`` fills: a ``BrokerEngine`` as its storage sees it (named by its shape,
    not imported: the engine imports this module)."""

    offsets: dict[str, dict[str, int]]  # lane group -> shard -> the next msg_id it reads
    registry: AgentRegistry
    sent_keys: SentKeys  # keyed SENDs answered, until their window ends

    def add_mailbox(self, mailbox: Mailbox, *, live: bool = True) -> None: ...

    def hold_delayed(self, due: int, address: str, message: StoredMessage) -> int: ...


def restore_agents(
    engine: Restorable,
    agents: Iterable[tuple[str, str, int]],
    index: Iterable[tuple[str, str, int]],
) -> int:
    """Fill ``engine``'s registry from stored rows ``(name, agent_info, create_time)``: the
    registrations in their order, then the search index in its own (an entry indexed before
    its agent registered again, or unregistered, stays as it was indexed). Returns how many
    registrations; ``ValueError`` when the index holds an entry that is no A2A card."""
    registered = engine.registry.entries
    count = 0
    for name, agent_info, create_time in agents:
        registered[name] = AgentEntry.make(name, agent_info, create_time)
        count += 1
    for name, agent_info, create_time in index:
        entry = registered.get(name)
        if entry is None or (entry.agent_info, entry.create_time) != (agent_info, create_time):
            entry = AgentEntry.make(name, agent_info, create_time)  # unregistered since
        if entry.card is None:
            raise ValueError(f"the search index holds {name!r}, which is no A2A card")
        engine.registry.put_index(entry)
    return count


class Storage(Protocol):
    """What a ``BrokerEngine`` tells its store, under its lock inside ``transaction()``."""

    def restore(self, engine: Restorable) -> None:
        """Load the stored state into a freshly built ``engine`` (also after a failed
        transaction: what was told since the last restore is void)."""

    def transaction(self) -> AbstractContextManager[object]:
        """Wraps one request's changes; on a normal exit they are stored, else it raises
        ``StorageError`` having stored none of them."""

    def message_refused(self, address: str, message: StoredMessage) -> str | None:
        """Why this store could not keep ``message`` for ``address`` (asked before a SEND
        changes anything); None: it can."""
        return None

    def entry_refused(self, entry: AgentEntry) -> str | None:
        """Why this store could not keep the registration ``entry`` (asked before a
        REGISTER changes anything); None: it can."""
        return None

    def mailbox_created(self, mailbox: Mailbox) -> None: ...

    def mailbox_expired(self, mailbox: Mailbox) -> None: ...

    def mailbox_removed(self, mailbox: Mailbox) -> None: ...

    def message_stored(self, mailbox: Mailbox, message: StoredMessage) -> None: ...

    def message_removed(self, mailbox: Mailbox, msg_id: int) -> None: ...

    def mailbox_start_moved(self, mailbox: Mailbox) -> None: ...

    def delayed_added(self, seq: int, due: int, address: str, message: StoredMessage) -> None: ...

    def delayed_released(self, seq: int) -> None: ...

    def offset_committed(self, lane: str, shard: str, offset: int) -> None: ...

    def offset_dropped(self, lane: str, shard: str) -> None: ...

    def agent_saved(self, entry: AgentEntry) -> None: ...

    def agent_removed(self, entry: AgentEntry) -> None: ...

    def index_saved(self, entry: AgentEntry) -> None: ...

    def index_removed(self, card_name: str) -> None: ...

    def key_sent(
        self,
        address: str,
        key: str,
        msg_id: int,
        fingerprint: bytes,
        until: int,
        party: str | None = None,
    ) -> None:
        """A keyed SEND answered: its key kept until millisecond ``until``, counted
        against ``party`` (None: the sender it is scoped to)."""
        return None

    def keys_expired(self, now: int) -> None:
        """The keys whose window ended by second ``now`` are no longer kept."""
        return None

    def close(self) -> None: ...


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
