"""``MailboxStore``: the one store protocol the mq9 rules run over: each
mailbox's record and message log, the groups' positions, the agent registry and its search
index, every call a coroutine. This module is its one home, and the home of the values it
speaks in: ``MailboxRecord``, ``Mark``, ``Position``, the ``Full`` a bounded write
raises, a keyed SEND's ``Once`` and ``KeyReused``, and ``SendLimits``, what a store takes of a
SEND, which each store declares (``send_limits``) and the engine enforces. Both stores import
it, and it imports neither: the interface owns its types.

Two stores implement it, each held to it by mypy (``_checked`` in jetstream/store.py and in
in_process/store.py): ``ClusterStore`` (storage/jetstream/, the state kept in JetStream) and
``ProcessStore`` (in_process/store.py, the state held in this process, told to a memory or SQLite
``Storage``).

Each decision two requests could make differently at once is the store's, in one step: a
write given a ``room`` raises ``Full`` rather than pass it, a name is created once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from mq9_wire import protocol as p

from ..state.mailbox import StoredMessage

__all__ = [
    "OPEN",
    "RETENTION_SECONDS",
    "AgentRow",
    "Counted",
    "Full",
    "KeyReused",
    "KeyTableFull",
    "Lanes",
    "MailboxRecord",
    "MailboxStore",
    "Mark",
    "Once",
    "Position",
    "SendLimits",
    "StorageError",
    "answered",
]

AgentRow = tuple[str, str, int]  # an agent's name, agent_info and create_time
Lanes = tuple[int, int, int]  # each lane's newest msg_id (critical, urgent, normal; -1: none)

# RobustMQ keeps a mailbox's messages 7 days by create_time, whatever the mailbox TTL (metadata-
# struct storage/shard.rs DEFAULT_RETENTION_SEC): every store keeps them as long, no longer
RETENTION_SECONDS = 7 * 86_400


class StorageError(Exception):
    """The store cannot be used (its file locked by another broker, not a broker file, a
    write that failed, the cluster away, ...)."""


# -- the values a store speaks in ------------------------------------------------------------


@dataclass(frozen=True)
class MailboxRecord:
    """A mailbox as a store keeps it. ``log`` names its message log: kept when an expired
    mailbox is created again (RobustMQ takes its log up again, group positions too), new
    when the record was forgotten (its log is empty by then)."""

    name: str
    create_time: int
    ttl: int  # seconds; 0: never expires
    desc: str
    log: str
    revision: int = 0  # the store's version of this record (the cluster's bucket sequence)
    # the msg_id the log's next message takes when the log holds none: written by brokers
    # as their writes go on (the retention may empty a live mailbox's log)
    next_id: int = 0
    # RobustMQ's earliest offset: 0 until the retention removes the oldest messages (the
    # cluster store's is always 0: a read from 0 finds what a read from there finds)
    start: int = 0

    @property
    def expires_at(self) -> int | None:
        return self.create_time + self.ttl if self.ttl else None

    def live(self, now: int) -> bool:
        """Not expired at ``now`` (RobustMQ: gone once ``now - create_time >= ttl``)."""
        return self.ttl == 0 or now < self.create_time + self.ttl


@dataclass(frozen=True, slots=True)
class Mark:
    """A message's msg_id and its place in the store's log (a stream sequence); a mailbox's
    last mark may also carry each lane's newest msg_id as of it (``lanes``)."""

    msg_id: int
    seq: int
    lanes: Lanes | None = field(default=None, compare=False)


# What a COUNT answers of a mailbox (engine/counting.py): each lane's live messages, the
# newest mark (None: the log holds none), the delayed messages held and the second the soonest
# is due (None: none)
Counted = tuple[dict[str, int], Mark | None, tuple[int, int | None]]


@dataclass(frozen=True)
class Position:
    """Where a group reads a mailbox: ``offset`` (the msg_id it reads from; None: never
    committed here), ``seq`` (a place in the log at or below the first message numbered
    ``offset`` or more: where the read starts) and whether the group committed on any
    mailbox (RobustMQ looks a group up by its name)."""

    offset: int | None
    committed_anywhere: bool
    seq: int = 0


class Full(StorageError):
    """A write refused: its mailbox (or the store's bound) held its ``room`` when it was to
    be written."""

    def __init__(self, room: int) -> None:
        super().__init__(f"the mailbox holds {room} messages")
        self.room = room


@dataclass(slots=True)
class Once:
    """A SEND to be stored once per mailbox and ``key`` within ``window`` seconds.
    ``fingerprint``: what the SEND is (its payload and mq9 headers, engine/sending.py), compared
    with the first's. The store sets ``duplicate`` when it answered from the key (nothing
    stored), and raises ``KeyReused`` when the key's first SEND was another."""

    key: str  # scoped to its sender where the broker vouched for one (sent_keys.scoped_key)
    fingerprint: bytes
    window: int
    # the SEND's millisecond on the broker's clock: a window is exact, not whole seconds
    # from a truncated second; and the keys a store may hold, in all and a sender (None: no
    # bound; the cluster store counts a sender's alone, key_counts.py, its stream's
    # limits bounding the keys in all)
    at_ms: int = 0
    most: int | None = None
    most_each: int | None = None
    duplicate: bool = False
    # whom a new key counts against for ``most_each`` where not its scoped sender: the
    # client an open broker told apart (an address, or a reply inbox); None: its sender
    party: str | None = None


