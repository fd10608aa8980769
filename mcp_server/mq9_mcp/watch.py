"""Subscriptions to a mailbox resource (``mq9://mailbox/{mail_address}``): a subscriber is
told ``notifications/resources/updated`` when new mail arrives there, in both MCP eras.

- 2025-11-25 and before: ``resources/subscribe`` and ``resources/unsubscribe`` in a session;
  the notification goes to that session, and its watches end with it.
- 2026-07-28 (no sessions): ``subscriptions/listen`` naming the resources in its
  ``resourceSubscriptions``; the request's answer is the stream of notifications (the SDK's
  ``ListenHandler``), and its watches end with it.

mq9 pushes nothing to a reader. Where the broker announces arrivals (the bundled broker with
``--announce``, or memory://: mq9_platform/wake/arrivals.py) a watched mailbox is looked
at as soon as mail arrives, and every ``SWEEP_SECONDS`` anyway; elsewhere (RobustMQ) every
``POLL_SECONDS``. A look is a FETCH without a consumer group from the newest message (it
records nothing, and consumes nothing): it names the newest msg_id, and msg_ids only grow, so a
higher one than the last look's is new mail. A broker that does not answer is looked at
again the next time. The mailbox must be one the client may read (``--allowed-mailboxes``),
as for reading the resource. Bounded: ``MAX_PER_SUBSCRIBER`` mailboxes per session or stream,
``MAX_WATCHES`` for the server, and ``MAX_STREAMS`` listen streams open at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

import anyio
from mcp import types
from mcp.server.context import ServerRequestContext as Ctx  # one request's
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler, ResourceUpdated
from mcp.shared.exceptions import MCPError

from mq9_platform.client.client import Mq9Client
from mq9_platform.client.connection import Mq9Connection
from mq9_platform.operations.errors import OperationError, explain
from mq9_platform.operations.policy import ToolPolicy
from mq9_platform.wake.arrivals import subscribe_arrivals
from mq9_platform.wake.rules import digest
from mq9_wire.nats_floor.redaction import redact
from mq9_wire.protocol.errors import (
    InvalidArgument,
    MailboxNotFound,
    MalformedReply,
    Mq9Error,
    NotAllowed,
    NotConnected,
)
from mq9_wire.protocol.messages import Message

from .resources import MAILBOX

log = logging.getLogger("mq9_mcp")

POLL_SECONDS = 1.0
SWEEP_SECONDS = 30.0  # with announcements: a look anyway, for one lost while reconnecting
MAX_PER_SUBSCRIBER = 16
MAX_WATCHES_PER_OWNER = 32
MAX_WATCHES = 256
MAX_STREAMS_PER_OWNER = 8  # open subscriptions/listen streams, watching or not
MAX_STREAMS = 256

Notify = Callable[[], Awaitable[None]]


class Watches:
    """The mailboxes watched for new mail, by subscriber (a session, or a listen stream)."""

    def __init__(
        self, connection: Mq9Connection, timeout: float, poll_seconds: float = POLL_SECONDS
    ) -> None:
        self.connection = connection
        self.timeout = timeout  # of one look
        self.poll_seconds = poll_seconds
        self.by_subscriber: dict[object, dict[str, asyncio.Task[None]]] = {}
        self.owners: dict[object, str] = {}  # the client of each subscriber
        self.streams: dict[object, str] = {}  # the open subscriptions/listen streams' clients
        # the watches' wake-ups by the digest of their mailbox, set by announcements
        self._wakeups: dict[str, set[asyncio.Event]] = {}
        self._subscribed: asyncio.Future[bool] | None = None
        self.announced = False  # an announcement came: the broker tells of arrivals

    async def _subscribe(self) -> None:
        """Listen to the broker's announcements once (where there are none: poll)."""
        if self._subscribed is not None:
            await asyncio.shield(self._subscribed)
            return
        self._subscribed = asyncio.get_running_loop().create_future()
        loop = asyncio.get_running_loop()

        def arrived(d: str) -> None:  # on the client's loop
            loop.call_soon_threadsafe(self._arrived, d)

        try:
            # the server's own connection (no principal's): it outlives every watch,
            # and an announcement names only a digest, no mail
            shared = getattr(self.connection, "shared", self.connection)
            found = await shared.run(lambda c: subscribe_arrivals(c, arrived))
        except Exception as exc:  # the broker away: poll
            log.debug("no arrival announcements: %s", exc)
            found = None
        self._subscribed.set_result(found is not None)

    def _arrived(self, d: str) -> None:
        self.announced = True
        for wakeup in self._wakeups.get(d, ()):
            wakeup.set()

    def count(self, owner: str | None = None) -> int:
        """The mailboxes watched, for ``owner`` (None: for everyone)."""
        return sum(
            len(watched)
            for subscriber, watched in self.by_subscriber.items()
            if owner is None or self.owners.get(subscriber) == owner
        )

    def open_stream(self, stream: object, owner: str) -> None:
        """Count a listen stream of ``owner``'s, if the limits leave room for it."""
        if sum(1 for o in self.streams.values() if o == owner) >= MAX_STREAMS_PER_OWNER:
            raise MCPError(
                types.INVALID_PARAMS,
                f"a client keeps at most {MAX_STREAMS_PER_OWNER} listen streams open: close one",
            )
        if len(self.streams) >= MAX_STREAMS:
            raise MCPError(
                types.INTERNAL_ERROR, f"{MAX_STREAMS} listen streams are open: try again later"
            )
        self.streams[stream] = owner

    async def start(
        self,
        subscriber: object,
        mail_address: str,
        notify: Notify,
        owner: str = "",
        *,
        must_exist: bool = True,
    ) -> None:
        """Watch ``mail_address`` for ``subscriber`` of client ``owner`` (again: nothing more),
        calling ``notify`` on mail newer than what is there now (looked at before this
        returns); without ``must_exist`` a mailbox not made yet is watched as an empty one
        (a dead-letter mailbox, made by the first message set aside: ``events.py``)."""
        watched = self.by_subscriber.get(subscriber, {})
        if mail_address in watched:
            return
        if len(watched) >= MAX_PER_SUBSCRIBER:
            raise MCPError(
                types.INVALID_PARAMS,
                f"a client watches at most {MAX_PER_SUBSCRIBER} mailboxes at once: "
                "unsubscribe from one first",
            )
        if self.count(owner) >= MAX_WATCHES_PER_OWNER:
            raise MCPError(
                types.INVALID_PARAMS,
                f"a client watches at most {MAX_WATCHES_PER_OWNER} mailboxes in all its sessions "
                "and streams: unsubscribe from one first",
            )
        if self.count() >= MAX_WATCHES:
            raise MCPError(
                types.INTERNAL_ERROR,
                f"this server watches {MAX_WATCHES} mailboxes already: try again later",
            )
        try:
            seen = await self._newest(mail_address)
        except (Mq9Error, TimeoutError) as exc:  # a client's mistake, or the broker's trouble
            if isinstance(exc, MailboxNotFound) and not must_exist:
                seen = None
            else:
                raise _refusal(exc) from None
        loop = asyncio.get_running_loop()
        self.owners[subscriber] = owner
        watched = self.by_subscriber.setdefault(subscriber, watched)
        watched[mail_address] = loop.create_task(self._watch(mail_address, notify, seen))

    def stop(self, subscriber: object, mail_address: str | None = None) -> None:
        """Stop watching ``mail_address`` (None: every mailbox) for ``subscriber``."""
        watched = self.by_subscriber.get(subscriber, {})
        for address in list(watched) if mail_address is None else [mail_address]:
            task = watched.pop(address, None)
            if task is not None:
                task.cancel()
        if not watched:
            self.by_subscriber.pop(subscriber, None)
            self.owners.pop(subscriber, None)

    async def _watch(self, mail_address: str, notify: Notify, seen: int | None) -> None:
        await self._subscribe()
        wakeup = asyncio.Event()
        d = digest(mail_address)
        self._wakeups.setdefault(d, set()).add(wakeup)
        try:
            await self._looks(mail_address, notify, seen, wakeup)
        finally:
            waiting = self._wakeups.get(d, set())
            waiting.discard(wakeup)
            if not waiting:
                self._wakeups.pop(d, None)

    async def _looks(
        self, mail_address: str, notify: Notify, seen: int | None, wakeup: asyncio.Event
    ) -> None:
        while True:
            wait = SWEEP_SECONDS if self.announced else self.poll_seconds
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wakeup.wait(), wait)
            wakeup.clear()
            try:
                newest = await self._newest(mail_address)
            except (Mq9Error, TimeoutError):  # the broker is away: look again next time
                continue
            if newest is not None and (seen is None or newest > seen):
                try:
                    await notify()
                except Exception as exc:  # a client gone: its session or stream ends the watch
                    log.debug("could not tell of new mail in %s: %s", mail_address, exc)
            seen = newest

    async def _newest(self, mail_address: str) -> int | None:
        """The newest msg_id stored in the mailbox (None: it holds none)."""

        def look(client: Mq9Client) -> Awaitable[list[Message]]:
            return client.fetch(mail_address, deliver="latest", num_msgs=1, max_wait_ms=0)

        with anyio.fail_after(self.timeout):
            found = await self.connection.run(look)
        return max((message.msg_id for message in found), default=None)


