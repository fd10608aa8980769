"""``MailboxStore``: the one store protocol the mq9 rules run over (issue #80): each
mailbox's record and message log, the groups' positions, the agent registry and its search
index, every call a coroutine. This module is its one home, and the home of the values it
speaks in (``MailboxRecord``, ``Mark``, ``Position``, the ``Full`` a bounded write raises):
they are defined beside the JetStream store that first spoke them and re-exported here, the
name every other part imports them by. base.py tells why not there (a circle).

Two stores implement it, each held to it by mypy (``_checked`` here and in in_process.py):
``ClusterStore`` (storage/jetstream/, the state kept in JetStream) and ``ProcessStore``
(in_process.py, the state held in this process, told to a memory or SQLite ``Storage``).

Each decision two requests could make differently at once is the store's, in one step: a
write given a ``room`` raises ``Full`` rather than pass it, a name is created once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from ..state.mailbox import StoredMessage
from .jetstream.keyed import KeyReused, Once
from .jetstream.numbering import Full, Mark
from .jetstream.positions import Position
from .jetstream.records import MailboxRecord

if TYPE_CHECKING:  # memory:// imports this protocol, and none of the cluster store
    from .jetstream import ClusterStore

__all__ = [
    "AgentRow",
    "Full",
    "KeyReused",
    "MailboxRecord",
    "MailboxStore",
    "Mark",
    "Once",
    "Position",
]

AgentRow = tuple[str, str, int]  # an agent's name, agent_info and create_time


class MailboxStore(Protocol):
    """What an engine reads and writes of a store (``now``: the engine's second)."""

    # True where no call ever waits (the state of this process): the engine reads one call
    # after the other, and answers a command that does not wait in the connection's read loop
    answers_at_once: bool

    # -- mailboxes ---------------------------------------------------------------------------

    async def create_mailbox(
        self, name: str, *, ttl: int, desc: str, now: int
    ) -> MailboxRecord | None:
        """The new record; None when ``name`` is live. Raises ``Full`` above the bound."""

    async def bound_mailboxes(self, limit: int | None) -> None:
        """Hold at most ``limit`` mailbox records from now on (None: no bound)."""

    async def mailbox(self, name: str, *, now: int) -> MailboxRecord | None:
        """The record of ``name``, live or expired with its log kept; None: none."""

    # -- a mailbox's log ---------------------------------------------------------------------

    async def append(
        self,
        mailbox: str,
        message: StoredMessage,
        *,
        now: int,
        room: int | None = None,
        once: Once | None = None,
    ) -> int:
        """Write ``message``; its msg_id. Raises ``Full`` when the log holds ``room``.
        ``once`` (#90): written only if its key is new to the mailbox within its window, in
        the same step; else the key's first msg_id (``once.duplicate``), or ``KeyReused``."""

    async def hold(
        self, mailbox: str, message: StoredMessage, *, due: int, now: int, once: Once | None = None
    ) -> None:
        """Keep a delayed message, written to the log (numbered) when ``due``; ``once`` as
        for ``append`` (nothing held again for a key seen)."""

    async def last(self, mailbox: str) -> Mark | None:
        """The newest message's mark; None: the log holds none."""

    async def last_id(self, mailbox: str) -> int | None:
        """The newest msg_id ever written, when the log holds none any more."""

    async def seq_for(self, mailbox: str, msg_id: int) -> int:
        """Where a read past ``msg_id`` starts."""

    async def first(self, mailbox: str, *, at_time: int | None = None) -> Mark | None:
        """The first message (created at or after ``at_time``)."""

    async def count(self, mailbox: str) -> int:
        """How many messages the log holds."""

    async def read_lanes(
        self, mailbox: str, start: Mark, limit: int, *, upto: Mark, now: int
    ) -> list[list[StoredMessage]]:
        """Each priority's lane from ``start``, critical first, up to ``limit`` each, as of
        ``upto`` (the mailbox's ``last``); the lanes after those holding ``limit`` in all may
        be left out (a FETCH reads no further)."""

    async def read(
        self, mailbox: str, start: Mark, limit: int, *, upto: Mark | None, now: int
    ) -> list[StoredMessage]:
        """Up to ``limit`` messages from ``start`` in msg_id order, as of ``upto`` (the
        mailbox's ``last``) when given."""

    async def by_tags(
        self, mailbox: str, tags: list[str], limit: int, *, upto: int, now: int
    ) -> list[list[StoredMessage]]:
        """Each tag's messages (its own or one below it), up to ``limit`` each."""

    async def by_key(self, mailbox: str, key: str, *, now: int) -> StoredMessage | None:
        """The message kept under ``key``."""

    async def delete(self, mailbox: str, msg_id: int) -> bool:
        """Remove one message; whether it was there."""

    # -- consumer groups ---------------------------------------------------------------------

    async def position(self, group: str, record: MailboxRecord) -> Position:
        """Where ``group`` reads ``record``'s log."""

    async def commit(
        self, group: str, record: MailboxRecord, offset: int, seq: int = 0, room: int | None = None
    ) -> None:
        """Move ``group`` to ``offset``; a group new on the log raises ``Full`` at ``room``."""

    # -- the agent registry ------------------------------------------------------------------

    async def register(
        self, name: str, agent_info: str, create_time: int, *, room: int | None = None
    ) -> bool:
        """Keep a registration; False when ``name`` is taken. ``Full`` at ``room`` agents."""

    async def unregister(self, name: str) -> bool:
        """Forget a registration; whether there was one."""

    async def agents(self) -> list[AgentRow]:
        """Every registration."""

    async def report(self, name: str, report_info: str, at: int) -> None:
        """Keep an agent's latest REPORT."""

    async def index_put(self, card_name: str, row: AgentRow) -> None:
        """Index a card's registration for search."""

    async def index_drop(self, card_name: str) -> None:
        """Drop a card from the search index."""

    async def index_rows(self) -> list[AgentRow]:
        """The search index's registrations, in the order they were written."""

    async def close(self) -> None:
        """Let go of what the store holds open."""


def _checked(store: ClusterStore) -> MailboxStore:
    """(never called) mypy holds ``ClusterStore`` to the protocol here, whoever builds one."""
    return store
