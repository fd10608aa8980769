"""mq9-mcp as a source of MCP Events (the extension ``io.modelcontextprotocol/events``, SEP-3415):
mail arriving in a mailbox, and a message set aside into its dead-letter mailbox, as events
a client polls for (``events/poll``), is pushed on a long-lived request (``events/stream``) or has
POSTed to its own URL (``events/subscribe``, ``webhooks.py``).

The MCP SDK 2.3 does not implement the extension: the method names and shapes were written from
a reading of the proposal, and held point by point against the SEP's full text since
(docs/mcp-events.md says what is the SEP's and where mq9-mcp differs on purpose).

An event says that a message is there, never what it says: its data is the message's msg_id,
priority, key, tags and time; the payload stays with ``fetch_messages`` (which consumes it) and
``query_messages``. Reading for events consumes nothing and records nothing on the broker (a FETCH
without a consumer group, as the mailbox watches of ``watch.py`` look). The cursor is the next
msg_id to read, as text: msg_ids only grow, so a client that gives back the cursor of the last
event it handled gets every later message once, with no gap and no duplicate, across disconnects
and server restarts. Events come in msg_id order (not priority order).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypedDict, Unpack, cast

import anyio
from mcp import types
from mcp.server.context import CallNext, HandlerResult
from mcp.server.context import ServerRequestContext as Ctx  # one request's
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mq9_platform.client.client import Mq9Client
from mq9_platform.client.connection import Mq9Connection
from mq9_platform.groups.dead_letters import dead_letter_address
from mq9_platform.operations.errors import OperationError, explain
from mq9_platform.operations.policy import ToolPolicy
from mq9_platform.operations.results import JsonObject
from mq9_wire.nats_floor.redaction import redact
from mq9_wire.protocol import PRIORITY_ORDER, clipped
from mq9_wire.protocol.errors import (
    InvalidArgument,
    MailboxNotFound,
    MalformedReply,
    Mq9Error,
    NotAllowed,
    NotConnected,
)
from mq9_wire.protocol.messages import Message

from .http.scope_check import may_use
from .http.scopes import READ
from .watch import Watches

log = logging.getLogger("mq9_mcp")

EXTENSION = "io.modelcontextprotocol/events"
ARRIVED = "mailbox.message_arrived"
DEAD_LETTERED = "mailbox.message_dead_lettered"
DELIVERY = ["poll", "push", "webhook"]

# The results that declare a server's capabilities
DECLARING = ("initialize", "server/discover")


async def top_level_capability(ctx: Ctx, call_next: CallNext) -> HandlerResult:
    """Server middleware (``--events-capability``): ``initialize`` and ``server/discover`` also
    declare ``capabilities.events``, the form shipped webhook consumers (ChatGPT, the Vercel AI
    SDK's client) look for before subscribing, beside the extension SEP-3415 declares. The
    result is already the wire's dict here: the SDK's capabilities model would drop the key."""
    result = await call_next(ctx)
    capabilities = result.get("capabilities") if isinstance(result, dict) else None
    if ctx.method in DECLARING and isinstance(result, dict) and isinstance(capabilities, dict):
        return {**result, "capabilities": {"events": {}, **capabilities}}
    return result


# The most events one poll answers (and one FETCH reads per priority lane).
MAX_EVENTS = 100
# A FETCH answer this large may have been cut by the broker's answer limit (RobustMQ and the
# bundled broker cut at hundreds of KB or more): past it, the last lane read is not taken as whole.
CUT_SAFE_BYTES = 64 * 1024
HEARTBEAT_SECONDS = 15.0  # an events/stream says where it stands at least this often

# How often a poller is told to look again (``nextPollMs``): a stream or a webhook hears of
# arrivals at once; a poller that wants them sooner holds a stream instead.
NEXT_POLL_MS = 2000

# SEP-3415's error codes (its Error Handling section, which the drafts called provisional until
# the SEP was accepted; it is Final now, and docs/mcp.md says which text they were held
# against), besides JSON-RPC's own -32602 and -32603.
NOT_FOUND_CODE = -32023
FORBIDDEN_CODE = -32024
RESOURCE_EXHAUSTED_CODE = -32025
UNSUPPORTED_CODE = -32026
CALLBACK_ENDPOINT_CODE = -32027

# The extension's errors as mq9-mcp answers them: a JSON-RPC error whose data names the reason
# (docs/mcp.md lists them), beside the fields the SEP gives each code (``kind``, ``limit``).
UNKNOWN_EVENT = "unknown_event"
INVALID_ARGUMENTS = "invalid_arguments"
INVALID_CURSOR = "invalid_cursor"
FORBIDDEN = "forbidden"
NOT_FOUND = "not_found"
TOO_MANY = "too_many_subscriptions"
UNAVAILABLE = "unavailable"


def event_error(code: int, reason: str, text: str, **more: object) -> MCPError:
    return MCPError(code, text, {"reason": reason, **more})


@dataclass(frozen=True)
class EventType:
    """One kind of event: its name, and the mailbox its arguments' mailbox is read at."""

    name: str
    title: str
    description: str
    source: Callable[[str], str]  # the mailbox named in the arguments -> the mailbox read

    def listed(self, delivery: list[str]) -> EventTypeListed:
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "inputSchema": INPUT_SCHEMA,
            "payloadSchema": PAYLOAD_SCHEMA,
            "delivery": delivery,
        }