def _refusal(exc: Mq9Error | TimeoutError) -> MCPError:
    """A watch refused at its start: the client's mistake (invalid params), or the broker's
    trouble (internal error)."""
    text = explain(exc) if isinstance(exc, Mq9Error) else "the broker did not answer"
    # a refusal of this request (not of the moment: the broker away) is the client's to fix
    mistake = isinstance(exc, (MailboxNotFound, InvalidArgument, NotAllowed)) or (
        isinstance(exc, Mq9Error)
        and not exc.retryable
        and not isinstance(exc, (MalformedReply, NotConnected))
    )
    code = types.INVALID_PARAMS if mistake else types.INTERNAL_ERROR
    return MCPError(code, redact(text))


def watched_mailbox(uri: str, policy: ToolPolicy) -> str:
    """The mailbox a subscription to ``uri`` watches, if the client may read it."""
    if not uri.startswith(MAILBOX) or len(uri) == len(MAILBOX):
        raise MCPError(
            types.INVALID_PARAMS,
            f"only mailboxes can be subscribed to ({MAILBOX}<mail_address>), not {uri[:200]!r}",
        )
    mail_address = unquote(uri[len(MAILBOX) :])
    try:
        policy.check(mail_address)
    except (OperationError, Mq9Error) as exc:
        raise MCPError(types.INVALID_PARAMS, str(exc)) from None
    return mail_address


