"""``ClusterStore``: mailboxes, messages, group positions and agents kept in JetStream, not in
the broker (issue #72; the design is docs/broker.md, "The JetStream store kept in the cluster").

A store of data with a small interface (a mailbox record made, renewed or read; a message
appended, delayed, read by lane, by key or in order, deleted; a group position read and
committed; an agent registered, unregistered, listed); the rules (what each mq9 command
answers) stay the engine's. Everything two brokers could decide differently is decided by
JetStream: a mailbox created twice (a bucket write expecting no earlier one), re-created after
it expired (a write expecting the revision read), a msg_id (the stream's sequence). Any number
of brokers may use one store at once.

What it holds between requests, all of it droppable: mailbox records, each good until the
mailbox expires (a live mailbox never changes), at most ``RECORDS_KEPT``; the groups whose
marker it wrote. Time comes from the caller (``now``, whole seconds); the servers' own clock
writes create_times, removes messages whose TTL ended and writes delayed messages when due.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeGuard

from nats.errors import TimeoutError as NatsTimeout

from ....protocol import PRIORITY_ORDER, Priority
from ...state.mailbox import StoredMessage
from ..base import StorageError
from .batches import Batches
from .copies import COUNT_KEY, BucketCopy
from .mapping import (
    AHEAD,
    ARRIVALS_PREFIX,
    DELETED,
    EXPIRE_AT,
    NO_KEY,
    TAGS,
    Layout,
    decode_record,
    encode_record,
    frame,
    msg_id_of,
    priority_of,
    stamp_second,
    subject_box,
    token,
    unframe,
)
from .numbering import TAGS_MOST, Full, Mark, Numbering, Write, every
from .requests import JetStreamError, Requests, StoredEntry

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient

log = logging.getLogger("langchain_mq9.broker")

RECORDS_KEPT = 65_536  # mailbox records a store keeps (about 200 bytes each)
RETENTION_SECONDS = 7 * 86_400  # RobustMQ's: a mailbox's messages are kept 7 days
DEFAULT_TIMEOUT = 15.0  # a request the cluster does not answer in this long fails
# an opening request safe to send twice is sent again after this long: a stream electing its
# leader (a server just restarted) drops what it gets meanwhile, and answers a later one
TRY_AGAIN = 1.0
_KV_OPERATION = "KV-Operation"  # a bucket's delete or purge marker
# The longest TTL handed to the server (Go's durations end at about 292 years): a longer
# one (a u64 TTL of RobustMQ's) gets none, the broker hiding what it must by its own rule
_LONGEST_TTL = 100 * 365 * 86_400
_BATCH = 1000  # messages a batched read asks for at most (the rest in the next one)
HIGH_MARK_SECONDS = 60.0  # how often a broker writes the next msg_ids it reached into records
_STAGED_WAIT = 5.0  # seconds a wait for delayed messages to number lasts before the next
_LAST_SECOND = 253_402_300_799  # 9999-12-31T23:59:59Z, the last a timestamp here can say
STREAM_NAME_IN_USE = 10058  # JetStream's "stream name already in use" to a STREAM.CREATE
_COUNT_TRIES = 64  # registry writes lost in a row to other brokers' before giving up


@dataclass(frozen=True)
class MailboxRecord:
    """A mailbox as the bucket keeps it. ``log`` names its message log: kept when an expired
    mailbox is created again (RobustMQ takes its log up again, group positions too), new
    when the record was forgotten (its log is empty by then)."""

    name: str
    create_time: int
    ttl: int  # seconds; 0: never expires
    desc: str
    log: str
    revision: int = 0  # the bucket's sequence of this record
    # the msg_id the log's next message takes when the log holds none: written by brokers
    # as their writes go on (the retention may empty a live mailbox's log)
    next_id: int = 0

    @property
    def expires_at(self) -> int | None:
        return self.create_time + self.ttl if self.ttl else None

    def live(self, now: int) -> bool:
        """Not expired at ``now`` (RobustMQ: gone once ``now - create_time >= ttl``)."""
        return self.ttl == 0 or now < self.create_time + self.ttl

    def value(self) -> bytes:
        return encode_record(
            {
                "name": self.name,
                "create_time": self.create_time,
                "ttl": self.ttl,
                "desc": self.desc,
                "log": self.log,
                "next": self.next_id,
            }
        )


@dataclass(frozen=True)
class Position:
    """Where a group reads a mailbox: ``offset`` (the msg_id it reads from; None: never
    committed here), ``seq`` (a stream sequence at or below the first message numbered
    ``offset`` or more: where the read starts) and whether the group committed on any
    mailbox (RobustMQ looks a group up by its name)."""

    offset: int | None
    committed_anywhere: bool
    seq: int = 0


class ClusterStore:
    """Mailboxes, messages, positions and agents in JetStream (``open`` before use)."""

    def __init__(
        self,
        connection: NatsClient,
        *,
        name: str = Layout.name,
        replicas: int = 1,
        timeout: float = DEFAULT_TIMEOUT,
        try_again: float = TRY_AGAIN,
    ) -> None:
        self.layout = Layout(name)
        self.try_again = try_again
        self.replicas = replicas
        self.requests = Requests(connection, timeout=timeout)
        self._numbering = Numbering(self.requests, self.layout)
        # the ACKs' position writes ready in one turn: one atomic batch into the bucket
        self._positions = Batches(self.requests)
        # a registration and the registry's count: one atomic batch into the agents bucket
        self._registry_batches = Batches(self.requests)
        self._background: list[asyncio.Task[None]] = []
        # the registry's buckets as this broker last read them, brought up to date per read
        self._agents = BucketCopy(self.requests, self.layout.agents)
        self._index = BucketCopy(self.requests, self.layout.index)
        self._records: OrderedDict[str, MailboxRecord] = OrderedDict()
        self._marked: set[str] = set()  # groups whose marker this store wrote or read
        self._unreadable: set[int] = set()  # sequences said to be no message (said once)
        self._closing = False
        self._mailbox_bound: int | None = None  # the bucket's bound on records, once set

    # -- opening ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Create the stream and buckets that do not exist yet (an existing one is kept as
        it is), and start reading."""
        await self.requests.start()
        layout = self.layout
        await self._ensure(
            layout.messages,
            {
                "subjects": layout.message_subjects,
                "max_age": RETENTION_SECONDS * 1_000_000_000,
                "allow_direct": True,
                "allow_msg_ttl": True,
                "allow_msg_schedules": True,
                "allow_rollup_hdrs": True,
                "allow_atomic": True,
                "duplicate_window": 120 * 1_000_000_000,
                # every message stored, a delayed one the server wrote too, announced on
                # $mq9.WAKE.<its mailbox's digest>, empty, as a broker announces (the waker,
                # the gateway): whichever broker wrote it, or none
                "republish": {
                    "src": f"{layout.prefix}.m.*.*.*.*",
                    "dest": ARRIVALS_PREFIX + "{{wildcard(1)}}",
                    "headers_only": True,
                },
            },
        )
        for bucket in layout.buckets:
            await self._ensure(
                f"KV_{bucket}",
                {
                    "subjects": [f"$KV.{bucket}.>"],
                    "max_msgs_per_subject": 1,
                    "discard": "new",
                    "allow_direct": True,
                    "allow_rollup_hdrs": True,
                    "deny_delete": True,
                    "allow_msg_ttl": True,
                    "allow_atomic": True,
                },
            )

        await self._ensure_consumer()
        loop = asyncio.get_running_loop()
        self._background = [
            loop.create_task(self._number_staged()),
            loop.create_task(every(HIGH_MARK_SECONDS, self.mark_high)),
        ]

    async def mark_high(self) -> None:
        """Write the next msg_id of each mailbox this store wrote lately into its record."""
        await self._numbering.mark_high(int(time.time()))

    async def _ensure_consumer(self) -> None:
        """The durable consumer every broker of the layout takes delayed messages from."""
        layout = self.layout
        name = f"{layout.name}_STAGED"
        config = {
            "durable_name": name,
            "filter_subject": layout.staged_filter,
            "ack_policy": "explicit",
            "ack_wait": 30 * 1_000_000_000,
            "deliver_policy": "all",
            "max_ack_pending": 1000,
        }
        await self.requests.api(
            f"CONSUMER.CREATE.{layout.messages}.{name}",
            {"stream_name": layout.messages, "config": config},
            again=self.try_again,  # the same config again: JetStream answers it as it was
        )

    async def _number_staged(self) -> None:
        """Number the delayed messages the servers wrote when due into their mailboxes (any
        broker: the consumer hands each to one; one handed again after a broker died is
        written once, by its ``Nats-Msg-Id``)."""
        layout = self.layout
        name = f"{layout.name}_STAGED"
        connection = self.requests.connection
        subscription = await connection.jetstream().pull_subscribe_bind(
            durable=name, stream=layout.messages
        )
        try:
            # (and not closing: a cancel that nats-py's wait_for loses on Python 3.11, as a
            # fetch's answer comes, would leave the loop and the store's close waiting)
            while not connection.is_closed and not self._closing:
                try:
                    messages = await subscription.fetch(64, timeout=_STAGED_WAIT)
                except asyncio.CancelledError:
                    raise
                except NatsTimeout:  # nothing due
                    continue
                except Exception:  # the cluster away a moment: asked again a little later
                    await asyncio.sleep(1.0)
                    continue
                for staged in messages:
                    try:
                        await self._number_one(staged)
                        await staged.ack()
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:  # handed again after ack_wait
                        log.warning("a delayed message is numbered later: %s", exc)
        finally:
            if not connection.is_closed:  # (a store closed on a connection kept open)
                with contextlib.suppress(Exception):
                    await subscription.unsubscribe()

    async def _number_one(self, staged: Any) -> None:
        box, priority = staged.subject.rsplit(".", 2)[1:]
        seq = staged.metadata.sequence.stream
        headers = {
            name: value
            for name, value in (staged.headers or {}).items()
            if name == TAGS  # written without its key and expire_at (RobustMQ)
        }
        headers["Nats-Msg-Id"] = f"staged-{seq}"
        write = Write(
            Priority(priority),
            NO_KEY,
            staged.data,
            headers,
            asyncio.get_running_loop().create_future(),
            staged=seq,
            tags=_distinct(json.loads(headers[TAGS])) if TAGS in headers else (),
        )
        self._numbering.enqueue(box, write)
        await write.future

    async def _ensure(self, stream: str, config: dict[str, Any]) -> None:
        try:
            info = await self.requests.api(f"STREAM.INFO.{stream}", None, again=self.try_again)
        except JetStreamError as exc:
            if exc.code != 404:
                raise
        else:
            await self._catch_up(info["config"], config)
            return
        full = {
            "name": stream,
            "storage": "file",
            "retention": "limits",
            "num_replicas": self.replicas,
            **config,
        }
        try:
            # the same config twice: the second is answered as the first, or "name in use"
            await self.requests.api(f"STREAM.CREATE.{stream}", full, again=self.try_again)
        except JetStreamError as exc:
            if exc.err_code != STREAM_NAME_IN_USE:  # another broker made it meanwhile
                raise

    async def _catch_up(self, existing: dict[str, Any], config: dict[str, Any]) -> None:
        """A stream made before a subject or setting of the layout was (the tag index's
        ``t.>``, the heads' ``h.>``, atomic batches into a bucket) takes it: every broker
        writes it once one does."""
        missing = [subject for subject in config["subjects"] if subject not in existing["subjects"]]
        atomic = config.get("allow_atomic") and not existing.get("allow_atomic")
        if missing or atomic:
            wanted = {**existing, "subjects": [*existing["subjects"], *missing]}
            if atomic:
                wanted["allow_atomic"] = True
            await self.requests.api(f"STREAM.UPDATE.{existing['name']}", wanted)

    async def close(self) -> None:
        self._closing = True
        background, self._background = self._background, []
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await self._numbering.stop()
        await self._positions.stop()
        await self._registry_batches.stop()
        await self.requests.stop()

    # -- mailboxes -------------------------------------------------------------------------

    async def create_mailbox(
        self, name: str, *, ttl: int, desc: str, now: int
    ) -> MailboxRecord | None:
        """Create ``name`` (or take up its expired log again); None when it exists and is
        live. Two brokers creating one name at once: one creates it, the other gets None."""
        layout = self.layout
        subject = layout.kv_subject(layout.mailboxes, token(name))
        record = MailboxRecord(name, now, ttl, desc, uuid.uuid4().hex)
        expected = 0  # no record yet: the write fails if another broker's came first
        for _ in range(8):  # each turn lost to another broker's write reads again
            headers = {"Nats-Expected-Last-Subject-Sequence": str(expected)}
            if ttl:
                # the record outlives the mailbox by the retention: its log is empty once
                # the record goes, so a create after that starts a new log
                _set_ttl(headers, ttl + RETENTION_SECONDS)
            try:
                revision = await self.requests.publish(subject, record.value(), headers)
            except JetStreamError as exc:
                if exc.err_code == MAX_MESSAGES:  # the bucket's bound: a new key refused
                    raise Full(self._mailbox_bound or 0) from exc
                if not exc.wrong_last_sequence:
                    raise
                old = await self._read_record(name)
                if old is not None and old.live(now):
                    self._keep(old)
                    return None
                # expired: its log taken up again (or a deleted record's place taken)
                expected = old.revision if old is not None else await self._revision(subject)
                if old is not None:
                    record = MailboxRecord(name, now, ttl, desc, old.log, next_id=old.next_id)
                continue
            made = MailboxRecord(name, now, ttl, desc, record.log, revision, record.next_id)
            self._keep(made)
            return made
        raise StorageError(f"mailbox {name!r}: created and expired by others 8 times in a row")

    async def bound_mailboxes(self, limit: int | None) -> None:
        """The mailboxes bucket holds at most ``limit`` records (None: any number), so the
        servers refuse the create of one more, however many brokers create at once (#77):
        its ``max_msgs`` with ``discard: new`` (a record written again, its key's one message
        replaced, is not refused). Set once by each broker that opens with a bound; brokers
        of one layout are given one bound (the last set holds)."""
        stream = f"STREAM.INFO.KV_{self.layout.mailboxes}"
        info = await self.requests.api(stream, None, again=self.try_again)
        config = info["config"]
        wanted = -1 if limit is None else limit
        if int(config.get("max_msgs", -1)) != wanted:
            config["max_msgs"] = wanted
            await self.requests.api(f"STREAM.UPDATE.KV_{self.layout.mailboxes}", config)
        self._mailbox_bound = limit

    async def mailbox_count(self) -> int:
        """How many mailbox records the bucket holds: the live mailboxes and the expired
        ones whose log is still kept (``--max-mailboxes`` counts both here)."""
        mailboxes = f"STREAM.INFO.KV_{self.layout.mailboxes}"
        info = await self.requests.api(mailboxes, None, again=self.try_again)
        return int(info.get("state", {}).get("messages", 0))

    async def _revision(self, subject: str) -> int:
        entry = await self.requests.leader_get(
            f"KV_{self.layout.mailboxes}", last_by_subject=subject
        )
        return 0 if entry is None else entry.seq

    async def mailbox(self, name: str, *, now: int) -> MailboxRecord | None:
        """``name``'s record, live or expired (its log still readable); None when none is
        kept. A record kept here serves until the mailbox expires."""
        record = self._records.get(name)
        if record is not None and record.live(now):
            self._records.move_to_end(name)
            return record
        record = await self._read_record(name)
        if record is not None:
            self._keep(record)
        return record

    async def _read_record(self, name: str) -> MailboxRecord | None:
        layout = self.layout
        entry = await self.requests.leader_get(
            f"KV_{layout.mailboxes}",
            last_by_subject=layout.kv_subject(layout.mailboxes, token(name)),
        )
        if entry is None or entry.headers.get(_KV_OPERATION) in ("DEL", "PURGE"):
            return None
        value = decode_record(entry.data)
        if value.get("name") != name:  # two names, one digest: never seen, never served
            raise StorageError(f"mailbox {name!r} shares its digest with {value.get('name')!r}")
        return MailboxRecord(
            name,
            int(value["create_time"]),
            int(value["ttl"]),
            str(value.get("desc", "")),
            str(value["log"]),
            entry.seq,
            int(value.get("next", 0)),
        )

    def _keep(self, record: MailboxRecord) -> None:
        self._records[record.name] = record
        self._records.move_to_end(record.name)
        while len(self._records) > RECORDS_KEPT:
            self._records.popitem(last=False)

    def forget(self) -> None:
        """Drop what this store holds (it reads it again as needed)."""
        self._records.clear()
        self._numbering.last.clear()
        self._numbering.seqs.clear()
        self._agents.forget()
        self._index.forget()
        self._marked.clear()
        self._unreadable.clear()

    # -- messages --------------------------------------------------------------------------

    async def append(
        self, mailbox: str, message: StoredMessage, *, now: int, room: int | None = None
    ) -> int:
        """Store ``message`` in ``mailbox``'s log with the mailbox's next msg_id (RobustMQ's
        numbering: from 0, one after another, never given twice); that msg_id. A key
        replaces the key's older message, of any priority. ``room``: the most messages the
        log may hold before it (``Full`` when it does, decided in the write's own step).

        The SENDs a broker holds for one mailbox go as one atomic batch, the first expecting
        the mailbox's last sequence: one round trip for all of them, and when another broker
        wrote first, JetStream refuses the whole batch and it is numbered again."""
        tags = _indexable(message)
        headers: dict[str, str] = {}
        if message.tags:
            headers[TAGS] = json.dumps(message.tags)
        if message.expire_at:
            # (no Nats-TTL: only the retention removes, oldest first, so a mailbox's newest
            # message is the last to go and its msg_id is the next one's base; the broker
            # hides a message from its expire_at second)
            headers[EXPIRE_AT] = str(message.expire_at)
        box = token(mailbox)
        write = Write(
            message.priority,
            NO_KEY if message.key is None else token(message.key),
            frame(message.header, message.payload),
            headers,
            asyncio.get_running_loop().create_future(),
            tags=tags,
            room=room,
        )
        self._numbering.enqueue(box, write)
        message.msg_id = await write.future
        return message.msg_id

    async def hold(self, mailbox: str, message: StoredMessage, *, due: int, now: int) -> None:
        """Have the servers write ``message`` for ``mailbox`` at second ``due``
        (``Nats-Schedule``), unnumbered, where a broker numbers it into the mailbox (its
        msg_id is the next when written, RobustMQ's); one whose TTL ends first is never
        written (RobustMQ)."""
        _indexable(message)  # (checked now: once due, a broker could not write it)
        layout = self.layout
        when = datetime.fromtimestamp(max(due, 0), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        headers = {
            "Nats-Schedule": f"@at {when}",
            "Nats-Schedule-Target": layout.staged_subject(mailbox, message.priority),
            "Nats-Msg-Id": uuid.uuid4().hex,
        }
        if message.tags:
            headers[TAGS] = json.dumps(message.tags)
        if message.expire_at:
            if message.expire_at < max(due, now):
                return  # its TTL ends before it is due: never delivered
            _set_ttl(headers, message.expire_at - now + 1)
        subject = layout.schedule_subject(mailbox, uuid.uuid4().hex)
        await self.requests.publish(subject, frame(message.header, message.payload), headers)

    def _message(self, entry: StoredEntry) -> StoredMessage:
        header, payload = unframe(entry.data)
        tags = entry.headers.get(TAGS)
        return StoredMessage(
            msg_id_of(entry.subject),
            payload,
            priority_of(entry.subject),
            stamp_second(entry.time),
            tags=tuple(json.loads(tags)) if tags else (),
            header=header,
            expire_at=int(entry.headers.get(EXPIRE_AT) or 0),
        )

    def _readable(self, entry: StoredEntry) -> StoredMessage | None:
        """``entry`` as a message; None for a deleted newest message's marker, and (said once
        in the log) for what is not a message (written into the stream by something other
        than a broker): not served, the rest is."""
        if DELETED in entry.headers:
            return None
        try:
            return self._message(entry)
        except (ValueError, KeyError) as exc:
            if entry.seq not in self._unreadable:
                self._unreadable.add(entry.seq)
                log.error("stream message %d (%s) is not served: %s", entry.seq, entry.subject, exc)
            return None

    async def last(self, mailbox: str) -> Mark | None:
        """The mailbox's newest number written (its message deleted or not) and a sequence
        at or below its message and at or above every message of the mailbox, from the
        stream's leader (current): from the head, the one message after the newest of each
        batch; a mailbox with no head (none written since heads, a layout's before) from its
        newest message (a deleted newest one's marker too); None when its log holds none."""
        layout = self.layout
        box = token(mailbox)
        head = await self.requests.leader_get(
            layout.messages, last_by_subject=layout.head_subject(box)
        )
        if head is not None:
            return Mark(int(head.data) - 1, head.seq - 1)
        entry = await self.requests.leader_get(
            layout.messages, last_by_subject=layout.box_filter(box)
        )
        return None if entry is None else Mark(msg_id_of(entry.subject), entry.seq)

    async def last_id(self, mailbox: str) -> int | None:
        """The newest msg_id written into ``mailbox``'s log (RobustMQ's end offset): its
        newest message's, or (none left) the one before the record's next number."""
        mark = await self.last(mailbox)
        if mark is not None:
            return mark.msg_id
        following = await self._numbering.record_next(token(mailbox))
        return following - 1 if following else None

    async def find(self, mailbox: str, msg_id: int) -> Mark | None:
        """Where ``mailbox``'s message ``msg_id`` is (the leader's: current); None when
        it holds none."""
        entry = await self.requests.leader_get(
            self.layout.messages, last_by_subject=self.layout.id_filter(mailbox, msg_id)
        )
        if entry is None or DELETED in entry.headers:
            return None
        return Mark(msg_id, entry.seq)

    async def seq_for(self, mailbox: str, msg_id: int) -> int:
        """A sequence at or below the first of ``mailbox``'s messages numbered ``msg_id`` or
        more (where a read from ``msg_id`` starts): the message's own, as this store wrote
        or read it lately, else the leader's; 0 (the log's start) when it holds none."""
        seq = self._numbering.seqs.get((token(mailbox), msg_id))
        if seq is not None:
            return seq
        found = await self.find(mailbox, msg_id)
        if found is None:
            return 0
        self._numbering.remember(token(mailbox), msg_id, found.seq)
        return found.seq

    async def first(self, mailbox: str, *, at_time: int | None = None) -> Mark | None:
        """The oldest stored message (written at or after ``at_time``, when given)."""
        request: dict[str, Any] = {"next_by_subj": self.layout.mailbox_filter(mailbox), "batch": 1}
        if at_time is None:
            request["seq"] = 1
        elif at_time > _LAST_SECOND:
            return None  # (after year 9999: nothing was written then)
        else:
            request["start_time"] = datetime.fromtimestamp(max(at_time, 0), UTC).isoformat()
        batch = await self.requests.direct_batch(self.layout.messages, request)
        if not batch.entries:
            return None
        entry = batch.entries[0]
        return Mark(msg_id_of(entry.subject), entry.seq)

    async def count(self, mailbox: str) -> int:
        """How many messages ``mailbox``'s log holds."""
        request = {"seq": 1, "next_by_subj": self.layout.mailbox_filter(mailbox), "batch": 1}
        batch = await self.requests.direct_batch(self.layout.messages, request)
        return len(batch.entries) + batch.pending

    async def read_lanes(
        self, mailbox: str, start: Mark, limit: int, *, upto: int, now: int
    ) -> list[list[StoredMessage]]:
        """Each priority's live messages from ``start`` on (msg_ids from ``start.msg_id``,
        read from sequence ``start.seq``), up to ``limit`` a lane, critical first, as of
        sequence ``upto`` (the mailbox's last sequence the leader gave): the three lanes are
        read at once, each from a replica at least that new, and what a newer replica gave
        beyond it is left for the next read, so the lanes show one state."""
        reads = [
            self._read(self.layout.lane_filter(mailbox, priority), start, limit, upto, now)
            for priority in PRIORITY_ORDER
        ]
        return list(await asyncio.gather(*reads))

    async def read(
        self, mailbox: str, start: Mark, limit: int, *, upto: int | None, now: int
    ) -> list[StoredMessage]:
        """Up to ``limit`` live messages of any priority from ``start`` on."""
        return await self._read(self.layout.mailbox_filter(mailbox), start, limit, upto, now)

    async def _read(
        self, subject: str, start: Mark, limit: int, upto: int | None, now: int
    ) -> list[StoredMessage]:
        found: list[StoredMessage] = []
        seq = max(start.seq, 1)
        remember = self._numbering.remember
        while len(found) < limit and (upto is None or seq <= upto):
            request: dict[str, Any] = {"seq": seq, "next_by_subj": subject}
            request["batch"] = min(limit - len(found), _BATCH)
            if upto is not None:
                request["min_last_seq"] = upto
            batch = await self.requests.direct_batch(self.layout.messages, request)
            for entry in batch.entries:
                if upto is not None and entry.seq > upto:
                    return found
                message = self._readable(entry)
                if message is None or message.msg_id < start.msg_id:
                    continue  # (below a position's msg_id: acknowledged)
                remember(subject_box(entry.subject), message.msg_id, entry.seq)
                if not message.expired(now):
                    found.append(message)  # (one whose TTL ended: hidden until it ages out)
            if not batch.entries or batch.pending == 0:
                break
            seq = batch.entries[-1].seq + 1
        return found[:limit]

    async def by_tags(
        self, mailbox: str, tags: list[str], limit: int, *, upto: int, now: int
    ) -> list[list[StoredMessage]]:
        """For each of ``tags``: the live messages carrying it or a tag below it (``X/...``),
        in RobustMQ's order (by the tag they carry, then msg_id), up to ``limit``, as of
        sequence ``upto`` (the mailbox's last sequence the leader gave). Read through the
        index: each tag's entries ∥, then the messages they point at ∥, in that order until
        ``limit`` are found (a message deleted or replaced by its key leaves its entries)."""
        indexes = await asyncio.gather(*(self._index_of(mailbox, tag, upto) for tag in tags))
        read: dict[int, StoredMessage | None] = {}
        answers: list[list[StoredMessage]] = []
        for pointers in indexes:
            found: list[StoredMessage] = []
            at = 0
            while len(found) < limit and at < len(pointers):
                # the next pointers, as many as messages still wanted, read at once
                some = pointers[at : at + limit - len(found)]
                at += len(some)
                wanted = sorted({seq for _, seq in some if seq not in read})
                messages = await asyncio.gather(
                    *(self._message_at(mailbox, seq, upto) for seq in wanted)
                )
                read.update(zip(wanted, messages, strict=True))
                for own, seq in some:
                    message = read[seq]
                    # (the message at that sequence carries the tag: an entry never points
                    # elsewhere, but what is served is checked against what was asked)
                    if message is not None and own in message.tags and not message.expired(now):
                        found.append(message)
            answers.append(found[:limit])
        return answers

    async def _index_of(self, mailbox: str, tag: str, upto: int) -> list[tuple[str, int]]:
        """``tag``'s index entries (its own and those below it) in ``mailbox`` as of ``upto``:
        each one's tag and its message's sequence, by tag then sequence (msg_id order)."""
        subject = self.layout.tag_filter(mailbox, tag)
        pointers: list[tuple[str, int]] = []
        seq = 1
        while seq <= upto:
            request = {"seq": seq, "next_by_subj": subject, "batch": _BATCH, "min_last_seq": upto}
            batch = await self.requests.direct_batch(self.layout.messages, request)
            for entry in batch.entries:
                target = entry.seq + int(entry.headers.get(AHEAD) or 0)
                if target <= upto:  # (one written after: the next QUERY's)
                    pointers.append((entry.data.decode(errors="replace"), target))
            if not batch.entries or batch.pending == 0:
                break
            seq = batch.entries[-1].seq + 1
        pointers.sort()
        return pointers

    async def _message_at(self, mailbox: str, seq: int, upto: int) -> StoredMessage | None:
        """``mailbox``'s message at sequence ``seq``; None when it is gone (or a marker)."""
        request = {
            "seq": seq,
            "next_by_subj": self.layout.mailbox_filter(mailbox),
            "batch": 1,
            "min_last_seq": upto,
        }
        batch = await self.requests.direct_batch(self.layout.messages, request)
        if not batch.entries or batch.entries[0].seq != seq:
            return None
        return self._readable(batch.entries[0])

    async def by_key(self, mailbox: str, key: str, *, now: int) -> StoredMessage | None:
        entry = await self.requests.leader_get(
            self.layout.messages, last_by_subject=self.layout.key_filter(mailbox, key)
        )
        message = None if entry is None else self._readable(entry)
        return None if message is None or message.expired(now) else message

    async def delete(self, mailbox: str, msg_id: int) -> bool:
        """Remove ``mailbox``'s message ``msg_id``; False when it holds none. The mailbox's
        head keeps its next number, so the newest is deleted as any other and its msg_id is
        never given again. A mailbox with no head yet (a layout's before heads) numbers from
        its newest message: that one is replaced by a marker on its subject (a rollup)
        expecting it is still the newest, as that layout did."""
        layout = self.layout
        if msg_id < 0:
            return False
        entry, head = await asyncio.gather(
            self.requests.leader_get(
                layout.messages, last_by_subject=layout.id_filter(mailbox, msg_id)
            ),
            self.requests.leader_get(
                layout.messages, last_by_subject=layout.head_subject(token(mailbox))
            ),
        )
        if entry is None or DELETED in entry.headers:
            return False
        if head is None and await self._marked_newest(mailbox, entry):
            return True
        try:
            await self.requests.api(
                f"STREAM.MSG.DELETE.{layout.messages}", {"seq": entry.seq, "no_erase": True}
            )
        except JetStreamError as exc:
            if exc.code == 404 or exc.err_code == NOT_FOUND_DELETE:
                return False  # deleted meanwhile
            raise
        return True

    async def _marked_newest(self, mailbox: str, entry: StoredEntry) -> bool:
        """``entry`` replaced by a marker when it is the newest of ``mailbox`` (which has no
        head); False when it is not (or no longer)."""
        headers = {
            DELETED: "1",
            "Nats-Rollup": "sub",
            "Nats-Expected-Last-Subject-Sequence": str(entry.seq),
            "Nats-Expected-Last-Subject-Sequence-Subject": self.layout.mailbox_filter(mailbox),
        }
        try:
            await self.requests.publish(entry.subject, b"", headers)
            return True
        except JetStreamError as exc:
            if not exc.wrong_last_sequence:
                raise
        return False

    # -- group positions -------------------------------------------------------------------

    async def position(self, group: str, record: MailboxRecord) -> Position:
        """Where ``group`` reads ``record``'s log, from the bucket's leader (current): an ACK
        answered by any broker is seen."""
        layout = self.layout
        stream = f"KV_{layout.groups}"
        mine, marker = await asyncio.gather(
            self.requests.leader_get(
                stream,
                last_by_subject=layout.kv_subject(
                    layout.groups, layout.position_key(group, record.name)
                ),
            ),
            self.requests.leader_get(
                stream, last_by_subject=layout.kv_subject(layout.groups, layout.marker_key(group))
            ),
        )
        offset, seq = None, 0
        if mine is not None and mine.headers.get(_KV_OPERATION) not in ("DEL", "PURGE"):
            value = decode_record(mine.data)
            if value.get("log") == record.log:  # a position in a log forgotten since: none
                offset, seq = int(value["offset"]), int(value.get("seq", 0))
        anywhere = marker is not None or offset is not None
        if anywhere:
            self._marked.add(group)
        return Position(offset, anywhere, seq)

    async def commit(
        self, group: str, record: MailboxRecord, offset: int, seq: int = 0, room: int | None = None
    ) -> None:
        """``group``'s position in ``record``'s log is ``offset``, its reads starting at
        sequence ``seq`` (at or below the first message numbered ``offset`` or more; 0: the
        log's start); the last ACK wins, as on RobustMQ, whichever broker it reached.
        ``room``: the most groups the log may hold before a new one (``Full`` when it does)."""
        layout = self.layout
        key = layout.kv_subject(layout.groups, layout.position_key(group, record.name))
        value = encode_record({"log": record.log, "offset": offset, "seq": seq})
        if room is not None and await self._counted_group(key, value, record, room):
            await self._mark_once(group)
            return
        if group in self._marked:  # (the steady state: one write, awaited without a task)
            await self._positions.write([(key, value, {})])
            return
        await asyncio.gather(self._positions.write([(key, value, {})]), self._mark(group))
        self._marked.add(group)

    async def _mark_once(self, group: str) -> None:
        if group not in self._marked:
            await self._mark(group)
            self._marked.add(group)

    async def _counted_group(
        self, key: str, value: bytes, record: MailboxRecord, room: int
    ) -> bool:
        """A group new on ``record``'s log: its position written with the log's count of
        groups (``_count.<m>.groups``, ``{log, n}``) in one atomic batch, each expecting its
        last sequence, so no number of brokers adding groups at once passes ``room`` (#77);
        True when written so. False when the group holds a position there already (an
        ordinary commit then)."""
        layout = self.layout
        stream = f"KV_{layout.groups}"
        count_key = layout.kv_subject(layout.groups, f"_count.{token(record.name)}.groups")
        for _ in range(_COUNT_TRIES):
            mine, counted = await asyncio.gather(
                self.requests.leader_get(stream, last_by_subject=key),
                self.requests.leader_get(stream, last_by_subject=count_key),
            )
            if _live(mine) and decode_record(mine.data).get("log") == record.log:
                return False
            held = decode_record(counted.data) if counted is not None else {}
            if held.get("log") == record.log:
                count = int(held.get("n", 0))
            else:  # (none yet, or a log forgotten since: counted from the positions)
                count = await self.groups_on(record)
            if count >= room:
                raise Full(room)
            entries = [
                (key, value, {"Nats-Expected-Last-Subject-Sequence": str(mine.seq if mine else 0)}),
                (
                    count_key,
                    encode_record({"log": record.log, "n": count + 1}),
                    {"Nats-Expected-Last-Subject-Sequence": str(counted.seq if counted else 0)},
                ),
            ]
            try:
                await self._registry_batches.write(entries)
                return True
            except JetStreamError as exc:
                if not exc.wrong_last_sequence:
                    raise
        raise StorageError(f"groups of {record.name!r}: written by others {_COUNT_TRIES} times")

    async def groups_on(self, record: MailboxRecord) -> int:
        """How many groups hold a position in ``record``'s log (``--max-groups``)."""
        layout = self.layout
        batch = await self.requests.direct_batch(
            f"KV_{layout.groups}",
            {"multi_last": [f"$KV.{layout.groups}.*.{token(record.name)}"], "batch": 1 << 20},
        )
        count = 0
        for entry in batch.entries:
            if entry.headers.get(_KV_OPERATION) in ("DEL", "PURGE"):
                continue
            if decode_record(entry.data).get("log") == record.log:
                count += 1
        return count

    async def _mark(self, group: str) -> int:
        layout = self.layout
        subject = layout.kv_subject(layout.groups, layout.marker_key(group))
        try:
            return await self.requests.publish(
                subject, b"", {"Nats-Expected-Last-Subject-Sequence": "0"}
            )
        except JetStreamError as exc:
            if not exc.wrong_last_sequence:
                raise
            return 0  # marked already, by this broker or another

    # -- agents ----------------------------------------------------------------------------

    async def register(
        self, name: str, agent_info: str, create_time: int, *, room: int | None = None
    ) -> bool:
        """Keep the registration unless ``name`` is registered (RobustMQ keeps the first);
        True when kept. ``room``: the most registrations the bucket may hold before it
        (``Full`` when it does). The bucket's count (key ``_count``) is written with the
        registration in one atomic batch expecting the count's last sequence, so no number
        of brokers registering at once passes ``room`` (#77)."""
        layout = self.layout
        subject = layout.kv_subject(layout.agents, token(name))
        value = encode_record({"name": name, "agent_info": agent_info, "create_time": create_time})
        for _ in range(_COUNT_TRIES):  # each turn lost to another broker's write reads again
            entry, (count, count_seq) = await asyncio.gather(
                self.requests.leader_get(f"KV_{layout.agents}", last_by_subject=subject),
                self._agent_count(),
            )
            if entry is not None and entry.headers.get(_KV_OPERATION) not in ("DEL", "PURGE"):
                return False
            if room is not None and count >= room:
                raise Full(room)
            expected = 0 if entry is None else entry.seq  # unregistered: take its place
            if await self._counted(subject, value, {}, expected, count + 1, count_seq):
                return True
        raise StorageError(f"agent {name!r}: the registry written by others {_COUNT_TRIES} times")

    async def unregister(self, name: str) -> bool:
        """Remove the registration ``name``; False when there was none (the count lowered
        with it, in one atomic batch)."""
        layout = self.layout
        subject = layout.kv_subject(layout.agents, token(name))
        purge = {_KV_OPERATION: "PURGE", "Nats-Rollup": "sub"}
        for _ in range(_COUNT_TRIES):
            entry, (count, count_seq) = await asyncio.gather(
                self.requests.leader_get(f"KV_{layout.agents}", last_by_subject=subject),
                self._agent_count(),
            )
            if entry is None or entry.headers.get(_KV_OPERATION) in ("DEL", "PURGE"):
                return False
            following = max(count - 1, 0)
            if await self._counted(subject, b"", purge, entry.seq, following, count_seq):
                return True
        raise StorageError(f"agent {name!r}: the registry written by others {_COUNT_TRIES} times")

    async def _agent_count(self) -> tuple[int, int]:
        """How many registrations the bucket holds (its ``_count``, from the leader) and that
        key's sequence (0: none yet: counted from the bucket, a layout's before the count)."""
        layout = self.layout
        entry = await self.requests.leader_get(
            f"KV_{layout.agents}", last_by_subject=layout.kv_subject(layout.agents, COUNT_KEY)
        )
        if entry is not None:
            return int(entry.data or 0), entry.seq
        return len(await self._agents.rows()), 0

    async def _counted(
        self,
        subject: str,
        value: bytes,
        headers: dict[str, str],
        expected: int,
        count: int,
        count_seq: int,
    ) -> bool:
        """``value`` on ``subject`` (expecting ``expected``) and the registry's count set to
        ``count`` (expecting ``count_seq``), stored together or not at all; False when
        another write came first."""
        layout = self.layout
        entries = [
            (subject, value, {**headers, "Nats-Expected-Last-Subject-Sequence": str(expected)}),
            (
                layout.kv_subject(layout.agents, COUNT_KEY),
                str(count).encode(),
                {"Nats-Expected-Last-Subject-Sequence": str(count_seq)},
            ),
        ]
        try:
            await self._registry_batches.write(entries)
        except JetStreamError as exc:
            if not exc.wrong_last_sequence:
                raise
            return False
        return True

    async def _purge(self, subject: str) -> None:
        await self.requests.publish(subject, b"", {_KV_OPERATION: "PURGE", "Nats-Rollup": "sub"})

    async def agents(self) -> list[tuple[str, str, int]]:
        """Every registration ``(name, agent_info, create_time)``, by name."""
        return sorted(await self._agents.rows())

    async def report(self, name: str, report_info: str, at: int) -> None:
        """Keep ``name``'s last report (the last write wins, whichever broker took it)."""
        layout = self.layout
        value = encode_record({"name": name, "report_info": report_info, "at": at})
        await self.requests.publish(layout.kv_subject(layout.reports, token(name)), value)

    async def last_report(self, name: str) -> tuple[str, int] | None:
        """``name``'s last report and its second; None when it never reported."""
        layout = self.layout
        entry = await self.requests.leader_get(
            f"KV_{layout.reports}", last_by_subject=layout.kv_subject(layout.reports, token(name))
        )
        if entry is None or entry.headers.get(_KV_OPERATION) in ("DEL", "PURGE"):
            return None
        value = decode_record(entry.data)
        return str(value["report_info"]), int(value["at"])

    async def index_put(self, card_name: str, row: tuple[str, str, int]) -> None:
        """The search index's row of ``card_name`` is ``row`` (a registration's ``(name,
        agent_info, create_time)``), replacing any row of that card name (RobustMQ's
        search-engine names a row by the card)."""
        name, agent_info, create_time = row
        layout = self.layout
        value = encode_record({"name": name, "agent_info": agent_info, "create_time": create_time})
        await self.requests.publish(layout.kv_subject(layout.index, token(card_name)), value)

    async def index_drop(self, card_name: str) -> None:
        layout = self.layout
        await self._purge(layout.kv_subject(layout.index, token(card_name)))

    async def index_rows(self) -> list[tuple[str, str, int]]:
        """The search index's rows, in the order they were written (a replaced row last)."""
        return await self._index.rows()


NOT_FOUND_DELETE = 10057  # JetStream's "no message found" to a delete
MAX_MESSAGES = 10077  # JetStream's "maximum messages exceeded" (a bounded bucket's new key)


def _indexable(message: StoredMessage) -> tuple[str, ...]:
    """``message``'s distinct tags; ``StorageError`` when more than its batch holds (its
    index entries, itself and its mailbox's head are one atomic batch, which the servers
    cap)."""
    tags = _distinct(message.tags)
    if len(tags) > TAGS_MOST:
        raise StorageError(
            f"a message with {len(tags)} distinct tags: this broker's cluster store takes "
            f"at most {TAGS_MOST}"
        )
    return tags


def _distinct(tags: Any) -> tuple[str, ...]:
    """A message's tags, each once (one index entry a tag)."""
    return tuple(dict.fromkeys(str(tag) for tag in tags))


def _live(entry: StoredEntry | None) -> TypeGuard[StoredEntry]:
    """Whether a bucket's ``entry`` holds a value (not none, not a delete or purge)."""
    return entry is not None and entry.headers.get(_KV_OPERATION) not in ("DEL", "PURGE")


def _set_ttl(headers: dict[str, str], seconds: int) -> None:
    """``Nats-TTL`` of ``seconds``, unless longer than the server takes (then none)."""
    if seconds <= _LONGEST_TTL:
        headers["Nats-TTL"] = f"{seconds}s"