# -- the extension's answers, as the client reads them ---------------------------------------


class EventTypeListed(TypedDict):
    name: str
    title: str
    description: str
    inputSchema: JsonObject
    payloadSchema: JsonObject
    delivery: list[str]


class EventData(TypedDict):
    """What an event says of a message (``PAYLOAD_SCHEMA``): never its payload."""

    mail_address: str
    msg_id: int
    priority: str
    key: str | None
    tags: list[str]
    time: int  # when it was stored, Unix seconds


class Event(TypedDict):
    eventId: str  # the mailbox read, '#', the msg_id
    name: str
    timestamp: str
    data: EventData
    cursor: str  # where the next read starts: after this message


class Polled(TypedDict):
    """``events/poll``'s answer."""

    events: list[Event]
    cursor: str
    hasMore: bool
    truncated: bool  # messages were skipped: the cursor given was passed over
    nextPollMs: int


class Hooks(Protocol):
    """What serves ``events/subscribe`` and ``events/unsubscribe`` (``webhooks.Webhooks``)."""

    async def subscribe(
        self, ctx: Ctx, source: Source, params: SubscribeParams, cursor: int | None
    ) -> JsonObject: ...

    async def unsubscribe(self, ctx: Ctx, source: Source, url: str) -> JsonObject: ...

    def offered(self, ctx: Ctx) -> bool:
        """Whether ``ctx``'s client could subscribe a webhook at all (a principal of its own,
        hosts the operator listed): ``events/list`` advertises the mode only then."""
        ...


