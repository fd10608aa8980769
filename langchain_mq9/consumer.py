"""Consuming a mailbox safely on RobustMQ's semantics: ``GroupReader`` and ``Consumer``.

RobustMQ keeps no leases: a group's FETCH hands out the same messages until they are acked,
and ACK X moves all three priority lanes of the group past X, so acking an urgent message can
skip older normal ones for good. ``GroupReader`` hands each message out once per reader and
acks only its *safe horizon*, the largest id below which every message is handled. Workers
sharing a group all get the same messages, so a reader given ``worker=`` first claims them in
a side mailbox and hands out only those it won. ``Consumer`` is the background loop that
``Mq9Client.consume`` runs, on a ``GroupReader`` when it has a group.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from . import protocol as p
from .protocol import PRIORITY_ORDER, Mq9Error

if TYPE_CHECKING:
    from .client import Message, Mq9Client

log = logging.getLogger("langchain_mq9")

Handler = Callable[["Message"], Awaitable[None] | None]
ErrorHandler = Callable[["Message", Exception], Awaitable[None] | None]

DEFAULT_CLAIM_TTL = 3600

# The largest payload a message can have (assumption: NATS's default max_payload, 1 MiB, in
# force wherever messages were sent; a payload can be no larger than the NATS message it
# travels in). A lane read holding more than LANE_READ_BYTES minus this may have been cut by
# RobustMQ's per-read byte cap; one holding less was not.
LARGEST_MESSAGE = p.DEFAULT_MAX_PAYLOAD

# How often a waiting fetch looks again. A FETCH that finds nothing on RobustMQ sleeps its whole
# max_wait_ms without waking when a message arrives, and meanwhile holds the handler that serves
# its connection and every connection whose id shares that handler (docs/protocol.md §1): so
# no request of ours asks the broker to wait; a fetch that may wait reads at once, again and
# again, and a message arriving mid-wait is handed out within this many seconds.
POLL_SECONDS = 0.1

T = TypeVar("T")


def fixed_start(
    deliver: str, from_id: int | None, answer: list[Message]
) -> tuple[str, int | None]:
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
    """The fetch/done cycle of one reader of a consumer group.

    ``fetch`` hands out messages this reader has not handed out before, highest priority
    first; ``done`` marks them handled and acks the group past everything handled so far.
    A reader that crashes loses nothing: a new reader of the same group gets every message
    after the last ack again, so handle idempotently the few that were handled but not acked.

    With ``worker`` (a name unique among the group's live workers) competing readers never
    hand out the same message: each claims messages in the mailbox ``{mail_address}.claims``
    (one SEND, payload = worker, tagged ``m{id}.{create_time}.{group digest}``, TTL
    ``claim_ttl``) and the oldest claim of a message wins; messages won by others count as
    handled here. Limit: a worker that dies holding claims loses those messages until
    ``claim_ttl`` passes or a worker of the same name starts again; they stay in the mailbox
    (``query`` finds them) but the group's position may already have moved past them.

    ``commit=False`` tracks what is handled without ever acking, for callers who ack.

    The safe horizon H (every id <= H is done; the reader acks H), from the broker's answer to
    ``num_msgs = n``: the broker reads the lanes critical, urgent, normal from the group's
    position, each up to n messages and up to RobustMQ's 30 MiB of payload per read, and stops
    once it holds n. A lane that returned n messages, or more than 30 MiB - 1 MiB of payload
    (1 MiB: the largest payload assumed, NATS's default max_payload), may go on past its last id;
    any other lane that was read was read to its end, as far as the ids seen before this
    FETCH and in the lanes read up to it (RobustMQ reads the lanes one after another). When no
    lane was left unread, H may rise to the smallest of: the largest id seen, the last id of
    each lane that may go on, what each lane read to its end vouches for, and every id not yet
    handled minus 1. In any case H may rise through the ids right above the
    last H that are in the answer and handled. H stays below every message handed out and not
    done yet. A broker that cannot send the whole answer to n says how many messages fit; the
    reader asks for that many, and raises ``Mq9Error`` when such an answer holds nothing new,
    the reader holds nothing, and H cannot move: it could only return [] while older messages
    wait (larger answers or smaller messages are needed).
    """

    def __init__(
        self,
        client: Mq9Client,
        mail_address: str,
        group_name: str,
        *,
        worker: str | None = None,
        claim_ttl: int = DEFAULT_CLAIM_TTL,
        commit: bool = True,
    ) -> None:
        self.client = client
        self.mail_address = p.check_address(mail_address)
        self.group_name = p.check_group_name(group_name)
        if worker is not None and (not isinstance(worker, str) or not worker.strip()):
            raise ValueError("worker must be a non-empty string naming this reader")
        self.worker = worker
        self.claim_ttl = p.check_int("claim_ttl", claim_ttl, 1, p.MAX_SECONDS)
        self.claims_address = f"{mail_address}.claims"
        self.commit = commit
        self.pending: set[int] = set()  # handed out, not done yet
        self.handled: set[int] = set()  # done, or won by another worker; above the floor
        self.committed: int | None = None  # the last msg_id this reader acked
        # Every message with an id <= floor is done: handled, or behind the group's position.
        self._floor = -1
        self.last_answer: list[Message] = []  # the broker's last answer, and what was asked
        self._asked = 0
        # The largest msg_id seen in any answer before the last one: those messages existed
        # before the last FETCH began, so each lane it read in full covers them.
        self._known_before = -1
        self._known = -1
        self._claims_ready = False
        # One fetch or done at a time: two fetches computing "new" from the same state would
        # hand the same message out twice.
        self._lock = asyncio.Lock()
        # Claims are per group and per message (its create_time tells a mailbox made again
        # under the same name, whose ids start over, from the old one).
        self._group_digest = hashlib.sha256(group_name.encode()).hexdigest()[:12]

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
                found = await self._fetch(num_msgs, *start)
                start = fixed_start(*start, self.last_answer)
                return found

        return await until_found(once, max_wait_ms)

    async def done(self, msg_ids: int | Iterable[int]) -> None:
        """Mark handed-out messages handled, then ack the group past everything handled."""
        ids = [msg_ids] if isinstance(msg_ids, int) else list(msg_ids)
        async with self._lock:
            for msg_id in ids:
                p.check_int("msg_id", msg_id)
                if not (msg_id in self.pending or msg_id in self.handled or msg_id <= self._floor):
                    raise Mq9Error(
                        f"msg_id {msg_id} was not handed out by this reader: fetch it first"
                    )
            for msg_id in ids:
                self.pending.discard(msg_id)
                if msg_id > self._floor:
                    self.handled.add(msg_id)
            await self._advance()

    async def _fetch(self, num_msgs: int, deliver: str, from_id: int | None) -> list[Message]:
        # The answer starts at the group's position, and what this reader holds or handled
        # above it fills the higher lanes first: ask for that much more, so the new messages
        # and the lower lanes are reached too.
        asked = min(num_msgs + len(self.handled) + len(self.pending), p.MAX_NUM_MSGS)
        fit: int | None = None  # how many the broker said fit, when it refused more
        while True:
            try:
                answer = await self.client.fetch(
                    self.mail_address,
                    group_name=self.group_name,
                    deliver=deliver,
                    from_id=from_id,
                    num_msgs=asked,
                    max_wait_ms=0,
                )
                break
            except Mq9Error as exc:
                # The whole answer would not fit in one NATS message: ask for what fits.
                # The horizon stays safe: it is judged against what was asked.
                fit = p.answer_fits(exc.message)
                if fit is None or not 0 < fit < asked:
                    raise
                asked = fit
        self.last_answer, self._asked = answer, asked
        self._known_before = self._known
        self._known = max([self._known, *(m.msg_id for m in answer)])
        fresh = [m for m in answer if self._is_new(m.msg_id)]
        fresh_any = bool(fresh)
        if self.worker is None:
            batch = fresh[:num_msgs]
        else:
            batch = []
            while fresh and len(batch) < num_msgs:
                room = num_msgs - len(batch)
                batch += await self._claim(fresh[:room])
                fresh = fresh[room:]
        # Before the batch is marked: if the ack fails, nothing is left handed out unseen.
        floor = self._floor
        await self._advance()
        if fit is not None and not fresh_any and not self.pending and self._floor == floor:
            raise Mq9Error(self._stalled(fit))
        self.pending.update(m.msg_id for m in batch)
        return batch

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

    def _is_new(self, msg_id: int) -> bool:
        return msg_id > self._floor and msg_id not in self.handled and msg_id not in self.pending

    def _done(self, msg_id: int) -> bool:
        return msg_id <= self._floor or msg_id in self.handled

    async def _advance(self) -> None:
        horizon = self._horizon()
        if horizon > self._floor:
            self._floor = horizon
            self.handled = {i for i in self.handled if i > horizon}
        if (
            self.commit
            and self._floor >= 0
            and (self.committed is None or self._floor > self.committed)
        ):
            await self.client.ack(self.mail_address, self.group_name, self._floor)
            self.committed = self._floor

    def _horizon(self) -> int:
        """The largest id H such that every message with an id <= H is done, from what the
        last answer proves; never less than the floor."""
        answer, asked = self.last_answer, self._asked
        ids = [m.msg_id for m in answer]
        horizon = self._floor
        # 1. All three lanes start at the group's position S. The broker reads a lane only
        # while it holds fewer than `asked`; a lane read returns up to `asked` of its messages
        # from S, and stops before the one that would take its payload bytes above
        # LANE_READ_BYTES (RobustMQ). A lane that returned fewer than `asked` and at most
        # LANE_READ_BYTES - LARGEST_MESSAGE bytes was read to its end (a cut one holds more:
        # the message left out would have taken it above the cap); any other may go on after
        # its last id; a lane not read may hold any id from S on, even below everything in
        # the answer: then this rule proves nothing. (It takes the answer to be whole: a
        # broker must not drop messages from an answer to make it fit.) A lane read to its
        # end covers only the messages that existed when it was read: RobustMQ reads the
        # lanes one after another, so a later lane may return a message written after an
        # earlier lane was read, while a message of the earlier lane's priority written in
        # between went unseen. So a full lane vouches for the ids seen before this FETCH and
        # in the lanes read up to it, no further (rule 2 needs no such care).
        whole_below = p.LANE_READ_BYTES - LARGEST_MESSAGE
        held, skipped, bound = 0, False, max([self._known_before, *ids])
        covered = self._known_before
        for priority in PRIORITY_ORDER:
            lane = [m for m in answer if m.priority is priority]
            if held >= asked:
                skipped = True
                continue
            covered = max([covered, *(m.msg_id for m in lane)])
            if lane and (len(lane) >= asked or sum(len(m.payload) for m in lane) > whole_below):
                bound = min(bound, max(m.msg_id for m in lane))
            else:
                bound = min(bound, covered)
            held += len(lane)
        if not skipped:  # an empty answer too: nothing from S on, so nothing below is waiting
            waiting = [i for i in ids if not self._done(i)]
            horizon = max(horizon, min([bound, *(i - 1 for i in waiting)]))
        # 2. Ids right above the floor that are all in the answer and done are done, whatever
        # lanes were skipped: a message in the answer is in no other lane.
        present = set(ids)
        run = self._floor
        while run + 1 in present and self._done(run + 1):
            run += 1
        horizon = max(horizon, run)
        # Never past a message a worker still holds.
        if self.pending:
            horizon = min(horizon, min(self.pending) - 1)
        return horizon

    async def _claim(self, messages: list[Message]) -> list[Message]:
        """Claim ``messages`` for this worker; return those it won (in order), and count the
        ones another worker won as handled."""
        assert self.worker is not None
        tags = [f"m{m.msg_id}.{m.create_time}.{self._group_digest}" for m in messages]
        if not self._claims_ready:
            await self._create_claims_mailbox()
        try:
            await self.client.send(self.claims_address, self.worker, tags=tags, ttl=self.claim_ttl)
        except Mq9Error as exc:
            if exc.message != p.err_mailbox_missing(self.claims_address):
                raise
            await self._create_claims_mailbox()  # it was deleted meanwhile: once more
            await self.client.send(self.claims_address, self.worker, tags=tags, ttl=self.claim_ttl)
        # A QUERY by tags returns, for each tag, its oldest claims (up to 100), so the oldest
        # claim of every message is there, whatever else the answer holds.
        first: dict[str, Message] = {}
        for claim in await self.client.query(self.claims_address, tags=tags):
            for tag in claim.tags:
                if tag not in first or claim.msg_id < first[tag].msg_id:
                    first[tag] = claim
        won = []
        for message, tag in zip(messages, tags, strict=True):
            winner = first.get(tag)
            if winner is None:  # our own claim not visible: leave it for the next fetch
                continue
            if winner.payload == self.worker.encode():
                won.append(message)
            else:
                self.handled.add(message.msg_id)
        return won

    async def _create_claims_mailbox(self) -> None:
        try:
            await self.client.mailbox_create(name=self.claims_address, ttl=0)
        except Mq9Error as exc:
            if exc.message != p.err_mailbox_exists(self.claims_address):
                raise
        self._claims_ready = True


class Consumer:
    """A background fetch loop started by ``Mq9Client.consume``."""

    def __init__(
        self,
        client: Mq9Client,
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
    ) -> None:
        self.mail_address = mail_address
        self.group_name = group_name
        self.processed_count = 0
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
            else GroupReader(client, mail_address, group_name, worker=worker, commit=auto_ack)
        )
        self._stopping = asyncio.Event()
        self._task: asyncio.Task | None = None
        # Messages whose handler failed, called again once due: msg_id -> (due, delay, msg).
        self._retry: dict[int, tuple[float, float, Message]] = {}
        # Without a group the consumer keeps its own position: everything below ``_floor`` is
        # done, ``_seen`` holds the ids at or above it already handed to the handler.
        self._floor = 0
        self._seen: set[int] = set()

    @property
    def is_running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _start(self) -> None:
        first = await self._fetch(max_wait_ms=0)  # fixes the start point before returning
        self._task = asyncio.create_task(self._run(first), name=f"mq9-consume-{self.mail_address}")

    async def stop(self) -> None:
        """Finish the fetch and the batch under way, then stop. What was handled is acked;
        what was not (failed messages included) is handed out again to the group."""
        self._stopping.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

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
            try:
                await _maybe_await(self._handler(message))
            except Exception as exc:
                if self._reader is not None:  # without a group nothing holds it back: no retry
                    self._retry_later(message)
                await self._report(message, exc)
                continue
            self._retry.pop(message.msg_id, None)
            self.processed_count += 1
            handled.append(message.msg_id)
        if self._reader is not None and handled:
            try:
                await self._reader.done(handled)
            except Mq9Error as exc:
                # Recorded as handled all the same; the ack is retried at the next fetch.
                log.warning("consumer of %s: ack failed: %s", self.mail_address, exc)

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


async def _maybe_await(result: Any) -> None:
    if inspect.isawaitable(result):
        await result
