"""Consuming a mailbox safely on RobustMQ's semantics: ``GroupReader``, ``Consumer``, and
``replay``, which sends a dead-letter mailbox's messages back where they came from.

RobustMQ keeps no leases, and ACK X moves all three priority lanes of a group past X.
``GroupReader`` hands each message out once per reader and acks only its *safe horizon*
(``state.py`` decides, without I/O); competing workers hold leases (``leases.py``).
``Consumer`` is the loop ``Mq9Client.consume`` runs. Design and invariants: docs/groups.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import inspect
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from mq9_wire import protocol as p
from mq9_wire.protocol import Message
from mq9_wire.protocol.errors import AnswerTooLarge, Mq9Error

from . import dead_letters
from .dead_letters import (
    DEAD_LETTER_SUFFIX,
    DEFAULT_MAX_DELIVERIES,
    MAX_DELIVERIES,
    DeadLetter,
    check_writable,
    dead_letter_address,
    failure_reason,
)
from .leases import (
    DEFAULT_LEASE_TTL,
    JUDGED_PER_QUERY,
    GroupRecords,
    LeaseBox,
    MailboxClient,
    count_deliveries,
    done_tag,
    handout_tag,
    last_reason,
)
from .state import ReaderState

log = logging.getLogger("mq9_platform")

Handler = Callable[[Message], Awaitable[None] | None]
ErrorHandler = Callable[[Message, Exception], Awaitable[None] | None]
DeadLetterHook = Callable[[Message, int, str], Awaitable[None] | None]

# How often a waiting fetch looks again. A FETCH that finds nothing on RobustMQ sleeps its whole
# max_wait_ms, holding the handler of every connection that shares it (docs/protocol.md §1):
# so we never ask the broker to wait, but read at once, again every this many seconds.
POLL_SECONDS = 0.1
# How often one fetch puts back a group's position it finds behind an ack of this client's
# readers before it reads on anyway (what such an answer holds at or below that ack is done,
# never handed out: GroupAcks.done_among).
BEHIND_TRIES = 3

T = TypeVar("T")


class GroupAcks:
    """The acks of every ``GroupReader`` of one group on one mailbox made through one client.

    RobustMQ's ACK *sets* the group's position, so of two acks the one stored last wins. Two
    readers of a group on one client acking on their own could store a lower ack after a higher
    one: a reader that fetched before another's ack and finished after it, or an ack sent
    again after a failover behind one sent meanwhile (messages whose ``done`` had
    returned would be handed out again; docs/groups.md). So they take turns (``turn``: one ack at a
    time, its retries included), and an ack at or below the highest one answered is not sent:
    the position is past it already. Nor is one below the highest ever sent (``sent``): an
    ack whose answer never came (a timeout, a broker killed after storing it, a write the
    broker gave up on that reached the stream late) may be stored yet, and a lower one would
    land behind it; that ack is sent instead, its messages being finished by one of them.
    What one of them finished above the highest ack answered is done for
    all of them (``finished``): a reader whose own answers cannot prove the group may move
    past a message returns from ``done`` without acking, and the others, handed the same
    message by the same position, must neither hand it out again nor wait on it. And what is
    at or below the highest ack answered is done for all of them, whatever a broker's answer
    says of the group's position (``done_among``): an answer read before another reader's
    ack was answered comes back behind it, even the one read right after a put-back (it
    would undo what is done), as does one read behind a lower commit that
    landed late or by a replica that read an older position."""

    def __init__(self) -> None:
        self.turn = asyncio.Lock()
        self.highest: int | None = None  # the largest ack answered
        self.newest_time = -1  # the newest create_time the readers had seen when it was
        self.sent: int | None = None  # the largest ack sent, answered or not
        self.sent_time = -1  # the newest create_time the readers had seen when it was
        self.finished: dict[int, int] = {}  # above it: msg_id -> create_time, done by one

    def finish(self, messages: Iterable[Message]) -> None:
        highest = -1 if self.highest is None else self.highest
        self.finished.update((m.msg_id, m.create_time) for m in messages if m.msg_id > highest)

    def done_among(self, messages: Iterable[Message]) -> set[int]:
        """Which of ``messages`` a reader of this client finished (the same message: its
        create_time too), or an ack of theirs answered passed: at or below the highest one,
        and seen before it was sent (a newer message under such an id is of a log that went
        back, not a done one)."""
        finished, highest, newest = self.finished, self.highest, self.newest_time
        return {
            m.msg_id
            for m in messages
            if finished.get(m.msg_id) == m.create_time
            or (highest is not None and m.msg_id <= highest and m.create_time <= newest)
        }

    def acked(self, msg_id: int, newest_time: int) -> None:
        self.highest = msg_id if self.highest is None else max(self.highest, msg_id)
        self.newest_time = max(self.newest_time, newest_time)
        self.finished = {i: t for i, t in self.finished.items() if i > self.highest}

    def forget(self) -> None:
        """The broker's log went back: what was acked and finished was of the lost one."""
        self.highest, self.newest_time, self.finished = None, -1, {}
        self.sent, self.sent_time = None, -1

    def went_back(self, answer: Iterable[Message]) -> bool:
        """The answer holds a message at or below the highest ack, seen before it was sent:
        the group's position went back behind it (another client's late ack, a cluster
        node's older idea of it)."""
        highest = self.highest
        if highest is None:
            return False
        return any(m.msg_id <= highest and m.create_time <= self.newest_time for m in answer)


# Each client's GroupAcks by (mailbox, group), forgotten with the client
_ACKS: weakref.WeakKeyDictionary[object, dict[tuple[str, str], GroupAcks]] = (
    weakref.WeakKeyDictionary()
)