class KeyTableFull(Exception):
    """A keyed SEND with a new key when the store holds as many as its bounds allow
    (``why``: which one): refused, nothing stored. The engine answers it with the wire's
    ``KeysFull`` (mq9_wire.protocol), the error a client sees."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class KeyReused(Exception):
    """A keyed SEND whose key holds another SEND's fingerprint: refused, never answered with
    the other message's msg_id. (No ``StorageError``: nothing failed, nothing is restored.)"""

    def __init__(self, key: str) -> None:
        super().__init__(f"idempotency key {key!r} was used for another SEND")
        self.key = key


def answered(once: Once, msg_id: int, fingerprint: bytes) -> int:
    """The answer to ``once`` from what its key holds (the first SEND's msg_id and
    fingerprint): that msg_id (``once`` marked a duplicate), or ``KeyReused`` when the key
    holds another SEND."""
    if fingerprint != once.fingerprint:
        raise KeyReused(once.key)
    once.duplicate = True
    return msg_id


@dataclass(frozen=True)
class SendLimits:
    """What a store takes of a SEND's tags, key and delay (None: no bound of its own; the
    message's size is bounded anyway, by ``max_payload``, and a delay by the engine's 100
    years). Each store declares its own (``MailboxStore.send_limits``); the engine refuses
    what a store would not take before it asks the store (engine/sending.py)."""

    tags_most: int | None = None  # distinct tags of one message
    # how many fewer tags a keyed SEND written at once may carry (its key takes an entry of
    # the write the tags' own entries are in; a delayed one's key is written apart)
    keyed_tags_fewer: int = 0
    tag_bytes: int | None = None  # one tag's UTF-8 bytes
    tag_parts: int | None = None  # one tag's "/"-separated parts
    key_bytes: int | None = None  # the key's UTF-8 bytes
    delay_most: int | None = None  # a delay's seconds
    delay_most_why: str = ""  # what sets ``delay_most``
    store: str = "store"  # how a refusal names the store
    # the bytes a store writes beside a message's answer bytes (its subject, its own
    # headers) within the servers' limits, and the most a message may take in an answer
    # whatever those limits (a record the servers keep no larger), with what sets it
    entry_room: int = 0
    message_most: int | None = None
    message_most_why: str = ""

    def bound(self, engine_bound: tuple[int, str]) -> tuple[int, str]:
        """The smaller of ``engine_bound`` (the engine's: ``Carried.message_bound``) and this
        store's own, with what sets it."""
        if self.message_most is None or engine_bound[0] <= self.message_most:
            return engine_bound
        return self.message_most, self.message_most_why


# A store that keeps a tag or a key as data (the state held in this process): nothing to
# bound but the message's size
# a store in this process holds any delay; the bundled broker takes RobustMQ's bound on
# one all the same (limits.MAX_DELAY_SECONDS), so what it takes, RobustMQ does too
OPEN = SendLimits(
    delay_most=p.MAX_DELAY_SECONDS,
    delay_most_why="RobustMQ's delay queue holds no later one: the same bound here",
)


# -- the protocol ----------------------------------------------------------------------------


class MailboxStore(Protocol):
    """What an engine reads and writes of a store (``now``: the engine's second)."""

    # True where no call ever waits (the state of this process): the engine reads one call
    # after the other, and answers a command that does not wait in the connection's read loop
    answers_at_once: bool
    # what it takes of a SEND (its own bounds on tags, keys, delays, a message's size)
    send_limits: SendLimits

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
        ``once``: written only if its key is new to the mailbox within its window, in
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

    async def counted(self, mailbox: str, *, now: int) -> Counted:
        """What a COUNT answers, with no walk of the log where the store keeps
        them (engine/counting.py)."""

    async def read_lanes(
        self,
        mailbox: str,
        start: Mark,
        limit: int,
        *,
        upto: Mark,
        now: int,
        lane_starts: Sequence[Mark] | None = None,
    ) -> list[list[StoredMessage]]:
        """Each priority's lane from ``start``, critical first, up to ``limit`` each, as of
        ``upto`` (the mailbox's ``last``); the lanes after those holding ``limit`` in all may
        be left out (a FETCH reads no further). ``lane_starts``: each lane from its own mark
        instead (a group's reader skipping what it has done), every lane read."""

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

    async def report(self, name: str, report_info: str, at: int) -> bool:
        """Keep an agent's latest REPORT while ``name`` is registered; whether kept (a
        name no registration holds keeps nothing, as an UNREGISTER drops its report)."""

    async def index_put(self, card_name: str, row: AgentRow) -> None:
        """Index a card's registration for search."""

    async def index_drop(self, card_name: str) -> None:
        """Drop a card from the search index."""

    async def index_rows(self) -> list[AgentRow]:
        """The search index's registrations, in the order they were written."""

    async def close(self) -> None:
        """Let go of what the store holds open."""
