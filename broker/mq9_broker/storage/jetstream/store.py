"""``ClusterStore``: mailboxes, messages, group positions and agents kept in JetStream, not in
the broker (the design is docs/broker.md, "The JetStream store kept in the cluster").

A store of data with a small interface (a mailbox record made, renewed or read; a message
appended, delayed, read by lane, by key or in order, deleted; a group position read and
committed; an agent registered, unregistered, listed); the rules (what each mq9 command
answers) stay the engine's. Everything two brokers could decide differently is decided by
JetStream: a mailbox created twice (a bucket write expecting no earlier one), re-created after
it expired (a write expecting the revision read), a msg_id (the stream's sequence). Any number
of brokers may use one store at once.

This class only composes the parts, each keeping one thing: the mailbox records
(records.py), the message log's writes (messages.py), numbering (numbering.py), delayed
messages (staged.py) and reads (reads.py), group positions (positions.py), the registry
(registry.py) and what a COUNT asks (counts.py); what opening makes is opening.py. What they
hold between requests is all droppable (``forget``). Time comes from the caller (``now``, whole
seconds); the servers' own clock writes create_times, removes messages whose TTL ended and
writes delayed messages when due.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..mailbox_store import (
    Counted,
    MailboxRecord,
    MailboxStore,
    Mark,
    Once,
    Position,
    SendLimits,
)
from .counts import Counts
from .key_counts import KeyCounts
from .mapping import RETENTION_SECONDS, Layout
from .messages import Messages
from .numbering import TAGS_MOST, Numbering, every
from .opening import Opening
from .positions import Positions
from .reads import Reads
from .records import Mailboxes
from .registry import Registry
from .requests import StorageRequests
from .staged import Staged
from .window import FILE_RECORD_MOST

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient

    from ...state.mailbox import StoredMessage

__all__ = ["SEND_LIMITS", "ClusterStore"]

DEFAULT_TIMEOUT = 15.0  # a request the cluster does not answer in this long fails
# an opening request safe to send twice is sent again after this long: a stream electing its
# leader (a server just restarted) drops what it gets meanwhile, and answers a later one
TRY_AGAIN = 1.0
HIGH_MARK_SECONDS = 60.0  # how often a broker writes the next msg_ids it reached into records

# What this store takes of a SEND (the engine refuses the rest before asking).
#
# It writes each distinct tag as an index entry in the message's atomic batch (numbering.py:
# 1,000 entries at most, with the message and its mailbox's head; an idempotency key's entry
# too when the SEND is written at once, keyed.py), on a subject of one 33-byte token per
# "/"-separated part (mapping.py): 32 parts make a subject of about 1.1 KB, well inside
# nats-server's 4,096-byte control line with the reply's inbox and the stream's prefix. A tag
# of 1,024 bytes and a key of 4,096 leave room beside them in the headers each message carries.
#
# Its delayed message waits in the stream as a schedule (Nats-Schedule), which the stream's
# retention (max_age, 7 days) removes like any message, a Nats-TTL or not (tried on
# nats-server 2.15): a longer delay would never be delivered. A minute is left for the
# servers' schedule tick (about a second).
#
# nats-server's file store keeps no message larger than a 32 MiB record (window.py),
# whatever the servers' max_payload: a message's subject and the headers the store and an
# atomic batch add (tags aside, which requests.py checks) take less than ENTRY_ROOM beside the
# bytes it takes in an answer, which are at least its data's.
ENTRY_ROOM = 4096
SEND_LIMITS = SendLimits(
    tags_most=TAGS_MOST,
    keyed_tags_fewer=1,
    tag_bytes=1024,
    tag_parts=32,
    key_bytes=4096,
    delay_most=RETENTION_SECONDS - 60,
    delay_most_why=f"its stream keeps a message {RETENTION_SECONDS} s",
    store="cluster store",
    entry_room=ENTRY_ROOM,
    message_most=FILE_RECORD_MOST - ENTRY_ROOM,
    message_most_why=(
        f"nats-server's file store keeps a message of at most {FILE_RECORD_MOST} bytes, "
        f"less {ENTRY_ROOM} for its subject and headers"
    ),
)


class ClusterStore:
    """Mailboxes, messages, positions and agents in JetStream (``open`` before use)."""

    answers_at_once = False  # every call is a request to the servers
    send_limits = SEND_LIMITS

    def __init__(
        self,
        connection: NatsClient,
        *,
        name: str = Layout.name,
        replicas: int = 1,
        timeout: float = DEFAULT_TIMEOUT,
        try_again: float = TRY_AGAIN,
        streams: int | None = None,
    ) -> None:
        self.try_again = try_again
        self.replicas = replicas
        # the count of message streams asked (None: the layout's recorded one, or 1),
        # the layout's own known once opened
        self.streams = streams
        self.requests = StorageRequests(connection, timeout=timeout)
        self._compose(Layout(name, streams or 1))
        self._background: list[asyncio.Task[None]] = []

    def _compose(self, layout: Layout) -> None:
        """The parts, over ``layout`` (again at opening when the recorded count differs)."""
        self.layout, requests, try_again = layout, self.requests, self.try_again
        self._numbering = numbering = Numbering(requests, layout)
        self._mailboxes = Mailboxes(requests, layout, try_again=try_again)
        self._messages = Messages(requests, layout, numbering)
        self._staged = Staged(requests, layout, numbering)
        self._reads = Reads(requests, layout, numbering)
        self._positions = Positions(requests, layout)
        self._registry = Registry(requests, layout)
        self._counts = Counts(requests, layout)
        self._keys = KeyCounts(requests, layout)  # the keys each party holds

    # -- opening ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Create the streams and buckets that do not exist yet (an existing one is kept as
        it is), and start reading. ``StreamCount`` when the layout recorded another count
        of message streams than the one this store was given."""
        await self.requests.start()
        opening = Opening(
            self.requests,
            self.layout.name,
            replicas=self.replicas,
            try_again=self.try_again,
            streams=self.streams,
        )
        layout = await opening.make()
        if layout != self.layout:  # (the count the layout recorded, adopted)
            self._compose(layout)
        self.requests.on_fast_path()  # (its requests' answers in the read loop)
        loop = asyncio.get_running_loop()
        self._background = [
            *(loop.create_task(self._staged.number(index)) for index in range(layout.streams)),
            loop.create_task(every(HIGH_MARK_SECONDS, self.mark_high)),
        ]

    async def mark_high(self) -> None:
        """Write the next msg_id of each mailbox this store wrote lately into its record."""
        await self._numbering.mark_high(int(time.time()))

    async def close(self) -> None:
        self._staged.closing = True
        background, self._background = self._background, []
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await self._numbering.stop()
        await self._positions.stop()
        await self._registry.stop()
        await self.requests.stop()

    def forget(self) -> None:
        """Drop what this store holds (it reads it again as needed)."""
        self._mailboxes.forget()
        self._numbering.forget()
        self._registry.forget()
        self._positions.forget()
        self._reads.forget()

    # -- mailboxes (records.py) ------------------------------------------------------------

    async def create_mailbox(
        self, name: str, *, ttl: int, desc: str, now: int
    ) -> MailboxRecord | None:
        """Create ``name`` (or take up its expired log again); None when it is live."""
        return await self._mailboxes.create(name, ttl=ttl, desc=desc, now=now)

    async def bound_mailboxes(self, limit: int | None) -> None:
        """The mailboxes bucket holds at most ``limit`` records (None: any number)."""
        await self._mailboxes.bound(limit)

    async def mailbox_count(self) -> int:
        """How many mailbox records the bucket holds (live or with a log still kept)."""
        return await self._mailboxes.count()

    async def mailbox(self, name: str, *, now: int) -> MailboxRecord | None:
        """``name``'s record, live or expired; None when none is kept."""
        return await self._mailboxes.get(name, now=now)

    # -- messages (messages.py, staged.py, reads.py) ---------------------------------------

    async def append(
        self,
        mailbox: str,
        message: StoredMessage,
        *,
        now: int,
        room: int | None = None,
        once: Once | None = None,
    ) -> int:
        """Store ``message`` with ``mailbox``'s next msg_id; that msg_id. ``once``: with its
        key's entry, in one atomic batch (keyed.py), its new key counted (key_counts.py)."""
        messages = self._messages
        if once is None:  # (most SENDs: no key to count, no closure on the hot path)
            return await messages.append(mailbox, message, now=now, room=room)
        return await self._keys.counting(
            mailbox, once, lambda: messages.append(mailbox, message, now=now, room=room, once=once)
        )

    async def hold(
        self, mailbox: str, message: StoredMessage, *, due: int, now: int, once: Once | None = None
    ) -> None:
        """Have the servers write ``message`` for ``mailbox`` at second ``due``."""
        staged = self._staged
        await self._keys.counting(
            mailbox, once, lambda: staged.hold(mailbox, message, due=due, now=now, once=once)
        )

    async def last(self, mailbox: str) -> Mark | None:
        """The mailbox's newest number written and a sequence at its end (the leader's)."""
        return await self._messages.last(mailbox)

    async def last_id(self, mailbox: str) -> int | None:
        """The newest msg_id written into ``mailbox``'s log (RobustMQ's end offset)."""
        return await self._messages.last_id(mailbox)

    async def find(self, mailbox: str, msg_id: int) -> Mark | None:
        """Where ``mailbox``'s message ``msg_id`` is; None when it holds none."""
        return await self._messages.find(mailbox, msg_id)

    async def seq_for(self, mailbox: str, msg_id: int) -> int:
        """Where a read of ``mailbox`` from ``msg_id`` starts (0: the log's start)."""
        return await self._messages.seq_for(mailbox, msg_id)

    async def delete(self, mailbox: str, msg_id: int) -> bool:
        """Remove ``mailbox``'s message ``msg_id``; False when it holds none."""
        return await self._messages.delete(mailbox, msg_id)

    async def first(self, mailbox: str, *, at_time: int | None = None) -> Mark | None:
        """The oldest stored message (written at or after ``at_time``, when given)."""
        return await self._reads.first(mailbox, at_time=at_time)

    async def count(self, mailbox: str) -> int:
        """How many messages ``mailbox``'s log holds."""
        return await self._reads.count(mailbox)

    async def lane_counts(self, mailbox: str, *, now: int) -> dict[str, int]:
        """How many messages each priority's lane of ``mailbox`` holds, as the stream
        holds them (a message past its TTL until it is removed), counted by the servers
        (counts.py: one asked while one is under way shares the next)."""
        return await self._counts.lanes(mailbox)

    async def scheduled(self, mailbox: str, *, now: int) -> tuple[int, int | None]:
        """How many delayed messages ``mailbox`` holds, not yet written, and the second
        the soonest is due (None: none), counted by the servers (counts.py)."""
        return await self._counts.scheduled(mailbox)

    async def counted(self, mailbox: str, *, now: int) -> Counted:
        """What a COUNT answers: the lanes' counts, the newest mark and the delayed
        messages held, asked of the servers at once."""
        lanes, last, scheduled = await asyncio.gather(
            self.lane_counts(mailbox, now=now),
            self.last(mailbox),
            self.scheduled(mailbox, now=now),
        )
        return lanes, last, scheduled

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
        """Each priority's live messages from ``start`` on (or each lane's own start),
        critical first, as of ``upto``."""
        reads = self._reads
        return await reads.read_lanes(
            mailbox, start, limit, upto=upto, now=now, lane_starts=lane_starts
        )

    async def read(
        self, mailbox: str, start: Mark, limit: int, *, upto: Mark | None, now: int
    ) -> list[StoredMessage]:
        """Up to ``limit`` live messages of any priority from ``start`` on."""
        return await self._reads.read(mailbox, start, limit, upto=upto, now=now)

    async def by_tags(
        self, mailbox: str, tags: list[str], limit: int, *, upto: int, now: int
    ) -> list[list[StoredMessage]]:
        """For each of ``tags``: the live messages carrying it or a tag below it."""
        return await self._reads.by_tags(mailbox, tags, limit, upto=upto, now=now)

    async def by_key(self, mailbox: str, key: str, *, now: int) -> StoredMessage | None:
        return await self._reads.by_key(mailbox, key, now=now)

    # -- group positions (positions.py) ----------------------------------------------------

    async def position(self, group: str, record: MailboxRecord) -> Position:
        """Where ``group`` reads ``record``'s log (the bucket leader's: current)."""
        return await self._positions.position(group, record)

    async def commit(
        self, group: str, record: MailboxRecord, offset: int, seq: int = 0, room: int | None = None
    ) -> None:
        """``group``'s position in ``record``'s log is ``offset`` (reads from ``seq``)."""
        await self._positions.commit(group, record, offset, seq, room)

    async def groups_on(self, record: MailboxRecord) -> int:
        """How many groups hold a position in ``record``'s log (``--max-groups``)."""
        return await self._positions.groups_on(record)

    # -- agents (registry.py) --------------------------------------------------------------

    async def register(
        self, name: str, agent_info: str, create_time: int, *, room: int | None = None
    ) -> bool:
        """Keep the registration unless ``name`` is registered; True when kept."""
        return await self._registry.register(name, agent_info, create_time, room=room)

    async def unregister(self, name: str) -> bool:
        """Remove the registration ``name``; False when there was none."""
        return await self._registry.unregister(name)

    async def agents(self) -> list[tuple[str, str, int]]:
        """Every registration ``(name, agent_info, create_time)``, by name."""
        return await self._registry.agents()

    async def report(self, name: str, report_info: str, at: int) -> bool:
        """Keep ``name``'s last report (the last write wins) while it is registered."""
        return await self._registry.report(name, report_info, at)

    async def last_report(self, name: str) -> tuple[str, int] | None:
        """``name``'s last report and its second; None when it never reported."""
        return await self._registry.last_report(name)

    async def index_put(self, card_name: str, row: tuple[str, str, int]) -> None:
        """The search index's row of ``card_name`` is ``row``."""
        await self._registry.index_put(card_name, row)

    async def index_drop(self, card_name: str) -> None:
        await self._registry.index_drop(card_name)

    async def index_rows(self) -> list[tuple[str, str, int]]:
        """The search index's rows, in the order they were written (a replaced row last)."""
        return await self._registry.index_rows()


def _checked(store: ClusterStore) -> MailboxStore:
    """(never called) mypy holds ``ClusterStore`` to the protocol here, whoever builds one."""
    return store
