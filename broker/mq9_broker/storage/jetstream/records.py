"""The mailbox records of the cluster store: one key a mailbox in the mailboxes bucket (its
create_time, ttl, desc, the name of its message log and the next msg_id a broker reached),
made, re-made once expired, read, and kept here until the mailbox expires."""

from __future__ import annotations

import uuid
from collections import OrderedDict
from typing import TYPE_CHECKING

from mq9_wire.nats_floor.jetstream.api import ErrorCode
from mq9_wire.nats_floor.jetstream.bucket import Bucket

from ..mailbox_store import Full, MailboxRecord, StorageError
from .mapping import RETENTION_SECONDS, Layout, decode_record, encode_record, set_ttl, token
from .requests import StorageJetStreamError

if TYPE_CHECKING:
    from .requests import StorageRequests

RECORDS_KEPT = 65_536  # mailbox records a store keeps (about 200 bytes each)
_CREATE_TRIES = 8  # a name created and expired by others in a row before giving up


def record_value(record: MailboxRecord) -> bytes:
    """What the mailboxes bucket keeps of ``record``: a JSON object (its revision is the
    bucket's)."""
    return encode_record(
        {
            "name": record.name,
            "create_time": record.create_time,
            "ttl": record.ttl,
            "desc": record.desc,
            "log": record.log,
            "next": record.next_id,
        }
    )


class Mailboxes:
    """The mailboxes bucket of ``layout``, and the live records this broker read lately."""

    def __init__(self, requests: StorageRequests, layout: Layout, *, try_again: float) -> None:
        self.requests, self.layout, self.try_again = requests, layout, try_again
        self.bucket = Bucket(requests, layout.mailboxes)
        self._records: OrderedDict[str, MailboxRecord] = OrderedDict()
        self._bound: int | None = None  # the bucket's bound on records, once set

    async def create(self, name: str, *, ttl: int, desc: str, now: int) -> MailboxRecord | None:
        """Create ``name`` (or take up its expired log again); None when it exists and is
        live. Two brokers creating one name at once: one creates it, the other gets None."""
        key = token(name)
        record = MailboxRecord(name, now, ttl, desc, uuid.uuid4().hex)
        expected = 0  # no record yet: the write fails if another broker's came first
        for _ in range(_CREATE_TRIES):  # each turn lost to another broker's write reads again
            headers: dict[str, str] = {}
            if ttl:
                # the record outlives the mailbox by the retention: its log is empty once
                # the record goes, so a create after that starts a new log
                set_ttl(headers, ttl + RETENTION_SECONDS)
            try:
                revision = await self.bucket.update(key, record_value(record), expected, headers)
            except StorageJetStreamError as exc:
                if exc.err_code == ErrorCode.MAXIMUM_MESSAGES_EXCEEDED:  # a new key refused
                    raise Full(self._bound or 0) from exc
                if not exc.wrong_last_sequence:
                    raise
                old = await self._read(name)
                if old is not None and old.live(now):
                    self._keep(old)
                    return None
                # expired: its log taken up again (or a deleted record's place taken)
                expected = old.revision if old is not None else await self.bucket.revision(key)
                if old is not None:
                    record = MailboxRecord(name, now, ttl, desc, old.log, next_id=old.next_id)
                continue
            made = MailboxRecord(name, now, ttl, desc, record.log, revision, record.next_id)
            self._keep(made)
            return made
        raise StorageError(
            f"mailbox {name!r}: created and expired by others {_CREATE_TRIES} times in a row"
        )

    async def bound(self, limit: int | None) -> None:
        """The bucket holds at most ``limit`` records (None: any number), so the servers
        refuse the create of one more, however many brokers create at once: its
        ``max_msgs`` with ``discard: new`` (a record written again, its key's one message
        replaced, is not refused). Set once by each broker that opens with a bound; brokers
        of one layout are given one bound (the last set holds)."""
        stream = self.bucket.stream
        info = await self.requests.api(f"STREAM.INFO.{stream}", None, again=self.try_again)
        config = info["config"]
        wanted = -1 if limit is None else limit
        if int(config.get("max_msgs", -1)) != wanted:
            config["max_msgs"] = wanted
            await self.requests.api(f"STREAM.UPDATE.{stream}", config)
        self._bound = limit

    async def count(self) -> int:
        """How many records the bucket holds: the live mailboxes and the expired ones whose
        log is still kept (``--max-mailboxes`` counts both here)."""
        stream = self.bucket.stream
        info = await self.requests.api(f"STREAM.INFO.{stream}", None, again=self.try_again)
        return int(info.get("state", {}).get("messages", 0))

    async def get(self, name: str, *, now: int) -> MailboxRecord | None:
        """``name``'s record, live or expired (its log still readable); None when none is
        kept. A record kept here serves until the mailbox expires."""
        record = self._records.get(name)
        if record is not None and record.live(now):
            self._records.move_to_end(name)
            return record
        record = await self._read(name)
        if record is not None:
            self._keep(record)
        return record

    async def _read(self, name: str) -> MailboxRecord | None:
        entry = await self.bucket.get(token(name))
        if entry is None:
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
        self._records.clear()
