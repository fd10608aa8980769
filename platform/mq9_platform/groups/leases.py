"""Leases for the competing workers of one consumer group (docs/groups.md, "Leases", has the
records' format and the lease mailbox's lifetime).

RobustMQ leases nothing, so workers keep records in a mailbox of the library's own per mailbox
and group, under the reserved root ``mq9``: a **claim** (the worker's name, tags
``c{msg_id}.{create_time}``, TTL = the lease; the oldest live claim names the holder) and a
**done** record (tags ``d{msg_id}.{create_time}``, no TTL: done for every reader, whatever ack
moved the group back). ``judge`` is pure; ``LeaseBox`` does the I/O. Any reader, worker or
not, records there the deliveries that did not finish a message (``GroupRecords``): its retry
budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from mq9_wire import protocol as p
from mq9_wire.protocol import Message
from mq9_wire.protocol.errors import ClusterUnavailable, MailboxExists, MailboxNotFound

# A mailbox address whose first segment is RESERVED_ROOT belongs to the library: every tool
# refuses it. The lease mailbox's name is computed where the broker, which tells whose it
# is, computes it (re-exported here, where the toolkit has always found them)
from mq9_wire.protocol.names import RESERVED_ROOT as RESERVED_ROOT
from mq9_wire.protocol.names import is_reserved as is_reserved
from mq9_wire.protocol.names import lease_address as lease_address


class MailboxClient(Protocol):
    """What readers and leases use of a client (``Mq9Client`` has it; this module and
    ``reader.py`` need not import it, which imports them)."""

    async def fetch(
        self,
        mail_address: str,
        *,
        group_name: str | None = ...,
        deliver: str = ...,
        from_id: int | None = ...,
        num_msgs: int = ...,
        max_wait_ms: int = ...,
    ) -> list[Message]: ...

    async def ack(self, mail_address: str, group_name: str, msg_id: int) -> None: ...

    async def query(
        self, mail_address: str, *, limit: int | None = ..., tags: list[str] | None = ...
    ) -> list[Message]: ...

    async def send(
        self,
        mail_address: str,
        payload: str,
        *,
        priority: p.Priority | str = ...,
        ttl: int | None = ...,
        tags: list[str] | None = ...,
        headers: dict[str, str] | None = ...,
    ) -> int: ...

    async def mailbox_create(self, *, name: str | None = ..., ttl: int = ...) -> str: ...

    def warn_once(self, mail_address: str, warning: str) -> None: ...


DEFAULT_LEASE_TTL = 300  # seconds a worker may hold a message before another takes it over
# Workers judge a claim's age by the broker's time as each last saw it (whole seconds), and the
# broker hides a claim at its own exact expiry: their judgements may differ by a second or so.
# So near its end a claim is in doubt for GRACE seconds either side: nobody takes the message
# (its holder does not take it back either) until the broker hides the claim.
GRACE = 2
MIN_LEASE_TTL = 5  # a fresh claim must be surely live: longer than GRACE and a second's doubt
# How records are read back: a record lists at most TAGS_PER_RECORD messages (about 2 KB as a
# QUERY answer item), and one QUERY asks for JUDGED_PER_QUERY messages' two tags, up to
# CLAIMS_SEEN records each: at most about 500 KB, below NATS's default 1 MiB, so no answer
# is cut (the bundled broker cuts a QUERY answer to fit one NATS message).
TAGS_PER_RECORD = 20
JUDGED_PER_QUERY = 12
CLAIMS_SEEN = 10


def claim_tag(message: Message) -> str:
    return f"c{message.msg_id}.{message.create_time}"


def done_tag(message: Message) -> str:
    return f"d{message.msg_id}.{message.create_time}"


def fail_tag(message: Message) -> str:
    return f"f{message.msg_id}.{message.create_time}"


def handout_tag(message: Message) -> str:
    return f"h{message.msg_id}.{message.create_time}"


def reason_tag(message: Message) -> str:
    return f"r{message.msg_id}.{message.create_time}"


def delivery_tags(message: Message) -> tuple[str, str, str, str]:
    return handout_tag(message), fail_tag(message), reason_tag(message), done_tag(message)


def count_deliveries(records: list[Message], message: Message) -> int:
    """Unfinished deliveries of ``message`` its records show: recorded hand-outs and failures."""
    counted = {handout_tag(message), fail_tag(message)}
    return sum(1 for r in records if counted & set(r.tags))


def last_reason(records: list[Message], message: Message) -> str | None:
    why = {fail_tag(message), reason_tag(message)}
    reasons = [r.text() for r in records if why & set(r.tags)]
    return reasons[-1] if reasons else None


@dataclass
class Verdict:
    """What the lease records say of some messages (msg_ids)."""

    done: set[int] = field(default_factory=set)  # finished by some worker
    mine: set[int] = field(default_factory=set)  # this worker holds the oldest live claim
    others: dict[int, str] = field(default_factory=dict)  # held by another worker: its name
    free: set[int] = field(default_factory=set)  # no live claim


def judge(
    messages: Iterable[Message], records: Iterable[Message], worker: str, lease_ttl: int, now: int
) -> Verdict:
    """Read lease records. The oldest claim of a message that is not surely over names its
    holder; ``worker`` holds it only while its claim is surely live, else the message waits
    (see GRACE). A claim is surely over ``GRACE`` seconds after its create_time plus
    ``lease_ttl`` by ``now`` (broker seconds), whatever TTL it was sent with: a record written
    without one (by another client) holds a message no longer than a lease and GRACE."""
    by_tag: dict[str, list[Message]] = {}
    for record in records:
        for tag in record.tags:
            by_tag.setdefault(tag, []).append(record)
    verdict = Verdict()
    for message in messages:
        if by_tag.get(done_tag(message)):
            verdict.done.add(message.msg_id)
            continue
        claims = by_tag.get(claim_tag(message), [])
        live = [c for c in claims if now < c.create_time + lease_ttl + GRACE]
        if not live:
            verdict.free.add(message.msg_id)
            continue
        first = min(live, key=lambda c: c.msg_id)
        holder = first.payload.decode(errors="replace")
        if holder == worker and now < first.create_time + lease_ttl - GRACE:
            verdict.mine.add(message.msg_id)
        else:  # another's, or this worker's claim near its end: wait for the broker
            verdict.others[message.msg_id] = holder
    return verdict


class GroupRecords:
    """The records mailbox of one mailbox and group (``lease_address``): what its readers
    write there for each other. Deliveries that did not finish a message, for its retry
    budget, whoever reads and however often readers restart (no TTL): a **failure** (tag
    ``f{msg_id}.{create_time}``, the reason as payload), and a **hand-out** (tags
    ``h{msg_id}.{create_time}``): a reader that dies handling a message records nothing, so
    a reader records the hand-out of a message it hands to its handler (``begin``) when one
    that died may have been handling it (a message at the group's head when it started, one
    taken over from a holder that is gone) or it failed here. The failure of a delivery
    counted that way records only its reason (tag ``r{msg_id}.{create_time}``). And **done**
    records (tags ``d{msg_id}.{create_time}``): finished, for every reader (a worker's, and a
    reader's finished message that the group's position does not pass yet)."""

    def __init__(
        self, client: MailboxClient, mail_address: str, group_name: str, mailbox_ttl: int
    ) -> None:
        self.client = client
        self.address = lease_address(mail_address, group_name)
        self.mailbox_ttl = mailbox_ttl
        self.writer = ""  # a record's payload when it says no more than its tags
        self._made = self._new = False

    async def make(self) -> None:
        """Make the records mailbox now, once, if it is not there. Its records make it
        anyway, but the workers of a group all write their first claims on the same arrival:
        on RobustMQ their CREATEs of a new name would cross, and the mailbox be lost for good
        (docs/protocol-commands.md §5.1). Made at a worker's first read that found the mailbox (the
        records mailbox derives from it: a ``--credentials`` broker lets only its owner make
        it, once it exists), the first worker makes it alone, unless they start together."""
        if not self._made:
            with contextlib.suppress(MailboxExists):
                await self.client.mailbox_create(name=self.address, ttl=self.mailbox_ttl)
                self._new = True  # (its first record meets a shard just made)
            self._made = True

    async def record_failure(self, message: Message, reason: str, counted: bool) -> None:
        """A failed delivery of ``message`` and why; ``counted``: a hand-out record counts this
        delivery already."""
        tag = reason_tag(message) if counted else fail_tag(message)
        await self._send([tag], ttl=None, payload=reason)

    async def record_hand_outs(self, messages: list[Message]) -> None:
        await self._send([handout_tag(m) for m in messages], ttl=None)

    async def record_done(self, messages: list[Message]) -> None:
        """Say these messages are finished, for every reader: kept until the broker's
        retention removes it (7 days on RobustMQ), as a group moved back must find them done."""
        await self._send([done_tag(m) for m in messages], ttl=None)

    async def deliveries(self, messages: list[Message]) -> dict[int, list[Message]]:
        """The records of each message's unfinished deliveries (its recorded hand-outs and its
        failures, and the reasons), oldest first, a few messages per QUERY (each answers at
        most 100)."""
        found: dict[int, list[Message]] = {m.msg_id: [] for m in messages}
        for start in range(0, len(messages), JUDGED_PER_QUERY):
            some = messages[start : start + JUDGED_PER_QUERY]
            tags = [tag for m in some for tag in delivery_tags(m)]
            # A QUERY by tags answers tag by tag (engine.py, RobustMQ's query.rs): put the
            # records back in the order they were stored.
            records = sorted(await self._query(tags, p.QUERY_CAP), key=lambda r: r.msg_id)
            for m in some:
                mine = set(delivery_tags(m))
                found[m.msg_id] = [r for r in records if mine & set(r.tags)]
        return found

    async def _query(self, tags: list[str], limit: int) -> list[Message]:
        try:
            return await self.client.query(self.address, tags=tags, limit=limit)
        except MailboxNotFound:
            return []  # no reader has written anything yet

    async def _send(self, tags: list[str], ttl: int | None, payload: str | None = None) -> None:
        body = self.writer if payload is None else payload
        for start in range(0, len(tags), TAGS_PER_RECORD):  # records small enough to read back
            some = tags[start : start + TAGS_PER_RECORD]
            if self._new:
                await self._send_to_new(body, some, ttl)
                self._new = False
                continue
            try:
                await self.client.send(self.address, body, tags=some, ttl=ttl)
            except MailboxNotFound:
                # The first record, or the mailbox lived out its TTL: make it (again).
                with contextlib.suppress(MailboxExists):
                    await self.client.mailbox_create(name=self.address, ttl=self.mailbox_ttl)
                await self._send_to_new(body, some, ttl)

    async def _send_to_new(self, body: str, tags: list[str], ttl: int | None) -> None:
        """A record's SEND to a mailbox made a moment ago: RobustMQ may answer that its new
        shard is not set up yet, the record perhaps stored; it is sent again until the
        client's request timeout (a record twice is the same record: ``_records`` reads them
        by tag)."""
        wait = float(getattr(self.client, "request_timeout", 5.0))
        deadline = asyncio.get_running_loop().time() + wait
        while True:
            try:
                await self.client.send(self.address, body, tags=tags, ttl=ttl)
                return
            except ClusterUnavailable:
                if asyncio.get_running_loop().time() >= deadline:
                    raise
                await asyncio.sleep(0.1)


class LeaseBox(GroupRecords):
    """The lease mailbox of one mailbox and group, as one worker writes and reads it."""

    def __init__(
        self,
        client: MailboxClient,
        mail_address: str,
        group_name: str,
        worker: str,
        lease_ttl: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(worker, str) or not worker.strip():
            raise ValueError("worker must be a non-empty string naming this reader")
        lease_ttl = p.check_int("lease_ttl", lease_ttl, MIN_LEASE_TTL, p.MAX_SECONDS)
        super().__init__(client, mail_address, group_name, mailbox_ttl=lease_ttl)
        self.worker = self.writer = worker
        self.lease_ttl = lease_ttl
        # The broker's clock as last seen (a record's create_time) and when, on ``clock``
        # (any clock that measures elapsed seconds): leases are judged by the broker's time
        # plus what elapsed here since, never by this machine's time of day.
        self._clock = clock
        self._seen: tuple[int, float] | None = None

    def now(self) -> int:
        if self._seen is None:
            return 0
        seconds, at = self._seen
        return seconds + int(self._clock() - at)

    def _saw(self, broker_time: int) -> None:
        """A record stored at ``broker_time`` was read. Only a time past ``now()`` moves the
        reckoning: a record of the second ``now()`` is in tells less than the time elapsed
        since an earlier one (reset at every look, a worker looking every 0.1 s at a record that
        never goes, a claim written without a TTL, would see the broker's time stand still)."""
        if broker_time > self.now():
            self._seen = (broker_time, self._clock())

    async def claim(self, messages: list[Message]) -> None:
        await self._send([claim_tag(m) for m in messages], ttl=self.lease_ttl)

    async def judge(self, messages: list[Message]) -> Verdict:
        """Read the records of ``messages`` and judge them, a few messages per QUERY: a QUERY
        answers up to ``CLAIMS_SEEN`` records per tag, and a broker may cut an answer too large
        for one NATS message (the bundled one does), which must never hide a done record or
        the oldest claim."""
        records: list[Message] = []
        for start in range(0, len(messages), JUDGED_PER_QUERY):
            some = messages[start : start + JUDGED_PER_QUERY]
            tags = [tag for m in some for tag in (claim_tag(m), done_tag(m))]
            records += await self._query(tags, CLAIMS_SEEN)
        self._saw(max((r.create_time for r in records), default=-1))
        # A message whose first CLAIMS_SEEN claims are all over (written without a TTL by
        # another client) may have a live one further on: read all of its claims.
        now = self.now()
        for message in messages:
            claims = [r for r in records if claim_tag(message) in r.tags]
            if len(claims) >= CLAIMS_SEEN and all(
                now >= c.create_time + self.lease_ttl + GRACE for c in claims
            ):
                records += await self._query([claim_tag(message)], p.QUERY_CAP)
        return judge(messages, records, self.worker, self.lease_ttl, self.now())
