"""Leases for the competing workers of one consumer group (docs/groups.md).

RobustMQ leases nothing: every reader of a group is handed the same messages until they are
acked. Competing workers therefore keep lease records in a mailbox of the library's own, one per
mailbox and group, under the reserved root ``mq9`` that no tool of ours lets a model address and
that no user mailbox made through them can take:

- a **claim** of messages: one SEND, payload the worker's name, a tag ``c{msg_id}.{create_time}``
  per message, message TTL = the lease. The oldest live claim of a message (the lowest msg_id in
  the lease mailbox: the broker orders them) names its holder.
- a **done** record: one SEND, payload the worker's name, a tag ``d{msg_id}.{create_time}`` per
  message finished. Any reader counts such a message done, so its horizon passes it and nobody
  handles it again, whatever ack moved the group back.

The message's create_time in the tags tells a message from another that reuses its id (a log a
broker lost). The lease mailbox itself lives one lease TTL and is made again by the next worker
that needs it (RobustMQ and the bundled broker go on numbering, and keep its records readable),
so a group that stops leaves no mailbox behind one lease TTL later.

``judge`` is pure; ``LeaseBox`` does the I/O.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import protocol as p
from .protocol import Mq9Error

if TYPE_CHECKING:
    from .client import Message, Mq9Client

# A mailbox address whose first segment is this belongs to the library: every tool refuses it.
RESERVED_ROOT = "mq9"
DEFAULT_LEASE_TTL = 300  # seconds a worker may hold a message before another takes it over
MIN_LEASE_TTL = 2  # create_time has whole seconds: a shorter lease could not be judged


def is_reserved(address: str) -> bool:
    return address == RESERVED_ROOT or address.startswith(RESERVED_ROOT + ".")


def lease_address(mail_address: str, group_name: str) -> str:
    """The lease mailbox of one mailbox and group: a digest, so its length never grows with
    theirs and no two pairs share one."""
    digest = hashlib.sha256(f"{mail_address}\n{group_name}".encode()).hexdigest()[:32]
    return f"{RESERVED_ROOT}.lease.{digest}"


def claim_tag(message: Message) -> str:
    return f"c{message.msg_id}.{message.create_time}"


def done_tag(message: Message) -> str:
    return f"d{message.msg_id}.{message.create_time}"


@dataclass
class Verdict:
    """What the lease records say of some messages (msg_ids)."""

    done: set[int] = field(default_factory=set)  # finished by some worker
    mine: set[int] = field(default_factory=set)  # this worker holds the oldest live claim
    others: dict[int, str] = field(default_factory=dict)  # held by another worker: its name
    free: set[int] = field(default_factory=set)  # no live claim


def judge(
    messages: Iterable[Message], records: Iterable[Any], worker: str, lease_ttl: int, now: int
) -> Verdict:
    """Read lease records. A claim is live while ``now`` (broker seconds) is before its
    create_time plus ``lease_ttl``, whatever TTL it was sent with: a record written without
    one (by another client) holds a message no longer than a lease."""
    by_tag: dict[str, list[Any]] = {}
    for record in records:
        for tag in record.tags:
            by_tag.setdefault(tag, []).append(record)
    verdict = Verdict()
    for message in messages:
        if by_tag.get(done_tag(message)):
            verdict.done.add(message.msg_id)
            continue
        live = [c for c in by_tag.get(claim_tag(message), []) if c.create_time + lease_ttl > now]
        if not live:
            verdict.free.add(message.msg_id)
            continue
        holder = min(live, key=lambda c: c.msg_id).payload.decode(errors="replace")
        if holder == worker:
            verdict.mine.add(message.msg_id)
        else:
            verdict.others[message.msg_id] = holder
    return verdict


class LeaseBox:
    """The lease mailbox of one mailbox and group, as one worker writes and reads it."""

    def __init__(
        self,
        client: Mq9Client,
        mail_address: str,
        group_name: str,
        worker: str,
        lease_ttl: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(worker, str) or not worker.strip():
            raise ValueError("worker must be a non-empty string naming this reader")
        self.client = client
        self.worker = worker
        self.lease_ttl = p.check_int("lease_ttl", lease_ttl, MIN_LEASE_TTL, p.MAX_SECONDS)
        self.address = lease_address(mail_address, group_name)
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

    async def claim(self, messages: list[Message]) -> None:
        await self._send([claim_tag(m) for m in messages], ttl=self.lease_ttl)

    async def finish(self, messages: list[Message]) -> None:
        """Say these messages are done. Kept until the broker's retention removes it (7 days on
        RobustMQ): a group moved back behind them must still find them done."""
        await self._send([done_tag(m) for m in messages], ttl=None)

    async def judge(self, messages: list[Message]) -> Verdict:
        """Read the records of ``messages`` and judge them."""
        tags = [tag for m in messages for tag in (claim_tag(m), done_tag(m))]
        try:
            records = await self.client.query(self.address, tags=tags)
        except Mq9Error as exc:
            if exc.message != p.err_topic_missing(self.address):
                raise
            records = []  # no worker has written anything yet
        if records:
            newest = max(r.create_time for r in records)
            if newest >= self.now():
                self._seen = (newest, self._clock())
        return judge(messages, records, self.worker, self.lease_ttl, self.now())

    async def _send(self, tags: list[str], ttl: int | None) -> None:
        try:
            await self.client.send(self.address, self.worker, tags=tags, ttl=ttl)
        except Mq9Error as exc:
            if exc.message != p.err_mailbox_missing(self.address):
                raise
            # The first record, or the lease mailbox lived out its TTL: make it (again).
            try:
                await self.client.mailbox_create(name=self.address, ttl=self.lease_ttl)
            except Mq9Error as made:
                if made.message != p.err_mailbox_exists(self.address):
                    raise
            await self.client.send(self.address, self.worker, tags=tags, ttl=ttl)
