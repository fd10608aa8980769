"""Serve an engine on a real NATS connection: answer every ``$mq9.AI.>`` request.

The engine (``Served``: over the state in this process, ``BrokerEngine``, or in JetStream) is
served the same way whatever its store; what differs is the engine's to say
(``Served.answers_in_read_loop``: true where no store call waits).

The engine is told the connection's max_payload (``carry``) to keep within.
Large answers may go out on a second connection (``bulk``): nats-server reads a connection's
bytes in order, so a small answer published behind a 2 MB listing on the same connection
waits until nats-server has read and delivered the whole listing. Those answers may also be
paced (``pacing.AnswerPacer``): a client asking for them back to back would otherwise keep
every core busy moving them, and other clients' requests wait for a core.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import nats.errors
from nats.aio.client import Client as NatsConnection
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from mq9_wire import protocol as p
from mq9_wire.nats_floor.fast_path import deliver_inline, engage, replies_inline
from mq9_wire.nats_floor.guard import flush_in_order, protect
from mq9_wire.nats_floor.jetstream.window import reader
from mq9_wire.protocol.names import arrival_subject
from mq9_wire.protocol.subjects import MSG_COUNT

from ..engine.engine import command_for
from ..engine.owned import Answering
from .pacing import AnswerPacer, Backlog, client_of, from_client
from .partitions import Partitions
from .waiting_room import RoomFull, WaitingRoom

if TYPE_CHECKING:
    from ..identities.gate import Identities
    from .meter import RequestMeter

# with metrics, what a request is counted by (its command's key) and when it was read
Stamp = tuple[str, float] | None

log = logging.getLogger("mq9_broker")


class Served(Answering, Protocol):
    """What serving asks of an engine, beyond what the ownership checks read of it
    (``Answering``): its answers (``handle``), the largest answer each
    connection carries (``carry``), the mailboxes it stored a message in (``arrivals``, each
    told the address), and whether a command that does not wait may be answered in the
    connection's read loop (``answers_in_read_loop``: false where an answer waits for
    requests made on that connection, whose answers the read loop itself delivers)."""

    @property
    def answers_in_read_loop(self) -> bool: ...
    @property
    def arrivals(self) -> list[Callable[[str], None]]: ...

    def carry(self, carrier: object, max_bytes: int | None) -> None: ...


# Of the commands that wait (rules.Command.waits), the costly ones (Command.costly) cost the
# broker work while they wait (the worker thread's embedding and ranking, the tag reads of a
# QUERY above LARGE_BODY spread over the loop), and hold what they parsed: a client publishing
# thousands of them without waiting had them all read at once (bench/HOTPATH.md). So they are
# bounded by the work under way, running and waiting:
# RUNNING_IN_ALL run at once in all, AT_ONCE of them a requester's; the rest wait their turn
# unread, at most WAITING of a requester's and WAITING_IN_ALL in all; beyond that one is
# answered at once with an error. Requesters with requests waiting take turns. A requester is
# known by its reply inbox, which the client chooses (nats-server tells a subscriber nothing of
# the connection a request came by, see docs/security.md): one making up an inbox per request
# gets a turn for each, but no more than RUNNING_IN_ALL run, and what waits is bounded in all.
# Through a service import marked share (the open cluster, docs/deploy.md) nats-server does
# say it, and every reply there is one prefix per server: the connection is the requester,
# and the connections of one address wait WAITING_PER_ADDRESS at most together (six
# flooding connections of one address filled the room; see waiting_room.py).
# A FETCH's wait, or a group reader's claim QUERY by key, costs nothing: any number may run.
# A COUNT costs the stores in this process nothing (their counts are kept as they
# write); on a store whose calls are requests to servers (the cluster store), the servers count
# a lane's subjects, a cost that grows with the mailbox: there it takes turns as a costly one.
COSTLY_ON_SERVERS = frozenset({MSG_COUNT})
AT_ONCE, RUNNING_IN_ALL, WAITING, WAITING_IN_ALL = 4, 4, 64, 256
WAITING_PER_ADDRESS = 2 * WAITING  # half the room: two addresses flooding leave it to others
# What a request still under way, or still waiting its turn, is answered when the broker stops
STOPPED_ANSWERING = (
    "the broker stopped while answering: the request may or may not have been carried out "
    "(check before sending it again)"
)
STOPPED_UNREAD = "the broker stopped before reading this request: nothing of it was done"
# Answers above this go out on the bulk connection, when there is one: a SEND's, an ACK's or
# a few messages' answer stays on the connection the request came by
BULK_ANSWER = 64 * 1024
# with announce=True each message stored is announced on the protocol's prefix + the
# digest of its mailbox's name (never the name), empty, for wakers (wake/arrivals.py): its
# ``arrival_subject`` (mq9_wire/protocol/names.py, where the wakers name it too)
# with the headers a JetStream stream's republish carries (the cluster store's
# announcements, storage/jetstream/opening.py), which no answer of a broker carries: a listener
# takes only a message with them as an announcement (wake/arrivals.py)
ANNOUNCED = "mq9-announce"  # the Nats-Stream of the announcements this broker publishes
# no answer ever goes under the broker's reserved subjects (the announcements, the
# brokers' membership beats, the partitions, the requests themselves): a request naming a reply
# there is not done, not answered, counted and logged (at most every RESERVED_LOGGED_EVERY s)
RESERVED_REPLY = "$mq9."  # every subject of the protocol and of the bundled broker
RESERVED_LOGGED_EVERY = 10.0


class NatsService:
    """The engine attached to one NATS connection (and, for answers above ``BULK_ANSWER``,
    ``bulk``: another connection to the same server, which it only publishes on, at the pace
    of ``pacer`` when given). ``await service.stop()`` detaches it."""

    def __init__(
        self,
        engine: Served,
        connection: NatsConnection,
        bulk: NatsConnection | None = None,
        pacer: AnswerPacer | None = None,
        identities: Identities | None = None,
        inline: bool = True,
        announce: bool = False,
        meter: RequestMeter | None = None,
        queue: str = "",
    ) -> None:
        self.engine = engine
        # brokers serving one store together (serving/queue_group.py): NATS hands each request
        # to one of those subscribed in ``queue``
        self.queue = queue
        self._each_on_a_task = not engine.answers_in_read_loop
        self.announce = announce
        self.meter = meter  # requests counted by command, outcome and latency
        self._arrived_at: set[str] = set()  # mailboxes to announce at the loop's next turn
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = 0
        # an enforcing broker's requests come on $mq9.U.<principal>.> (identities.py)
        self.identities = identities
        self.connection = connection
        self.bulk = bulk
        self.pacer = pacer
        # Requests handled in the connection's read loop (fast_path.deliver_inline, when the
        # fast path is on): _on_request never waits for long, it starts a task for what does
        self.inline = inline
        self.subscription: Subscription | None = None
        # Requests being answered on a task of their own, and what each answers
        self._in_flight: dict[asyncio.Task[None], Msg] = {}
        # Costly requests by requester: how many run, and those waiting their turn
        self._running: dict[str, int] = {}
        self._running_in_all = 0
        self.room: WaitingRoom[tuple[Msg, Stamp]] = WaitingRoom(
            WAITING, WAITING_PER_ADDRESS, WAITING_IN_ALL
        )
        self.at_once, self.running_in_all = AT_ONCE, RUNNING_IN_ALL
        self.reserved_replies = 0  # requests refused for a reply under RESERVED_REPLY
        self._reserved_logged, self._next_reserved_log = 0, 0.0
        self._announced = 0  # the Nats-Sequence of this broker's announcements
        self._announcing: set[asyncio.Task[None]] = set()  # (kept from the collector)
        self._carried: int | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self.partitions: Partitions | None = None  # each mailbox on one broker

    # What may wait (the room's bounds), as the tests and the dev broker's options set them
    @property
    def waiting(self) -> int:
        return self.room.per_requester

    @waiting.setter
    def waiting(self, most: int) -> None:
        self.room.per_requester = most

    @property
    def waiting_per_address(self) -> int:
        return self.room.per_address

    @waiting_per_address.setter
    def waiting_per_address(self, most: int) -> None:
        self.room.per_address = most

    @property
    def waiting_in_all(self) -> int:
        return self.room.in_all

    @waiting_in_all.setter
    def waiting_in_all(self, most: int) -> None:
        self.room.in_all = most

    @property
    def _queued_in_all(self) -> int:  # what tests/broker/serving/test_costly_turns.py reads
        return len(self.room)

    def _tell_engine(self) -> None:
        """Keep the engine's answers within the server's max_payload (which a reconnect to
        another server may change)."""
        limit = self.connection.max_payload
        if limit != self._carried:
            self.engine.carry(self, limit)
            self._carried = limit

    async def start(self) -> NatsService:
        self._tell_engine()
        # Anyone on the NATS server can send the broker a frame that would stop nats-py reading
        # (see nats_floor/guard.py): guard this connection, and reconnect it if reading stops.
        self._watchdog = protect(self.connection)
        engage(self.connection)
        if self.identities is None:
            self.subscription = await self.connection.subscribe(
                p.SUBJECT_WILDCARD, queue=self.queue, cb=self._on_request
            )
        else:
            gated = self.identities.gate(self._on_request)
            self.subscription = await self.connection.subscribe(
                self.identities.subject, queue=self.queue, cb=gated
            )
        if self.inline:
            deliver_inline(self.connection, self.subscription)
            # the engine's own requests on this connection (the cluster store's): their
            # answers handed over in the read loop too, not through a task each
            replies_inline(self.connection)
        if self.queue and self.identities is None:  # each mailbox on one broker (partitions.py)
            mapped = Partitions.when_mapped(self.connection, self._on_request, self.queue)
            self.partitions = await mapped
        if self.announce:
            self._loop, self._thread = asyncio.get_running_loop(), threading.get_ident()
            self.engine.arrivals.append(self._arrived)
        await flush_in_order(self.connection)  # serving once this returns
        return self

    def _arrived(self, address: str) -> None:
        """The engine stored a message in ``address`` (under its lock): announced at the loop's
        next turn, once however many arrived in this one."""
        assert self._loop is not None
        if not self._arrived_at:
            if threading.get_ident() == self._thread:
                self._loop.call_soon(self._announce)
            else:
                self._loop.call_soon_threadsafe(self._announce)
        self._arrived_at.add(address)

    def _announce(self) -> None:
        arrived, self._arrived_at = self._arrived_at, set()
        announcements = []
        for address in arrived:
            subject = arrival_subject(address)
            self._announced += 1
            # as a stream's republish says it: what a listener takes as an announcement
            headers = {
                "Nats-Stream": ANNOUNCED,
                "Nats-Subject": subject,
                "Nats-Sequence": str(self._announced),
                "Nats-Last-Sequence": "0",
            }
            announcements.append((subject, headers))
        # nats-py's publish with headers is a coroutine (it queues the bytes for its flusher)
        task = asyncio.get_running_loop().create_task(self._publish_announcements(announcements))
        self._announcing.add(task)
        task.add_done_callback(self._announcing.discard)

    async def _publish_announcements(self, announcements: list[tuple[str, dict[str, str]]]) -> None:
        for subject, headers in announcements:
            try:
                await self.connection.publish(subject, headers=headers)
            except Exception as exc:  # a connection down: the wakers' sweeps find it
                log.debug("arrival not announced: %s", type(exc).__name__)
                return

    async def _on_request(self, msg: Msg) -> None:
        # Commands are answered at once, in arrival order, except those that wait: a FETCH
        # that finds nothing waits its max_wait_ms, REGISTER and DISCOVER wait for the engine's
        # worker thread (embedding, ranking), a QUERY of many tags lets others through between
        # its reads. Each of those gets a task and holds up no request behind it.
        command, _ = command_for(msg.subject)
        meter = self.meter
        if msg.reply and msg.reply.startswith(RESERVED_REPLY):  # never answered there
            self._refuse_reserved(msg, command.subject)
            return
        stamp = None if meter is None else (command.subject, meter.started())
        if not command.waits:
            if not self._each_on_a_task:
                await self._answer(msg, stamp)
                return
            if command.subject not in COSTLY_ON_SERVERS:
                # its answer waits for JetStream requests made on this connection, whose
                # answers this read loop delivers: answered on a task, the loop reading on
                self._start(msg, stamp=stamp)
                return
        elif not command.costly(msg.data):
            self._start(msg, stamp=stamp)
            return
        who, address = self._client(msg)  # what needs no answer shares one requester
        if self._may_run(who):  # then nothing waits that could run: it would be running
            self._run(msg, who, stamp)
            return
        try:
            pushed = self.room.enter(who, address, (msg, stamp))
        except RoomFull as full:
            refused = [(msg, str(full))]
        else:  # the requests it took the place of (never read: nothing of them was done)
            refused = [(m, f"{len(self.room)}") for m, _ in pushed]
        for m, waiting in refused:
            if meter is not None:
                meter.refused(command_for(m.subject)[0].subject, "too_many_waiting")
            if m.reply:  # else nobody to tell
                await self._reply(m, self._too_many_waiting(waiting))

    def _client(self, msg: Msg) -> tuple[str, str | None]:
        """Who asks, and from where if that is vouched for: on an enforcing broker the agent
        (its gate let through only replies to the agent's own inboxes, of which it may
        make up any number; its credential vouches for it), else as far as the reply subject
        shows, or for a request through a service import (the open cluster's agents) the
        connection nats-server says sent it, and its address (pacing.client_of)."""
        reply = msg.reply or ""
        if self.identities is not None:
            agent = self.identities.requester(reply)
            return agent, agent
        return client_of(reply, msg.headers)

    def _requester(self, msg: Msg) -> str:
        return self._client(msg)[0]

    def _refuse_reserved(self, msg: Msg, key: str) -> None:
        """A request whose reply is under the broker's reserved subjects (an answer
        there would be taken for an announcement, a member's beat, a request): not done, not
        answered; counted, and logged at most every RESERVED_LOGGED_EVERY seconds."""
        self.reserved_replies += 1
        if self.meter is not None:
            self.meter.refused(key, "reserved_reply")
        now = time.monotonic()
        if now >= self._next_reserved_log:  # a flood of them must not flood the log
            log.warning(
                "refused %d request(s) unanswered whose reply was under %s (last: %s to %s)",
                self.reserved_replies - self._reserved_logged,
                RESERVED_REPLY,
                p.quoted(msg.subject),
                p.quoted(msg.reply or ""),
            )
            self._reserved_logged = self.reserved_replies
            self._next_reserved_log = now + RESERVED_LOGGED_EVERY

    def _too_many_waiting(self, waiting: str) -> bytes:
        return p.encode(
            p.ERROR_REPLY.write(
                error=f"{waiting} requests that search, register or query wait already for "
                f"their turn ({self.running_in_all} are answered at once, at most "
                f"{self.at_once} of a requester's): ask again once your earlier ones are answered"
            )
        )

    def _may_run(self, who: str) -> bool:
        return (
            self._running_in_all < self.running_in_all and self._running.get(who, 0) < self.at_once
        )

    def _run(self, msg: Msg, who: str, stamp: Stamp) -> None:
        self._running[who] = self._running.get(who, 0) + 1
        self._running_in_all += 1
        self._start(msg, who, stamp)

    def _start(
        self, msg: Msg, costly_for: str | None = None, stamp: Stamp = None
    ) -> asyncio.Task[None]:
        task = asyncio.create_task(self._answer(msg, stamp))
        self._in_flight[task] = msg
        task.add_done_callback(self._finished)
        if costly_for is not None:
            task.add_done_callback(lambda _: self._next(costly_for))
        return task

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)

    def _next(self, who: str) -> None:
        """One of ``who``'s costly requests is answered: start what waits and may now run,
        requesters in turn (one that ran goes behind the others)."""
        self._running[who] -= 1
        if not self._running[who]:
            del self._running[who]
        self._running_in_all -= 1
        while self._running_in_all < self.running_in_all:
            # Requesters at their own limit are skipped: at most running_in_all of them
            taken = self.room.take(lambda w: self._running.get(w, 0) < self.at_once)
            if taken is None:
                return
            turn, (msg, stamp) = taken
            self._run(msg, turn, stamp)

    async def _answer(self, msg: Msg, stamp: Stamp = None) -> None:
        self._tell_engine()
        if self._each_on_a_task:  # (a task of its own: its context is its own)
            # the store's reads for it take turns for the read window by requester
            # (nats_floor/jetstream/window.py), so one client's large reads hold no other's
            reader.set(self._requester(msg))
        if self.identities is not None:  # the gate, then the engine making ownership
            reply = await self.identities.handle(self.engine, msg)
        else:
            reply = await self.engine.handle(msg.subject, from_client(msg), msg.data)
        await self._send_answer(msg, reply, stamp)

    async def _send_answer(self, msg: Msg, reply: bytes, stamp: Stamp = None) -> None:
        """``reply`` to ``msg``'s reply subject, within the server's max_payload, at the
        pacer's pace when large; counted once written, when metered (``stamp``)."""
        if not msg.reply:
            if stamp is not None and self.meter is not None:
                self.meter.answered(stamp[0], reply, stamp[1])
            return  # a publish without a reply subject: nobody to answer
        limit = self.connection.max_payload
        # Last resort (the engine keeps within the limit it was told; the server may have
        # changed since): NATS would refuse the reply, and the requester would just time out
        if len(reply) > limit:
            reply = p.encode(
                p.ERROR_REPLY.write(
                    error=f"the answer is {len(reply)} bytes, above this NATS server's "
                    f"max_payload of {limit} bytes: ask for less (fewer messages or agents "
                    "per request)"
                )
            )
        if self.pacer is not None and len(reply) > BULK_ANSWER:
            try:
                await self.pacer.admit(self._requester(msg), len(reply))
            except Backlog as exc:  # too much waits already: say so now, keep nothing
                reply = p.encode(p.ERROR_REPLY.write(error=str(exc)))
        await self._reply(msg, reply)
        if stamp is not None and self.meter is not None:
            self.meter.answered(stamp[0], reply, stamp[1])

    async def _reply(self, msg: Msg, reply: bytes) -> None:
        try:
            # Not msg.respond(): nats-py's respond() sends the request's headers back with the
            # answer (RobustMQ sends none), and refuses headers it read but cannot write (a
            # name such as "[" or "x/y"), so such a request went unanswered
            await self._carrier(reply).publish(msg.reply, reply)
        except Exception as exc:  # the requester may be gone; the broker keeps serving
            log.warning("could not answer %s: %s", msg.subject, exc)

    def _carrier(self, reply: bytes) -> NatsConnection:
        """The connection to publish ``reply`` on."""
        bulk = self.bulk
        if len(reply) > BULK_ANSWER and bulk is not None and bulk.is_connected:
            return bulk
        return self.connection

    async def stop(
        self, *, unfinished: str = STOPPED_ANSWERING, unread: str = STOPPED_UNREAD
    ) -> None:
        """Stop serving. Every request still under way is answered ``unfinished`` (cut while
        it was answered: a change it made may be stored or not), every one waiting its turn
        ``unread`` (nothing of it was done): a requester is never left to its timeout."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._arrived in self.engine.arrivals:
            self.engine.arrivals.remove(self._arrived)
        if self.partitions is not None:  # handed to the other brokers first
            partitions, self.partitions = self.partitions, None
            await partitions.stop()
        if self.subscription is not None:
            subscription, self.subscription = self.subscription, None
            # (a connection the server closed has no subscription left to end: the broker
            # stopping because of it must still stop)
            with contextlib.suppress(nats.errors.ConnectionClosedError):
                await subscription.unsubscribe()
        waiting = [msg for msg, _ in self.room.clear()]  # what waits is never started
        cut = dict(self._in_flight)
        for task in cut:
            task.cancel()
        await asyncio.gather(*cut, return_exceptions=True)
        for text, told in (
            (unfinished, [m for task, m in cut.items() if task.cancelled()]),
            (unread, waiting),
        ):
            answer = p.encode(p.ERROR_REPLY.write(error=text))
            for msg in told:
                if msg.reply:
                    await self._reply(msg, answer)
        if self.pacer is not None:
            self.pacer.close()
        self.engine.carry(self, None)
        self._carried = None


async def serve_on_nats(
    engine: Served,
    connection: NatsConnection,
    bulk: NatsConnection | None = None,
    pacer: AnswerPacer | None = None,
    identities: Identities | None = None,
    announce: bool = False,
    meter: RequestMeter | None = None,
    queue: str = "",
) -> NatsService:
    """Answer mq9 requests arriving on ``connection`` with ``engine`` until stopped; answers
    above ``BULK_ANSWER`` on ``bulk`` when given (a second connection to the same server, so
    that small answers never wait behind large ones), at ``pacer``'s pace when given;
    ``announce``: each message stored is announced on its ``arrival_subject``; ``meter``:
    each request counted; ``queue``: the queue group of the brokers serving one store
    together (serving/queue_group.py).

    >>> nc = await nats.connect("nats://127.0.0.1:4222")
    >>> service = await serve_on_nats(BrokerEngine(), nc)
    """
    return await NatsService(
        engine, connection, bulk, pacer, identities, announce=announce, meter=meter, queue=queue
    ).start()