def _connection_of(ctx: Ctx) -> Any:
    """The MCP SDK's ``Connection`` of the request's session, whose ``exit_stack`` closes when
    the session ends. The SDK 2.3 names it on its ``Context`` (``ctx.connection``), which its
    runner does not build yet (mcp/server/context.py): the request's session holds it."""
    return getattr(ctx, "connection", None) or ctx.session._connection


def _publish(bus: InMemorySubscriptionBus, uri: str) -> Notify:
    async def notify() -> None:
        await bus.publish(ResourceUpdated(uri))

    return notify


def serve(
    server: Any,
    watches: Watches,
    policy_of: Callable[[Ctx], ToolPolicy],
    owner_of: Callable[[Ctx], str],
) -> None:
    """Add mailbox subscriptions to ``server`` (both eras); ``policy_of(ctx)``: the client's
    policy, ``owner_of(ctx)``: the client (``owners.py``)."""

    async def subscribe(ctx: Ctx, params: types.SubscribeRequestParams) -> types.EmptyResult:
        uri = str(params.uri)
        mail_address = watched_mailbox(uri, policy_of(ctx))
        connection = _connection_of(ctx)  # the session: its end ends its watches
        if connection not in watches.by_subscriber:
            connection.exit_stack.callback(watches.stop, connection)
        updated = lambda: connection.send_resource_updated(uri)  # noqa: E731
        await watches.start(connection, mail_address, updated, owner_of(ctx))
        return types.EmptyResult()

    async def unsubscribe(ctx: Ctx, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
        uri = str(params.uri)
        if uri.startswith(MAILBOX):
            watches.stop(_connection_of(ctx), unquote(uri[len(MAILBOX) :]))
        return types.EmptyResult()

    async def listen(ctx: Ctx, params: types.SubscriptionsListenRequestParams) -> Any:
        owner = owner_of(ctx)
        # one bus per stream: a watch tells only the stream that asked for it
        bus = InMemorySubscriptionBus()
        stream = object()
        watches.open_stream(stream, owner)
        try:
            for uri in params.notifications.resource_subscriptions or ():
                mail_address = watched_mailbox(uri, policy_of(ctx))
                await watches.start(stream, mail_address, _publish(bus, uri), owner)
            return await ListenHandler(bus, max_subscriptions=1)(ctx, params)
        finally:
            watches.streams.pop(stream, None)
            watches.stop(stream)

    server.add_request_handler("resources/subscribe", types.SubscribeRequestParams, subscribe)
    server.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams, unsubscribe)
    server.add_request_handler(
        "subscriptions/listen", types.SubscriptionsListenRequestParams, listen
    )
