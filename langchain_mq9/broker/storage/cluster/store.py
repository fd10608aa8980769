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
import json
import logging
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ....protocol import PRIORITY_ORDER
from ...state.mailbox import StoredMessage
from ..base import StorageError
from .mapping import (
    ARRIVALS_PREFIX,
    EXPIRE_AT,
    SCHEDULER,
    TAGS,
    Layout,
    decode_record,
    encode_record,
    frame,
    priority_of,
    stamp_second,
    token,
    unframe,
)
from .requests import JetStreamError, Requests, StoredEntry

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient

log = logging.getLogger("langchain_mq9.broker")

RECORDS_KEPT = 65_536  # mailbox records a store keeps (about 200 bytes each)
RETENTION_SECONDS = 7 * 86_400  # RobustMQ's: a mailbox's messages are kept 7 days
DEFAULT_TIMEOUT = 15.0  # a request the cluster does not answer in this long fails
_TTL_SLACK = 2  # seconds a message outlives its TTL on the server (the broker hides it first)
_KV_OPERATION = "KV-Operation"  # a bucket's delete or purge marker
# The longest TTL handed to the server (Go's durations end at about 292 years): a longer
# one (a u64 TTL of RobustMQ's) gets none, the broker hiding what it must by its own rule
_LONGEST_TTL = 100 * 365 * 86_400
_BATCH = 1000  # messages a batched read asks for at most (the rest in the next one)
STREAM_NAME_IN_USE = 10058  # JetStream's "stream name already in use" to a STREAM.CREATE


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
            }
        )


@dataclass(frozen=True)
class Position:
    """Where a group reads a mailbox: ``offset`` (None: never committed here) and whether
    the group committed on any mailbox (RobustMQ looks a group up by its name)."""

    offset: int | None
    committed_anywhere: bool