INPUT_SCHEMA: JsonObject = {
    "type": "object",
    "properties": {
        "mail_address": {"type": "string", "description": "the mailbox to watch"},
    },
    "required": ["mail_address"],
    "additionalProperties": False,
}
PAYLOAD_SCHEMA: JsonObject = {
    "type": "object",
    "properties": {
        "mail_address": {"type": "string", "description": "the mailbox the message is in"},
        "msg_id": {"type": "integer"},
        "priority": {"type": "string", "enum": ["critical", "urgent", "normal"]},
        "key": {"type": ["string", "null"]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "time": {"type": "integer", "description": "when it was stored, Unix seconds"},
    },
    "required": ["mail_address", "msg_id", "priority", "key", "tags", "time"],
}

EVENT_TYPES = {
    t.name: t
    for t in (
        EventType(
            ARRIVED,
            "Message arrived",
            "A message was stored in a mailbox (its msg_id, priority, key, tags and time; read "
            "it with fetch_messages or query_messages). Nothing is consumed.",
            lambda mailbox: mailbox,
        ),
        EventType(
            DEAD_LETTERED,
            "Message dead-lettered",
            "A message of a mailbox was set aside into its dead-letter mailbox (<mailbox>.dlq: "
            "ack_messages' set_aside, or a consumer group's retry budget spent); the event's "
            "mail_address is the dead-letter mailbox.",
            dead_letter_address,
        ),
    )
}


class _Params(types.RequestParams):
    model_config = ConfigDict(extra="ignore")


class ListParams(_Params):
    cursor: str | None = None  # one page holds every event type: no cursor is ever given


class Named(_Params):
    """What names a subscription: the event type and its arguments."""

    name: str
    arguments: JsonObject = Field(default_factory=dict)


class Subscription(Named):
    """A subscription and where it starts: ``cursor`` (none: from now), and ``maxAgeMs``
    (replay no message stored longer ago than that)."""

    cursor: str | None = None
    max_age_ms: int | None = Field(default=None, ge=0)


class PollParams(Subscription):
    max_events: int | None = None


class StreamParams(Subscription):
    pass


class SubscribeParams(Subscription):
    delivery: JsonObject = Field(default_factory=dict)
    # absent: the server's default; null: no expiry asked for (``ttl_asked``)
    ttl_ms: int | None = None

    @property
    def ttl_asked(self) -> bool:
        return "ttl_ms" in self.model_fields_set


class UnsubscribeParams(Named):
    delivery: JsonObject = Field(default_factory=dict)


class _Arguments(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mail_address: str


@dataclass(frozen=True)
class Source:
    """A subscription checked: its event type, the mailbox it names, the mailbox read."""

    event: EventType
    mail_address: str
    read: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.event.name, self.mail_address)


def source_of(params: Named, policy: ToolPolicy) -> Source:
    """The event type and mailbox ``params`` name, checked against the client's policy (its
    ``--allowed-mailboxes``, the mailboxes it created)."""
    event = EVENT_TYPES.get(params.name)
    if event is None:
        raise event_error(
            NOT_FOUND_CODE,
            UNKNOWN_EVENT,
            f"no event type {clipped(params.name, 80)!r}: events/list names "
            f"{', '.join(EVENT_TYPES)}",
            kind="event",
        )
    try:
        mail_address = _Arguments.model_validate(params.arguments).mail_address
    except ValidationError:
        raise event_error(
            types.INVALID_PARAMS,
            INVALID_ARGUMENTS,
            f"{event.name} takes one argument, mail_address (the mailbox to watch)",
        ) from None
    read = event.source(mail_address)
    try:
        policy.check(mail_address)
        policy.check(read)
    except (OperationError, Mq9Error) as exc:
        raise event_error(FORBIDDEN_CODE, FORBIDDEN, redact(str(exc))) from None
    return Source(event, mail_address, read)


def parse_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    if cursor.isascii() and cursor.isdigit() and len(cursor) <= 20:
        return int(cursor)
    raise event_error(
        types.INVALID_PARAMS,
        INVALID_CURSOR,
        f"cursor {clipped(cursor, 40)!r} is none this server gave: give back the cursor of an "
        "event or answer, or none to start from now",
    )


def occurrence(source: Source, message: Message) -> Event:
    """One event as the client gets it: eventId, name, timestamp, data, cursor."""
    seconds = message.create_time
    return {
        "eventId": f"{source.read}#{message.msg_id}",
        "name": source.event.name,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds)),
        "data": {
            "mail_address": source.read,
            "msg_id": message.msg_id,
            "priority": message.priority.value,
            "key": message.key,
            "tags": list(message.tags),
            "time": seconds,
        },
        "cursor": str(message.msg_id + 1),
    }