def group_acks(client: object, mail_address: str, group_name: str) -> GroupAcks:
    """The ``GroupAcks`` that ``client``'s readers of the group share (a client that cannot
    be weakly referenced: one of the reader's own)."""
    try:
        groups = _ACKS.setdefault(client, {})
    except TypeError:
        return GroupAcks()
    return groups.setdefault((mail_address, group_name), GroupAcks())


class Failure(NamedTuple):
    """What ``GroupReader.fail`` did: the message's unfinished deliveries counted so far (by
    every reader of the group, restarts included), and whether it is now a dead letter."""

    attempts: int
    dead_lettered: bool


def fixed_start(deliver: str, from_id: int | None, answer: list[Message]) -> tuple[str, int | None]:
    """Where a group's later FETCHes must start after one answered ``answer``. Until a group
    acks, RobustMQ starts every FETCH at its deliver policy, and ``latest`` is the newest
    message at that moment: messages arriving between two FETCHes would be skipped. So
    ``latest`` becomes the first answer's start (an empty answer: the beginning)."""
    if deliver != "latest":
        return deliver, from_id
    ids = [m.msg_id for m in answer]
    return ("from_id", min(ids)) if ids else ("earliest", None)


async def until_found(read: Callable[[], Awaitable[list[T]]], max_wait_ms: int) -> list[T]:
    """``read()`` until it finds something or ``max_wait_ms`` is over."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_wait_ms / 1000
    while True:
        found = await read()
        left = deadline - loop.time()
        if found or left <= 0:
            return found
        await asyncio.sleep(min(POLL_SECONDS, left))


class GroupReader:
    """The fetch/done cycle of one reader of a consumer group (docs/groups.md).

    ``fetch`` hands out messages this reader has not handed out before, highest priority
    first; ``done`` marks them handled and acks the group up to the largest id below which
    everything is handled (acking past an older unhandled message would skip it). At least
    once: whoever reads the group next is handed again every message after the last ack. When
    a FETCH shows the group's position went back behind this reader's last ack (a late ack,
    another cluster node), the reader acks its position again before handing anything out.

    One reader per group, by default. Competing workers each give a ``worker`` name, unique
    among the live ones, and hold leases (``leases.py``): no two live workers are handed the
    same message, a dead (or ``lease_ttl``-overrunning) worker's message is taken over, a
    worker restarted under its name takes back what it held, and a message any worker
    finished is done for all.

    A message that cannot be handled is given to ``fail``: its unfinished deliveries are
    counted on the broker (docs/groups.md, "Poison messages"), and once there are
    ``max_deliveries`` of them it is copied into the mailbox ``dead_letter`` (default
    ``<mailbox>.dlq``) and then done, so the group moves past it; so is a message that every
    reader died handling. ``dead_letter(msg_id, reason)`` sets one aside at once. Handing a
    message out is not handling it: call ``begin([msg_id])`` when it goes to its handler (or
    is shown to a model), so that a reader that dies handling it charges that message alone
    (``begin`` records what a reader's death would leave uncounted: a message that may have
    been handed out before, or that failed here), and ``done`` what finished first.
    ``max_deliveries=None``: no budget and no records (``fail`` only counts in memory).
    ``on_dead_letter(message, attempts, reason)`` runs once the copy is stored and before the
    message is done (an agent server answers the request's caller there): if it raises, the
    message stays handed out, and is set aside again later.

    ``commit=False`` tracks what is handled without ever acking, for callers who ack.
    ``clock`` measures elapsed seconds for judging leases (tests move it by hand).

    A broker that cannot send a whole answer says how many messages fit, and the reader asks
    for that many; ``AnswerTooLarge`` when such an answer holds nothing new and the floor
    cannot move (only [] could be returned while older messages wait). Each FETCH asks the
    broker to read every lane after the run of done messages it begins with
    (``skip_through``): the bundled broker does, so a backlog of handled messages of a higher
    priority above an older one never holds the reader back there (docs/groups.md, "Past a
    backlog"); RobustMQ ignores it.
    """

    def __init__(
        self,
        client: MailboxClient,
        mail_address: str,
        group_name: str,
        *,
        worker: str | None = None,
        lease_ttl: int = DEFAULT_LEASE_TTL,
        commit: bool = True,
        clock: Callable[[], float] = time.monotonic,
        max_deliveries: int | None = DEFAULT_MAX_DELIVERIES,
        dead_letter: str | None = None,
        on_dead_letter: DeadLetterHook | None = None,
    ) -> None:
        self.client = client
        self.mail_address = p.check_address(mail_address)
        self.group_name = p.check_group_name(group_name)
        self.worker = worker
        self.leases = (
            None
            if worker is None
            else LeaseBox(client, mail_address, group_name, worker, lease_ttl, clock)
        )
        self.records = self.leases or GroupRecords(
            client, mail_address, group_name, DEFAULT_LEASE_TTL
        )
        self.max_deliveries = (
            None
            if max_deliveries is None
            else p.check_int("max_deliveries", max_deliveries, 1, MAX_DELIVERIES)
        )
        self.dead_letter_address = dead_letters.check_dead_letter(
            dead_letter or dead_letters.dead_letter_address(mail_address)
        )
        self.on_dead_letter = on_dead_letter
        self.commit = commit
        self.state = ReaderState()
        self._acks = group_acks(client, self.mail_address, self.group_name)
        # Unfinished deliveries counted on the broker, by msg_id, of the messages it read the
        # count of: before this hand-out, or (after a failure) with it.
        self._deliveries: dict[int, int] = {}
        # Whether the deliveries of its first batch were read; without a budget nothing is.
        self._read_first = max_deliveries is None
        # Handed out, and ``begin`` records their hand-out: what this reader's death would leave
        # uncounted (its first batch, a takeover, a message that failed here).
        self._unrecorded: set[int] = set()
        # Begun with a record of the hand-out, not failed since: that record counts the delivery.
        self._recorded: set[int] = set()
        self._taken_over: set[int] = set()  # won by this worker from a holder that is gone
        self._skipping = True  # whether the client's fetch takes ``skip_through``
        # One fetch or done at a time: two fetches computing "new" from the same state would
        # hand the same message out twice.
        self._lock = asyncio.Lock()

    def for_another_loop(self) -> GroupReader:
        """This reader for another event loop: the same state and leases (shared, not
        copied), under a fresh lock. An asyncio lock serves the loop it was first used on, and
        a toolkit outlives its loops (each ``asyncio.run``), one at a time."""
        reader = copy.copy(self)
        reader._lock = asyncio.Lock()
        return reader

    # What tests and callers read of the state.
    @property
    def pending(self) -> set[int]:
        return self.state.pending

    @property
    def handled(self) -> set[int]:
        return self.state.handled

    @property
    def committed(self) -> int | None:
        return self.state.committed

    @property
    def last_answer(self) -> list[Message]:
        return self.state.last_answer

    async def fetch(
        self,
        *,
        num_msgs: int = 10,
        max_wait_ms: int = 0,
        deliver: str = "earliest",
        from_id: int | None = None,
    ) -> list[Message]:
        """Up to ``num_msgs`` messages this reader has not handed out, in the broker's order
        (critical first). ``deliver`` (and ``from_id``) count only until the group first
        acks. With none to hand out, looks again for up to ``max_wait_ms``."""
        p.check_int("num_msgs", num_msgs, 1, p.MAX_NUM_MSGS)
        p.check_int("max_wait_ms", max_wait_ms, 0, p.MAX_WAIT_MS)

        start = (deliver, from_id)

        async def once() -> list[Message]:
            nonlocal start
            async with self._lock:
                found, start = await self._fetch(num_msgs, start)
                return found

        return await until_found(once, max_wait_ms)

    async def done(self, msg_ids: int | Iterable[int]) -> None:
        """Mark handed-out messages handled, then ack the group past everything handled."""
        ids = [msg_ids] if isinstance(msg_ids, int) else list(msg_ids)
        async with self._lock:
            self.state.check_done(ids)
            await self._done(ids)

    async def begin(self, msg_ids: Iterable[int]) -> None:
        """These handed-out messages go to their handler now (or are shown to a model). Those
        whose delivery this reader's death would leave uncounted (``records_begin``) are
        recorded on the broker first, one SEND for them all: a reader that dies handling a
        message charges that message, never the batch it was fetched with. Call ``done`` for
        what finished before (the records then say so), so a death charges nothing finished."""
        ids = list(msg_ids)
        async with self._lock:
            # One no longer handed out here (finished, or the reader read the group afresh)
            # has nothing to record.
            begun = [i for i in ids if i in self._unrecorded and i in self.state.pending]
            if not begun:
                return
            await self.records.record_hand_outs([self.state.seen[i] for i in begun])
            self._unrecorded.difference_update(begun)
            self._recorded.update(begun)

    def records_begin(self, msg_id: int) -> bool:
        """Whether ``begin([msg_id])`` writes a record (a SEND): the message may have been
        handed out before by a reader that died (this reader's first batch, a takeover), or
        failed here."""
        return msg_id in self._unrecorded

    async def adopt(
        self,
        msg_id: int,
        *,
        deliver: str = "earliest",
        from_id: int | None = None,
        rest: bool = False,
    ) -> list[int]:
        """Take over what another reader under this reader's identity (an earlier process, a
        replica with the same worker name) handed out up to ``msg_id`` and nobody finished, as
        if handed out here, so it can be marked done here; its msg_ids in the broker's order
        ([] when ``msg_id`` is not among them). The evidence is the broker's, never this
        process's memory: the group's position (nothing at or past it is finished), and, for a
        worker, its live claims (only what it holds); for the group's one reader, the
        hand-out record ``begin`` wrote for ``msg_id`` (a reader's first batch: each fetch of
        a process started per call), and what comes before it in the group's order with a
        lower msg_id or a hand-out record. ``deliver``/``from_id`` as for ``fetch``, until the
        group first acks. ``rest``: what this identity was handed after ``msg_id`` in the
        group's order and nobody finished is taken over too (its claims, or its hand-out
        records): what still waits for an ack once ``msg_id`` is acked."""
        p.check_int("msg_id", msg_id)
        async with self._lock:
            state = self.state
            # What this reader read itself it knows better: handed out here, or not at all.
            known = set(state.seen)
            if msg_id in known:
                return []
            # Read twice: a lane read whole vouches only for ids known before its FETCH, so
            # the ack that follows can pass what the second answer shows done.
            for _ in range(2):
                answer, _fit, asked = await self._read(p.MAX_NUM_MSGS, deliver, from_id)
                fresh = [m for m in state.accept(answer, asked) if m.msg_id not in known]
            ids = [m.msg_id for m in fresh]
            if msg_id not in ids:
                return []
            head = fresh[: ids.index(msg_id) + 1]
            adopted = await self._handed_out_before(head, msg_id)
            if msg_id not in adopted:
                return []
            if rest:
                adopted |= await self._handed_out_after(fresh[len(head) :])
            state.hand_out(adopted)
            return [m.msg_id for m in fresh if m.msg_id in adopted]

    async def _handed_out_after(self, tail: list[Message]) -> set[int]:
        """Which of ``tail`` (the group's order after an adopted msg_id) this identity was
        handed and nobody finished, read a QUERY's worth at a time up to the first that holds
        none: a fetch hands out the first new messages in the group's order, so what follows
        a stretch never handed out was not handed out either (one QUERY for a fetch's batch,
        not one per 12 messages of the mailbox)."""
        handed: set[int] = set()
        for start in range(0, len(tail), JUDGED_PER_QUERY):
            found = await self._handed_out_among(tail[start : start + JUDGED_PER_QUERY])
            if not found:
                break
            handed |= found
        return handed

    async def _handed_out_among(self, tail: list[Message]) -> set[int]:
        """Which of ``tail`` this identity was handed and nobody finished: a worker's live
        claims, else this reader's hand-out records (a done record: done here too)."""
        if self.leases is not None:
            verdict = await self.leases.judge(tail)
            self.state.mark_done(verdict.done)
            self.state.mark_held(verdict.others)
            return verdict.mine
        if self.max_deliveries is None:  # no records: no evidence
            return set()
        records = await self.records.deliveries(tail)
        handed: set[int] = set()
        for m in tail:
            found = records[m.msg_id]
            if any(done_tag(m) in r.tags for r in found):
                self.state.mark_done([m.msg_id])
            elif any(handout_tag(m) in r.tags and r.text() == self.records.writer for r in found):
                handed.add(m.msg_id)
        return handed

    async def _handed_out_before(self, head: list[Message], msg_id: int) -> set[int]:
        """Which of ``head`` (the group's order up to ``msg_id``) this identity was handed."""
        if self.leases is not None:
            verdict = await self.leases.judge(head)
            self.state.mark_done(verdict.done)
            self.state.mark_held(verdict.others)
            return verdict.mine
        # The group's one reader: msg_id must have a hand-out record of this reader (written
        # by ``begin`` for what a reader's first fetch hands to a handler or a model). Before
        # it in the group's order: what has a lower msg_id (handed out with it, or earlier),
        # or a hand-out record (a higher priority may be newer: never handed out). One with a
        # done record was finished: done here too, not handed out again.
        if self.max_deliveries is None:  # no records: no evidence
            return set()
        records = await self.records.deliveries(head)
        handed: set[int] = set()
        for m in head:
            found = records[m.msg_id]
            recorded = any(
                handout_tag(m) in r.tags and r.text() == self.records.writer for r in found
            )
            if any(done_tag(m) in r.tags for r in found):
                self.state.mark_done([m.msg_id])
            elif recorded or (m.msg_id < msg_id):
                handed.add(m.msg_id)
            elif m.msg_id == msg_id:
                return set()  # never handed out to a handler or a model under this identity
        return handed

    async def fail(self, msg_id: int, reason: object) -> Failure:
        """A handed-out message could not be handled (``reason``: an exception or a text).
        Count this delivery on the broker; at ``max_deliveries``, dead-letter the message.
        Otherwise it stays handed out: hand it to the handler again, or leave it to whoever
        reads the group next."""
        async with self._lock:
            message = self._handed_out(msg_id)
            reason = failure_reason(reason)
            attempts = await self._count_failure(message, reason)
            if self.max_deliveries is None or attempts < self.max_deliveries:
                return Failure(attempts, dead_lettered=False)
            await self._set_aside(message, attempts, reason)
            return Failure(attempts, dead_lettered=True)

    async def dead_letter(self, msg_id: int, reason: object) -> int:
        """Set a handed-out message aside now, whatever its budget: copy it into the
        dead-letter mailbox, then mark it done. Returns its deliveries counted, this one."""
        async with self._lock:
            message = self._handed_out(msg_id)
            reason = failure_reason(reason)
            attempts = await self._count_failure(message, reason)
            await self._set_aside(message, attempts, reason)
            return attempts

    def handed_out(self, msg_id: int) -> int:
        """How many times the message was handed out without being finished, as far as the
        broker's records say (this hand-out too): 1 unless it was before."""
        return self._deliveries.get(msg_id, 0) + 1

    async def _count_failure(self, message: Message, reason: str) -> int:
        """Record a failed delivery and return the message's unfinished deliveries (this one
        counted once: by its ``begin`` record, or by this failure's)."""
        msg_id = message.msg_id
        if self.max_deliveries is None:  # no records: this reader's own count
            attempts = self._deliveries.get(msg_id, 0) + 1
            self._deliveries[msg_id] = attempts
            return attempts
        counted = msg_id in self._recorded
        await self.records.record_failure(message, reason, counted)
        # Handed to its handler again, it is recorded again: a death then is one more.
        self._recorded.discard(msg_id)
        self._unrecorded.add(msg_id)
        records = (await self.records.deliveries([message]))[msg_id]
        self._deliveries[msg_id] = attempts = max(count_deliveries(records, message), 1)
        return attempts

    async def _read_deliveries(self, batch: list[Message]) -> list[Message]:
        """Read the deliveries of what a reader that died may have been handling: this reader's
        first batch, and what a worker takes over from a holder that is gone (docs/groups.md,
        "Poison messages"). What is past its budget (its readers died handling it) is set
        aside, and what a reader finished without the group passing it (a done record) is
        done, instead of handed out; the rest of ``batch`` is returned, ``begin`` recording
        their hand-out."""
        budget = self.max_deliveries
        assert budget is not None  # without one nothing is recorded
        if not self._read_first:
            self._read_first, read = True, batch
        else:
            read = [m for m in batch if m.msg_id in self._taken_over]
        self._taken_over.clear()
        if not read:
            return batch
        records = await self.records.deliveries(read)
        kept = set()
        for message in read:
            found = records[message.msg_id]
            if any(done_tag(message) in r.tags for r in found):
                self.state.mark_done([message.msg_id])
                continue
            self._deliveries[message.msg_id] = before = count_deliveries(found, message)
            if before < budget:
                kept.add(message.msg_id)
                continue
            reason = last_reason(found, message) or (
                f"handed out {before} times and never finished: each reader handling it "
                "stopped first (crashed, or was killed)"
            )
            self.state.hand_out([message.msg_id])
            await self._set_aside(message, before, reason)
        self._unrecorded |= kept
        read_ids = {m.msg_id for m in read}
        return [m for m in batch if m.msg_id in kept or m.msg_id not in read_ids]

    def _handed_out(self, msg_id: int) -> Message:
        p.check_int("msg_id", msg_id)
        if msg_id not in self.state.pending:
            raise Mq9Error(
                f"msg_id {msg_id} is not handed out by this reader and waiting: fetch it first"
            )
        return self.state.seen[msg_id]

    async def _set_aside(self, message: Message, attempts: int, reason: str) -> None:
        """The copy first, then done: a crash between the two hands the message out again,
        and its failures, counted on the broker, set it aside again (a copy twice, never
        none)."""
        await dead_letters.store(
            self.client,
            self.dead_letter_address,
            message,
            mailbox=self.mail_address,
            group=self.group_name,
            attempts=attempts,
            reason=reason,
        )
        if self.on_dead_letter is not None:
            await _maybe_await(self.on_dead_letter(message, attempts, reason))
        await self._done([message.msg_id])

    async def _done(self, ids: list[int]) -> None:
        for msg_id in ids:  # what this reader knew of their deliveries is over with them
            self._deliveries.pop(msg_id, None)
            self._recorded.discard(msg_id)
            self._unrecorded.discard(msg_id)
        state = self.state
        finished = [state.seen[i] for i in ids if i in state.pending]
        if self.leases is not None and finished:
            await self.leases.record_done(finished)
        state.mark_done(ids)
        self._acks.finish(finished)
        if self.leases is not None and state.held:
            # What other workers held may be finished by now: learn it, so the group's
            # position moves with this ack rather than at the next fetch.
            verdict = await self.leases.judge([state.seen[i] for i in sorted(state.held)])
            state.mark_done(verdict.done)
        await self._advance()
        unpassed = [m for m in finished if m.msg_id > state.floor]
        if self.leases is None and self.max_deliveries is not None and unpassed:
            # Finished, but the group stays behind them (an older message waits): say so on
            # the broker, so the next reader neither hands them out nor charges them again.
            await self.records.record_done(unpassed)

    async def settle(self, *, deliver: str = "earliest", from_id: int | None = None) -> None:
        """Ack the group past what is done, handing nothing out: what a reader that stops
        calls last. ``done`` acks only as far as the last answer proves (``horizon`` in
        state.py), and a reader's first answer, starting past the group's position, proves
        little: the records keep the next reader from handing those messages out again, but
        any other reader of the group (RobustMQ's own clients) would be. One more read shows
        the group may pass them; what it finds new stays for whoever reads next.
        ``deliver``/``from_id`` as for ``fetch``, until the group first acks."""
        async with self._lock:
            state = self.state
            if not self.commit or not (state.handled or state.passed_unacked):
                return
            answer, _fit, asked = await self._read(state.ask(1), deliver, from_id)
            if state.reused_ids(answer):  # the log went back: what was done is of the lost one
                return
            if state.went_back(answer) or self._acks.went_back(answer):
                await self._ack(state.committed, again=True)
            state.mark_done(self._acks.done_among(state.accept(answer, asked)))
            await self._advance()

    async def release(self, msg_ids: Iterable[int]) -> None:
        """Give back messages this reader handed out but the caller did not pass on (e.g. they
        did not fit in a tool's answer): the next fetch hands them out again. Nothing was
        acked past them; a worker's leases on them stay its own until it takes them back."""
        async with self._lock:
            self.state.pending.difference_update(msg_ids)

    async def _fetch(
        self, num_msgs: int, start: tuple[str, int | None]
    ) -> tuple[list[Message], tuple[str, int | None]]:
        """One fetch: its batch, and where the group's next FETCH starts."""
        state = self.state
        while True:
            asked = state.ask(num_msgs)
            answer, fit, asked = await self._read(asked, *start)
            if self.leases is not None:  # (once, after a read that found the mailbox)
                await self.leases.make()
            tries = 0
            while (
                self.commit
                and tries < BEHIND_TRIES
                and (state.went_back(answer) or self._acks.went_back(answer))
            ):
                # The group's position is behind this reader's last ack, or another's of this
                # client: put it back first, so nothing finished is handed out again. The
                # answer after that is checked too: it may be behind again (another reader's
                # ack answered while it was read, a lower commit landing late, a replica
                # reading an older position).
                await self._ack(state.committed, again=True)
                answer, fit, asked = await self._read(asked, *start)
                tries += 1
            start = fixed_start(*start, answer)
            # (what an ack of this client passed is no reused id: the answer is behind)
            if set(state.reused_ids(answer)) - self._acks.done_among(answer):
                skipped = bool(state.skips)
                self._log_went_back(answer)
                state = self.state  # this answer is the fresh state's first
                if skipped:  # (read again: lanes read past an old run may hide reused ids)
                    answer, fit, asked = await self._read(asked, *start)
            fresh = state.accept(answer, asked)
            # Finished by another reader of this client, or passed by an ack of theirs that
            # was answered (an answer still behind it): done here too (GroupAcks)
            finished = self._acks.done_among(fresh)
            if finished:
                state.mark_done(finished)
            new = [m for m in fresh if m.msg_id not in finished]
            chosen = new[:num_msgs] if self.leases is None else await self._take(new, num_msgs)
            batch = chosen
            if chosen and (not self._read_first or self._taken_over):
                batch = await self._read_deliveries(chosen)
            floor = state.floor
            # Before the batch is marked: if the ack fails, nothing is left handed out unseen.
            await self._advance()
            if fit is not None and not fresh and not state.pending and state.floor == floor:
                raise AnswerTooLarge(self._stalled(fit), fits=fit)
            state.hand_out(m.msg_id for m in batch)
            # With leases, every new message may turn out done or held by another worker, and
            # any reader may set one aside or find it done: what that taught lets the next
            # FETCH reach past them, so "nothing" is never answered while a message waits.
            set_aside = len(batch) < len(chosen) or bool(finished)
            if batch or not fresh or (state.ask(num_msgs) <= asked and not set_aside):
                return batch, start

    async def _read(
        self, asked: int, deliver: str, from_id: int | None
    ) -> tuple[list[Message], int | None, int]:
        """One FETCH of ``asked``, or of as many as the broker says fit in one answer (the
        horizon stays safe: it is judged against what was asked)."""
        fit: int | None = None
        while True:
            try:
                answer = await self._fetch_skipping(asked, deliver, from_id)
                return answer, fit, asked
            except AnswerTooLarge as exc:
                fit = exc.fits
                if not 0 < fit < asked:
                    raise
                asked = fit

    async def _fetch_skipping(self, asked: int, deliver: str, from_id: int | None) -> list[Message]:
        """One FETCH that asks the broker to read each lane after the done run it begins with
        (``skip_through``, docs/groups.md "Past a backlog"), where the client can say so: the
        official SDK's cannot, and RobustMQ ignores it (the state tells from the answer)."""
        state = self.state
        state.skips = state.skip_through() if self._skipping else {}
        extra: dict[str, Any] = {}
        if state.skips:
            extra["skip_through"] = {lane.value: msg_id for lane, msg_id in state.skips.items()}
        try:
            return await self.client.fetch(
                self.mail_address,
                group_name=self.group_name,
                deliver=deliver,
                from_id=from_id,
                num_msgs=asked,
                max_wait_ms=0,
                **extra,
            )
        except TypeError:
            if not extra:
                raise
            # A client without it (the official SDK's, or behind a wrapper that passes it on):
            # every lane read from the position from now on; a TypeError of another cause
            # comes again without it
            self._skipping = False
            state.skips = {}
            return await self._fetch_skipping(asked, deliver, from_id)

    async def _take(self, fresh: list[Message], num_msgs: int) -> list[Message]:
        """With leases: claim what is new, learn what other workers hold or finished (the
        messages held elsewhere too: their holder may have finished, or died), and return what
        this worker won, in the broker's order."""
        assert self.leases is not None
        state = self.state
        won: set[int] = set()
        # Seen held by another worker, now won: its holder died or overran (the broker hides
        # an expired claim, so this reader's memory is what tells).
        held_before = set(state.held)
        judged = fresh + [m for m in state.last_answer if m.msg_id in state.held]
        chunk, candidates = fresh[:num_msgs], fresh[num_msgs:]
        while True:
            if chunk:
                await self.leases.claim(chunk)
            verdict = await self.leases.judge(judged)
            state.mark_done(verdict.done)
            state.mark_held(verdict.others)
            state.release_held(verdict.free)
            won |= verdict.mine
            if judged is not chunk:  # the first round: what may be claimed next
                claimed = {m.msg_id for m in chunk}
                candidates = [m for m in judged if m.msg_id in verdict.free - claimed]
            # Workers that fetch at once all claim the head of the same answer: whoever lost
            # some claims the next free ones (and those whose lease ran out), at once.
            room = num_msgs - len(won)
            chunk, candidates = candidates[: max(room, 0)], candidates[max(room, 0) :]
            if not chunk:
                break
            judged = chunk
        if self.max_deliveries is not None:  # without a budget nothing is recorded
            self._taken_over |= won & held_before
        return [m for m in state.last_answer if m.msg_id in won][:num_msgs]

    def _log_went_back(self, answer: list[Message]) -> None:
        """The broker hands out new messages under ids this reader acked past: its log went
        back. Say so once, and read the mailbox afresh so they are handed out."""
        reused = self.state.reused_ids(answer)
        self.client.warn_once(
            self.mail_address,
            p.warn_log_went_back(self.mail_address, min(reused), self.state.floor),
        )
        self.state = ReaderState()
        self._acks.forget()

    def _stalled(self, fit: int) -> str:
        return (
            f"reader of {self.mail_address} (group {self.group_name!r}) cannot go on: this "
            f"broker's answers hold only {fit} of these messages, all {fit} it hands out first "
            "are handled already, and older messages of lower priority may wait behind them "
            "(acking past those would skip them). Let the broker send larger answers "
            "(BrokerLimits.max_answer, and the nats-server's max_payload: mq9-dev-broker "
            "starts its nats-server with 64 MiB) or send smaller messages (a reference to "
            "large data instead of the data)"
        )

    async def _advance(self) -> None:
        ack = self.state.advance()
        if self.commit and ack is not None:
            await self._ack(ack)
            self.state.acked(ack)

    async def _ack(self, msg_id: int | None, *, again: bool = False) -> None:
        """Ack ``msg_id`` in this client's turn for the group (``GroupAcks``): not at all
        when another reader of it had an ack at or past it answered, unless ``again`` (the
        position went back): then the highest of the two is sent again. Never below an ack
        sent before whose answer never came: that one is sent instead."""
        acks = self._acks
        async with acks.turn:
            highest = acks.highest
            if highest is not None and (msg_id is None or msg_id <= highest):
                if not again:
                    return
                msg_id = highest
            if msg_id is None:
                return
            newest_time = self.state.newest_time
            if acks.sent is None or msg_id > acks.sent:
                acks.sent, acks.sent_time = msg_id, newest_time
            else:  # one at or past it, sent before, may be stored yet
                msg_id, newest_time = acks.sent, max(newest_time, acks.sent_time)
            await self.client.ack(self.mail_address, self.group_name, msg_id)
            acks.acked(msg_id, newest_time)


class Consumer:
    """A background fetch loop started by ``Mq9Client.consume``."""

    def __init__(
        self,
        client: MailboxClient,
        mail_address: str,
        handler: Handler,
        *,
        group_name: str | None,
        deliver: str,
        num_msgs: int,
        max_wait_ms: int,
        auto_ack: bool,
        error_handler: ErrorHandler | None,
        worker: str | None = None,
        lease_ttl: int = DEFAULT_LEASE_TTL,
        max_deliveries: int | None = DEFAULT_MAX_DELIVERIES,
        dead_letter: str | None = None,
    ) -> None:
        self.mail_address = mail_address
        self.group_name = group_name
        self.processed_count = 0
        self.dead_lettered: list[int] = []  # msg_ids this consumer set aside, past the budget
        self._client = client
        self._handler = handler
        self._error_handler = error_handler
        self._deliver = deliver
        self._from_id: int | None = None
        self._num_msgs = num_msgs
        self._max_wait_ms = max_wait_ms
        self._reader = (
            None
            if group_name is None
            else GroupReader(
                client,
                mail_address,
                group_name,
                worker=worker,
                lease_ttl=lease_ttl,
                commit=auto_ack,
                max_deliveries=max_deliveries,
                dead_letter=dead_letter,
            )
        )
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Messages whose handler failed, called again once due: msg_id -> (due, delay, msg).
        self._retry: dict[int, tuple[float, float, Message]] = {}
        # Without a group the consumer keeps its own position: everything below ``_floor`` is
        # done, ``_seen`` holds the ids at or above it already handed to the handler.
        self._floor = 0
        self._seen: set[int] = set()

    @property
    def is_running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Fetch the first batch (which fixes where a group starts) and run in a task of its
        own. ``Mq9Client.consume`` calls it: a consumer it hands back is running."""
        first = await self._fetch(max_wait_ms=0)  # fixes the start point before returning
        self._task = asyncio.create_task(self._run(first), name=f"mq9-consume-{self.mail_address}")

    async def stop(self) -> None:
        """Finish the fetch and the batch under way, then stop. What was handled is acked;
        what was not (failed messages included) is handed out again to the group."""
        self._stopping.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        if self._reader is not None:
            try:  # the batch's own acks go only as far as its answer proved
                await self._reader.settle(deliver=self._deliver, from_id=self._from_id)
            except Mq9Error as exc:  # handed out again to the group: at least once
                log.warning("consumer of %s: the last ack failed: %s", self.mail_address, exc)

    async def _fetch(self, *, max_wait_ms: int) -> list[Message]:
        if self._reader is not None:
            batch = await self._reader.fetch(
                num_msgs=self._num_msgs,
                max_wait_ms=max_wait_ms,
                deliver=self._deliver,
                from_id=self._from_id,
            )
            self._deliver, self._from_id = fixed_start(
                self._deliver, self._from_id, self._reader.last_answer
            )
            return batch
        asked = min(self._num_msgs + len(self._seen), p.MAX_NUM_MSGS)
        found = await self._client.fetch(
            self.mail_address,
            deliver=self._deliver,
            from_id=self._from_id,
            num_msgs=asked,
            max_wait_ms=max_wait_ms,
        )
        # from_id past the end answers the newest message: it is below the floor, so dropped.
        fresh = [m for m in found if m.msg_id >= self._floor and m.msg_id not in self._seen]
        if self._deliver == "latest" or len(found) < asked:
            # Every lane was read to its end (with latest only the newest message can be
            # there): nothing at or below the largest id returned is left.
            self._floor = max([self._floor - 1, *(m.msg_id for m in found)]) + 1
            self._seen.clear()
            self._deliver, self._from_id = "from_id", self._floor
        else:
            self._seen.update(m.msg_id for m in fresh)
        return fresh

    async def _run(self, batch: list[Message]) -> None:
        backoff = 0.1
        while True:
            await self._handle_batch(batch)
            if self._stopping.is_set():
                return
            try:
                batch = await self._fetch(max_wait_ms=0 if self._due() else self._max_wait_ms)
                backoff = 0.1
            except Mq9Error as exc:
                batch = []
                log.warning("consumer of %s: fetch failed: %s", self.mail_address, exc)
                with contextlib.suppress(asyncio.TimeoutError):  # pause; stop() ends it
                    await asyncio.wait_for(self._stopping.wait(), backoff)
                backoff = min(backoff * 2, 5.0)
            batch = self._due() + batch

    def _due(self) -> list[Message]:
        now = asyncio.get_running_loop().time()
        return [message for due, _, message in self._retry.values() if due <= now]

    async def _handle_batch(self, batch: list[Message]) -> None:
        handled: list[int] = []
        for message in batch:
            if self._reader is not None and self._reader.records_begin(message.msg_id):
                # A death while handling it charges it alone: what finished before is done
                # first, and its hand-out recorded (docs/groups.md, "Poison messages").
                handled = await self._finish(handled)
                try:
                    await self._reader.begin([message.msg_id])
                except Mq9Error as exc:  # handled all the same; a death here is counted later
                    log.warning("consumer of %s: recording failed: %s", self.mail_address, exc)
            try:
                await _maybe_await(self._handler(message))
            except Exception as exc:
                if self._reader is not None:  # without a group nothing holds it back: no retry
                    await self._failed(message, exc)
                await self._report(message, exc)
                continue
            self._retry.pop(message.msg_id, None)
            self.processed_count += 1
            handled.append(message.msg_id)
        await self._finish(handled)

    async def _finish(self, handled: list[int]) -> list[int]:
        """Mark ``handled`` done (and ack what that lets pass); what is left to mark: none."""
        if self._reader is not None and handled:
            try:
                await self._reader.done(handled)
            except Mq9Error as exc:
                # Recorded as handled all the same; the ack is retried at the next fetch.
                log.warning("consumer of %s: ack failed: %s", self.mail_address, exc)
        return []

    async def _failed(self, message: Message, exc: Exception) -> None:
        """Count the failure on the broker: past the budget the message is dead-lettered and
        the group moves on; else it is handed to the handler again, later."""
        assert self._reader is not None
        if message.msg_id not in self._reader.pending:  # the reader started afresh: it will
            self._retry.pop(message.msg_id, None)  # hand the message out again itself
            return
        try:
            failure = await self._reader.fail(message.msg_id, exc)
        except Mq9Error as error:  # not counted: tried again all the same, and counted then
            log.warning("consumer of %s: recording a failure failed: %s", self.mail_address, error)
            self._retry_later(message)
            return
        if not failure.dead_lettered:
            self._retry_later(message)
            return
        self._retry.pop(message.msg_id, None)
        self.dead_lettered.append(message.msg_id)
        log.warning(
            "consumer of %s: msg %s failed %s times: dead-lettered into %s",
            self.mail_address,
            message.msg_id,
            failure.attempts,
            self._reader.dead_letter_address,
        )

    def _retry_later(self, message: Message) -> None:
        _, delay, _ = self._retry.get(message.msg_id, (0.0, 0.05, message))
        delay = min(delay * 2, 30.0)
        self._retry[message.msg_id] = (asyncio.get_running_loop().time() + delay, delay, message)

    async def _report(self, message: Message, exc: Exception) -> None:
        if self._error_handler is None:
            log.error(
                "consumer of %s: handler failed on msg %s: %r",
                self.mail_address,
                message.msg_id,
                exc,
            )
            return
        try:
            await _maybe_await(self._error_handler(message, exc))
        except Exception:
            log.exception("consumer of %s: error_handler failed", self.mail_address)


@dataclass(frozen=True)
class Replayed:
    """What ``replay`` did: the msg_ids of the copies it sent back, and the messages of the
    dead-letter mailbox it skipped (their msg_id there, and why)."""

    sent: list[int]
    skipped: dict[int, str]


async def replay(
    client: MailboxClient,
    dead_letters: str,
    *,
    mailbox: str | None = None,
    group_name: str = "replay",
    num_msgs: int = 10,
) -> Replayed:
    """Send the dead letters of the mailbox ``dead_letters`` back to ``mailbox`` (default: the
    mailbox whose ``<mailbox>.dlq`` it is), read with the consumer group ``group_name`` (each
    is sent back once, whatever restarts: a dead letter is done once its copy is stored).
    Payload, priority, tags and other headers go back as they were; the key does not (an old
    message must not replace a newer one of its key), and the copy is a new message with a
    new msg_id.

    Only to ``mailbox``, whatever a message's header names: a dead-letter mailbox is an
    ordinary mailbox that others may write to. Where the broker vouches for senders (a
    ``--credentials`` broker writes ``mq9-sender`` on every message), only what this client's
    own agent set aside: a message another agent wrote there would otherwise go out with this
    agent's name on it. A message that is no dead letter, one of another mailbox or
    written by another agent is skipped, reported in ``Replayed.skipped`` and logged, and
    passed by the group; the rest are sent back all the same."""
    target = mailbox if mailbox is not None else _replayed_to(dead_letters)
    check_writable(p.check_address(target), "replay's mailbox")
    # the agent this client is to an enforcing broker (Mq9Client.principal); a client without
    # one (memory://, a test's) has none, and then only what no broker vouched for is replayed
    me = getattr(client, "principal", None)
    reader = GroupReader(client, dead_letters, group_name)
    sent: list[int] = []
    skipped: dict[int, str] = {}
    while batch := await reader.fetch(num_msgs=num_msgs):
        for message in batch:
            why = _not_replayable(message, target, me)
            if why is None:
                sent.append(await _send_back(client, target, message))
            else:
                skipped[message.msg_id] = why
                log.warning("replay of %s: skipped msg %s: %s", dead_letters, message.msg_id, why)
            await reader.done(message.msg_id)
    return Replayed(sent, skipped)


def _replayed_to(dead_letters: str) -> str:
    base = dead_letters.removesuffix(DEAD_LETTER_SUFFIX)
    if base in ("", dead_letters) or dead_letter_address(base) != dead_letters:
        raise ValueError(
            f"{p.quoted(dead_letters)} is no mailbox's default dead-letter mailbox "
            "(<mailbox>.dlq): give replay the mailbox to send its dead letters back to"
        )
    return base


def _not_replayable(message: Message, target: str, me: str | None) -> str | None:
    """Why ``message`` is not sent back to ``target`` by the agent ``me`` (None: it is)."""
    sender = message.header.get(p.HEADER_SENDER)
    if sender is not None and sender != me:
        return (
            f"written by the agent {p.quoted(sender)}, not by this one ({p.quoted(me)}): "
            "replay sends back only what its own agent set aside"
        )
    try:
        letter = DeadLetter.read(message)
    except ValueError as exc:
        return str(exc)
    if letter.mailbox != target:
        return (
            f"a dead letter of {p.quoted(letter.mailbox)}, not of {p.quoted(target)}: "
            "replay sends back only to the mailbox it was given"
        )
    return None


async def _send_back(client: MailboxClient, target: str, message: Message) -> int:
    return await client.send(
        target,
        p.payload_text(message.payload),
        priority=message.priority,
        tags=message.tags or None,
        headers=DeadLetter.read(message).header or None,
    )


async def _maybe_await(result: Awaitable[None] | None) -> None:
    if inspect.isawaitable(result):
        await result
