"""The mq9 engine: RobustMQ's mq9 commands answered over a ``MailboxStore`` (storage/
mailbox_store.py), whichever keeps the data: the state of this process (``ProcessStore``,
``BrokerEngine`` in process.py) or JetStream's streams and buckets (``ClusterStore``,
docs/broker.md, "The JetStream store kept in the cluster").

``Engine.handle(subject, headers, body)`` takes a request as it arrives on the wire and returns
the reply bytes; the in-process transport and ``serve_on_nats`` both call it. Every rule
follows RobustMQ at the pinned commit (``docs/protocol.md`` names the RobustMQ file behind
each); an entry of the commands' table is ``rules.py``'s ``Command``, the bodies' reading and
the checks ``bodies.py``'s, the answers' bytes ``answers.py``'s, a SEND's headers
``sending.py``'s. Nothing is held between requests but what the store may drop, so any number
of engines on one shared store answer as one broker (each served by ``serve.py`` in the queue
group ``serving/queue_group.QUEUE``): each decision two engines could make differently (a name
created once, a bounded write refused with ``Full``) is the store's, in one step. Time comes
from an injectable clock. What costs CPU time (a large body read, a search ranked, a card
embedded, a long answer cut) runs on the worker thread (worker.py), so no request holds the
loop that serves it. Answers stay within ``answer_limit`` (answers.py).

What serve.py and the ownership checks (identities/ownership.py) ask of an engine: the
largest answer each connection carries (``carry``), the arrivals to announce (a
``ProcessStore`` tells each message it writes; over JetStream the stream republishes every
stored message itself, and nothing is told here), and which mailboxes and agents exist, read
from the store before a request's checks (``look_up``), since the checks themselves never wait.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, TypeVar

from mq9_wire import protocol as p
from mq9_wire.protocol import names
from mq9_wire.protocol.errors import MailboxExists, Mq9Error, from_reply
from mq9_wire.semantic.ranking import AgentEntry

from ..state.clock import Clock, system_clock
from ..state.mailbox import StoredMessage
from ..storage.in_process.housekeeping import RETENTION_PIECE_BYTES, RETENTION_SCAN_SECONDS
from ..storage.key_parties import PARTY_FULL, key_sender, scoped_key
from ..storage.mailbox_store import (
    RETENTION_SECONDS,
    Full,
    KeyReused,
    KeyTableFull,
    MailboxRecord,
    MailboxStore,
    Mark,
    Once,
)
from . import answers, bodies, rules, sending
from . import owned as owning
from .answers import OK, capped, cut_answer
from .bodies import Creation, Fetch, wrap_u64
from .limits import BrokerLimits, Carried
from .owned import Named, Requester, Undo, kept, succeeded
from .rules import LARGE_BODY, Command, as_is
from .searching import SearchIndex
from .sending import FromClient, Headers, Vouched, carried_caller, read_send, stored_headers
from .worker import TEXT_PAUSE, WORKER_NICENESS, after, off_loop

# Imported from here by the broker's other parts and the tests
__all__ = [
    "COMMANDS",
    "LARGE_BODY",
    "QUERY_PAUSE",
    "QUERY_TAGS_AT_ONCE",
    "RETENTION_PIECE_BYTES",
    "RETENTION_SCAN_SECONDS",
    "RETENTION_SECONDS",
    "TEXT_PAUSE",
    "UNKNOWN",
    "WORKER_NICENESS",
    "BrokerLimits",
    "Command",
    "Engine",
    "Headers",
    "Requester",
    "Vouched",
    "command_for",
]

log = logging.getLogger("mq9_broker")
# Where the embedding model loads: a thread at the process's own priority (load_model_soon)
_LOADER = ThreadPoolExecutor(1, thread_name_prefix="mq9-broker-model")

S = TypeVar("S", bound=MailboxStore)  # the store an engine is built over
T = TypeVar("T")
U = TypeVar("U")
_GROUPS_KEPT = 65_536  # (group, mailbox) pairs an engine remembers holding a position
_LOOKED_UP = 65_536  # names whose existence an engine remembers from its last look
_BEGINNING = Mark(0, 0)  # a log's first msg_id, read from its first sequence
# Tags a QUERY reads before the loop answers other requests (each reads up to 100 messages):
# a QUERY of up to this many is read at once, as the leases' QUERYs (24 tags) need no more
QUERY_TAGS_AT_ONCE = 32
# Between two such reads the loop is left to other requests this long (seconds): with no pause
# the next read came before the other requests' next steps, and a SEND (a few turns of the
# loop) paid a read at each turn; now at most the one under way when it came
QUERY_PAUSE = 0.0005


class Seen:
    """Names found to exist (or not) by the last ``look_up`` of each: ``name in seen``."""

    def __init__(self) -> None:
        self._found: OrderedDict[str, bool] = OrderedDict()

    def note(self, name: str, exists: bool) -> None:
        self._found[name] = exists
        self._found.move_to_end(name)
        while len(self._found) > _LOOKED_UP:
            self._found.popitem(last=False)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._found.get(name, False)


class Engine(Carried, Generic[S]):
    """Answers mq9 requests (``handle``) over ``store``. ``limits``: the broker's bounds;
    ``search``: False refuses DISCOVER searches as RobustMQ's build without vector-search
    does. Time from ``clock`` (over JetStream the servers' own clock writes create_times).
    What the store takes of a SEND's tags, key and delay is its own (``store.send_limits``,
    kept as ``sending``): the engine refuses the rest before asking the store.
    ``arrivals``: the list a store tells of each message it writes, when it tells."""

    def __init__(
        self,
        store: S,
        *,
        clock: Clock = system_clock,
        limits: BrokerLimits | None = None,
        search: bool = True,
        arrivals: list[Callable[[str], None]] | None = None,
    ) -> None:
        super().__init__()
        self.store = store
        self.sending = store.send_limits
        self.clock = clock
        self.limits = limits or BrokerLimits()
        self.search = search
        # Commands that do not wait may be answered in the connection's read loop (serve.py)
        # when nothing of theirs waits: a store in this process; a JetStream store's answers
        # come through that very read loop, so each is answered on a task of its own
        self.answers_in_read_loop = store.answers_at_once
        # (group, log) pairs known to hold a position: a cache, so an ACK of a known group
        # asks nothing before its write
        self._groups: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.search_index = SearchIndex()  # the registry as DISCOVER lists and ranks it
        self._model_loading: Future[None] | None = None  # load_model_soon's, once
        # the --max-mailboxes the store was given, once given: (limit,)
        self._bound: tuple[int | None, ...] = ()
        # serve.py adds its announcer here: to the store's list, or to one nobody tells
        self.arrivals: list[Callable[[str], None]] = [] if arrivals is None else arrivals
        # what the ownership checks read: mailbox logs kept (live or expired), live
        # mailboxes, registered agents, as the last look found them
        self.seen_topics = Seen()
        self.seen_mailboxes = Seen()
        self.seen_agents = Seen()
        self.keys_refused = 0  # keyed SENDs refused past the store's bounds on keys
        self.keys_refused_per_address = 0  # of those, past an open client's own bound
        self.reports_unkept = 0  # REPORTs of a name no registration holds: not kept

    def now_second(self) -> int:
        return int(self.clock())

    def load_model_soon(self) -> Future[None]:
        """Start loading the embedding model now (at a broker's start, or an in-process
        broker's first request that needs it), once, on a thread of the process's own
        priority: on the worker thread (nice 10) beside two busy processes its seconds of CPU
        stretched several times over, and the first REGISTER outlived its client's deadline. A model
        that cannot be loaded is the error of the requests that need it. Done when loaded."""
        if self._model_loading is None:
            self._model_loading = _LOADER.submit(self._quietly_load_model)
        return self._model_loading

    def _quietly_load_model(self) -> None:
        if not self.search:  # nothing ranks: no model loads
            return
        try:
            self.search_index.ranker.ranking  # noqa: B018 (the property loads the model)
        except Exception as exc:  # answered to each request that needs the model
            log.error("the embedding model could not be loaded: %s", exc)

    async def _model_loaded(self) -> None:
        """The model loaded (or its failure logged) before a request's worker turn needs it,
        the loop serving others meanwhile."""
        await asyncio.wrap_future(self.load_model_soon())

    async def look_up(self, named: Named) -> None:
        """Read from the store whether what a request's ownership check asks about exists
        (``named``, engine/owned.py): the mailbox it names, or the agent when its check asks
        the registry."""
        if named.listed:
            agents = await self.store.agents()
            self.seen_agents.note(named.agent, any(row[0] == named.agent for row in agents))
            return
        address = named.mailbox
        if not isinstance(address, str) or not address:
            return
        now = self.now_second()
        record = await self.store.mailbox(address, now=now)
        self.seen_topics.note(address, record is not None)
        self.seen_mailboxes.note(address, record is not None and record.live(now))

    async def close(self) -> None:
        await self.store.close()

    # -- entry point -----------------------------------------------------------------------

    async def handle(
        self, subject: str, headers: Headers, body: bytes, requester: Requester | None = None
    ) -> bytes:
        """Answer one mq9 request by its command's entry in ``COMMANDS`` (its body read as
        the entry says, then its handler); never raises, every failure is an ``error``
        reply. With ``requester`` (an enforcing broker's), its command's ownership
        (``Command.owned``): what the check asks about read from the store first (another
        broker may have made it a moment ago), then the check, the command, and its record
        kept. Without one, ``headers`` may name the client an open broker's serving told
        apart (``FromClient``: the bound a keyed SEND's new key counts against)."""
        try:
            command, target = checked_command(subject, self.limits, body)
            if requester is None:
                return await self._answer(command, target, headers, body)
            owned, policy, principal = command.owned, requester.policy, requester.principal
            named = await owned.names(target, body, LARGE_BODY)
            async with owned.turn(policy, named):  # one agent name's, one at a time
                await owned.look_up(policy, principal, named, headers)
                refusal = owned.check(policy, principal, named, headers)
                if refusal is not None:
                    return refusal
                # what another broker could decide differently, won in one step first
                refusal, undo = await owned.claim(policy, principal, named)
                if refusal is not None:
                    return refusal
                given = Vouched(headers, principal) if owned.vouched else headers
                answering = functools.partial(self._answer, command, target, given, body)
                answer = await _claimed(answering, undo)
                return await kept(answer, owned.recorded(requester, named, headers, body, answer))
        except Mq9Error as exc:
            return answers.error_answer(str(exc))
        except Exception as exc:
            return answers.failure_answer(subject, exc)

    def _answer(
        self, command: Command[Engine[Any], Any], target: str, headers: Headers, body: bytes
    ) -> Awaitable[bytes]:
        """``command`` done: its body read (a refusal raised here), then handed to its
        handler, whose answer is returned to await (no coroutine of its own: a SEND's turn
        costs no more than its handler's). A large body of a command that may wait is read on
        the worker thread, the loop serving others meanwhile (bench 9a: the worker's hops cost
        a small one more than its own reading)."""
        if command.waits and len(body) > LARGE_BODY:
            return self._read_off_loop(command, target, headers, body)
        return command.handler(self, target, headers, command.read(body, self.limits))

    async def _read_off_loop(
        self, command: Command[Engine[Any], Any], target: str, headers: Headers, body: bytes
    ) -> bytes:
        request = await off_loop(functools.partial(command.read, body), self.limits)
        return await command.handler(self, target, headers, request)

    async def _unknown(self, target: str, _headers: Headers, _body: bytes) -> bytes:
        raise rules.unknown(target)  # (a subject no command has is its own target)

    async def _both(
        self, first: Callable[[], Awaitable[T]], second: Callable[[], Awaitable[U]]
    ) -> tuple[T, U]:
        """Two reads of the store: at once over the network, one after the other in process
        (where nothing waits, and two tasks would cost more than both reads)."""
        if self.answers_in_read_loop:
            return await first(), await second()
        return await asyncio.gather(first(), second())

    async def _topic(self, address: str) -> MailboxRecord:
        """The log FETCH, QUERY and DELETE read (an expired mailbox's too)."""
        record = await self.store.mailbox(address, now=self.now_second())
        if record is None:
            raise Mq9Error(p.err_topic_missing(address))
        return record

    # -- mailboxes -------------------------------------------------------------------------

    async def _create(self, _target: str, _headers: Headers, creation: Creation) -> bytes:
        address = creation.address
        if address == names.READYZ_PROBE:  # nobody's: its QUERY must find no mailbox
            raise Mq9Error(p.err_reserved_mailbox(address))
        limit = self.limits.max_mailboxes
        if self._bound != (limit,):
            # (our choice) the store holds at most the bound's records, so it refuses one
            # more however many brokers create at once; an expired mailbox whose log is
            # kept counts, its record replaced (not added) by a CREATE again
            await self.store.bound_mailboxes(limit)
            self._bound = (limit,)
        try:
            made = await self.store.create_mailbox(
                address, ttl=creation.ttl, desc=creation.desc, now=self.now_second()
            )
        except Full:
            raise Mq9Error(p.err_mailbox_limit(limit or 0)) from None
        if made is None:
            raise Mq9Error(p.err_mailbox_exists(address))
        return answers.created(address)

    # -- SEND ------------------------------------------------------------------------------

    async def _send(self, address: str, headers: Headers, body: bytes) -> bytes:
        now = self.now_second()
        record = await self.store.mailbox(address, now=now)
        if record is None or not record.live(now):
            raise Mq9Error(p.err_mailbox_missing(address))
        # an idempotency key is the broker's: taken out, never stored with the message
        client = headers.client if isinstance(headers, FromClient) else None
        key, headers = sending.idempotency_key(headers)
        # a client's own mq9-sender is not kept: only a credentialed broker's stands
        sent = read_send(stored_headers(headers), body, now, self.sending, keyed=key is not None)
        message = sent.message
        bodies.check_fits(message, *self.sending.bound(self.message_bound(self.sending.entry_room)))
        room = self.limits.max_messages_per_mailbox
        once = None
        if key is not None:  # stored once per mailbox and key, decided in the write's own step
            once = self._once(key, headers, client, message, sent.due, now, body)
        try:
            if sent.due is not None:
                # (a delayed message is numbered when due, whatever the mailbox holds then: its
                # room is the mailbox's when the SEND is taken; even a delay of 0 answers -1)
                if room is not None and await self.store.count(address) >= room:
                    raise Mq9Error(p.err_mailbox_full(address, room))
                await self.store.hold(address, message, due=sent.due, now=now, once=once)
                return answers.DELAYED if once is None else answers.sent_once(-1, once.duplicate)
            # the room decided with the write itself: counted as of the head it expects
            # (numbering.py), so no number of brokers or SENDs at once passes it
            msg_id = await self.store.append(address, message, now=now, room=room, once=once)
        except Full:
            assert room is not None  # (only a write given a room finds it full)
            raise Mq9Error(p.err_mailbox_full(address, room)) from None
        except KeyReused:
            assert key is not None
            window = self.limits.idempotency_window
            raise Mq9Error(p.err_idempotency_key_reused(key, address, window)) from None
        except KeyTableFull as full:
            self.keys_refused += 1
            if full.why == PARTY_FULL and once is not None and once.party is not None:
                # an open broker's client's own (not a carrier's, whose key is
                # scoped to its sender)
                self.keys_refused_per_address += key_sender(once.key) is None
            window = self.limits.idempotency_window
            raise Mq9Error(p.err_idempotency_keys_full(full.why, window)) from None
        return answers.SENT % msg_id if once is None else answers.sent_once(msg_id, once.duplicate)

    def _once(
        self,
        key: str,
        headers: Headers,
        client: str | None,
        message: StoredMessage,
        due: int | None,
        now: int,
        body: bytes,
    ) -> Once:
        """What the store is given of a keyed SEND: its key, what the SEND is, its
        window, and the bounds its new key must fit."""
        mq9_key = headers.get(p.HEADER_KEY) if headers else None
        delay = -1 if due is None else due - now
        print_ = sending.fingerprint(message, mq9_key, delay, body)
        limits = self.limits
        party = None
        # a key is its sender's where the broker vouches for one: no other identity
        # takes, blocks or learns anything through it
        if isinstance(headers, Vouched):
            key_held, most_each = scoped_key(headers.sender, key), limits.max_keys_per_sender
            # a carrier's caller: its share too, whichever replica or start sent it
            party = carried_caller(headers.sender, headers, most_each)
        elif client is not None:  # one per mailbox, counted against its client's bound
            key_held, most_each, party = key, limits.max_keys_per_address, client
        else:  # (no sender nor client to bound, memory://: the bound in all alone)
            key_held, most_each = key, None
        return Once(
            key_held, print_, limits.idempotency_window, int(self.clock() * 1000),
            limits.max_keys, most_each, party=party,
        )  # fmt: skip

    # -- FETCH and ACK ---------------------------------------------------------------------

    async def _fetch(self, address: str, _headers: Headers, fetch: Fetch) -> bytes:
        request, num_msgs, max_wait_ms = fetch
        record, last = await self._both(
            lambda: self._topic(address), lambda: self.store.last(address)
        )
        lanes = await self._read_group(record, last, request, num_msgs)
        return await answers.fetch_answer(self, lanes, request, num_msgs, max_wait_ms)

    async def _read_group(
        self, record: MailboxRecord, last: Mark | None, request: dict[str, Any], num_msgs: int
    ) -> list[list[StoredMessage]]:
        """The lanes read, critical first, each as RobustMQ reads it; [] when all are empty."""
        group = request["group_name"]
        start: Mark
        if group is None:  # a throwaway group: the deliver policy decides every time
            start = await self._initial(record, last, request)
        else:
            position = await self.store.position(group, record)
            if request["force_deliver"] and position.committed_anywhere:
                # RobustMQ commits the reset position + 1 yet reads this answer from it
                start = await self._reset_target(record, last, request)
                await self.store.commit(group, record, wrap_u64(start.msg_id + 1), start.seq)
            elif position.offset is not None:
                start = Mark(position.offset, position.seq)
            elif position.committed_anywhere:
                start = _BEGINNING  # committed on another mailbox: this lane's beginning
            else:
                start = await self._initial(record, last, request)
        if last is None or num_msgs <= 0:
            return []
        skips = bodies.lane_skips(request) if group is not None else None
        read = await self.store.read_lanes(
            record.name,
            start,
            num_msgs,
            upto=last,
            now=self.now_second(),
            lane_starts=None if skips is None else await self._lane_starts(record, start, skips),
        )
        lanes: list[list[StoredMessage]] = []
        held = 0
        for lane in read:  # each lane reads up to num_msgs: an answer may hold more
            lanes.append(capped(lane))
            held += len(lanes[-1])
            if held >= num_msgs:
                break
        return lanes if held else []

    async def _lane_starts(
        self, record: MailboxRecord, start: Mark, skips: list[int | None]
    ) -> list[Mark]:
        """(our choice, docs/groups.md "Past a backlog") each lane's start: the group's, or
        after the last msg_id of that lane its reader says it has done, when that is later."""
        starts = []
        for skip in skips:
            if skip is None or wrap_u64(skip + 1) <= start.msg_id:
                starts.append(start)
                continue
            # (the skip's own message was read: its sequence is known, and a read past it
            # starts there at the latest; a msg_id after it may be none's)
            seq = await self.store.seq_for(record.name, skip)
            starts.append(Mark(wrap_u64(skip + 1), max(start.seq, seq)))
        return starts

    async def _initial(
        self, record: MailboxRecord, last: Mark | None, request: dict[str, Any]
    ) -> Mark:
        """Where a group with no committed offset starts (RobustMQ's start strategies)."""
        deliver = request["deliver"]
        if deliver == "earliest":
            return await self._earliest(record)
        if deliver == "from_id":
            return await self._clamp(record, last, request["from_id"] or 0)
        if deliver == "from_time":
            found = await self.store.first(record.name, at_time=request["from_time"] or 0)
            return found if found is not None else await self._earliest(record)
        return await self._end(record, last)  # latest: the newest message is still handed out

    async def _reset_target(
        self, record: MailboxRecord, last: Mark | None, request: dict[str, Any]
    ) -> Mark:
        """Where ``force_deliver`` puts a group: like ``_initial``, but a time is clamped too."""
        if request["deliver"] == "from_time":
            found = await self.store.first(record.name, at_time=request["from_time"] or 0)
            return await self._clamp(record, last, found.msg_id if found is not None else 0)
        return await self._initial(record, last, request)

    async def _earliest(self, record: MailboxRecord) -> Mark:
        """RobustMQ's earliest offset: 0 until the retention removes the oldest messages."""
        if not record.start:
            return _BEGINNING
        return Mark(record.start, await self.store.seq_for(record.name, record.start))

    async def _end(self, record: MailboxRecord, last: Mark | None) -> Mark:
        """RobustMQ's end offset: the newest msg_id written (0 when none was)."""
        if last is not None:
            return last
        return Mark(await self.store.last_id(record.name) or 0, 0)

    async def _clamp(self, record: MailboxRecord, last: Mark | None, offset: int) -> Mark:
        """``offset`` held within [earliest, end], as RobustMQ holds a ``from_id``."""
        end = await self._end(record, last)
        if offset >= end.msg_id:
            return end
        if offset <= record.start:
            return await self._earliest(record)
        return Mark(offset, await self.store.seq_for(record.name, offset))

    async def _ack(self, _target: str, _headers: Headers, request: dict[str, Any]) -> bytes:
        address = request["mail_address"]  # the body's, not the subject's (RobustMQ)
        record = await self.store.mailbox(address, now=self.now_second())
        if record is None:  # the log, even of an expired mailbox
            raise Mq9Error(p.err_ack_mailbox_missing(address))
        group = request["group_name"]
        bodies.check_group_name(group)
        msg_id = request["msg_id"]
        # where reads from past msg_id start: its sequence (cached, or the leader's)
        seq = await self.store.seq_for(record.name, msg_id)
        limit = self.limits.max_groups
        # (our choice) room under --max-groups for a group new on this mailbox, decided
        # with its first position's write (the log's count of groups written with it);
        # a group known here, or no bound, is one write. Every lane moves past msg_id,
        # whatever its priority; msg_id 2**64-1 commits 0 (u64)
        room = None if (group, record.log) in self._groups else limit
        try:
            await self.store.commit(group, record, wrap_u64(msg_id + 1), seq, room=room)
        except Full:
            raise Mq9Error(p.err_group_limit(limit or 0, record.name)) from None
        self._know_group(group, record)
        return OK

    def _know_group(self, group: str, record: MailboxRecord) -> None:
        self._groups[(group, record.log)] = None
        self._groups.move_to_end((group, record.log))
        while len(self._groups) > _GROUPS_KEPT:
            self._groups.popitem(last=False)

    # -- QUERY and DELETE ------------------------------------------------------------------

    async def _query(self, address: str, _headers: Headers, request: dict[str, Any]) -> bytes:
        limit = bodies.query_limit(request)
        record = await self._topic(address)
        now = self.now_second()
        # One filter only, in this order of precedence (RobustMQ)
        if request["key"] is not None:
            message = await self.store.by_key(record.name, request["key"], now=now)
            found = [message][:limit] if message is not None else []
        elif request["tags"]:
            found = await self._by_tags(record, list(dict.fromkeys(request["tags"])), limit)
        else:
            # ``since`` (and an empty ``tags``, which RobustMQ makes since 0) is no filter:
            # query.rs ``query_by_since`` files the offset under the mail address, and the
            # storage driver looks offsets up by shard name ("{topic_id}-0"), so reads from 0
            last = await self.store.last(record.name)
            found = (
                []
                if last is None
                else capped(
                    await self.store.read(record.name, _BEGINNING, limit, upto=last, now=now)
                )
            )
        if len(found) > p.QUERY_CAP:
            return await off_loop(functools.partial(cut_answer, limit=self.answer_limit), found)
        return cut_answer(found, self.answer_limit)

    async def _by_tags(
        self, record: MailboxRecord, tags: list[str], limit: int
    ) -> list[StoredMessage]:
        """Each tag's messages through the store's tag index, in RobustMQ's order (by tag,
        then msg_id), each tag up to ``limit`` (a tag given again adds nothing); a message
        found by two tags answered once, where the first found it. Many tags are read some
        at a time, other requests answered between (our choice: the loop is never held long;
        like RobustMQ's reads, one per tag, it is no snapshot)."""
        last = await self.store.last(record.name)
        if last is None:
            return []
        by_id: dict[int, StoredMessage] = {}
        for start in range(0, len(tags), QUERY_TAGS_AT_ONCE):
            if start:
                await asyncio.sleep(QUERY_PAUSE)
            tagged = await self.store.by_tags(
                record.name,
                tags[start : start + QUERY_TAGS_AT_ONCE],
                limit,
                upto=last.seq,
                now=self.now_second(),
            )
            for found in tagged:
                for message in capped(found):
                    by_id.setdefault(message.msg_id, message)
        return list(by_id.values())

    async def _delete(self, target: str, _headers: Headers, _body: bytes) -> bytes:
        address, msg_id = bodies.delete_target(target)
        record = await self._topic(address)
        await self.store.delete(record.name, msg_id)  # not there: "deleted" all the same
        return answers.DELETED

    # -- agent registry --------------------------------------------------------------------

    async def _register(self, _target: str, _headers: Headers, entry: AgentEntry) -> bytes:
        bodies.check_unreserved("REGISTER", entry.name)
        bodies.check_entry_fits(entry, self._message_limit())
        entry.create_time = self.now_second()
        if self.search and entry.card is not None:
            await self._model_loaded()
            # embedded on the worker before it is stored: a model that cannot be loaded is
            # this REGISTER's error, and nothing is kept (a taken name costs one embedding)
            await off_loop(self.search_index.embed, entry)
        agents = self.limits.max_agents
        row = (entry.name, entry.agent_info, entry.create_time)
        try:
            # the room decided with the registration: the registry's count written with it,
            # expecting its last sequence
            kept = await self.store.register(*row, room=agents)
        except Full:
            raise Mq9Error(p.err_agent_limit(agents or 0)) from None
        indexed = kept and entry.card is not None
        if indexed:
            await self.store.index_put(entry.card_name, row)
        if kept:  # (without search nothing is indexed here: no card embedded, no model loaded)
            indexed = indexed and self.search
            # this engine's copy follows before its next DISCOVER (others' at theirs),
            # unwaited: the owner record (engine/owned.py) is claimed as this returns, with
            # no turn of the loop between the registration and it
            after(functools.partial(self.search_index.registered, entry, indexed))
        return OK

    async def _unregister(self, _target: str, _headers: Headers, request: dict[str, Any]) -> bytes:
        name = request["name"]
        bodies.check_unreserved("UNREGISTER", name)
        if not await self.store.unregister(name):
            # an unknown name succeeds all the same (RobustMQ), its record giving back no
            # share: the store's purge, expecting the registration's sequence, said nothing
            # was removed
            return owning.UNCHANGED
        # the row named by the registration, whatever card it held (RobustMQ)
        await self.store.index_drop(name)
        after(functools.partial(self.search_index.unregistered, name))
        return OK

    async def _report(self, _target: str, _headers: Headers, request: dict[str, Any]) -> bytes:
        """Answered as RobustMQ answers any name's (nothing DISCOVER shows; RobustMQ writes it
        to a topic no mq9 command reads). Our choice: kept only for a registered agent,
        until it unregisters: a name no registration holds keeps nothing (reports under
        made-up names had grown an open broker's memory without bound, for good), so the
        reports held are bounded by the registry's own bounds (--max-agents)."""
        bodies.check_unreserved("REPORT", request["name"])
        info, now = request["report_info"] or "", self.now_second()
        if not await self.store.report(request["name"], info, now):
            self.reports_unkept += 1
        return OK

    async def _discover(self, _target: str, _headers: Headers, request: dict[str, Any]) -> bytes:
        """The registry as the store holds it now, listed or ranked on the worker thread
        (search_index), the loop serving other requests meanwhile."""
        rows, index_rows = await self._both(self.store.agents, self.store.index_rows)
        limits = (self.search, self.answer_limit, self._message_limit())
        if self.search and (request["semantic"] or request["text"]):
            await self._model_loaded()  # a search embeds each card newly seen
        answer = functools.partial(self.search_index.answer, request, rows, index_rows)
        return await off_loop(answer, limits)


# -- the command table ------------------------------------------------------------------------

# Each command once: its subject, how large a body it reads and how it reads it, whether it
# waits or costs, its part in ownership (owned.py), and its handler, given what was read. The
# engine answers through this table alone, and serve.py routes by it.
_ENTRIES: tuple[Command[Engine[Any], Any], ...] = (
    Command(p.MAILBOX_CREATE, Engine._create, bodies.read_create, owned=owning.CREATE),
    Command(p.MSG_SEND, Engine._send, as_is, rules.own_rule, owned=owning.SEND),
    Command(p.MSG_FETCH, Engine._fetch, bodies.read_fetch, waits=True, owned=owning.FETCH),
    Command(p.MSG_ACK, Engine._ack, bodies.read_ack, owned=owning.ACK),
    # a group reader's claim lookup by key costs nothing
    Command(
        p.MSG_QUERY,
        Engine._query,
        bodies.read_query,
        waits=True,
        costly=rules.large_body,
        owned=owning.QUERY,
    ),
    Command(p.MSG_DELETE, Engine._delete, as_is, rules.own_rule, owned=owning.DELETE),
    Command(
        p.AGENT_REGISTER,
        Engine._register,
        bodies.read_registration,
        rules.card_body,
        waits=True,
        costly=rules.always_costly,
        owned=owning.REGISTER,
    ),
    Command(
        p.AGENT_UNREGISTER, Engine._unregister, bodies.read_unregister, owned=owning.UNREGISTER
    ),
    Command(p.AGENT_REPORT, Engine._report, bodies.read_report, owned=owning.REPORT),
    Command(
        p.AGENT_DISCOVER,
        Engine._discover,
        bodies.read_discover,
        waits=True,
        costly=rules.always_costly,
    ),
)
COMMANDS = {command.subject: command for command in _ENTRIES}
# What a subject no command has is: answered as unknown (to anyone), its body bounded as a
# parsed one's and never read
UNKNOWN: Command[Engine[Any], Any] = Command("", Engine._unknown, as_is)
# Addressed subjects are $mq9.AI.MSG.<COMMAND>.<target>: a prefix is the first tokens
_PREFIX_TOKENS = p.MSG_SEND.count(".")


def command_for(subject: str) -> tuple[Command[Engine[Any], Any], str]:
    """The command ``subject`` names and its target (the address after an addressed
    command's prefix, possibly empty); ``(UNKNOWN, subject)`` when no command has it."""
    command = COMMANDS.get(subject)
    if command is not None:
        return command, ""  # an exact subject, or an addressed prefix with nothing after it
    tokens = subject.split(".", _PREFIX_TOKENS)
    if len(tokens) > _PREFIX_TOKENS:
        target = tokens[_PREFIX_TOKENS]
        command = COMMANDS.get(subject[: len(subject) - len(target)])
        if command is not None and command.addressed:
            return command, target
    return UNKNOWN, subject


def checked_command(
    subject: str, limits: BrokerLimits, body: bytes
) -> tuple[Command[Engine[Any], Any], str]:
    """The command ``subject`` names and its target, its body's size checked; a command's
    prefix with no mailbox after it is unknown."""
    command, target = command_for(subject)
    command.check_body(limits, subject, body)
    if command.addressed and not target:
        return UNKNOWN, subject
    return command, target


async def _claimed(answering: Callable[[], Awaitable[bytes]], undo: Undo | None) -> bytes:
    """The answer ``answering()`` gives; a claim made for it undone (``undo``) when the
    command was not done (its body refused, a CREATE refused), except for a name that exists:
    the claim stands (its claimer made it through another broker at the same moment)."""
    try:
        answer = await answering()
    except Mq9Error as exc:
        if undo is not None and not isinstance(from_reply(str(exc)), MailboxExists):
            await undo()
        raise
    except BaseException:
        if undo is not None:
            await undo()
        raise
    if undo is not None and not succeeded(answer):
        await undo()
    return answer