@dataclass
class Batch:
    """What a read after a cursor found: the events, the cursor after them, whether more wait,
    and whether messages were skipped (``truncated``)."""

    messages: list[Message]
    cursor: int
    more: bool = False
    truncated: bool = False


class _How(TypedDict, total=False):
    """Where a read starts, and how many it takes (``Mq9Client.fetch``'s)."""

    deliver: str
    from_id: int
    num_msgs: int


class Reader:
    """Reads a mailbox after a cursor, in msg_id order, for every delivery mode."""

    def __init__(self, connection: Mq9Connection, timeout: float) -> None:
        self.connection = connection
        self.timeout = timeout

    async def _fetch(self, source: Source, **how: Unpack[_How]) -> list[Message]:
        def look(client: Mq9Client) -> Awaitable[list[Message]]:
            return client.fetch(source.read, max_wait_ms=0, **how)

        try:
            with anyio.fail_after(self.timeout):
                return await self.connection.run(look)
        except MailboxNotFound as exc:
            if source.read == source.mail_address:
                raise _broker_error(exc) from None
            return []  # a dead-letter mailbox comes with the first message set aside
        except (Mq9Error, TimeoutError) as exc:
            raise _broker_error(exc) from None

    async def now(self, source: Source) -> int:
        """The cursor of "from now": after the newest message stored (0: the mailbox is empty,
        so every message later there is new). The mailbox named must exist."""
        if source.read != source.mail_address:  # the dead-letter mailbox's mailbox
            await self._fetch(Source(source.event, source.mail_address, source.mail_address),
                              deliver="latest", num_msgs=1)  # fmt: skip
        found = await self._fetch(source, deliver="latest", num_msgs=1)
        return max((m.msg_id + 1 for m in found), default=0)

    async def after(self, source: Source, cursor: int, limit: int = MAX_EVENTS) -> Batch:
        """The messages from msg_id ``cursor`` on, at most ``limit``, and the cursor after them.

        A FETCH reads the priority lanes one after the other (critical first), each up to its
        ``num_msgs`` from the start, and stops once it holds that many; the broker may cut a
        large answer. So a lane is known whole only when it gave fewer than ``num_msgs`` and
        the answer was neither stopped nor cut; otherwise only up to its last message, and a
        lane it never reached not at all. The messages up to the least of those are taken, in
        msg_id order; should that be none, the larger read is tried, and past it the cursor
        moves over what was read, ``truncated`` set (messages may have been skipped)."""
        found: list[Message] = []
        for num in (MAX_EVENTS, 10 * MAX_EVENTS):
            read = await self._fetch(source, deliver="from_id", from_id=cursor, num_msgs=num)
            found = [m for m in read if m.msg_id >= cursor]
            horizon = _horizon(found, num, cursor)
            safe = sorted(
                (m for m in found if horizon is None or m.msg_id <= horizon),
                key=lambda m: m.msg_id,
            )
            if safe or horizon is None:
                return _batch(safe, cursor, limit, more=horizon is not None)
        found.sort(key=lambda m: m.msg_id)
        log.warning("events of %s: a read past the lanes' ends skipped messages", source.read)
        return _batch(found, cursor, limit, more=True, truncated=True)

    async def start(self, source: Source, cursor: int, max_age_ms: int | None) -> Start:
        """Where a subscription given ``cursor`` starts: past the messages stored more than
        ``max_age_ms`` ago (SEP-3415: replay begins at the later of the cursor and now less
        ``maxAgeMs``), ``truncated`` when that passed over any. Messages are read in msg_id
        order, and msg_ids are given as they are stored, so the old ones come first; a backlog
        longer than ``START_READS`` reads is passed over whole (the SEP's "reset to now").
        Without ``max_age_ms`` the cursor is where it starts."""
        if max_age_ms is None:
            return Start(cursor)
        floor = time.time() - max_age_ms / 1000
        truncated = False
        for _ in range(START_READS):
            batch = await self.after(source, cursor)
            truncated = truncated or batch.truncated
            fresh = [m for m in batch.messages if m.create_time >= floor]
            if fresh:
                return Start(fresh[0].msg_id, truncated or fresh[0] is not batch.messages[0])
            truncated = truncated or bool(batch.messages)
            cursor = batch.cursor
            if not batch.more:
                return Start(cursor, truncated)
        return Start(await self.now(source), True)