class ClusterStore:
    """Mailboxes, messages, positions and agents in JetStream (``open`` before use)."""

    def __init__(
        self,
        connection: NatsClient,
        *,
        name: str = Layout.name,
        replicas: int = 1,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.layout = Layout(name)
        self.replicas = replicas
        self.requests = Requests(connection, timeout=timeout)
        self._records: OrderedDict[str, MailboxRecord] = OrderedDict()
        self._marked: set[str] = set()  # groups whose marker this store wrote or read
        self._unreadable: set[int] = set()  # sequences said to be no message (said once)

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
                "duplicate_window": 120 * 1_000_000_000,
                # every message stored, a delayed one the server wrote too, announced on
                # $mq9.WAKE.<its mailbox's digest>, empty, as a broker announces (the waker,
                # the gateway): whichever broker wrote it, or none
                "republish": {
                    "src": f"{layout.prefix}.m.*.*.*",
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
                },
            )

    async def _ensure(self, stream: str, config: dict[str, Any]) -> None:
        try:
            await self.requests.api(f"STREAM.INFO.{stream}", None)
            return
        except JetStreamError as exc:
            if exc.code != 404:
                raise
        full = {
            "name": stream,
            "storage": "file",
            "retention": "limits",
            "num_replicas": self.replicas,
            **config,
        }
        try:
            await self.requests.api(f"STREAM.CREATE.{stream}", full)
        except JetStreamError as exc:
            if exc.err_code != STREAM_NAME_IN_USE:  # another broker made it meanwhile
                raise

    async def close(self) -> None:
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
                if not exc.wrong_last_sequence:
                    raise
                old = await self._read_record(name)
                if old is not None and old.live(now):
                    self._keep(old)
                    return None
                # expired: its log taken up again (or a deleted record's place taken)
                expected = old.revision if old is not None else await self._revision(subject)
                if old is not None:
                    record = MailboxRecord(name, now, ttl, desc, old.log)
                continue
            made = MailboxRecord(name, now, ttl, desc, record.log, revision)
            self._keep(made)
            return made
        raise StorageError(f"mailbox {name!r}: created and expired by others 8 times in a row")

    async def mailbox_count(self) -> int:
        """How many mailbox records the bucket holds: the live mailboxes and the expired
        ones whose log is still kept (``--max-mailboxes`` counts both here)."""
        info = await self.requests.api(f"STREAM.INFO.KV_{self.layout.mailboxes}", None)
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
        )

    def _keep(self, record: MailboxRecord) -> None:
        self._records[record.name] = record
        self._records.move_to_end(record.name)
        while len(self._records) > RECORDS_KEPT:
            self._records.popitem(last=False)

    def forget(self) -> None:
        """Drop what this store holds (it reads it again as needed)."""
        self._records.clear()
        self._marked.clear()
        self._unreadable.clear()

    # -- messages --------------------------------------------------------------------------

    async def append(self, mailbox: str, message: StoredMessage, *, now: int) -> int:
        """Store ``message`` in ``mailbox``'s log; its msg_id (the stream sequence). A key
        replaces the key's older message, of any priority."""
        layout = self.layout
        headers = {"Nats-Msg-Id": uuid.uuid4().hex}  # a retried publish is stored once
        if message.tags:
            headers[TAGS] = json.dumps(message.tags)
        if message.expire_at:
            headers[EXPIRE_AT] = str(message.expire_at)
            if message.expire_at >= now:
                _set_ttl(headers, message.expire_at - now + 1 + _TTL_SLACK)
        if message.key is not None:
            headers["Nats-Rollup"] = "sub"  # the key's message of this priority, replaced
        subject = layout.message_subject(mailbox, message.priority, message.key)
        seq = await self.requests.publish(subject, frame(message.header, message.payload), headers)
        if message.key is not None:
            # the key's older message of another priority: removed below the new one's
            # sequence (a crash between the two leaves it until the key's next SEND; reads
            # by key take the newest)
            await self.requests.api(
                f"STREAM.PURGE.{layout.messages}",
                {"filter": layout.key_filter(mailbox, message.key), "seq": seq},
            )
        message.msg_id = seq
        return seq

    async def hold(self, mailbox: str, message: StoredMessage, *, due: int, now: int) -> None:
        """Have the servers write ``message`` into ``mailbox``'s log at second ``due``
        (``Nats-Schedule``); one whose TTL ends first is never written (RobustMQ)."""
        layout = self.layout
        when = datetime.fromtimestamp(max(due, 0), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        headers = {
            "Nats-Schedule": f"@at {when}",
            "Nats-Schedule-Target": layout.message_subject(mailbox, message.priority, None),
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
        expire_at = 0
        if SCHEDULER not in entry.headers:  # a delayed message is written without expire_at
            expire_at = int(entry.headers.get(EXPIRE_AT) or 0)
        tags = entry.headers.get(TAGS)
        return StoredMessage(
            entry.seq,
            payload,
            priority_of(entry.subject),
            stamp_second(entry.time),
            tags=tuple(json.loads(tags)) if tags else (),
            header=header,
            expire_at=expire_at,
        )

    def _readable(self, entry: StoredEntry) -> StoredMessage | None:
        """``entry`` as a message; None, said once in the log, when it is not one (written
        into the stream by something other than a broker): not served, the rest is."""
        try:
            return self._message(entry)
        except (ValueError, KeyError) as exc:
            if entry.seq not in self._unreadable:
                self._unreadable.add(entry.seq)
                log.error("stream message %d (%s) is not served: %s", entry.seq, entry.subject, exc)
            return None

    async def last_id(self, mailbox: str) -> int | None:
        """The newest stored message's msg_id, read from the stream's leader (current)."""
        entry = await self.requests.leader_get(
            self.layout.messages, last_by_subject=self.layout.mailbox_filter(mailbox)
        )
        return None if entry is None else entry.seq

    async def first_id(self, mailbox: str, *, at_time: int | None = None) -> int | None:
        """The oldest stored message's msg_id (written at or after ``at_time``, when given)."""
        request: dict[str, Any] = {"next_by_subj": self.layout.mailbox_filter(mailbox), "batch": 1}
        if at_time is None:
            request["seq"] = 1
        else:
            request["start_time"] = datetime.fromtimestamp(max(at_time, 0), UTC).isoformat()
        batch = await self.requests.direct_batch(self.layout.messages, request)
        return batch.entries[0].seq if batch.entries else None

    async def count(self, mailbox: str) -> int:
        """How many messages ``mailbox``'s log holds."""
        request = {"seq": 1, "next_by_subj": self.layout.mailbox_filter(mailbox), "batch": 1}
        batch = await self.requests.direct_batch(self.layout.messages, request)
        return len(batch.entries) + batch.pending

    async def read_lanes(
        self, mailbox: str, start: int | None, limit: int, *, upto: int, now: int
    ) -> list[list[StoredMessage]]:
        """Each priority's live messages from msg_id ``start`` on (None: the beginning), up
        to ``limit`` a lane, critical first, as of sequence ``upto`` (the mailbox's last
        sequence the leader gave): the three lanes are read at once, each from a replica at
        least that new, and what a newer replica gave beyond it is left for the next read,
        so the lanes show one state."""
        reads = [
            self._read(self.layout.lane_filter(mailbox, priority), start, limit, upto, now)
            for priority in PRIORITY_ORDER
        ]
        return list(await asyncio.gather(*reads))

    async def read(
        self, mailbox: str, start: int | None, limit: int, *, upto: int | None, now: int
    ) -> list[StoredMessage]:
        """Up to ``limit`` live messages of any priority from msg_id ``start`` on."""
        return await self._read(self.layout.mailbox_filter(mailbox), start, limit, upto, now)

    async def _read(
        self, subject: str, start: int | None, limit: int, upto: int | None, now: int
    ) -> list[StoredMessage]:
        found: list[StoredMessage] = []
        seq = max(start or 1, 1)
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
                if message is not None and not message.expired(now):
                    found.append(message)  # (one whose TTL ended: the server removes it soon)
            if not batch.entries or batch.pending == 0:
                break
            seq = batch.entries[-1].seq + 1
        return found[:limit]

    async def by_key(self, mailbox: str, key: str, *, now: int) -> StoredMessage | None:
        entry = await self.requests.leader_get(
            self.layout.messages, last_by_subject=self.layout.key_filter(mailbox, key)
        )
        message = None if entry is None else self._readable(entry)
        return None if message is None or message.expired(now) else message

    async def delete(self, mailbox: str, msg_id: int) -> bool:
        """Remove ``mailbox``'s message ``msg_id``; False when it holds none (a sequence of
        another mailbox's message is not touched)."""
        if msg_id <= 0:
            return False
        entry = await self.requests.leader_get(self.layout.messages, seq=msg_id)
        if entry is None or not self.layout.is_message_of(entry.subject, mailbox):
            return False
        try:
            await self.requests.api(
                f"STREAM.MSG.DELETE.{self.layout.messages}", {"seq": msg_id, "no_erase": True}
            )
        except JetStreamError as exc:
            if exc.code == 404 or exc.err_code == NOT_FOUND_DELETE:
                return False  # deleted meanwhile
            raise
        return True

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
        offset = None
        if mine is not None and mine.headers.get(_KV_OPERATION) not in ("DEL", "PURGE"):
            value = decode_record(mine.data)
            if value.get("log") == record.log:  # a position in a log forgotten since: none
                offset = int(value["offset"])
        anywhere = marker is not None or offset is not None
        if anywhere:
            self._marked.add(group)
        return Position(offset, anywhere)

    async def commit(self, group: str, record: MailboxRecord, offset: int) -> None:
        """``group``'s position in ``record``'s log is ``offset`` (the last ACK wins, as on
        RobustMQ, whichever broker it reached)."""
        layout = self.layout
        key = layout.kv_subject(layout.groups, layout.position_key(group, record.name))
        writes = [self.requests.publish(key, encode_record({"log": record.log, "offset": offset}))]
        if group not in self._marked:
            writes.append(self._mark(group))
        await asyncio.gather(*writes)
        self._marked.add(group)

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

    async def register(self, name: str, agent_info: str, create_time: int) -> bool:
        """Keep the registration unless ``name`` is registered (RobustMQ keeps the first);
        True when kept."""
        layout = self.layout
        subject = layout.kv_subject(layout.agents, token(name))
        value = encode_record({"name": name, "agent_info": agent_info, "create_time": create_time})
        expected = 0
        for _ in range(8):
            try:
                await self.requests.publish(
                    subject, value, {"Nats-Expected-Last-Subject-Sequence": str(expected)}
                )
                return True
            except JetStreamError as exc:
                if not exc.wrong_last_sequence:
                    raise
            entry = await self.requests.leader_get(f"KV_{layout.agents}", last_by_subject=subject)
            if entry is not None and entry.headers.get(_KV_OPERATION) not in ("DEL", "PURGE"):
                return False
            expected = 0 if entry is None else entry.seq  # unregistered: take its place
        raise StorageError(f"agent {name!r}: registered and unregistered by others 8 times")

    async def unregister(self, name: str) -> bool:
        """Remove the registration ``name``; False when there was none."""
        layout = self.layout
        subject = layout.kv_subject(layout.agents, token(name))
        entry = await self.requests.leader_get(f"KV_{layout.agents}", last_by_subject=subject)
        if entry is None or entry.headers.get(_KV_OPERATION) in ("DEL", "PURGE"):
            return False
        await self._purge(subject)
        return True

    async def _purge(self, subject: str) -> None:
        await self.requests.publish(subject, b"", {_KV_OPERATION: "PURGE", "Nats-Rollup": "sub"})

    async def agents(self) -> list[tuple[str, str, int]]:
        """Every registration ``(name, agent_info, create_time)``, by name."""
        return sorted(await self._rows(self.layout.agents))

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
        return await self._rows(self.layout.index)

    async def _rows(self, bucket: str) -> list[tuple[str, str, int]]:
        """A registry bucket's values ``(name, agent_info, create_time)``, oldest write first."""
        found: list[tuple[str, str, int]] = []
        seq = 1
        while True:
            batch = await self.requests.direct_batch(
                f"KV_{bucket}", {"seq": seq, "next_by_subj": f"$KV.{bucket}.>", "batch": 1000}
            )
            for entry in batch.entries:
                if entry.headers.get(_KV_OPERATION) in ("DEL", "PURGE"):
                    continue
                value = decode_record(entry.data)
                found.append((value["name"], value["agent_info"], int(value["create_time"])))
            if not batch.entries or batch.pending == 0:
                break
            seq = batch.entries[-1].seq + 1
        return found


NOT_FOUND_DELETE = 10057  # JetStream's "no message found" to a delete


def _set_ttl(headers: dict[str, str], seconds: int) -> None:
    """``Nats-TTL`` of ``seconds``, unless longer than the server takes (then none)."""
    if seconds <= _LONGEST_TTL:
        headers["Nats-TTL"] = f"{seconds}s"
