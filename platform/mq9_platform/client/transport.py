"""How encoded mq9 requests reach a broker: the ``Transport`` interface and its two kinds.

A transport moves bytes and headers; it knows nothing of mq9 commands. ``Mq9Client(server)``
picks one by the URL's scheme (``open_transport``): ``NatsTransport`` for NATS URLs, and for
``memory://NAME`` a ``MemoryTransport`` on the in-process engine of that name, which it finds
through ``register_memory_engines`` (``import mq9_platform`` registers the bundled broker's:
the client itself never imports the broker). ``Mq9Client(transport=...)`` takes any other: a
``NatsTransport`` with its own options, a ``MemoryTransport(engine)`` on an engine of your own
(as httpx's ``ASGITransport(app)`` takes an app), a ``HandlerTransport`` on a function (as
httpx's ``MockTransport``), or a class of your own.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import re
import ssl
import warnings
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, cast, runtime_checkable

from mq9_wire.nats_floor.info import server_info
from mq9_wire.nats_floor.redaction import describe, redact
from mq9_wire.nats_floor.requests import cancels_of
from mq9_wire.nats_floor.urls import nats_urls, on_this_machine
from mq9_wire.protocol import DEFAULT_MAX_PAYLOAD
from mq9_wire.protocol.errors import (
    ConnectFailed,
    ConnectionLost,
    InvalidArgument,
    Mq9Error,
    NoBroker,
    NotAllowed,
    NotConnected,
    RequestTimeout,
    Unavailable,
)
from mq9_wire.protocol.subjects import IDENTITIES_MARKER, principal_subject

from .auth import Login, login_for, refused_credentials, refused_login

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from typing_extensions import TypeIs

    from mq9_wire.nats_floor.guard import GuardedClient

log = logging.getLogger("mq9_platform")

MEMORY_SCHEME = "memory://"
# seconds a close may take: a server that stops reading would hold nats-py's for ever
CLOSE_WITHIN = 5.0
# Bytes a connection queues before nats-py's publish waits for its flusher (nats-py's own
# default, named here: _round_trip reads it). That wait has no bound and swallows a cancel.
PENDING_SIZE = 2 * 1024 * 1024
# A request's bytes on the wire beyond its subject and body (HPUB line, reply inbox, headers)
_FRAME_ROOM = 512

# An enforcing broker's answer to a plain request: "use your prefix" (protocol/subjects.py)
_ASKS_FOR_PREFIX = re.compile(rb'\{\s*"error"\s*:\s*"' + re.escape(IDENTITIES_MARKER.encode()))

NOT_CONNECTED = (
    "not connected to an mq9 broker: call `await client.connect()` first "
    "(or use `async with Mq9Client(...) as client:`)"
)


class Transport(Protocol):
    """What ``Mq9Client`` needs of a way to reach a broker. ``request`` returns the reply's
    bytes, or raises an ``Mq9Error`` subclass (``protocol/errors.py``) when there is no reply:
    ``NotConnected`` before ``connect``, an ``Unavailable`` kind when the broker cannot be
    reached or does not answer within ``timeout`` seconds."""

    @property
    def max_payload(self) -> int: ...  # the most bytes (payload and headers) one request carries

    @property
    def is_connected(self) -> bool: ...

    async def connect(self) -> None: ...

    async def request(
        self, subject: str, body: bytes, headers: dict[str, str] | None, timeout: float
    ) -> bytes: ...

    async def close(self) -> None: ...


# Arrival announcements (docs/wake.md): mq9 itself announces nothing, the bundled broker does.
# A transport that can hear them offers one of the two methods below (both are optional: a
# transport without them is polled); what to make of what is heard is the waker's
# (platform/mq9_platform/wake/arrivals.py), which knows the announcements' subjects.
Unsubscribe = Callable[[], Awaitable[None]]


@runtime_checkable
class StoredArrivals(Protocol):
    """A transport on an engine in this process, which tells each mailbox it stores in."""

    def subscribe_stored(self, told: Callable[[str], None]) -> Unsubscribe | None:
        """``told(address)`` for each message the engine stores, under the engine's lock and
        maybe on another thread (hand it on, never raise); None when the engine tells none."""
        ...


# Whether a message, by its headers (None: it has none), is an announcement to hear
Accept = Callable[[Mapping[str, str] | None], bool]


@runtime_checkable
class Announcements(Protocol):
    """A transport on a NATS server, where the broker publishes its announcements."""

    async def subscribe_announcements(
        self,
        subjects: Sequence[str],
        heard: Callable[[str], None],
        timeout: float,
        *,
        accept: Accept | None = None,
    ) -> Unsubscribe | None:
        """``heard(subject)`` on this loop for each message published on ``subjects``
        (wildcards allowed), subscribed and flushed within ``timeout`` seconds; None before
        connecting. ``accept``: given a message's headers (None without), whether it is heard
        at all (wake/arrivals.py hears only a stream's republish). Raises what the server says
        when it refuses a subscription."""
        ...


# A broker answering in this process: (subject, headers, body) -> the reply's bytes.
Answer = Callable[[str, Mapping[str, str] | None, bytes], Awaitable[bytes]]


class Limits(Protocol):
    """What a transport reads of an engine's limits (``BrokerLimits``)."""

    @property
    def max_payload(self) -> int: ...


class InProcessBroker(Protocol):
    """A broker answering in this process (the bundled ``BrokerEngine``): it answers with
    ``handle``, within ``limits``. (Named apart from the broker's own ``Engine`` class, which
    is one such broker's insides; ``Engine`` here is a deprecated alias for a release.)"""

    @property
    def limits(self) -> Limits: ...

    async def handle(
        self, subject: str, headers: Mapping[str, str] | None, body: bytes
    ) -> bytes: ...


def __getattr__(name: str) -> object:
    """``Engine``, this module's name for ``InProcessBroker`` before 0.4.0: kept a release,
    with a ``DeprecationWarning`` (the broker's ``Engine`` is another thing)."""
    if name == "Engine":
        warnings.warn(
            "mq9_platform.client.transport.Engine is deprecated: it is InProcessBroker",
            DeprecationWarning,
            stacklevel=2,
        )
        return InProcessBroker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def is_transport(given: Transport | InProcessBroker | Answer) -> TypeIs[Transport]:
    """Whether ``given`` is a transport (it has ``request``), not an engine or a function."""
    return hasattr(given, "request")


class HandlerTransport:
    """Requests answered in this process by ``handler(subject, headers, body)``: a broker
    engine (``BrokerEngine``, whose ``limits.max_payload`` bounds requests) or any async
    function giving the reply's bytes, with ``max_payload``. Requests still go through the full
    encoding path, so a test in process exercises the same client code as one on NATS."""

    def __init__(
        self,
        handler: InProcessBroker | Answer | None,
        *,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
    ) -> None:
        self._handler = handler  # None: a MemoryTransport before it connects
        self._max_payload = max_payload
        self._connected = False

    @property
    def max_payload(self) -> int:
        limits: Limits | None = getattr(self._handler, "limits", None)
        return self._max_payload if limits is None else limits.max_payload

    @property
    def is_connected(self) -> bool:
        return self._connected

    async def connect(self) -> None:
        self._connected = True

    async def request(
        self, subject: str, body: bytes, headers: dict[str, str] | None, timeout: float
    ) -> bytes:
        if not self._connected:
            raise NotConnected(NOT_CONNECTED)
        # A round trip gives other tasks a turn, as a network request would: without it a
        # consumer that always finds messages would never let a competing one run.
        await asyncio.sleep(0)
        # An engine's handle (looked up each time: tests replace it), else the function itself.
        handle = cast(Answer, getattr(self._handler, "handle", self._handler))
        return await handle(subject, dict(headers) if headers else None, bytes(body))

    async def close(self) -> None:
        self._connected = False

    def subscribe_stored(self, told: Callable[[str], None]) -> Unsubscribe | None:
        """``StoredArrivals``: the engine's ``arrivals`` listeners (``BrokerEngine``'s), if
        it keeps them; a plain function answering tells nothing."""
        arrivals = getattr(self._handler, "arrivals", None)
        if not isinstance(arrivals, list):
            return None
        arrivals.append(told)

        async def unsubscribe() -> None:
            with contextlib.suppress(ValueError):  # already gone: unsubscribed twice
                arrivals.remove(told)

        return unsubscribe


# memory://NAME -> its engine: the bundled broker's memory_broker, once registered
FindEngine = Callable[[str], InProcessBroker]
_memory_engines: list[FindEngine] = []  # the one registered, if any


def register_memory_engines(find: FindEngine | None) -> None:
    """Where ``memory://NAME`` finds its engine from now on: ``find(NAME)``, called at each
    connect (None: nowhere). ``import mq9_platform`` registers the bundled broker's."""
    _memory_engines[:] = [] if find is None else [find]


def memory_engine(name: str) -> InProcessBroker:
    """The engine behind ``memory://NAME``, as the registered function gives it."""
    if not _memory_engines:
        raise ConnectFailed(
            f"no in-process broker for memory://{name}: none is registered (import "
            "mq9_platform, which registers the bundled broker, or give the client "
            "transport=MemoryTransport(engine))"
        )
    return _memory_engines[0](name)


class MemoryTransport(HandlerTransport):
    """Requests answered by a broker engine in this process: ``engine``, or the engine of
    ``memory://NAME`` (``name``), looked up at connect (``memory_engine``)."""

    # the bundled broker's engine, in this process: it keeps idempotency keys, said by
    # the transport itself rather than learned from any answer
    recognises_keys = True

    def __init__(self, engine: InProcessBroker | str = "") -> None:
        named = isinstance(engine, str)
        super().__init__(None if named else cast(InProcessBroker, engine))
        self.name: str | None = cast(str, engine) if named else None

    @property
    def max_payload(self) -> int:
        if self._handler is None and self.name is not None:  # not connected yet
            return memory_engine(self.name).limits.max_payload
        return super().max_payload

    async def connect(self) -> None:
        if self.name is not None:
            self._handler = memory_engine(self.name)
        await super().connect()


class _NatsOptions(TypedDict):
    """What ``NatsTransport`` passes to nats-py's ``connect`` (None: nats-py's default)."""

    servers: list[str]
    connect_timeout: float
    max_reconnect_attempts: int
    reconnect_time_wait: float
    user_credentials: str | None
    name: str
    error_cb: Callable[[Exception], Awaitable[None]]
    disconnected_cb: Callable[[], Awaitable[None]]
    reconnected_cb: Callable[[], Awaitable[None]]
    user: str | None
    password: str | None
    token: str | None
    tls: ssl.SSLContext | None
    inbox_prefix: str
    pending_size: int


class NatsTransport:
    """A persistent nats-py connection with reconnects, nats errors turned into ``Mq9Error``.

    ``servers``: a NATS URL (``nats://``, ``tls://``, ``ws://``, ``wss://``), several
    comma-separated, or a list. Credentials go in the URL (``nats://user:pass@host:4222``) or
    as ``user``/``password``, ``token``, ``creds`` (a NATS .creds file) and ``tls`` (an
    ``ssl.SSLContext``); an mq9 credential (``<id>:<secret>``, docs/security.md) as
    ``credential``, in the URL, or, when nothing else is given, in the environment
    (``MQ9_CREDENTIAL``, or ``MQ9_CREDENTIAL_FILE`` naming a file that holds it).

    A client with a credential takes its replies on ``_INBOX.<id>.``; when the broker answers
    a request with its marked refusal (it enforces per-agent credentials), it sends that
    request again on ``$mq9.U.<id>.``, and every later one of this connection, which a
    reconnect ends (``protocol/subjects.py``).

    ``request_timeout`` bounds the first connection; nats-py then reconnects
    ``reconnect_attempts`` times, ``reconnect_delay`` seconds apart. ``name``: the connection's
    name on the server.

    Like nats-py's own client, it belongs to the event loop that opened it: call it from there
    (``Mq9Connection`` gives every loop a client of its own).
    """

    def __init__(
        self,
        servers: str | list[str],
        *,
        request_timeout: float = 5.0,
        reconnect_attempts: int = 5,
        reconnect_delay: float = 2.0,
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        creds: str | None = None,
        tls: ssl.SSLContext | None = None,
        name: str | None = None,
        credential: str | None = None,
    ) -> None:
        servers = _nats_urls(servers)
        self.where = redact(", ".join(servers))  # for messages: no passwords
        self._local = on_this_machine(servers)  # a broker started here could answer
        self.login: Login = login_for(
            servers, user=user, password=password, token=token, creds=creds, credential=credential
        )
        self._options = _NatsOptions(
            servers=servers,
            connect_timeout=request_timeout,
            max_reconnect_attempts=reconnect_attempts,
            reconnect_time_wait=reconnect_delay,
            user_credentials=creds,
            name=name or "langchain-mq9",
            pending_size=PENDING_SIZE,
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
            user=self.login.user,
            password=self.login.password,
            token=token,
            tls=tls,
            inbox_prefix=self.login.inbox_prefix or "_INBOX",  # (nats-py's default)
        )
        self._connection: GuardedClient | None = None
        self._refused = False  # the last (re)connect attempt met an authorization violation
        self._prefixed = False  # requests go on $mq9.U.<id>. (the broker said so)
        self._loop: asyncio.AbstractEventLoop | None = None  # the one connect() ran on
        # The requests waiting for a reply, cancelled where they wait when the link drops
        # (_cut_in_flight): they fail at once instead of at their timeout, since a reply sent
        # while the link is down is lost; and those cancelled so, until they take it back.
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._cut: set[asyncio.Task[Any]] = set()
        self._redialing = asyncio.Lock()
        self._closes = 0
        self._watchdog: asyncio.Task[None] | None = None  # see _nats.guard.protect

    @property
    def max_payload(self) -> int:
        return self._connection.max_payload if self._connection else DEFAULT_MAX_PAYLOAD

    @property
    def server_info(self) -> dict[str, Any]:
        """The INFO the server sent ({} before connecting): says which broker this is."""
        return server_info(self._connection) if self._connection else {}

    @property
    def principal(self) -> str | None:
        """The id of this client's mq9 credential (None without one): who it is to a broker
        that enforces per-agent credentials."""
        return self.login.principal

    async def subscribe_announcements(
        self,
        subjects: Sequence[str],
        heard: Callable[[str], None],
        timeout: float,
        *,
        accept: Accept | None = None,
    ) -> Unsubscribe | None:
        """``Announcements``: a plain NATS subscription to each subject, on the connection
        requests go by; all of them undone if one is refused."""
        from mq9_wire.nats_floor.guard import (
            flush_in_order,  # nats-py, only once a NATS link is used
        )

        connection = self._connection
        if connection is None:
            return None
        subscriptions: list[Any] = []

        async def announced(msg: Any) -> None:
            if accept is None or accept(msg.headers):
                heard(msg.subject)

        async def unsubscribe() -> None:
            for subscription in subscriptions:
                with contextlib.suppress(Exception):  # the connection may be gone: nothing held
                    await subscription.unsubscribe()

        try:
            for subject in subjects:
                subscriptions.append(await connection.subscribe(subject, cb=announced))
            # In order: nats-py's own flush may see its PONG before the server has the SUBs
            # (an announcement published just after was then missed, one time in ten here).
            # nats-py annotates the timeout an int; it waits with asyncio.wait_for, in seconds.
            await flush_in_order(connection, cast(int, timeout))
        except Exception:
            await unsubscribe()
            raise
        return unsubscribe

    @property
    def is_connected(self) -> bool:
        # From connect() until close(). While the link is down nats-py reconnects; once it has
        # used up reconnect_attempts, the next request dials again, so no outage ends a client.
        return self._connection is not None

    @property
    def reconnecting(self) -> bool:
        """Whether the link has dropped and nats-py is dialing again: a request now fails at
        once, unsent (``ConnectionLost``)."""
        connection = self._connection
        return connection is not None and connection.is_reconnecting

    async def connect(self) -> None:
        from mq9_wire.nats_floor.guard import GuardedClient, protect

        # A first connection gets request_timeout in all, not nats-py's reconnect_attempts tries
        connection = GuardedClient()
        watchdog = protect(connection)  # a malformed frame must not deafen it
        self._refused = False
        self._prefixed = False  # a new connection may reach another broker: it says again
        # (the ignore: nats-py hints the seconds as int; it takes floats, as documented)
        dialing = asyncio.ensure_future(connection.connect(**self._options))  # type: ignore[arg-type]
        # Stopped while it dials (SIGTERM, a cancelled caller), wait_for cancels the dial and
        # leaves it be; a dial that ended in its own error just then would be logged as "Task
        # exception was never retrieved": its outcome is read here whatever happens.
        dialing.add_done_callback(lambda done: done.cancelled() or done.exception())
        try:
            await asyncio.wait_for(dialing, self._options["connect_timeout"])
        except Exception as exc:
            last = connection.last_error if isinstance(exc, asyncio.TimeoutError) else exc
            _stop(watchdog)
            await _quietly_close(connection)
            if self._refused:  # nats-py reports it as "no servers": say what really happened
                raise NotAllowed(refused_login(self.where, self.login)) from None
            said = f"cannot connect to the mq9 broker at {self.where} ({describe(last or exc)})"
            hint = "; to run one on this machine: mq9-dev-broker" if self._local else ""
            raise ConnectFailed(said + hint) from None
        _stop(self._watchdog)  # of the connection this one replaces
        self._connection, self._watchdog = connection, watchdog
        self._loop = asyncio.get_running_loop()

    async def request(
        self, subject: str, body: bytes, headers: dict[str, str] | None, timeout: float
    ) -> bytes:
        connection = self._connection
        if connection is None or self._loop is None:  # (both are set by connect)
            raise NotConnected(NOT_CONNECTED)
        if self._loop is not asyncio.get_running_loop():
            raise NotConnected(
                "this client belongs to the event loop that connected it: call it from that "
                "loop (a toolkit given client= there: `await tool.ainvoke(...)`), or give the "
                "toolkit server= so that every loop gets a client of its own"
            )
        if connection.is_closed:  # nats-py gave up reconnecting: dial again
            connection = await self._redial(connection)
        elif connection.is_reconnecting:
            if self._refused:  # its login is refused now: revoked, say
                raise NotAllowed(refused_login(self.where, self.login))
            # nats-py would hold the request until it reconnects, waiting out the whole timeout
            # meanwhile (each call of an outage took its 5 s): not sent, and said at once
            raise ConnectionLost(
                f"the connection to the mq9 broker at {self.where} is down and reconnecting; "
                "the request was not sent (the client reconnects by itself)"
            )
        principal = self.login.principal
        prefixed = self._prefixed
        sent = principal_subject(principal, subject) if principal and prefixed else subject
        reply = await self._round_trip(connection, sent, body, headers, timeout)
        if principal is None or prefixed or not _ASKS_FOR_PREFIX.match(reply):
            return reply
        # The broker enforces per-agent credentials: this request goes again on the agent's
        # prefix (refused, it did nothing), and every later one of this connection
        if not self._prefixed:
            self._prefixed = True
            log.info("the mq9 broker enforces per-agent credentials: sending as %r", principal)
        sent = principal_subject(principal, subject)
        return await self._round_trip(connection, sent, body, headers, timeout)

    async def _round_trip(
        self,
        connection: GuardedClient,
        subject: str,
        body: bytes,
        headers: dict[str, str] | None,
        timeout: float,
    ) -> bytes:
        """One request on ``connection`` and its reply's bytes, nats-py's failures as ours."""
        # A dropped link cancels the request where it waits, in this task: cheaper than a task
        # per request raced against the link (a sixth of a round trip on loopback).
        waiting = asyncio.current_task()
        assert waiting is not None  # a coroutine runs in a task
        cancels = cancels_of(waiting)
        self._in_flight.add(waiting)
        try:
            try:
                asking = connection.request(subject, body, timeout=timeout, headers=headers or None)
                queued = connection.pending_data_size + len(body) + len(subject) + _FRAME_ROOM
                if queued > PENDING_SIZE:  # the publish would wait for the flusher: bounded
                    reply = await _within(asking, timeout)
                else:
                    reply = await asking
            finally:
                self._in_flight.discard(waiting)
                cut = waiting in self._cut
                by_caller = cut and self._uncut(waiting)
        except asyncio.CancelledError:
            if not cut or by_caller:
                raise
            raise ConnectionLost(
                f"lost the connection to the mq9 broker at {self.where} while "
                "waiting for the reply; the request may or may not have been carried out "
                "(the client reconnects by itself)"
            ) from None
        except Exception as exc:
            failure = self._failure(exc, subject, timeout, connection)
            if failure is None:
                raise
            raise failure from None
        # a cancel that came with the reply (nats_floor/requests.py)
        if cancels_of(waiting) > cancels:
            raise asyncio.CancelledError
        return reply.data

    def _failure(
        self, exc: Exception, subject: str, timeout: float, connection: GuardedClient
    ) -> Mq9Error | None:
        """The ``Mq9Error`` for nats-py's ``exc`` on a request, None for any other exception.
        (Apart from ``request``: nats-py's errors are imported only when one is raised.)"""
        import nats.errors as nats_errors

        if isinstance(exc, nats_errors.NoRespondersError):
            return NoBroker(
                f"no mq9 broker is serving at {self.where}: nothing answers "
                f"{subject.rsplit('.', 1)[0]}.* (is this a RobustMQ or mq9-dev-broker server?)"
            )
        if isinstance(exc, (TimeoutError, nats_errors.TimeoutError)):
            down = " (the connection is down and reconnecting)"
            return RequestTimeout(
                f"the mq9 broker did not answer within {timeout:g}s"
                f"{down if connection.is_reconnecting else ''}; "
                "the request may or may not have been carried out"
            )
        if isinstance(exc, nats_errors.ConnectionClosedError):
            if self._connection is None:
                return NotConnected(NOT_CONNECTED)
            return ConnectionLost(
                f"lost the connection to the mq9 broker at {self.where}; "
                "the request was not sent (the client dials again on the next call)"
            )
        if isinstance(exc, nats_errors.Error):
            return Unavailable(f"NATS refused the request: {describe(exc)}")
        return None

    async def _redial(self, dead: GuardedClient) -> GuardedClient:
        closes = self._closes
        async with self._redialing:  # one dial for all the requests that found the link dead
            if self._connection is dead:
                log.warning("dialing the mq9 broker at %s again", self.where)
                await self.connect()  # a failure raises a retryable "cannot connect"
        if self._closes != closes or self._connection is None:  # close() ran meanwhile
            if self._connection is not None and self._connection is not dead:
                await self.close()
            raise NotConnected(NOT_CONNECTED)
        return self._connection

    async def close(self) -> None:
        self._closes += 1
        connection, self._connection = self._connection, None
        _stop(self._watchdog)
        self._watchdog = None
        if connection is not None:
            await _quietly_close(connection)

    async def _on_error(self, exc: Exception) -> None:
        if refused_credentials(exc):
            self._refused = True
        log.debug("nats: %s", describe(exc))

    def _uncut(self, task: asyncio.Task[Any]) -> bool:
        """Take back the cancel() a dropped link made of ``task`` (a reply that had already
        arrived wins over it): whether ``task`` is still cancelled after that, by its caller
        (Python 3.10 counts none: never)."""
        self._cut.discard(task)
        return hasattr(task, "uncancel") and task.uncancel() > 0

    def _cut_in_flight(self) -> None:
        """Cancel every request waiting for a reply, once: the link they went out on is down."""
        for task in self._in_flight:
            self._cut.add(task)
            task.cancel()
        self._in_flight.clear()

    async def _on_disconnected(self) -> None:
        current = self._connection
        if current is None:
            return  # we closed it
        if not current.is_connected:  # (else this came late from a replaced connection)
            self._cut_in_flight()
        log.warning("lost the connection to the mq9 broker; reconnecting")

    async def _on_reconnected(self) -> None:
        self._refused = False
        self._prefixed = False  # perhaps to another broker: it says again if it must
        log.warning("reconnected to the mq9 broker")


async def _within(asking: Coroutine[Any, Any, Msg], timeout: float) -> Msg:
    """nats-py's request, in a task of its own, given ``timeout``: with more than its pending
    size queued its publish waits for the flusher, which a server that stops reading holds
    for ever, and it swallows the cancel meant to end that wait. Left behind past the bound
    (cancelled; it ends when the flusher moves or the connection closes)."""
    task = asyncio.ensure_future(asking)
    task.add_done_callback(lambda done: done.cancelled() or done.exception())
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    finally:
        if not task.done():
            task.cancel()
    if not done:
        raise TimeoutError
    return task.result()


def _stop(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()


async def _quietly_close(connection: Client) -> None:
    from mq9_wire.nats_floor.guard import close_within

    closing = asyncio.current_task()
    cancels = cancels_of(closing)
    try:
        if not await close_within(connection, CLOSE_WITHIN):
            log.debug("the NATS connection did not close within %s s: dropped", CLOSE_WITHIN)
    except asyncio.CancelledError:
        # nats-py's close raises one nobody asked for when the link has just dropped:
        # the close cancels its reconnecting task while that waits for the dead socket to
        # close, which cancels the socket's close waiter it shares, and the close then awaits
        # that same waiter. The connection is closed all the same. A cancel of this task
        # (a shutdown, a caller's timeout) is still raised.
        if cancels_of(closing) > cancels:
            raise
        log.debug("nats-py's close of a dropped connection raised a stray CancelledError")
    except Exception as exc:  # closing must not fail a shutdown
        log.debug("error while closing the NATS connection: %s", exc)


def open_transport(server: str, **options: Any) -> Transport:
    """The transport for ``server``: ``memory://[NAME]``, or NATS URLs with ``NatsTransport``'s
    ``options`` (a memory broker takes them, but no credentials)."""
    if not isinstance(server, str) or not server.strip():
        raise ValueError("server must be a URL such as nats://localhost:4222 or memory://")
    server = server.strip()
    if not server.startswith(MEMORY_SCHEME):
        return NatsTransport(server, **options)
    unknown = set(options) - set(inspect.signature(NatsTransport).parameters)
    if unknown:
        raise TypeError(f"unexpected keyword argument {sorted(unknown)[0]!r}")
    if any(options.get(k) for k in ("user", "password", "token", "creds", "tls", "credential")):
        raise InvalidArgument("memory:// brokers take no credentials")
    return MemoryTransport(server[len(MEMORY_SCHEME) :].strip("/"))


def _nats_urls(servers: str | list[str]) -> list[str]:
    try:
        return nats_urls(servers, also="memory:// for the in-process broker")
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None