@dataclass(frozen=True)
class Start:
    """Where a subscription starts reading, and whether getting there passed over messages."""

    cursor: int
    truncated: bool = False


# How many reads ``Reader.start`` spends passing over old messages before it starts from now.
START_READS = 10


def _horizon(found: list[Message], num: int, cursor: int) -> int | None:
    """The last msg_id up to which ``found`` holds every message (None: all of them)."""
    if len(found) < num and sum(len(m.payload) + 256 for m in found) < CUT_SAFE_BYTES:
        return None  # every lane read whole, nothing cut
    by_lane = {p: [m.msg_id for m in found if m.priority == p] for p in PRIORITY_ORDER}
    present = [p for p in PRIORITY_ORDER if by_lane[p]]
    if not present:
        return None
    last = PRIORITY_ORDER.index(present[-1])
    ends = [max(by_lane[p]) for p in present if len(by_lane[p]) >= num or p == present[-1]]
    if last < len(PRIORITY_ORDER) - 1:  # lanes after the last one present: perhaps unread
        ends.append(cursor - 1)
    return min(ends)


def _batch(
    messages: list[Message], cursor: int, limit: int, *, more: bool, truncated: bool = False
) -> Batch:
    kept = messages[:limit]
    after = kept[-1].msg_id + 1 if kept else cursor
    return Batch(kept, after, more=more or len(messages) > limit, truncated=truncated)


def _broker_error(exc: BaseException) -> MCPError:
    """A read's failure in the extension's words: the mailbox missing or refused, or the broker
    away."""
    if isinstance(exc, MailboxNotFound):
        return event_error(types.INVALID_PARAMS, NOT_FOUND, redact(explain(exc)))
    # the broker's refusal of what this request asks (another agent's mailbox, with
    # credentials: "FETCH refused: ... belongs to another agent"), not of the moment
    if isinstance(exc, (NotAllowed, InvalidArgument)) or (
        isinstance(exc, Mq9Error)
        and not exc.retryable
        and not isinstance(exc, (MalformedReply, NotConnected))
    ):
        return event_error(FORBIDDEN_CODE, FORBIDDEN, redact(explain(exc)))
    text = explain(exc) if isinstance(exc, Mq9Error) else "the broker did not answer in time"
    return event_error(types.INTERNAL_ERROR, UNAVAILABLE, redact(text))


def _limit_error(exc: MCPError) -> MCPError:
    """The watch limits' refusals (``watch.py``: too many for the client, or for the server)
    as the SEP's ``ResourceExhausted``, ``data.limit`` naming which."""
    if exc.error.data:  # already one of ours
        return exc
    if exc.error.code == types.INVALID_PARAMS:  # the client's own share
        return event_error(
            RESOURCE_EXHAUSTED_CODE, TOO_MANY, exc.error.message, limit="subscriptions"
        )
    return event_error(
        RESOURCE_EXHAUSTED_CODE, UNAVAILABLE, exc.error.message, limit="server_subscriptions"
    )


class EventNotification(BaseModel):
    """A notification of the extension's (the SDK's typed notifications know none): its method
    and params, as ``ServerSession.send_notification`` writes them."""

    method: str
    params: JsonObject


async def _notify(ctx: Ctx, method: str, params: JsonObject) -> None:
    note = EventNotification(method=method, params=params)
    await ctx.session.send_notification(
        cast(types.ServerNotification, note), related_request_id=ctx.request_id
    )


