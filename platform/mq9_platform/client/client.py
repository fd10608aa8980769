"""``Mq9Client``: the mq9 commands as typed async methods, mirroring the official ``mq9`` SDK.

Every method validates its arguments before any round trip, encodes the request with
``protocol``, hands bytes to a transport and turns a non-empty ``error`` in the reply into
``Mq9Error``. The methods are the raw commands, with RobustMQ's semantics; ``GroupReader`` and
``consume`` (``groups/reader.py``) build a safe fetch/ack cycle on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Any

from mq9_wire import protocol as p
from mq9_wire import semantic as models
from mq9_wire.nats_floor.redaction import redact
from mq9_wire.protocol import Message, Priority, registration
from mq9_wire.protocol.errors import (
    ClusterUnavailable,
    InvalidArgument,
    LimitReached,
    MailboxExists,
    MalformedReply,
    Mq9Error,
    NoBroker,
    NotConnected,
    PayloadTooLarge,
    RequestTimeout,
    SearchIndexEmpty,
    SearchNotBuilt,
    StoreUnavailable,
    WireError,
    from_reply,
)
from mq9_wire.protocol.subjects import count_subject
from mq9_wire.semantic.ranking import AgentEntry, AgentIndex

from .. import tracing
from ..groups.dead_letters import DEFAULT_MAX_DELIVERIES
from ..groups.leases import DEFAULT_LEASE_TTL
from ..groups.reader import Consumer, ErrorHandler, GroupReader, Handler, until_found
from .live_search import LiveSearch, is_robustmq
from .transport import (
    NOT_CONNECTED,
    Answer,
    HandlerTransport,
    InProcessBroker,
    Transport,
    is_transport,
    open_transport,
)

__all__ = ["Agents", "Consumer", "GroupReader", "Message", "Mq9Client"]

log = logging.getLogger("mq9_platform")

# The first pause before a repeatable request is sent again (then twice as long, up to 1 s).
RETRY_FIRST_PAUSE = 0.05
# A keyed SEND's first try waits this long for its answer before it is sent again (the
# same key: the broker stores it once), each later try twice as long, up to 1 s: a broker
# killed with SENDs in hand answers none of them, and NATS hands the resend to another
RESEND_FIRST_ATTEMPT = 0.25
# The mailboxes whose keyed SENDs' answers this client remembers (the oldest forgotten)
KEYED_MAILBOXES_KEPT = 4096
# How many consumer groups one client may ack under (Mq9Client(max_groups=...)).
DEFAULT_MAX_GROUPS = 1_000
# A successful SEND's reply as brokers write it (docs/protocol.md §4; RobustMQ's send.rs:228-231,
# the bundled engine's SEND_REPLY): this, the msg_id's digits, "}".
_SEND_STORED = b'{"error":"","msg_id":'
_NEW_KEY, _SEEN_KEY = b',"duplicate":false', b',"duplicate":true'  # (SENT_ONCE)

# agent_discover(rerank=True) ranks the listing here up to this many agents (the listing is
# one answer of about 0.6 MiB per 1,000 cards; docs/discovery.md gives the cost)
RERANK_MAX_AGENTS = 2_000


class _Creating:
    """RobustMQ 8bd49dc loses a mailbox's storage for good when the first two CREATEs of
    its name cross (each makes the topic anew, the later one names a shard nobody makes:
    docs/protocol-commands.md §5.1). In one process, CREATEs of one name on one server go one after
    another, whichever client sends them (the replicas of an agent started together, the
    readers of a group making its records mailbox): the second then finds it made."""

    def __init__(self) -> None:
        self._turns: dict[tuple[int, str, str], tuple[asyncio.Lock, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def turn(self, server: str, name: str, deadline: float) -> AsyncIterator[None]:
        """This CREATE's turn, waited for until ``deadline`` (the loop's clock): the call's
        one deadline holds its wait for the CREATE before it too."""
        loop = asyncio.get_running_loop()
        key = (id(loop), server, name)
        lock, waiting = self._turns.setdefault(key, (asyncio.Lock(), [0]))
        waiting[0] += 1
        try:
            try:
                async with asyncio.timeout_at(deadline):
                    await lock.acquire()
            except TimeoutError:
                raise RequestTimeout(
                    f"no answer in time: another CREATE of {name!r} from this process is still "
                    "under way"
                ) from None
            try:
                yield
            finally:
                lock.release()
        finally:
            waiting[0] -= 1
            if not waiting[0]:
                del self._turns[key]


_CREATING = _Creating()


class Agents(list[dict[str, Any]]):
    """The agents ``agent_discover`` found, best first. ``ranked_here`` is True when the broker
    has no agent search (RobustMQ's default build) and this client ranked its listing itself;
    ``ranking`` then says how: ``"embeddings"`` (the ``semantic`` extra) or ``"lexical"``.

    On a broker whose search trails its registry (RobustMQ's vector-search build), ``gone``
    names the search hits the registry no longer lists (dropped: never routed to), and
    ``not_indexed_yet`` the agents this client registered moments ago that the search did not
    show (the listing has them; the search index may not yet).

    ``agent_discover(semantic=..., rerank=True)``: ``reranked`` is True when this client read
    the listing and ranked it itself (``ranked_here`` too), ``not_reranked`` says why it did
    not (the registry over ``RERANK_MAX_AGENTS``: the broker's search answered)."""

    ranked_here: bool = False
    ranking: str | None = None
    reranked: bool = False
    not_reranked: str | None = None
    gone: tuple[str, ...] = ()
    not_indexed_yet: tuple[str, ...] = ()


def _integer(value: object) -> bool:
    """An answer's number: an int, never a bool (JSON's true is Python's 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _digest(payload: bytes) -> int:
    """A payload's fingerprint for the receipt check: Python's own keyed hash of the bytes
    (SipHash, 64 bits, its key random per process). It never leaves this process, and costs
    less than a blake2b on every SEND (bench/HOTPATH.md)."""
    return hash(payload)


class Mq9Client:
    """An mq9 client over NATS (``nats://``, ``tls://``, comma-separated cluster URLs) or the
    in-process broker (``memory://`` or ``memory://NAME``).

    >>> async with Mq9Client("memory://") as client:
    ...     inbox = await client.mailbox_create(name="agent.inbox")
    ...     await client.send(inbox, {"task": "summarize"}, priority=Priority.URGENT)
    ...     reader = GroupReader(client, inbox, "workers")
    ...     for message in await reader.fetch():
    ...         print(message.json())
    ...         await reader.done(message.msg_id)

    ``options`` are ``NatsTransport``'s: credentials (``user``/``password``, ``token``,
    ``creds``, ``tls``; or in the URL, ``nats://user:pass@host:4222``), an mq9 ``credential``
    (``<id>:<secret>``; without other credentials ``MQ9_CREDENTIAL`` or ``MQ9_CREDENTIAL_FILE``
    in the environment give it: docs/security.md), ``reconnect_attempts``,
    ``reconnect_delay``, ``name``. Instead of ``server``, ``transport`` gives the way to the
    broker itself (``transport.py``): a ``Transport``, or a broker engine (``BrokerEngine``)
    or an async ``handler(subject, headers, body)`` answering in this process.
    """

    def __init__(
        self,
        server: str | None = None,
        *,
        transport: Transport | InProcessBroker | Answer | None = None,
        request_timeout: float = 5.0,
        max_groups: int = DEFAULT_MAX_GROUPS,
        **options: Any,
    ) -> None:
        if not isinstance(request_timeout, (int, float)) or request_timeout <= 0:
            raise ValueError("request_timeout must be a positive number of seconds")
        if not isinstance(max_groups, int) or max_groups < 1:
            raise ValueError("max_groups must be a positive number of consumer groups")
        if (server is None) == (transport is None):
            raise ValueError("give one of server= (a URL) or transport=")
        if transport is not None and options:
            raise TypeError(f"{sorted(options)[0]} is an option of the transport: set it there")
        # The groups this client acked under: a group lives for ever on RobustMQ, so code (or a
        # model) making names up is stopped here, with a word.
        self.max_groups = max_groups
        self._groups: set[str] = set()
        self.request_timeout = float(request_timeout)
        # The highest msg_id a SEND got per mailbox, and what looked wrong (said once per
        # mailbox): to notice a broker that lost or split a mailbox's log (docs/deploy-robustmq.md).
        self._highest_sent: dict[str, int] = {}
        self.warnings: dict[str, str] = {}
        # The last SEND acknowledged per mailbox (msg_id, digest of the payload), checked once
        # when a SEND succeeds after the broker was away for that mailbox.
        self._receipts: dict[str, tuple[int, int]] = {}
        self._away: set[str] = set()
        # Whether the broker recognises idempotency keys, as it says of itself (an
        # in-process broker does); None: not said. Otherwise learned per mailbox, from
        # the answers to this client's own keyed SENDs to it (a "duplicate" field), never from
        # another mailbox's answer, which any responder there could write. Only where it is
        # known is a keyed SEND sent again: a broker that ignores the key would store it twice
        self.keys_recognised: bool | None = None
        self._keys_by_mailbox: OrderedDict[str, bool] = OrderedDict()
        self.resend_after = RESEND_FIRST_ATTEMPT
        # Search answers checked against the listing: None decides by the broker (RobustMQ,
        # whose index trails its registry: yes; the bundled broker, exact at once: no).
        self.check_search: bool | None = None
        self._live = LiveSearch(self._discover_items)
        if server is not None:
            self.server = server
            self._transport = open_transport(server, request_timeout=request_timeout, **options)
        else:
            assert transport is not None  # exactly one of the two (checked above)
            self.server = f"transport={type(transport).__name__}"
            if not is_transport(transport):  # an engine or a handler
                transport = HandlerTransport(transport)
            self._transport = transport
        if getattr(self._transport, "recognises_keys", False):
            self.keys_recognised = True

    def __repr__(self) -> str:
        return f"Mq9Client({redact(self.server)!r})"

    # -- connection ------------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        return self._transport.is_connected

    @property
    def principal(self) -> str | None:
        """The id of this client's mq9 credential (None without one): the agent a
        ``--credentials`` broker knows it as, and writes as ``mq9-sender`` on what it sends."""
        principal = getattr(self._transport, "principal", None)  # NatsTransport's, if any
        return principal if isinstance(principal, str) else None

    @property
    def transport(self) -> Transport:
        """The way this client reaches its broker (``transport.py``): for what a transport
        offers beyond requests, such as arrival announcements (``StoredArrivals``,
        ``Announcements``)."""
        return self._transport

    @property
    def server_info(self) -> dict[str, Any]:
        """The INFO the NATS server sent ({} in process, or before connecting): which broker
        this is (``live_search.is_robustmq``)."""
        info = getattr(self._transport, "server_info", None)  # NatsTransport's, if any
        return info if isinstance(info, dict) else {}

    async def connect(self) -> Mq9Client:
        """Open the connection (a no-op when already open). Returns the client."""
        if not self._transport.is_connected:
            await self._transport.connect()
        return self

    async def close(self) -> None:
        await self._transport.close()

    async def __aenter__(self) -> Mq9Client:
        return await self.connect()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _call(
        self,
        subject: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        *,
        repeatable: bool | Callable[[Mq9Error], bool] = False,
        done_if: type[Mq9Error] | None = None,
        deadline: float | None = None,
    ) -> dict[str, Any]:
        """One request and its successful reply. A ``repeatable`` request (safe to send twice,
        or a test of the error that says so) that fails in a way that may pass is sent again,
        a little later each time, while ``request_timeout`` lasts (or until ``deadline``, on
        the loop's clock, where the call began earlier). A ``done_if`` error on such a repeat
        means an earlier try took effect: {}."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self.request_timeout if deadline is None else deadline
        pause = RETRY_FIRST_PAUSE
        repeat = False
        while True:
            try:
                raw = await self._transport.request(subject, body, headers, deadline - loop.time())
                return _reply(raw, subject)
            except Mq9Error as exc:
                if repeat and done_if is not None and isinstance(exc, done_if):
                    return {}
                # A try that waited out most of the time (no answer) is not made again
                slow = loop.time() - started > self.request_timeout / 2
                again = repeatable(exc) if callable(repeatable) else repeatable
                if slow or not (again and exc.retryable and deadline - loop.time() > pause):
                    raise
            repeat = True
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)
            started = loop.time()

    def _messages(self, mail_address: str, reply: dict[str, Any]) -> list[Message]:
        items = _read_reply(p.MESSAGES_REPLY, reply)["messages"]
        messages = [Message.from_wire(m) for m in items]
        ids = [m.msg_id for m in messages]
        if len(set(ids)) != len(ids):
            twice = next(i for i in ids if ids.count(i) > 1)
            self.warn_once(mail_address, p.warn_partitions(mail_address, twice))
        return messages

    def _sent(self, mail_address: str, msg_id: int, answered: int) -> None:
        """Keep ``msg_id``, a SEND's, sent once ``answered`` (the highest msg_id an earlier
        SEND to the mailbox had got) was known: a log that went back numbers it no higher."""
        if msg_id < 0:  # a delayed message: its id comes later
            return
        if msg_id <= answered:
            self.warn_once(mail_address, p.warn_log_went_back(mail_address, msg_id, answered))
        if msg_id > self._highest_sent.get(mail_address, -1):
            self._highest_sent[mail_address] = msg_id

    def warn_once(self, mail_address: str, warning: str) -> None:
        """Log ``warning`` and keep it in ``warnings``, the first time something about
        ``mail_address`` looks wrong (a log that went back or split, a receipt missing): a
        broker that lost a mailbox's log is said once, not on every read. Public because the
        readers above the client (the catalog's policy, a group reader) see such things too."""
        if mail_address not in self.warnings:
            log.warning("%s", warning)
            self.warnings[mail_address] = warning

    # -- mailboxes and messages ------------------------------------------------------------

    async def _stored_id(
        self, mail_address: str, body: bytes, answered: int, exc: ClusterUnavailable,
        deadline: float,
    ) -> int:
        """The msg_id of a message RobustMQ stored and then answered with an error (its
        offsets not set up yet: the first SENDs to a mailbox made a moment ago, docs/protocol.md
        §1.2; its reads are not held back, so the message is there to read): read back where
        exactly one message newer than any this client was answered holds these bytes, else
        ``exc`` stands."""
        try:
            async with asyncio.timeout_at(deadline):  # (the SEND's one deadline)
                found = await self.query(mail_address, again=False)
        except (Mq9Error, TimeoutError):
            raise exc from None
        mine = [m.msg_id for m in found if m.msg_id > answered and m.payload == body]
        if len(mine) != 1:
            raise exc
        return mine[0]

    async def mailbox_create(
        self, *, name: str | None = None, ttl: int = 0, desc: str | None = None
    ) -> str:
        """Create a mailbox and return its address. Without ``name`` the broker picks an
        unguessable one (a private mailbox). ``ttl`` in seconds, 0 = never expires (always
        sent: a CREATE without ttl gets RobustMQ's default of one day). ``desc`` is stored
        with the mailbox."""
        if name is not None:
            p.check_address(name)
        if desc is not None and not isinstance(desc, str):
            raise ValueError("desc must be a string")
        body = p.CREATE_REQUEST.body(
            name=name, ttl=p.check_int("ttl", ttl, 0, p.MAX_SECONDS), desc=desc
        )
        if name is None:  # a name the broker makes is new: nothing to cross
            reply = await self._call(p.MAILBOX_CREATE, body)
        else:
            # A named CREATE is safe to send again: "already exists" then means it was made
            deadline = asyncio.get_running_loop().time() + self.request_timeout
            async with _CREATING.turn(self.server, name, deadline):
                reply = await self._call(
                    p.MAILBOX_CREATE, body, repeatable=True, done_if=MailboxExists,
                    deadline=deadline,
                )
        if not reply and name is not None:
            return name
        address: str = _read_reply(p.CREATE_REPLY, reply)["mail_address"]
        if not p.is_valid_address(address):
            raise MalformedReply(
                f"malformed reply from the broker: invalid mail_address {address!r}"
            )
        return address

    async def send(
        self,
        mail_address: str,
        payload: bytes | str | dict[str, Any],
        *,
        priority: Priority | str = Priority.NORMAL,
        key: str | None = None,
        delay: int | None = None,
        ttl: int | None = None,
        tags: list[str] | None = None,
        headers: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> int:
        """Store a message in a mailbox; returns its msg_id (``-1`` for a delayed message,
        ``delay=0`` included).

        ``dict`` payloads are sent as JSON, ``str`` as UTF-8, ``bytes`` as they are if they
        are UTF-8 text: brokers hand payloads out as text, so other bytes are refused with a
        ``ValueError`` (send binary data as base64 text). ``priority`` is a ``Priority`` or its
        name. ``key`` keeps only the newest message with that key; ``delay`` hides it for N
        seconds; ``ttl`` expires it N seconds after the send; ``tags`` label it for ``query``.
        ``headers`` are more NATS headers stored with the message (``Message.header`` hands
        them back), e.g. the ``mq9-reply-to`` of A2A over mq9; the mq9 ones above win. Under
        an active OpenTelemetry span or LangSmith run the message also carries its trace
        context (``traceparent``, ``langsmith-trace``: docs/tracing.md).

        ``idempotency_key`` (at most 256 UTF-8 bytes) makes the SEND happen once: the bundled
        broker stores one message per mailbox and key within its window (10 minutes by
        default) and answers every SEND with that key again with the first one's msg_id (the
        same payload, priority, key, delay, ttl and tags; anything else is refused), so this
        client sends a keyed SEND that got no answer again until ``request_timeout``.
        RobustMQ keeps no keys: there the key is not sent and the SEND is as without one
        (docs/protocol.md, "Exactly once").
        """
        p.check_address(mail_address)
        body = p.payload_bytes(payload)
        extra = p.extra_headers(headers)
        mq9 = p.send_headers(priority, key, delay, ttl, tags)
        if idempotency_key is not None:
            idempotency_key = p.check_idempotency_key(idempotency_key)
            if not is_robustmq(self.server_info):  # RobustMQ would store it with the message
                mq9[p.HEADER_IDEMPOTENCY_KEY] = idempotency_key
        traced = tracing.sending(mail_address)
        if traced is tracing.UNTRACED:  # most SENDs: no span around it, nothing to carry
            return await self._store(mail_address, body, extra | mq9)
        # An active trace goes with the message (docs/tracing.md); mq9's own headers win.
        with traced:
            msg_id = await self._store(mail_address, body, extra | dict(traced.headers) | mq9)
            traced.sent(msg_id)
        return msg_id

    async def _store(self, mail_address: str, body: bytes, headers: dict[str, str]) -> int:
        """The SEND itself: its size checked as NATS counts it, sent, its receipt kept."""
        if not self._transport.is_connected:
            raise NotConnected(NOT_CONNECTED)
        block = len(p.header_block(headers) or b"")  # NATS counts the headers too
        size, limit = len(body) + block, self._transport.max_payload
        if size > limit:
            largest = max(limit - block, 0)
            raise PayloadTooLarge(
                f"payload too large: {size} bytes, the broker's max_payload is {limit} bytes: "
                f"the largest payload NATS carries with these headers is {largest} bytes (the "
                "broker may take less: it counts a message as a FETCH answer holds it); send "
                "a reference to the data (a URL or path) instead of the data itself",
                size=size,
                limit=limit,
                largest=largest,
            )
        # The highest msg_id answered before this SEND went out: only those must be below its
        # own (SENDs in flight at once to one mailbox are answered in any order)
        answered = self._highest_sent.get(mail_address, -1)
        keyed = p.HEADER_IDEMPOTENCY_KEY in headers
        subject = p.send_subject(mail_address)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.request_timeout
        try:
            if keyed and self.keys_recognised_for(mail_address):
                reply = await self._resent(subject, body, headers, deadline)
            else:
                try:
                    reply = await self._call(subject, body, headers, repeatable=_stored_nothing)
                except StoreUnavailable:
                    # the answer to this very SEND, in the bundled broker's own words
                    # (its store electing a leader): that broker keeps keys, so a keyed SEND
                    # goes again with its key, within the same deadline
                    if not keyed or loop.time() >= deadline:
                        raise
                    self._learned_keys(mail_address, True)
                    reply = await self._resent(subject, body, headers, deadline)
                except ClusterUnavailable as exc:
                    if not exc.stored:
                        raise
                    found = await self._stored_id(mail_address, body, answered, exc, deadline)
                    reply = {"error": "", "msg_id": found}
        except Mq9Error as exc:
            if exc.retryable:  # the broker was away: what it acknowledged before may be gone
                self._away.add(mail_address)
            raise
        msg_id = reply.get("msg_id")
        if type(msg_id) is not int or "error" not in reply:  # else the shape passes it as is
            msg_id = _read_reply(p.SEND_REPLY, reply)["msg_id"]
        if keyed:
            duplicate = reply.get("duplicate")
            self._learned_keys(mail_address, isinstance(duplicate, bool))
            if duplicate is True:  # the key's first SEND's msg_id: checked when it was new
                return msg_id
        self._sent(mail_address, msg_id, answered)
        if mail_address in self._away and msg_id >= 0:
            self._away.discard(mail_address)
            await self._check_last_receipt(mail_address)
        if msg_id >= 0:
            self._receipts[mail_address] = (msg_id, _digest(body))
        return msg_id

    def keys_recognised_for(self, mail_address: str) -> bool | None:
        """Whether the broker keeps idempotency keys for SENDs to ``mail_address``: as it
        says of itself, else as its answers to this client's keyed SENDs there said;
        None: not known yet (a keyed SEND is then not sent again). RobustMQ keeps none: a
        keyed SEND to it goes without its key, which it would store with the message."""
        if self.keys_recognised is not None:
            return self.keys_recognised
        if is_robustmq(self.server_info):
            return False
        return self._keys_by_mailbox.get(mail_address)

    def _learned_keys(self, mail_address: str, recognised: bool) -> None:
        known = self._keys_by_mailbox
        known[mail_address] = recognised
        known.move_to_end(mail_address)
        if len(known) > KEYED_MAILBOXES_KEPT:
            known.popitem(last=False)

    async def _resent(
        self, subject: str, body: bytes, headers: dict[str, str], deadline: float
    ) -> dict[str, Any]:
        """A keyed SEND to a broker that recognises keys: a try unanswered within its
        attempt time (``resend_after``, then twice as long, up to 1 s), or failed in a way
        that may pass (a store electing a leader too), is sent again with the same key
        until ``deadline`` (the SEND's ``request_timeout``): the broker stores it once and
        answers each try with the first one's msg_id. A broker killed with the SEND in hand
        costs the caller an attempt time, not an error."""
        loop = asyncio.get_running_loop()
        attempt, pause = self.resend_after, RETRY_FIRST_PAUSE
        while True:
            sent = loop.time()
            wait = max(min(attempt, deadline - sent), 0.001)
            try:
                # (bounded here too: a transport in this process waits as long as its handler)
                try:  # (a deadline on this task: no task of its own a try, as wait_for makes)
                    async with asyncio.timeout(wait + 0.05):
                        raw = await self._transport.request(subject, body, headers, wait)
                except TimeoutError:
                    raise RequestTimeout(
                        f"the mq9 broker did not answer within {wait:g}s; the request may or "
                        "may not have been carried out"
                    ) from None
                return _reply(raw, subject)
            except Mq9Error as exc:
                if not exc.retryable or deadline - loop.time() < RETRY_FIRST_PAUSE:
                    raise
                if loop.time() - sent < attempt / 2:  # failed at once (no broker): a pause
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 1.0)
            attempt = min(attempt * 2, 1.0)

    async def _check_last_receipt(self, mail_address: str) -> None:
        """After the broker was away, look once whether the last message it acknowledged is
        still there: a cluster that lost the mailbox's log may go on with msg_ids above every
        one this client got, so no SEND answer would show the loss (docs/deploy-robustmq.md)."""
        receipt = self._receipts.get(mail_address)
        if receipt is None or mail_address in self.warnings:
            return
        msg_id, digest = receipt
        try:
            answer = await self.fetch(
                mail_address, deliver="from_id", from_id=msg_id, num_msgs=1, max_wait_ms=0
            )
        except Mq9Error:
            return  # a look only: the SEND itself succeeded
        if not any(m.msg_id == msg_id and _digest(m.payload) == digest for m in answer):
            newest = max((m.msg_id for m in answer), default=-1)
            self.warn_once(mail_address, p.warn_receipt_missing(mail_address, msg_id, newest))

    async def fetch(
        self,
        mail_address: str,
        *,
        group_name: str | None = None,
        deliver: str | None = None,
        from_time: int | None = None,
        from_id: int | None = None,
        force_deliver: bool = False,
        num_msgs: int = p.DEFAULT_NUM_MSGS,
        max_wait_ms: int = p.DEFAULT_MAX_WAIT_MS,
        skip_through: dict[str, int] | None = None,
    ) -> list[Message]:
        """One FETCH, exactly as the broker answers it. For a safe fetch/ack cycle over a
        group use ``GroupReader``; for a background loop, ``consume``.

        The broker reads the priority lanes critical, urgent, normal, each up to ``num_msgs``
        messages from the same position, and stops once it holds ``num_msgs``: an answer may
        hold more. FIFO within a lane.

        Without ``group_name`` nothing is recorded: ``deliver`` picks the start every time
        (``latest`` starts AT the newest stored message, included; ``from_id`` past the end
        gives the newest). With ``group_name`` there are no leases: every FETCH hands out the
        same messages until they are acked (only ``ack`` moves the group); ``deliver`` counts
        until the group first acks (``latest`` moves with every FETCH until then).
        ``force_deliver`` resets the group to ``deliver``.

        When nothing is there the client looks again every ``consumer.POLL_SECONDS`` for up
        to ``max_wait_ms``; the FETCH on the wire always says ``max_wait_ms: 0`` (RobustMQ's
        own wait would not end when a message arrives: docs/protocol.md §1).

        Without ``deliver`` the start is the one the arguments name: ``from_id`` given, from
        that msg_id; ``from_time`` given, from that time; else ``latest``. A ``from_id`` or
        ``from_time`` that the ``deliver`` given would not read is refused.

        ``skip_through`` (a group's reader's; the bundled broker honours it, RobustMQ ignores
        it): for a lane ("critical", ...), the last msg_id of it the reader has done from the
        group's position on; the broker reads that lane after it (docs/groups.md).
        """
        p.check_address(mail_address)
        deliver = _start_named(deliver, from_time, from_id)
        subject = p.fetch_subject(mail_address)
        p.check_int("max_wait_ms", max_wait_ms, 0, p.MAX_WAIT_MS)
        start = (group_name, deliver, from_time, from_id)
        body = _fetch_body(*start, force_deliver, num_msgs, 0, skip_through)
        again = body
        if force_deliver:  # (else the same body, made once: every fetch comes here)
            again = _fetch_body(*start, False, num_msgs, 0, skip_through)

        async def look() -> list[Message]:
            nonlocal body
            reply = await self._call(subject, body, repeatable=True)
            body = again  # force_deliver resets the group on the first look, not on each
            return self._messages(mail_address, reply)

        with tracing.receiving(mail_address, group_name) as handed_out:
            handed_out += await until_found(look, max_wait_ms)
        return handed_out

    async def ack(self, mail_address: str, group_name: str, msg_id: int) -> None:
        """Commit the group's position past ``msg_id``: its next FETCH starts at msg_id + 1.

        The broker moves EVERY priority lane of the group past ``msg_id``: acking an urgent
        message also passes every unacked normal message with a smaller id. Ack the largest id
        below which everything is handled, or let ``GroupReader`` do it.
        """
        p.check_address(mail_address)
        p.check_group_name(group_name)
        if group_name not in self._groups and len(self._groups) >= self.max_groups:
            raise LimitReached(
                f"this client has acked under {self.max_groups} consumer groups already "
                f"(max_groups), and {p.quoted(group_name)} would be one more: a group is kept "
                "by the broker for ever, so reuse a group name (one per reader of a mailbox), "
                "or raise Mq9Client(max_groups=...)"
            )
        self._groups.add(group_name)
        body = p.ACK_REQUEST.body(
            group_name=group_name,
            mail_address=mail_address,
            msg_id=p.check_int("msg_id", msg_id),
        )
        await self._call(p.ack_subject(mail_address), body, repeatable=True)

    async def consume(
        self,
        mail_address: str,
        handler: Handler,
        *,
        group_name: str | None = None,
        deliver: str = "latest",
        num_msgs: int = 10,
        max_wait_ms: int = p.DEFAULT_MAX_WAIT_MS,
        auto_ack: bool = True,
        error_handler: ErrorHandler | None = None,
        worker: str | None = None,
        lease_ttl: int = DEFAULT_LEASE_TTL,
        max_deliveries: int | None = DEFAULT_MAX_DELIVERIES,
        dead_letter: str | None = None,
    ) -> Consumer:
        """Run a fetch loop in the background that calls ``handler`` for every message, once.

        Returns once the first FETCH is done, so messages sent after it returns are seen.
        ``deliver="latest"`` starts AT the newest stored message, which is handed out too. With
        ``group_name`` the loop runs on a ``GroupReader`` (``worker`` names this consumer among
        competing ones, which hold leases of ``lease_ttl`` seconds: docs/groups.md) and, with
        ``auto_ack``, commits the group's position as messages are handled. A handler that
        raises is reported (``error_handler`` or the log) and called again with that message
        later, backing off; until then the group's position stays before it. After
        ``max_deliveries`` failures (counted on the broker, by every consumer of the group) it
        is copied into the mailbox ``dead_letter`` (default ``<mailbox>.dlq``) and the group
        moves on (docs/groups.md, "Poison messages"). Without a group the position is the
        consumer's own and failures are not retried.
        """
        p.check_address(mail_address)
        _fetch_body(group_name, deliver, None, None, False, num_msgs, max_wait_ms)
        if not callable(handler):
            raise ValueError("handler must be a callable taking a Message")
        if worker is not None and group_name is None:
            raise ValueError("worker names a consumer among a group's workers: give group_name")
        consumer = Consumer(
            self,
            mail_address,
            _traced(mail_address, handler),
            group_name=group_name,
            deliver=deliver,
            num_msgs=num_msgs,
            max_wait_ms=max_wait_ms,
            auto_ack=auto_ack,
            error_handler=error_handler,
            worker=worker,
            lease_ttl=lease_ttl,
            max_deliveries=max_deliveries,
            dead_letter=dead_letter,
        )
        await consumer.start()
        return consumer

    async def query(
        self,
        mail_address: str,
        *,
        key: str | None = None,
        limit: int | None = None,
        since: int | None = None,
        tags: list[str] | None = None,
        again: bool = True,
    ) -> list[Message]:
        """Read a mailbox without consuming: never moves a group's position.

        Answers at most 100 messages, oldest first (``limit`` keeps the oldest N). Only one
        filter applies, in this order: ``key``, then ``tags`` (a message matches if it has ANY
        of them, or a tag below one: ``team`` also finds ``team/alpha``). ``since`` is sent as
        the SDK sends it, but filters nothing on RobustMQ (docs/protocol-commands.md §5.5). A read
        that fails in a way that may pass (a cluster electing a leader) is sent again within
        ``request_timeout``; ``again=False``: one try, the broker's first answer (a probe's).
        """
        p.check_address(mail_address)
        body = p.QUERY_REQUEST.body(
            key=None if key is None else p.check_key(key),
            tags=p.check_tags(tags) if tags else None,
            since=None if since is None else p.check_int("since", since),
            limit=None if limit is None else p.check_int("limit", limit),
        )
        reply = await self._call(p.query_subject(mail_address), body, repeatable=again)
        return self._messages(mail_address, reply)

    async def lane_counts(self, mail_address: str) -> tuple[dict[str, int], int | None]:
        """How many messages each priority's lane of a mailbox holds, and its newest msg_id
        (the bundled broker's; RobustMQ answers nothing): a count no read of the protocol can
        finish under many urgent messages. Consumes nothing."""
        told = await self.count_answer(mail_address)
        return told["counts"], told["newest_id"]

    async def count_answer(self, mail_address: str) -> dict[str, Any]:
        """The whole of ``lane_counts``' answer: ``counts``, ``newest_id``, and
        ``scheduled`` (delayed messages held, not yet due) and ``next_due`` (the unix second
        the soonest is due; None when none is held). ``scheduled`` is None where the broker
        does not answer it (an older one): not told, never 0. Consumes nothing."""
        p.check_address(mail_address)
        reply = await self._call(count_subject(mail_address), b"{}", repeatable=True)
        counts = reply.get("counts")
        if not isinstance(counts, dict) or not all(_integer(n) for n in counts.values()):
            raise Mq9Error(f"a count answer holds no counts: {str(reply)[:200]}")
        newest, scheduled, due = (reply.get(k) for k in ("newest_id", "scheduled", "next_due"))
        return {
            "counts": {str(k): int(v) for k, v in counts.items()},
            "newest_id": newest if _integer(newest) else None,
            "scheduled": scheduled if _integer(scheduled) else None,
            "next_due": due if _integer(due) and _integer(scheduled) else None,
        }

    async def delete(self, mail_address: str, msg_id: int) -> None:
        """Delete one message. A msg_id that is not there is "deleted" all the same."""
        p.check_address(mail_address)
        subject = p.delete_subject(mail_address, p.check_int("msg_id", msg_id))
        await self._call(subject, repeatable=True)  # DELETE of a msg_id not there succeeds

    async def check_receipt(self, mail_address: str, msg_id: int, payload: str | bytes) -> bool:
        """Whether the mailbox still holds ``payload`` under ``msg_id``: how a client that
        was not there when a broker lost a mailbox's log finds out (docs/deploy-robustmq.md). Keep a
        receipt (the msg_id a SEND answered, and what was sent) of what must not be lost, and
        check it later from any client. False is noted in ``warnings`` like a log seen going
        back; it also means the message was deleted or expired: the broker cannot tell those
        apart. A stateless FETCH from ``msg_id``: no group moves."""
        p.check_address(mail_address)
        expected = payload.encode() if isinstance(payload, str) else payload
        answer = await self.fetch(
            mail_address, deliver="from_id", from_id=msg_id, num_msgs=1, max_wait_ms=0
        )
        held = next((m for m in answer if m.msg_id == msg_id), None)
        if held is not None and held.payload == expected:
            return True
        newest = max((m.msg_id for m in answer), default=-1)
        self.warn_once(mail_address, p.warn_receipt_missing(mail_address, msg_id, newest))
        return False

    # -- agent registry --------------------------------------------------------------------

    async def agent_register(self, agent_card: dict[str, Any]) -> None:
        """Publish an agent in the registry, under its ``name``.

        ``{"name", "payload"}`` with both strings is sent as the raw registration RobustMQ also
        takes (listed, never searchable). Anything else is sent as the A2A AgentCard RobustMQ
        indexes for search (``registration.card_for``: ``payload`` text as the description,
        ``mailbox`` as an ``mq9://<mailbox>`` interface, ``capabilities`` as skills); a field
        with no place in the card raises ``ValueError`` naming it. A name already registered
        keeps its first registration (RobustMQ).
        """
        card = dict(_json_object("agent_card", agent_card))
        if not isinstance(card.get("name"), str) or not card["name"]:
            raise ValueError("an agent card needs a non-empty string name")
        if registration.is_raw(card):
            body = p.REGISTER_REQUEST.body(name=card["name"], payload=card["payload"])
        else:
            body = p.encode(registration.card_for(card))
        await self._call(p.AGENT_REGISTER, body, repeatable=True)  # the first is kept
        searchable = self._search_lags() and not registration.is_raw(card)
        self._live.changed(registered=card["name"] if searchable else None)

    async def agent_unregister(self, name: str) -> None:
        """Remove the agent registered under ``name`` (an unknown name succeeds)."""
        if not isinstance(name, str) or not name:
            raise ValueError("name must be the non-empty name the agent registered under")
        await self._call(p.AGENT_UNREGISTER, p.UNREGISTER_REQUEST.body(name=name), repeatable=True)
        self._live.changed(unregistered=name)

    async def agent_report(self, report: dict[str, Any]) -> None:
        """Report an agent's status: ``report["name"]`` and either a string ``report_info``
        or other fields, sent as compact JSON. RobustMQ does not check that the agent exists
        and DISCOVER does not show reports."""
        body = _json_object("report", report)
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidArgument("agent report must contain the agent's name")
        info = body.get("report_info")
        if not isinstance(info, str):
            info = p.encode({k: v for k, v in body.items() if k != "name"}).decode()
        await self._call(p.AGENT_REPORT, p.REPORT_REQUEST.body(name=name, report_info=info))

    async def agent_discover(
        self,
        *,
        text: str | None = None,
        semantic: str | None = None,
        limit: int = p.DEFAULT_DISCOVER_LIMIT,
        page: int = 1,
        rerank: bool = False,
    ) -> Agents:
        """Find agents. ``text`` is a full-text search, ``semantic`` ranks by meaning and
        wins over ``text``; both find only A2A cards, ``limit``/``page`` paginate them (page
        from 1). Neither lists every agent, unpaginated. Each agent is a dict (see
        ``protocol.normalize_agent``): the card's fields, ``name`` and ``mailbox``.

        ``rerank=True`` (``semantic`` only): read the listing and rank it here, with this
        process's model (``MQ9_EMBEDDING_MODEL``: the multilingual one, say) and the hybrid
        ranking, rather than the broker's search (RobustMQ's: English-only embeddings), up to
        ``RERANK_MAX_AGENTS`` agents; over that the broker's search answers and
        ``Agents.not_reranked`` says so. Needs an embedding model here (``ModelError``).

        RobustMQ's default build (no vector search) refuses text and semantic: the client then
        ranks the listing itself, pages included (``ranked_here`` says so). A search build
        that has indexed no card yet says its table is missing: that is no agents.

        RobustMQ's search index trails its registry (docs/discovery.md): there a search answer
        is checked against the listing (read at most ``listing_ttl`` seconds before; this
        client's own REGISTER and UNREGISTER are seen at once) and a hit the registry no longer
        has is dropped (``Agents.gone``), its place on the page taken by the next live hit."""
        for label, value in (("text", text), ("semantic", semantic)):
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{label} must be a string")
        query = {"text": text, "semantic": semantic}
        p.check_int("limit", limit, 1, p.MAX_DISCOVER_LIMIT)
        p.check_int("page", page, 1, p.MAX_U32)
        if rerank and semantic:
            return await self._reranked(semantic, limit, page)
        started = asyncio.get_running_loop().time()
        search = bool(text or semantic)
        checked = search and self._search_lags()
        try:
            if checked:
                live, gone = await self._live.page(query, limit, page, started)
            else:
                items = await self._discover_items(query, limit, page)
        except (SearchIndexEmpty, SearchNotBuilt) as exc:
            if not search:
                raise
            if isinstance(exc, SearchIndexEmpty):
                return self._found_here(Agents(), [])
            return await self._rank_listing(text, semantic, limit, page)
        if checked:
            found = Agents(p.normalize_agent(item) for item in live)
            found.gone = tuple(gone)
            return self._found_here(found, live)
        if not search and self._search_lags():
            self._live.listed(items, started)
        return Agents(p.normalize_agent(item) for item in items)

    async def _discover_items(
        self, query: dict[str, str | None], limit: int | None = None, page: int | None = None
    ) -> list[dict[str, Any]]:
        body = p.DISCOVER_REQUEST.body(**query, limit=limit, page=page)
        reply = await self._call(p.AGENT_DISCOVER, body, repeatable=True)
        items: list[dict[str, Any]] = _read_reply(p.DISCOVER_REPLY, reply)["agents"]
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                p.normalize_agent(item)  # raises MalformedReply, naming the item
        return items

    def _search_lags(self) -> bool:
        """Whether this broker's search may miss new agents and name gone ones: RobustMQ's
        (its NATS INFO says so), or whatever ``check_search`` says."""
        if self.check_search is not None:
            return self.check_search
        return is_robustmq(self.server_info)

    @property
    def listing_ttl(self) -> float:
        """How many seconds a listing read to check search answers is reused (1 s)."""
        return self._live.ttl

    @listing_ttl.setter
    def listing_ttl(self, seconds: float) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
            raise ValueError("listing_ttl must be a number of seconds, 0 or more")
        self._live.ttl = float(seconds)

    def _found_here(self, found: Agents, hits: list[dict[str, Any]]) -> Agents:
        found.not_indexed_yet = self._live.not_indexed_yet(hits)
        return found

    async def _reranked(self, semantic: str, limit: int, page: int) -> Agents:
        """``agent_discover(semantic=..., rerank=True)``: the listing ranked here."""
        if not models.installed():  # a lexical re-rank would undo the broker's embeddings
            raise models.ModelError(f"rerank needs an embedding model here: {models.EXTRA_HINT}")
        started = asyncio.get_running_loop().time()
        items = await self._discover_items({})
        if self._search_lags():
            self._live.listed(items, started)  # the next checked search reuses it
        if len(items) <= RERANK_MAX_AGENTS:
            found = await self._rank_listing(None, semantic, limit, page, items)
            found.reranked = True
            return found
        found = await self.agent_discover(semantic=semantic, limit=limit, page=page)
        found.not_reranked = (
            f"the registry lists {len(items):,} agents, over the {RERANK_MAX_AGENTS:,} this "
            "client re-ranks: the broker's search ranked them"
        )
        return found

    async def _rank_listing(
        self,
        text: str | None,
        semantic: str | None,
        limit: int,
        page: int,
        items: list[dict[str, Any]] | None = None,
    ) -> Agents:
        """The listing (``items``, else read now) ranked here, as the bundled broker ranks."""
        if items is None:
            items = await self._discover_items({})
        for item in items:
            p.normalize_agent(item)  # refuses an item that is no agent

        def rank() -> tuple[list[AgentEntry], str]:  # as the bundled broker ranks
            index = AgentIndex.of_listing(items)
            if semantic:
                return index.search_semantic(semantic), index.ranking
            return index.search_text(text or ""), "lexical"

        # Embedding cards not seen before takes CPU time (each once, then cached): off the loop
        hits, ranking = await asyncio.to_thread(rank)
        first = (page - 1) * limit
        ranked = Agents(p.normalize_agent(entry.found()) for entry in hits[first : first + limit])
        ranked.ranked_here = True
        ranked.ranking = ranking
        return ranked


def _reply(raw: bytes, subject: str) -> dict[str, Any]:
    """A reply's JSON object when it is a success, else its ``Mq9Error``. A SEND's success as
    brokers write it is read without the JSON decoder (quicker: bench/HOTPATH.md), to
    the same dict."""
    if raw.startswith(_SEND_STORED) and raw.endswith(b"}"):
        digits, duplicate = raw[len(_SEND_STORED) : -1], None
        if digits.endswith(_NEW_KEY):  # a keyed SEND's: its key new, or seen before
            digits, duplicate = digits[: -len(_NEW_KEY)], False
        elif digits.endswith(_SEEN_KEY):
            digits, duplicate = digits[: -len(_SEEN_KEY)], True
        # a JSON integer (no leading zero) within an i64's 19 digits (int() takes at most 4,300)
        if digits.isdigit() and len(digits) <= 19 and (digits == b"0" or digits[:1] != b"0"):
            if duplicate is None:
                return {"error": "", "msg_id": int(digits)}
            return {"error": "", "msg_id": int(digits), "duplicate": duplicate}
    return _json_reply(raw, subject)


def _json_reply(raw: bytes, subject: str) -> dict[str, Any]:
    try:
        reply = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        reply = None
    if not isinstance(reply, dict) or not isinstance(reply.get("error", ""), str):
        raise MalformedReply(
            f"malformed reply from the broker on {subject}: {bytes(raw[:200])!r} "
            "(is this server speaking mq9?)"
        )
    error = reply.get("error")
    if error:
        raise from_reply(error, subject)
    return reply


def _read_reply(shape: p.Shape, reply: dict[str, Any]) -> dict[str, Any]:
    """A successful reply, every field of its shape present (serde would default a missing
    one, but a success without its result is no mq9 broker's answer)."""
    missing = [field for field in shape.fields if field not in reply]
    try:
        if missing:
            raise WireError(f"missing field `{missing[0]}`")
        return shape.convert(reply)
    except WireError as exc:
        raise MalformedReply(f"malformed reply from the broker: {exc.message}") from None


def _traced(mail_address: str, handler: Handler) -> Handler:
    """``handler`` run in the trace of the message it handles (docs/tracing.md)."""

    async def traced(message: Message) -> None:
        with tracing.processing(mail_address, message):
            result = handler(message)
            if inspect.isawaitable(result):
                await result

    return traced


def _stored_nothing(exc: Mq9Error) -> bool:
    """Whether a failed SEND certainly stored nothing (so it may be sent again): no broker
    had it (NATS said nothing listens: between two brokers' turns on a cluster, say), or the
    cluster said so."""
    if isinstance(exc, NoBroker):
        return True
    return isinstance(exc, ClusterUnavailable) and exc.stored_nothing


def _start_named(deliver: str | None, from_time: int | None, from_id: int | None) -> str:
    """The deliver policy of a fetch: the one given, or the one ``from_id``/``from_time``
    name (a paging loop giving ``from_id`` alone must not read the newest message each time)."""
    given = {"from_id": from_id, "from_time": from_time}
    named = [name for name, value in given.items() if value is not None]
    if len(named) > 1:
        raise InvalidArgument("give from_id or from_time, not both: each names where to start")
    if deliver is None:
        return named[0] if named else "latest"
    if named and named[0] != deliver:
        raise InvalidArgument(
            f"{named[0]} is read only with deliver={named[0]!r}, not {deliver!r}: leave deliver "
            f"out, or give deliver={named[0]!r}"
        )
    return deliver


def _fetch_body(
    group_name: str | None,
    deliver: str,
    from_time: int | None,
    from_id: int | None,
    force_deliver: bool,
    num_msgs: int,
    max_wait_ms: int,
    skip_through: dict[str, int] | None = None,
) -> bytes:
    if group_name is not None:
        p.check_group_name(group_name)
    if deliver not in p.DELIVER_POLICIES:
        raise InvalidArgument(
            f"invalid deliver {p.quoted(deliver)}: use latest, earliest, from_time or from_id"
        )
    if not isinstance(force_deliver, bool):
        raise ValueError("force_deliver must be True or False")
    # The broker reads a missing from_time/from_id as 0; the client wants it said.
    if deliver == "from_time" and from_time is None:
        raise InvalidArgument("deliver='from_time' needs from_time (Unix seconds)")
    if deliver == "from_id" and from_id is None:
        raise InvalidArgument("deliver='from_id' needs from_id (a msg_id)")
    return p.FETCH_REQUEST.body(
        group_name=group_name,
        deliver=deliver,
        from_time=None if deliver != "from_time" else p.check_int("from_time", from_time),
        from_id=None if deliver != "from_id" else p.check_int("from_id", from_id),
        force_deliver=force_deliver or None,
        config={
            "num_msgs": p.check_int("num_msgs", num_msgs, 1, p.MAX_NUM_MSGS),
            "max_wait_ms": p.check_int("max_wait_ms", max_wait_ms, 0, p.MAX_WAIT_MS),
        },
        skip_through=_skips(skip_through) if skip_through else None,
    )


def _skips(skip_through: dict[str, int]) -> dict[str, int]:
    lanes = {priority.value for priority in p.PRIORITY_ORDER}
    for lane, msg_id in skip_through.items():
        if lane not in lanes:
            raise InvalidArgument(f"skip_through: no lane {p.quoted(lane)}: use {sorted(lanes)}")
        p.check_int(f"skip_through[{lane}]", msg_id)
    return dict(skip_through)


def _json_object(name: str, value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a dict, not {type(value).__name__}")
    try:
        copy: dict[str, Any] = json.loads(p.encode(value))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be JSON-serializable: {exc}") from None
    return copy
