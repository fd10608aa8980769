"""The bundled mq9 broker: RobustMQ's mq9 behaviour as pure logic behind one ``handle`` call.

``BrokerEngine.handle(subject, headers, body)`` takes a request exactly as it arrives on the
wire and returns the reply bytes. The in-process transport calls it directly; ``serve_on_nats``
calls it for every request on a real NATS server. Every rule follows RobustMQ at the pinned
commit (``docs/protocol.md`` names the RobustMQ file behind each); the few places where we
differ are marked "(our choice)" there and here. Time comes from an injectable clock, so TTLs
and delays are tested by moving a ``ManualClock`` instead of sleeping.

Consumer groups, as RobustMQ has them: a group is three offsets per mailbox, one per priority
lane (``{group}-critical``, ``-urgent``, ``-normal``), looked up by group name across every
mailbox. A FETCH only reads; offsets move only on ACK, which commits ``msg_id + 1`` to all
three lanes. Until a group has committed anything, each FETCH starts from its deliver policy.

Delayed messages, as RobustMQ's delay queue handles them: due at the SEND's second plus the
delay; written then with a new msg_id and create_time, without their ``mq9-key`` and without
a TTL; dropped instead if their TTL (counted from the SEND) ended before they were due.

Reads, as RobustMQ's storage engine makes them: each lane read of a FETCH and each read of a
QUERY stops at ``num_msgs`` (or the QUERY's limit) messages and before the message that would
take its payload bytes above ``protocol.LANE_READ_BYTES`` (30 MiB; the first always counts).

Answers (our choice: RobustMQ sends what it read, which NATS may refuse) stay within
``answer_limit``: ``BrokerLimits.max_answer`` and the max_payload of every NATS connection
serving the engine (``serve_on_nats`` tells it); no limit in-process. A group's FETCH is
answered whole or refused with the largest ``num_msgs`` whose answer fits, since a reader
judges from the lanes how far it may ack and a cut lane would look finished; a FETCH without
a group and a QUERY are cut after the last message that fits. SEND refuses a message that
could not travel alone in an answer within ``max_payload`` and ``answer_limit``.

Sums RobustMQ makes in u64 (a message's expire_at, a delay's due time, ACK's msg_id + 1) wrap
round as its release build does, without overflow checks.

The engine is safe to share between event loops and threads: state changes happen under one
lock and never await; an empty FETCH sleeps outside it.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .. import protocol as p
from ..protocol import PRIORITY_ORDER, Mq9Error, Priority, WireError
from .clock import Clock, system_clock
from .mailbox import Mailbox, StoredMessage
from .registry import AgentEntry, AgentRegistry
from .storage import Storage, StorageError

log = logging.getLogger("langchain_mq9.broker")

# RobustMQ keeps a mailbox's messages 7 days by create_time, whatever the mailbox TTL, and
# removes older ones in a scan every 10 minutes (metadata-struct storage/shard.rs
# DEFAULT_RETENTION_SEC; storage-engine commitlog/rocksdb/expire.rs).
RETENTION_SECONDS = 7 * 86_400
RETENTION_SCAN_SECONDS = 600

_LANES = tuple(priority.value for priority in PRIORITY_ORDER)


@dataclass(frozen=True)
class BrokerLimits:
    """What one broker will hold (our choice: RobustMQ has no such limits). ``None`` means no
    limit beyond memory.

    ``max_payload``: the largest message SEND accepts, counted as the message takes room in a
    FETCH answer (payload as JSON text, headers, msg_id...); also bounds a registry entry and
    a DISCOVER answer. ``max_answer``: the largest FETCH or QUERY answer; None = no limit of
    the broker's own (a NATS connection serving it still bounds its answers by the server's
    max_payload, see ``BrokerEngine.answer_limit``).

    ``max_card_bytes``: the largest ``agent_info`` REGISTER keeps. A2A cards run to a few KiB;
    64 KiB leaves room for many skills, while a DISCOVER listing (bounded by max_payload,
    1 MiB by default) still holds a dozen or more of the largest. ``max_agents``: how many
    registrations the broker holds; 10,000 bounds the cards at about 640 MiB at worst and
    keeps a search over all of them well inside a request timeout (bench 4d/4e).
    ``max_groups``: how many consumer groups ACK creates **per mailbox** (a group is its
    offsets, kept until ``drop_group`` or until the retention empties the mailbox's log); per
    mailbox, so a client that makes names up fills only the mailbox it floods. 1,000 is far more
    than the agents reading one mailbox use; with names of at most ``protocol.MAX_GROUP_NAME``
    characters each costs a few hundred bytes."""

    max_payload: int = p.DEFAULT_MAX_PAYLOAD
    max_mailboxes: int | None = None
    max_messages_per_mailbox: int | None = None
    max_answer: int | None = None
    max_card_bytes: int | None = 64 * 1024
    max_agents: int | None = 10_000
    max_groups: int | None = 1_000


class BrokerEngine:
    def __init__(
        self,
        *,
        clock: Clock = system_clock,
        limits: BrokerLimits | None = None,
        storage: Storage | None = None,
        search: bool = True,
    ):
        self.clock = clock
        self.limits = limits or BrokerLimits()
        # False: DISCOVER with text or semantic is refused as RobustMQ's default build refuses
        # it (built without the vector-search feature); the listing still answers.
        self.search = search
        # Told of every change, under the lock; ``transaction()`` makes a request's changes
        # durable before its reply leaves (see storage.py). The default keeps nothing.
        self.storage = storage if storage is not None else Storage()
        # The latest REPORT of each agent. RobustMQ writes reports to an internal topic that
        # no mq9 command reads back; kept for the dev broker's operator only.
        self.reports: dict[str, tuple[str, int]] = {}
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self._clear()
        # Set when the data file could not be read back after a failed write: every request
        # is then refused with it (serving an empty or partial broker would lose data silently)
        self._broken: str | None = None
        self._next_retention_scan = self.clock() + RETENTION_SCAN_SECONDS
        # The largest reply each transport serving the engine carries (replaced, never
        # changed in place: read without the lock).
        self._carriers: dict[object, int] = {}
        self.storage.restore(self)

    def _clear(self) -> None:
        """Forget every durable thing (at the start, and before a restore after a failed
        write)."""
        # Live mailboxes (what SEND and CREATE see), and every log (what FETCH, QUERY, DELETE
        # and ACK read): RobustMQ's GC removes an expired mailbox's metadata, not its messages.
        self.mailboxes: dict[str, Mailbox] = {}
        self.topics: dict[str, Mailbox] = {}
        self.registry = AgentRegistry()
        # Committed offsets: lane group ("{group}-{priority}") -> shard -> next msg_id to read.
        self.offsets: dict[str, dict[str, int]] = {}
        # Min-heaps checked before every request: (when, seq, mailbox) and delayed messages.
        self._mailbox_expiry: list[tuple[int, int, Mailbox]] = []
        self._delayed: list[tuple[int, int, str, StoredMessage]] = []

    def _transact(self, work: Callable[[], Any]) -> Any:
        """``work()`` under the lock, after housekeeping, as one storage transaction.

        The file is the truth: when the transaction cannot be written (it rolled back), the
        memory, which is ahead of it, is thrown away and restored from the file as at a
        start, so the failed request changes nothing and nothing unsaved is ever seen."""
        with self._lock:
            if self._broken is not None:
                raise StorageError(self._broken)
            scan = self._next_retention_scan
            try:
                with self.storage.transaction():
                    self._housekeep()
                    return work()
            except StorageError as failure:
                self._clear()
                self._next_retention_scan = scan  # a scan that was not saved runs again
                try:
                    self.storage.restore(self)
                except StorageError as exc:
                    self._broken = (
                        f"{failure}; reading the data file back then failed, so the broker "
                        f"answers nothing until it is restarted: {exc}"
                    )
                    log.critical("%s", self._broken)
                    raise StorageError(self._broken) from None
                raise

    def now_second(self) -> int:
        return int(self.clock())

    # -- answer sizes ----------------------------------------------------------------------

    def carry(self, carrier: object, max_bytes: int | None) -> None:
        """Note that ``carrier`` (a transport serving this engine, e.g. ``serve_on_nats``'s
        service) carries replies of at most ``max_bytes``; None: it serves no more."""
        carriers = dict(self._carriers)
        if max_bytes is None:
            carriers.pop(carrier, None)
        else:
            carriers[carrier] = max_bytes
        self._carriers = carriers

    @property
    def answer_limit(self) -> int | None:
        """The largest answer the engine sends: ``limits.max_answer`` and the largest reply of
        every transport serving it, whichever is smallest; None = no limit."""
        bounds = list(self._carriers.values())
        if self.limits.max_answer is not None:
            bounds.append(self.limits.max_answer)
        return min(bounds, default=None)

    def _message_limit(self) -> int:
        """The most room one message may take in an answer (and a registry entry or a
        DISCOVER answer in all)."""
        limit = self.answer_limit
        return self.limits.max_payload if limit is None else min(self.limits.max_payload, limit)

    # -- entry point -----------------------------------------------------------------------

    async def handle(self, subject: str, headers: Mapping[str, str] | None, body: bytes) -> bytes:
        """Answer one mq9 request; never raises, every failure is an ``error`` reply."""
        try:
            if subject.startswith(p.MSG_FETCH) and len(subject) > len(p.MSG_FETCH):
                return await self._fetch(subject[len(p.MSG_FETCH) :], body)
            return self._transact(lambda: self._dispatch(subject, headers, body))
        except Mq9Error as exc:
            return p.encode(p.ERROR_REPLY.write(error=exc.message))
        except StorageError as exc:
            return p.encode(p.ERROR_REPLY.write(error=str(exc)))
        except Exception as exc:  # a bug must not take the broker down: report it, keep serving
            log.exception("internal error on %r", subject)
            return p.encode(
                p.ERROR_REPLY.write(error=f"internal broker error: {type(exc).__name__}: {exc}")
            )

    def _dispatch(self, subject: str, headers: Mapping[str, str] | None, body: bytes) -> bytes:
        for prefix, handler in (
            (p.MSG_SEND, self._send),
            (p.MSG_ACK, self._ack),
            (p.MSG_QUERY, self._query),
        ):
            if subject.startswith(prefix) and len(subject) > len(prefix):
                return handler(subject[len(prefix) :], body, headers)
        if subject.startswith(p.MSG_DELETE):
            address, dot, msg_id = subject[len(p.MSG_DELETE) :].rpartition(".")
            if dot:
                return self._delete(address, msg_id)
        handler = {
            p.MAILBOX_CREATE: self._create,
            p.AGENT_REGISTER: self._register,
            p.AGENT_UNREGISTER: self._unregister,
            p.AGENT_REPORT: self._report,
            p.AGENT_DISCOVER: self._discover,
        }.get(subject)
        if handler is None:
            # RobustMQ answers a NATS -ERR here; a service on nats-server can only reply
            # (our choice: the same words, as an mq9 error reply)
            raise Mq9Error(p.err_unknown_subject(subject))
        return handler(body)

    # -- time ------------------------------------------------------------------------------

    def _housekeep(self) -> None:
        """Expire mailboxes, write delayed messages that are due, and every ten minutes
        remove messages past the retention."""
        now = self.clock()
        while self._mailbox_expiry and self._mailbox_expiry[0][0] <= now:
            _, _, mailbox = heapq.heappop(self._mailbox_expiry)
            live = self.mailboxes.get(mailbox.address) is mailbox
            if live and (mailbox.expires_at or now) <= now:  # not a stale entry of a re-create
                # RobustMQ's GC (every 60 s; here at the exact second, our choice) removes the
                # mailbox's metadata only: SEND and CREATE no longer see it, while its log
                # stays readable until the retention removes the messages, and a CREATE of
                # the same name takes the log up again, old messages, msg_ids and offsets too
                del self.mailboxes[mailbox.address]
                self.storage.mailbox_expired(mailbox)
        while self._delayed and self._delayed[0][0] <= now:
            due, seq, address, message = heapq.heappop(self._delayed)
            self.storage.delayed_released(seq)
            mailbox = self.topics.get(address)  # written to the log, expired mailbox or not
            # delay-message pop.rs reads the queued copy back first: one whose TTL ended
            # before it was due is not found, and after the retries it is never delivered
            if mailbox is not None and not message.expired(int(due)):
                # written when due (a due that wrapped round to the past: at once), as a new
                # record without expire_at (pop.rs build_new_record): no TTL in the mailbox
                message.create_time = max(int(due), message.create_time)
                message.expire_at = 0
                self._write(mailbox, message)
        if now >= self._next_retention_scan:
            self._next_retention_scan = now + RETENTION_SCAN_SECONDS
            cutoff = int(now) - RETENTION_SECONDS
            for mailbox in list(self.topics.values()):
                dropped = mailbox.drop_before(cutoff)
                for msg_id in dropped:
                    self.storage.message_removed(mailbox, msg_id)
                if dropped:
                    self.storage.mailbox_start_moved(mailbox)
                if not mailbox.messages and mailbox.address not in self.mailboxes:
                    # (our choice) an expired mailbox's log, empty now, is forgotten: a CREATE
                    # of the name after that starts a new log (RobustMQ would go on numbering)
                    del self.topics[mailbox.address]
                    self.storage.mailbox_removed(mailbox)
                    self._drop_offsets(None, mailbox.shard)  # its groups go with it

    # -- mailboxes -------------------------------------------------------------------------

    def _create(self, body: bytes) -> bytes:
        request = _read(p.CREATE_REQUEST, body, "invalid MAILBOX.CREATE payload: ", empty_ok=True)
        name = request["name"]
        if name is None:
            address = p.new_address()
        else:
            problem = p.name_error(name)
            if problem:
                raise Mq9Error(problem)
            if len(name) > p.MAX_ADDRESS_LENGTH:
                # (our choice; RobustMQ takes any length) no SEND could reach such a mailbox
                raise Mq9Error(p.err_address_too_long(name))
            address = name
        if address in self.mailboxes:
            raise Mq9Error(p.err_mailbox_exists(address))
        limit = self.limits.max_mailboxes
        if limit is not None and len(self.mailboxes) >= limit:
            raise Mq9Error(f"mailbox limit reached: this broker holds at most {limit} mailboxes")
        ttl = p.DEFAULT_MAILBOX_TTL if request["ttl"] is None else request["ttl"]
        mailbox = self.topics.get(address)
        if mailbox is None:
            mailbox = Mailbox(address, create_time=self.now_second(), ttl=ttl)
        else:  # an expired mailbox's log, taken up again with everything it holds
            mailbox.create_time, mailbox.ttl = self.now_second(), ttl
        mailbox.desc = request["desc"] or ""
        self.add_mailbox(mailbox)
        self.storage.mailbox_created(mailbox)
        return p.encode(p.CREATE_REPLY.write(error="", mail_address=address))

    def add_mailbox(self, mailbox: Mailbox, *, live: bool = True) -> None:
        """Hold ``mailbox`` (a new one, or one durable storage restores; ``live=False`` for
        the log of one that expired)."""
        self.topics[mailbox.address] = mailbox
        if not live:
            return
        self.mailboxes[mailbox.address] = mailbox
        if mailbox.expires_at is not None:
            heapq.heappush(self._mailbox_expiry, (mailbox.expires_at, next(self._seq), mailbox))

    def restore_offset(self, lane_group: str, shard: str, offset: int) -> None:
        """A committed offset, as durable storage restores it."""
        self.offsets.setdefault(lane_group, {})[shard] = offset

    def restore_agent(self, entry: AgentEntry) -> None:
        """A registration, as durable storage restores it (the search index separately: it
        may hold cards of registrations gone since)."""
        self.registry.entries[entry.name] = entry

    def restore_index(self, entry: AgentEntry) -> None:
        """A row of the search index, as durable storage restores it."""
        self.registry.put_index(entry)

    def _topic(self, address: str) -> Mailbox:
        """The log FETCH, QUERY and DELETE read, missing in the storage layer's words."""
        mailbox = self.topics.get(address)
        if mailbox is None:
            raise Mq9Error(p.err_topic_missing(address))
        return mailbox

    # -- SEND ------------------------------------------------------------------------------

    def _send(self, address: str, body: bytes, headers: Mapping[str, str] | None) -> bytes:
        mailbox = self.mailboxes.get(address)
        if mailbox is None:
            raise Mq9Error(p.err_mailbox_missing(address))
        headers = headers or {}
        mq9 = headers
        if any("\ufffd" in name or "\ufffd" in value for name, value in headers.items()):
            # send.rs parse_mq9_headers reads the header block as UTF-8 or not at all (every
            # mq9 header at its default). nats-py hands us header values with invalid bytes
            # replaced by U+FFFD, so (our approximation) a U+FFFD means the block was not UTF-8
            mq9 = {}
        priority = Priority.NORMAL
        # Exact names only; a value that is not a known priority means normal (RobustMQ).
        text = mq9.get(p.HEADER_PRIORITY)
        if text is not None and text.strip() in _LANES:
            priority = Priority(text.strip())
        key = mq9.get(p.HEADER_KEY)
        key = None if key is None else key.strip()
        tags = mq9.get(p.HEADER_TAGS)
        tags = tuple(t.strip() for t in tags.split(",") if t.strip()) if tags else ()
        delay = _header_number(mq9, p.HEADER_DELAY)
        ttl = _header_number(mq9, p.HEADER_TTL)
        now = self.now_second()
        message = StoredMessage(
            -1,
            bytes(body),
            priority,
            now,
            key,
            tags,
            p.header_block(headers),
            # A TTL counts from the SEND, delay or not. RobustMQ adds in u64 without overflow
            # checks (its release profile), so a huge TTL wraps round to the past.
            _wrap_u64(now + ttl) if ttl is not None else 0,
        )
        self._check_fits(message)
        self._check_room(mailbox)
        if delay is not None:  # even a delay of 0 answers -1 and is written by the delay queue
            # delay-message delay.rs keys the queued copy by the queue's own id, and the
            # delivered message keeps that key: the mq9-key is lost (no compaction, no QUERY)
            message.key = None
            # due in whole seconds from the SEND's second (RobustMQ's delay.rs), wrapping too
            due = _wrap_u64(now + delay)
            seq = self.hold_delayed(due, address, message)
            self.storage.delayed_added(seq, due, address, message)
            return p.encode(p.SEND_REPLY.write(error="", msg_id=-1))
        return p.encode(p.SEND_REPLY.write(error="", msg_id=self._write(mailbox, message).msg_id))

    def hold_delayed(self, due: int, address: str, message: StoredMessage) -> int:
        """Queue a delayed message until ``due``; returns its place in the queue (storage keys
        its row by it)."""
        seq = next(self._seq)
        heapq.heappush(self._delayed, (due, seq, address, message))
        return seq

    def _check_fits(self, message: StoredMessage) -> None:
        # (our choice) RobustMQ takes any payload NATS carries, and a FETCH answer holding it
        # could then be larger than NATS carries: refuse a message that could never be
        # handed out, or that is above max_payload counted the same way (with room for the
        # widest msg_id: it is not known yet)
        size = _EMPTY_ANSWER + len(message.wire()) + _MSG_ID_ROOM
        limit = self._message_limit()
        if size > limit:
            raise Mq9Error(
                f"message too large: it would take {size} bytes in a FETCH answer, and this "
                f"broker's answers carry at most {limit} bytes per message; send a "
                "reference to the data (a URL or path) instead"
            )
        message._wire = None  # its msg_id is not known yet

    def _check_room(self, mailbox: Mailbox) -> None:
        limit = self.limits.max_messages_per_mailbox
        if limit is not None and len(mailbox.messages) >= limit:
            raise Mq9Error(
                f"mailbox {mailbox.address} is full: it holds at most {limit} messages; "
                "delete some, or wait for message TTLs to expire"
            )

    def _write(self, mailbox: Mailbox, message: StoredMessage) -> StoredMessage:
        replaced = mailbox.keys.get(message.key) if message.key is not None else None
        mailbox.append(message)
        if replaced is not None:
            self.storage.message_removed(mailbox, replaced)
        self.storage.message_stored(mailbox, message)
        return message

    # -- FETCH and ACK ---------------------------------------------------------------------

    async def _fetch(self, address: str, body: bytes) -> bytes:
        request = _read(p.FETCH_REQUEST, body)
        config = request["config"] or {}
        num_msgs = config.get("num_msgs")
        num_msgs = p.DEFAULT_NUM_MSGS if num_msgs is None else num_msgs
        max_wait_ms = config.get("max_wait_ms")
        max_wait_ms = p.DEFAULT_MAX_WAIT_MS if max_wait_ms is None else max_wait_ms
        # force_deliver commits offsets here: the same transaction rule as every request
        lanes = self._transact(lambda: self._read_group(self._topic(address), request, num_msgs))
        if not lanes and max_wait_ms > 0:
            # RobustMQ sleeps the whole wait and answers empty, without looking again
            await asyncio.sleep(max_wait_ms / 1000)
        # A group's reader judges from the answer's lanes what it may ack, so a group FETCH
        # is answered whole or refused; a read without a group may be cut
        if request["group_name"] is not None:
            return _whole_answer(lanes, num_msgs, self.answer_limit)
        return _answer([m for lane in lanes for m in lane], self.answer_limit)

    def _read_group(
        self, mailbox: Mailbox, request: dict[str, Any], num_msgs: int
    ) -> list[list[StoredMessage]]:
        """The lanes read, in order (critical first), each as RobustMQ reads it; [] when
        they are all empty."""
        group = request["group_name"]
        if group is None:  # a throwaway group: the deliver policy decides every time
            starts: dict[str, int | None] = dict.fromkeys(_LANES, self._initial(mailbox, request))
        elif request["force_deliver"] and self.offsets.get(f"{group}-normal"):
            # RobustMQ commits the reset position + 1 yet reads this answer from the position
            target = self._reset_target(mailbox, request)
            for lane in _LANES:
                self.commit(f"{group}-{lane}", mailbox.shard, target + 1)
            starts = dict.fromkeys(_LANES, target)
        else:
            starts = {
                lane: self._lane_start(f"{group}-{lane}", mailbox, request) for lane in _LANES
            }
        now = self.now_second()
        lanes: list[list[StoredMessage]] = []
        held = 0
        for priority in PRIORITY_ORDER:  # each lane reads up to num_msgs: an answer may hold more
            lane = _capped(mailbox.read_lane(priority, starts[priority.value], num_msgs, now))
            lanes.append(lane)
            held += len(lane)
            if held >= num_msgs:
                break
        return lanes if held else []

    def _lane_start(self, lane_group: str, mailbox: Mailbox, request: dict) -> int | None:
        committed = self.offsets.get(lane_group)
        if committed:
            # Committed anywhere: this mailbox's offset, or (none here) the lane's beginning
            return committed.get(mailbox.shard)
        return self._initial(mailbox, request)

    def _initial(self, mailbox: Mailbox, request: dict) -> int:
        """Where a group with no committed offset starts (RobustMQ's start strategies)."""
        deliver = request["deliver"]
        if deliver == "earliest":
            return mailbox.start_offset
        if deliver == "from_id":
            return mailbox.clamp(request["from_id"] or 0)
        if deliver == "from_time":
            return mailbox.offset_at_time(request["from_time"] or 0)
        return mailbox.end_offset  # latest: the newest message written is still handed out

    def _reset_target(self, mailbox: Mailbox, request: dict) -> int:
        """Where ``force_deliver`` puts a group: like ``_initial``, but a time is clamped too."""
        if request["deliver"] == "from_time":
            return mailbox.clamp(mailbox.offset_at_time(request["from_time"] or 0))
        return self._initial(mailbox, request)

    def commit(self, lane_group: str, shard: str, offset: int) -> None:
        committed = self.offsets.setdefault(lane_group, {})
        if committed.get(shard) == offset:
            # Nothing changes, so nothing to write: the readers of one group all ack the
            # message they were all handed, and on disk each ack would cost a transaction
            return
        committed[shard] = offset
        self.storage.offset_committed(lane_group, shard, offset)

    def _ack(self, _address: str, body: bytes, _headers: object) -> bytes:
        request = _read(p.ACK_REQUEST, body)
        address = request["mail_address"]  # the body's, not the subject's (RobustMQ)
        mailbox = self.topics.get(address)  # the log, even of an expired mailbox
        if mailbox is None:
            raise Mq9Error(p.err_ack_mailbox_missing(address))
        # Every priority lane of the group moves past msg_id, whatever priority it had; the
        # + 1 is u64 arithmetic without overflow checks, so msg_id 2**64-1 commits 0
        offset = _wrap_u64(request["msg_id"] + 1)
        self._check_group_room(request["group_name"], mailbox)
        for lane in _LANES:
            self.commit(f"{request['group_name']}-{lane}", mailbox.shard, offset)
        return _OK

    # -- QUERY and DELETE ------------------------------------------------------------------

    def _query(self, address: str, body: bytes, _headers: object) -> bytes:
        request = _read(p.QUERY_REQUEST, body, "invalid query request: ", empty_ok=True)
        mailbox = self._topic(address)
        limit = p.QUERY_CAP if request["limit"] is None else min(request["limit"], p.QUERY_CAP)
        now = self.now_second()
        # One filter only, in this order of precedence (RobustMQ)
        if request["key"] is not None:
            message = mailbox.by_key(request["key"], now)
            found = [message][:limit] if message is not None else []
        elif request["tags"]:
            seen: set[int] = set()
            found = []
            for tag in request["tags"]:  # any tag matches; each tag reads up to limit
                for message in _capped(mailbox.read_tag(tag, limit, now)):
                    if message.msg_id not in seen:
                        seen.add(message.msg_id)
                        found.append(message)
        else:
            # ``since`` (and an empty ``tags`` list, which RobustMQ turns into since 0) reads
            # from offset 0 all the same: query.rs ``query_by_since`` finds the offset for the
            # time but files it under the mail address, and the storage driver looks offsets
            # up by shard name ("{topic_id}-0"), so it reads the shard from 0. In effect no
            # filter at all, like a QUERY without one.
            found = _capped(mailbox.read(None, limit, now))
        return _answer(found, self.answer_limit)

    def _delete(self, address: str, msg_id_text: str) -> bytes:
        msg_id = p.header_u64(msg_id_text) if msg_id_text == msg_id_text.strip() else None
        if msg_id is None:
            raise Mq9Error(f"invalid msg_id: {msg_id_text}")
        mailbox = self._topic(address)
        if mailbox.remove(msg_id):  # a msg_id that is not there is "deleted" all the same
            self.storage.message_removed(mailbox, msg_id)
        return p.encode(p.DELETE_REPLY.write(error="", deleted=True))

    # -- agent registry --------------------------------------------------------------------

    def _register(self, body: bytes) -> bytes:
        if not body:
            raise Mq9Error(p.ERR_REGISTER_EMPTY)
        # An A2A card if the body reads as one; else the body read afresh as {name, payload},
        # whose error is the one answered (agent.rs)
        try:
            card = p.a2a_card(p.loads(body))
        except WireError:
            card = None
        if card is not None:  # stored as RobustMQ re-serializes it
            name, agent_info = card.get("name", ""), p.encode(card).decode()
        else:
            request = _read(p.REGISTER_REQUEST, body, "invalid AGENT.REGISTER payload: ")
            name, agent_info = request["name"], request["payload"]
        if not agent_info:
            raise Mq9Error(p.ERR_AGENT_INFO_EMPTY)
        size, limit = len(agent_info.encode()), self.limits.max_card_bytes
        if limit is not None and size > limit:
            raise Mq9Error(p.err_card_too_large(size, limit))
        if name in self.registry.entries:
            return _OK  # a name already taken keeps its first entry (RobustMQ)
        limit = self.limits.max_agents
        if limit is not None and len(self.registry) >= limit:
            raise Mq9Error(p.err_agent_limit(limit))
        entry = AgentEntry.make(name, agent_info, self.now_second())
        self._check_entry_fits(entry)
        self.registry.register(entry)
        self.storage.agent_saved(entry)
        if entry.card is not None:
            self.storage.index_saved(entry)
        return _OK

    def _named(self, body: bytes, shape: p.Shape, command: str) -> dict[str, Any]:
        request = _read(shape, body, f"invalid {command} payload: ")
        if not request["name"]:
            raise Mq9Error(p.ERR_AGENT_NAME_EMPTY)
        return request

    def _unregister(self, body: bytes) -> bytes:
        request = self._named(body, p.UNREGISTER_REQUEST, "AGENT.UNREGISTER")
        entry = self.registry.unregister(request["name"])
        if entry is not None:  # an unknown name succeeds all the same
            self.storage.agent_removed(entry)
            self.storage.index_removed(request["name"])
        return _OK

    def _report(self, body: bytes) -> bytes:
        request = self._named(body, p.REPORT_REQUEST, "AGENT.REPORT")
        # No check that the agent exists, and nothing DISCOVER shows (RobustMQ)
        self.reports[request["name"]] = (request["report_info"] or "", self.now_second())
        return _OK

    def _discover(self, body: bytes) -> bytes:
        request = _read(
            p.DISCOVER_REQUEST, body, "invalid AGENT.DISCOVER payload: ", empty_ok=True
        )
        limit = p.DEFAULT_DISCOVER_LIMIT if request["limit"] is None else request["limit"]
        # u32 arithmetic without overflow checks, as RobustMQ computes it
        first = ((max(request["page"] or 1, 1) - 1) * limit) & p.MAX_U32
        # meta-service searches 10 when asked for 0 (services/mq9/agent.rs)
        size = limit or _SEARCH_LIMIT_FOR_ZERO
        if (request["semantic"] or request["text"]) and not self.search:
            raise Mq9Error(p.ERR_SEARCH_NOT_BUILT)
        if request["semantic"]:
            hits = self.registry.search_semantic(request["semantic"])[first : first + size]
            agents = [entry.found() for entry in hits]
        elif request["text"]:
            hits = self.registry.search_text(request["text"])[first : first + size]
            agents = [entry.found() for entry in hits]
        else:  # every agent, not paginated
            return self._listing()
        # (our choice) search answers stay within max_payload too, as a message does: an
        # answer that would not fit holds the best-ranked agents that do, so one large card
        # cannot make DISCOVER fail for everyone
        room = self._message_limit() - len(_DISCOVER_HEAD) - 2
        kept: list[bytes] = []
        for agent in agents:
            item = p.encode(agent)
            room -= len(item) + (1 if kept else 0)
            if room < 0:
                break
            kept.append(item)
        return _DISCOVER_HEAD + b",".join(kept) + b"]}"

    def _listing(self) -> bytes:
        """Every agent in one answer, as RobustMQ answers; never cut (a cut list would hide
        agents without a word, and let a name look free that is taken). One larger than an
        answer can carry is refused, saying so (our choice: RobustMQ sends it whatever its
        size)."""
        items = [p.encode(entry.listed()) for entry in self.registry.listing()]
        answer = _DISCOVER_HEAD + b",".join(items) + b"]}"
        limit = self.answer_limit
        if limit is not None and len(answer) > limit:
            raise Mq9Error(p.err_listing_too_large(len(items), len(answer), limit))
        return answer

    def _check_group_room(self, group: str, mailbox: Mailbox) -> None:
        """(our choice) a new consumer group must have a name of at most MAX_GROUP_NAME
        characters and room under ``max_groups`` on this mailbox; an existing one is always
        taken."""
        shard = mailbox.shard
        if shard in self.offsets.get(f"{group}-normal", ()):
            return
        if len(group) > p.MAX_GROUP_NAME:
            raise Mq9Error(p.err_group_name_too_long(len(group)))
        limit = self.limits.max_groups
        if limit is not None:
            held = (s for lane, s in self.offsets.items() if lane.endswith("-normal"))
            if sum(shard in shards for shards in held) >= limit:
                raise Mq9Error(p.err_group_limit(limit, mailbox.address))

    def drop_group(self, group: str, mail_address: str | None = None) -> bool:
        """Forget a consumer group's positions: on one mailbox, or on every one. Its next
        FETCH starts where its deliver policy says, as for a new group. RobustMQ has no such
        command; this is for code that embeds the bundled broker. True if there was one."""
        if mail_address is None:
            return self._transact(lambda: self._drop_offsets(group, None))
        mailbox = self.topics.get(mail_address)
        return mailbox is not None and self._transact(
            lambda: self._drop_offsets(group, mailbox.shard)
        )

    def _drop_offsets(self, group: str | None, shard: str | None) -> bool:
        """Drop the offsets of ``group`` (None: every group) on ``shard`` (None: every one)."""
        lanes = [f"{group}-{lane}" for lane in _LANES] if group is not None else list(self.offsets)
        dropped = False
        for lane_group in lanes:
            committed = self.offsets.get(lane_group, {})
            for known in [s for s in committed if shard in (None, s)]:
                del committed[known]
                self.storage.offset_dropped(lane_group, known)
                dropped = True
            if not committed:
                self.offsets.pop(lane_group, None)
        return dropped

    def _check_entry_fits(self, entry: AgentEntry) -> None:
        # (our choice) an entry that alone overflows a DISCOVER answer is refused
        size = len(p.encode(p.DISCOVER_REPLY.write(error="", agents=[entry.listed()])))
        limit = self._message_limit()
        if size > limit:
            raise Mq9Error(
                f"agent entry is {size} bytes: DISCOVER answers carry at most "
                f"{limit} bytes; keep large data out of the card"
            )


_OK = p.encode(p.ERROR_REPLY.write(error=""))
_SEARCH_LIMIT_FOR_ZERO = 10
# DISCOVER_REPLY written around agents each encoded once
_DISCOVER_HEAD = p.encode(p.DISCOVER_REPLY.write(error="", agents=[]))[:-2]
_EMPTY_ANSWER = len(p.encode(p.MESSAGES_REPLY.write(error="", messages=[])))
# MESSAGES_REPLY written around items each encoded once (MSG_ITEM), not re-encoded
_MESSAGES_HEAD = p.encode(p.MESSAGES_REPLY.write(error="", messages=[]))[:-2]
_MSG_ID_ROOM = len(str(p.MAX_U64)) - len("-1")  # a msg_id's widest digits, beyond the -1 sent


def _capped(messages: Iterable[StoredMessage]) -> list[StoredMessage]:
    """One read as RobustMQ's storage engine makes it (rocksdb read.rs read_by_tag and
    read_by_offset): ``messages``, already limited in number, up to the one that would take
    the payload bytes read above ``LANE_READ_BYTES``; the first is always taken. Stops
    pulling from ``messages`` there."""
    cap = p.LANE_READ_BYTES
    taken: list[StoredMessage] = []
    total = 0
    for message in messages:
        total += len(message.payload)
        if taken and total > cap:
            break
        taken.append(message)
    return taken


def _size(messages: list[StoredMessage]) -> int:
    """The bytes of an answer holding ``messages``."""
    return _EMPTY_ANSWER + sum(len(m.wire()) for m in messages) + max(len(messages) - 1, 0)


def _encode(messages: list[StoredMessage]) -> bytes:
    return _MESSAGES_HEAD + b",".join(m.wire() for m in messages) + b"]}"


def _too_large_alone(message: StoredMessage, limit: int) -> Mq9Error:
    return Mq9Error(
        f"message {message.msg_id} alone takes {_size([message])} bytes in an answer, above "
        f"the {limit} bytes this broker's answers carry (it was stored under larger limits): "
        "raise the broker's answer limit, or delete the message"
    )


def _answer(found: list[StoredMessage], limit: int | None) -> bytes:
    """A FETCH without a group or a QUERY answer within ``limit`` (None: no limit): cut after
    the last message that fits (reading moves no offset, so the rest come with a later
    request). SEND refuses a message that could not travel alone."""
    if limit is None:
        return _encode(found)
    room = limit - _EMPTY_ANSWER
    kept = 0
    for message in found:
        room -= len(message.wire()) + (1 if kept else 0)
        if room < 0:
            if not kept:
                raise _too_large_alone(message, limit)
            break
        kept += 1
    return _encode(found[:kept])


def _whole_answer(lanes: list[list[StoredMessage]], num_msgs: int, limit: int | None) -> bytes:
    """A group's FETCH answer: ``lanes`` (as ``_read_group`` read them for ``num_msgs``)
    whole, or refused with the largest ``num_msgs`` whose whole answer fits within ``limit``.

    Asked for n < num_msgs, the broker would read each lane read here up to n (a prefix: the
    byte cap cuts at the same message whatever the count) and no other lane, stopping once
    it holds n; so that answer is computed from ``lanes``, and it grows with n."""
    found = [m for lane in lanes for m in lane]
    if limit is None or _size(found) <= limit:
        return _encode(found)

    def answer_for(n: int) -> list[StoredMessage]:
        taken: list[StoredMessage] = []
        for lane in lanes:
            taken += lane[:n]
            if len(taken) >= n:
                break
        return taken

    fit, above = 0, num_msgs  # answer_for(fit) fits, answer_for(above) does not
    while above - fit > 1:
        middle = (fit + above) // 2
        if _size(answer_for(middle)) <= limit:
            fit = middle
        else:
            above = middle
    if fit == 0:
        raise _too_large_alone(answer_for(1)[0], limit)
    raise Mq9Error(p.err_answer_too_large(_size(found), limit, fit))


def _read(shape: p.Shape, body: bytes, prefix: str = "", *, empty_ok: bool = False) -> dict:
    """A request body as RobustMQ's handler parses it: serde's error behind the handler's own
    prefix; an empty body is every field absent where the handler allows it."""
    if empty_ok and not body:
        return {**dict.fromkeys(shape.fields), **shape.defaults}
    try:
        return shape.read(body)
    except WireError as exc:
        raise Mq9Error(prefix + exc.message) from None


def _wrap_u64(number: int) -> int:
    """``number`` as a Rust u64 sum without overflow checks holds it."""
    return number & p.MAX_U64


def _header_number(headers: Mapping[str, str], name: str) -> int | None:
    text = headers.get(name)
    return None if text is None else p.header_u64(text)