def serve(
    server: Server,
    reader: Reader,
    watches: Watches,
    policy_of: Callable[[Ctx], ToolPolicy],
    client_of: Callable[[Ctx], str],
    *,
    heartbeat_seconds: float = HEARTBEAT_SECONDS,
    webhooks: Hooks | None = None,
) -> None:
    """Add the Events extension's methods to ``server``: its mailboxes read by ``reader``, its
    streams counted and woken by ``watches`` (``policy_of(ctx)``: the client's policy,
    ``client_of(ctx)``: its slice); ``webhooks``: a ``webhooks.Webhooks`` serving
    ``events/subscribe`` and ``events/unsubscribe``."""

    async def listed(ctx: Ctx, _params: ListParams) -> dict[str, list[EventTypeListed]]:
        # SEP-3415: delivery modes are "advertised per event type": webhook only where this
        # client's events/subscribe could succeed
        hooked = webhooks is not None and webhooks.offered(ctx)
        delivery = DELIVERY if hooked else [d for d in DELIVERY if d != "webhook"]
        if not may_use(ctx.request, READ):  # every event is a mailbox read: none it may use
            return {"events": []}
        return {"events": [t.listed(delivery) for t in EVENT_TYPES.values()]}

    async def poll(ctx: Ctx, params: PollParams) -> JsonObject:  # (the SDK's: a dict)
        return {**await _poll(reader, source_of(params, policy_of(ctx)), params)}

    async def stream(ctx: Ctx, params: StreamParams) -> dict[str, str]:
        source = source_of(params, policy_of(ctx))
        cursor = parse_cursor(params.cursor)
        opened = _Stream(ctx, reader, watches, source, client_of(ctx), heartbeat_seconds)
        return await opened.run(cursor, params.max_age_ms)

    server.add_request_handler("events/list", ListParams, listed)
    server.add_request_handler("events/poll", PollParams, poll)
    server.add_request_handler("events/stream", StreamParams, stream)
    if webhooks is not None:
        _serve_webhooks(server, webhooks, policy_of)


async def _poll(reader: Reader, source: Source, params: PollParams) -> Polled:
    """``events/poll``: the events after the client's cursor, at most ``maxEvents`` (a cap: one
    above this server's own is taken as its own, the rest then ``hasMore``)."""
    limit = MAX_EVENTS if params.max_events is None else min(params.max_events, MAX_EVENTS)
    if limit < 1:
        raise event_error(types.INVALID_PARAMS, INVALID_ARGUMENTS, "maxEvents: at least 1")
    cursor = parse_cursor(params.cursor)
    if cursor is None:  # subscribing now: nothing yet, and where "now" is (maxAgeMs ignored)
        return {"events": [], "cursor": str(await reader.now(source)), "hasMore": False,
                "truncated": False, "nextPollMs": NEXT_POLL_MS}  # fmt: skip
    start = await reader.start(source, cursor, params.max_age_ms)
    batch = await reader.after(source, start.cursor, limit)
    return {
        "events": [occurrence(source, m) for m in batch.messages],
        "cursor": str(batch.cursor),
        "hasMore": batch.more,
        "truncated": start.truncated or batch.truncated,
        "nextPollMs": NEXT_POLL_MS,
    }


class _Stream:
    """One ``events/stream`` request: ``notifications/events/active`` first (where it starts,
    and whether messages were passed over to get there), then its events and heartbeats as
    notifications of the request until the client cancels it, woken by the mailbox watch of
    ``watches``; ``active`` again with ``truncated`` where a read had to pass messages over,
    and ``notifications/events/error`` when the broker did not answer (the stream goes on)."""

    def __init__(
        self,
        ctx: Ctx,
        reader: Reader,
        watches: Watches,
        source: Source,
        owner: str,
        heartbeat_seconds: float,
    ) -> None:
        self.ctx, self.reader, self.watches, self.source = ctx, reader, watches, source
        self.owner, self.heartbeat_seconds = owner, heartbeat_seconds
        self.handle = object()
        self.arrived = asyncio.Event()
        self.meta = {"_meta": {"io.modelcontextprotocol/subscriptionId": ctx.request_id}}

    async def wake(self) -> None:
        self.arrived.set()

    async def run(self, cursor: int | None, max_age_ms: int | None) -> dict[str, str]:
        now = await self.reader.now(self.source)  # the mailbox exists (and "now", for no cursor)
        start = (
            Start(now)
            if cursor is None
            else await self.reader.start(self.source, cursor, max_age_ms)
        )
        cursor = start.cursor
        try:
            self.watches.open_stream(self.handle, self.owner)
        except MCPError as exc:
            raise _limit_error(exc) from None
        try:
            try:
                await self.watches.start(
                    self.handle, self.source.read, self.wake, self.owner, must_exist=False
                )
            except MCPError as exc:
                raise _limit_error(exc) from None
            await self._active(cursor, start.truncated)
            while True:
                cursor = await self._send_from(cursor)
        finally:
            self.watches.streams.pop(self.handle, None)
            self.watches.stop(self.handle)

    async def _send_from(self, cursor: int) -> int:
        """Send the events after ``cursor``; when there are no more, wait for the watch to
        wake it or a heartbeat's time to pass (a heartbeat then). The next cursor."""
        self.arrived.clear()
        try:
            batch = await self.reader.after(self.source, cursor)
        except MCPError as exc:  # the broker away: say so, look again
            log.debug("events/stream of %s: %s", self.source.read, exc.error.message)
            error = {"code": exc.error.code, "message": exc.error.message,
                     "data": exc.error.data}  # fmt: skip
            await _notify(self.ctx, "notifications/events/error", {"error": error, **self.meta})
            batch = Batch([], cursor)
        if batch.truncated:  # a gap: the SEP's fresh "active", where delivery goes on from
            resumed = batch.messages[0].msg_id if batch.messages else batch.cursor
            await self._active(resumed, True)
        for message in batch.messages:
            event = {**occurrence(self.source, message), **self.meta}
            await _notify(self.ctx, "notifications/events/event", event)
        if batch.more:
            return batch.cursor
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.arrived.wait(), self.heartbeat_seconds)
        if not self.arrived.is_set():
            await self._heartbeat(batch.cursor)
        return batch.cursor

    async def _active(self, cursor: int, truncated: bool) -> None:
        active = {"cursor": str(cursor), "truncated": truncated, **self.meta}
        await _notify(self.ctx, "notifications/events/active", active)

    async def _heartbeat(self, cursor: int) -> None:
        heartbeat = {"cursor": str(cursor), **self.meta}
        await _notify(self.ctx, "notifications/events/heartbeat", heartbeat)


def _serve_webhooks(
    server: Server, webhooks: Hooks, policy_of: Callable[[Ctx], ToolPolicy]
) -> None:
    """``events/subscribe`` and ``events/unsubscribe``, served by ``webhooks``."""

    async def subscribe(ctx: Ctx, params: SubscribeParams) -> JsonObject:
        source = source_of(params, policy_of(ctx))
        cursor = parse_cursor(params.cursor)
        try:
            return await webhooks.subscribe(ctx, source, params, cursor)
        except MCPError as exc:
            raise _limit_error(exc) from None

    async def unsubscribe(ctx: Ctx, params: UnsubscribeParams) -> JsonObject:
        # SEP-3415: resolved by the subscription's key (its principal, event, arguments and
        # URL), never by its id; a key naming a mailbox the client may not watch is none of its
        url = params.delivery.get("url")
        if not isinstance(url, str) or not url:
            raise event_error(
                types.INVALID_PARAMS, INVALID_ARGUMENTS, "delivery.url: the URL subscribed"
            )
        return await webhooks.unsubscribe(ctx, source_of(params, policy_of(ctx)), url)

    server.add_request_handler("events/subscribe", SubscribeParams, subscribe)
    server.add_request_handler("events/unsubscribe", UnsubscribeParams, unsubscribe)
