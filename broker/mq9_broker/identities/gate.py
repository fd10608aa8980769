"""The enforcing broker's gate: which agent sent each request, and the logins that make it
unforgeable (docs/security.md). What each agent owns is ownership.py's.

nats-server makes the requester unforgeable: an agent ``alice`` logs in with her credential
(callout.py) and may publish only ``$mq9.U.alice.>`` (and plain ``$mq9.AI.>``, refused here in
words) and subscribe only ``_INBOX.alice.>``. The broker subscribes to ``$mq9.U.*.>``, takes the
principal from the third token, and hands the request on as the mq9 subject it names
(``$mq9.U.alice.AI.MSG.SEND.box`` -> ``$mq9.AI.MSG.SEND.box``). nats-server does not check
reply subjects, so a request whose reply is not ``_INBOX.<principal>.`` is dropped unanswered:
an answer would let alice aim the broker's words at bob's inbox. Nor could it reach the
broker's own storage: the requests are heard, and answered, on connections of
callout.SERVE_USER, which nats-server lets publish only to inboxes (and wake announcements),
never as the user keeping the state. A plain request (``$mq9.AI.>``, whose sender nothing
tells) is refused on a connection of its own that may publish only to inboxes
(callout.ANSWERS_USER), and only when its reply is one.

``Identities`` is the gate (``gate``, ``handle``: a revoked credential refused, else the
engine's answer with ``Ownership`` as its policy) and ``Logins`` the door it opens
(callout.py's login service, and the connections of revoked secrets closed). Every message a
SEND stores carries ``mq9-sender: <principal>`` (``sending.Vouched``), written from the
subject the request came on, whatever the client wrote under that name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import nats
from nats.aio.client import Client as NatsConnection
from nats.aio.msg import Msg

from mq9_wire import protocol as p
from mq9_wire.nats_floor.guard import flush_in_order, protect

from ..engine.owned import Answering, Requester
from ..nats_servers.processes import server_urls
from .callout import (
    ANSWERS_USER,
    BROKER_USER,
    SERVE_USER,
    SYS_USER,
    Issuer,
    Kicker,
    LoginService,
    login_name,
)
from .ownership import Ownership
from .store import BaseIdentityStore

# (the logger the identities' modules share, so that one setting shows them all)
log = logging.getLogger("mq9_broker.identities.ownership")

# the wire's names, one place for the client and the broker (protocol/subjects.py)
PRINCIPAL_PREFIX = p.subjects.PRINCIPAL_PREFIX
PRINCIPAL_WILDCARD = PRINCIPAL_PREFIX + "*.>"
MQ9_ROOT = "$mq9."
MARKER = p.subjects.IDENTITIES_MARKER
PLAIN_REFUSAL = p.encode(
    p.ERROR_REPLY.write(
        error=MARKER + "this broker serves credentialed agents on $mq9.U.<id>.<subject without "
        "$mq9.>; connect with a credential (docs/security.md)"
    )
)
REVOKED = p.encode(
    p.ERROR_REPLY.write(error="credential revoked: ask the broker's operator for a new one")
)
RENEWING = p.encode(
    p.ERROR_REPLY.write(
        error="credential issued anew a moment ago: the connections of its old secret are "
        "being closed; ask again in a moment"
    )
)
WATCH_SECONDS = 0.25  # how often revocations made by another process are looked for
CLOSINGS_AT_ONCE = 16  # old secrets whose connections are being closed at once
DROPS_LOGGED_EVERY = 10.0  # seconds: dropped requests are counted, logged at most this often
OnRequest = Callable[[Msg], Coroutine[Any, Any, None]]  # what a NATS subscription calls


PLAIN_QUEUE = "mq9-plain-refusals"  # the brokers refusing plain requests, one each


def principal_of(subject: str) -> tuple[str, str] | None:
    """``$mq9.U.alice.AI.MSG.SEND.box`` -> ``("alice", "$mq9.AI.MSG.SEND.box")``."""
    if not subject.startswith(PRINCIPAL_PREFIX):
        return None
    principal, dot, rest = subject[len(PRINCIPAL_PREFIX) :].partition(".")
    if not (principal and dot and rest):
        return None
    return principal, MQ9_ROOT + rest


def answers_to(reply: str) -> str | None:
    """The principal whose inbox ``reply`` is (``_INBOX.<principal>.…``), or None."""
    head, dot, rest = reply.partition(".")
    principal, dot2, tail = rest.partition(".")
    return principal if head == "_INBOX" and dot and dot2 and principal and tail else None


class Logins:
    """A broker process's door: answers nats-server's logins (``LoginService``) and closes
    the connections of secrets revoked or replaced meanwhile (``Kicker``), on connections of
    its own.
    One per process: on a cluster, the brokers (all serving) answer logins as one
    queue group (``queue``), each checking the same store."""

    def __init__(
        self, store: BaseIdentityStore, issuer: Issuer | None = None, *, queue: str | None = None
    ) -> None:
        self.store = store
        self.issuer = issuer or Issuer()
        self.service = LoginService(store, self.issuer)
        self.queue = queue
        self.connection: NatsConnection | None = None  # the broker user's, answering logins
        self._connections: list[NatsConnection] = []
        self._watcher: asyncio.Task[None] | None = None

    def broker_login(self) -> dict[str, str]:
        """The nats-py options the broker's own connections log in with (those that keep
        the state, answer logins, or ask whether another broker serves)."""
        return {"user": BROKER_USER, "password": self.issuer.broker_password}

    def serve_login(self) -> dict[str, str]:
        """The nats-py options of the connections that hear requests and publish answers
        (``SERVE_USER``: inboxes and wake announcements only), once these logins are
        answered (that user logs in through them)."""
        return {"user": SERVE_USER, "password": self.issuer.serve_password}

    async def start(self, url: str) -> None:
        """Answer logins, and watch for revocations, on the nats-server(s) at ``url``."""
        login = await nats.connect(
            server_urls(url),
            name="mq9-dev-broker logins",
            max_reconnect_attempts=-1,
            **self.broker_login(),
        )
        self._connections.append(login)
        self.connection = login  # it hears nats-server's login requests only
        system = await nats.connect(
            server_urls(url),
            name="mq9-dev-broker kicks",
            max_reconnect_attempts=-1,
            user=SYS_USER,
            password=self.issuer.sys_password,
        )
        self._connections.append(system)
        await self.service.start(login, queue=self.queue)
        self._watcher = asyncio.create_task(self._watch(Kicker(system)))

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        await self.service.stop()
        for connection in self._connections:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), 5)
        self._connections.clear()
        self.connection = None

    async def _watch(self, kicker: Kicker) -> None:
        """Close the live connections of every secret revoked or replaced meanwhile, each on
        a task of its own (its credential's requests are refused until then:
        ``Identities.handle`` asks ``store.active``)."""
        under_way: dict[tuple[str, str], asyncio.Task[None]] = {}
        try:
            while True:
                self.store.refresh()
                for old in [old for old, task in under_way.items() if task.done()]:
                    del under_way[old]
                for old in sorted(self.store.closing() - under_way.keys()):
                    if len(under_way) >= CLOSINGS_AT_ONCE:
                        break  # (a start finding many credentials revoked) the rest wait
                    under_way[old] = asyncio.create_task(self._close(kicker, *old))
                await asyncio.sleep(WATCH_SECONDS)
        finally:
            for task in under_way.values():
                task.cancel()
            await asyncio.gather(*under_way.values(), return_exceptions=True)

    async def _close(self, kicker: Kicker, principal: str, sha256: str) -> None:
        try:
            closed = await kicker.kick(login_name(principal, sha256))
            # (none: the usual case at a start, for each credential revoked before it)
            log.log(
                logging.INFO if closed else logging.DEBUG,
                "credential %r revoked or issued anew: closed %d connection(s) of its old secret",
                principal,
                closed,
            )
        except Exception as exc:  # a bug: its logins' end closes them (callout.LOGIN_SECONDS)
            log.error("could not close the connections of %r's old secret: %r", principal, exc)
        self.store.closed(principal, sha256)


class Identities:
    """What makes a serving broker enforcing: its gate on every request, its ownership checks,
    the refusal of plain requests, and (``logins`` not given) its own ``Logins``. ``cli.py``
    starts it beside the engine and ``serve.py`` routes each request through ``gate`` and
    ``handle``. With ``logins`` given (a JetStream broker's, started for as long as the process
    runs), ``start`` and ``stop`` leave them and the store to their owner."""

    def __init__(
        self,
        store: BaseIdentityStore,
        engine: Answering,
        issuer: Issuer | None = None,
        *,
        logins: Logins | None = None,
    ) -> None:
        self.store = store
        self._own_logins = logins is None
        self.logins = logins or Logins(store, issuer)
        self.issuer = self.logins.issuer
        self.ownership = Ownership(store, engine)
        self.subject = PRINCIPAL_WILDCARD
        self.dropped = 0  # requests answered nothing: a reply not the requester's own inbox
        self._dropped_logged = 0
        self._next_drop_log = 0.0
        self._answers: NatsConnection | None = None  # ANSWERS_USER's: plain requests refused
        self._guard: asyncio.Task[None] | None = None

    def broker_login(self) -> dict[str, str]:
        """The nats-py options the broker's own connections log in with."""
        return self.logins.broker_login()

    def serve_login(self) -> dict[str, str]:
        """The nats-py options of the serving connections (``Logins.serve_login``): usable
        once ``start`` returned."""
        return self.logins.serve_login()

    def describe(self) -> str:
        return (
            f"credentials: enforced ({self.store.where}); agents log in with their own "
            "(mq9-dev-broker credentials issue NAME) and send on $mq9.U.<id>.; "
            "docs/security.md"
        )

    async def start(self, url: str) -> None:
        """Refuse plain requests, on a connection of ``ANSWERS_USER`` (which may publish
        only to inboxes), first answering logins and watching for revocations on the
        nats-server at ``url`` when the logins are ours (that user logs in through them)."""
        if self._own_logins:
            await self.logins.start(url)

        async def quietly(exc: Exception) -> None:  # a permission refused is said in the log
            log.debug("nats (plain requests): %s", exc)

        self._answers = await nats.connect(
            server_urls(url),
            name="mq9-dev-broker plain requests",
            user=ANSWERS_USER,
            password=self.issuer.answers_password,
            max_reconnect_attempts=-1,
            error_cb=quietly,
        )
        # Agents publish plain requests to it, whatever their frames: guarded as the serving
        # connection is (nats_floor/guard.py)
        self._guard = protect(self._answers)
        # (brokers serving one store together: one of them refuses each)
        await self._answers.subscribe(p.SUBJECT_WILDCARD, queue=PLAIN_QUEUE, cb=self._refuse_plain)
        loop = asyncio.get_running_loop()

        def learn(kind: str, record: dict[str, str]) -> None:  # on the store's thread
            loop.call_soon_threadsafe(self.ownership.learn, kind, record)

        await asyncio.to_thread(self.store.follow_owners, learn)
        await flush_in_order(self._answers)

    async def stop(self) -> None:
        if self._guard is not None:
            self._guard.cancel()
            self._guard = None
        if self._answers is not None:
            with contextlib.suppress(Exception):  # the connection may be closed already
                await asyncio.wait_for(self._answers.close(), 5)
            self._answers = None
        if self._own_logins:
            await self.logins.stop()
            self.store.close()

    async def _refuse_plain(self, msg: Msg) -> None:
        """A plain request's refusal, to its reply when that is an inbox (nats-server would
        refuse ``ANSWERS_USER`` any other subject, and log it); else dropped and counted."""
        if not msg.reply:
            return
        if answers_to(msg.reply) is None:
            self._drop(msg)
            return
        if self._answers is not None:
            with contextlib.suppress(Exception):  # the requester may be gone
                await self._answers.publish(msg.reply, PLAIN_REFUSAL)

    def gate(self, on_request: OnRequest) -> OnRequest:
        """``on_request`` for ``$mq9.U.<principal>.…`` requests, given as the mq9 subject they
        name; those whose reply is not the principal's own inbox are dropped."""

        async def gated(msg: Msg) -> None:
            found = principal_of(msg.subject)
            if found is None or answers_to(msg.reply or "") != found[0]:
                self._drop(msg)
                return
            msg.subject = found[1]
            await on_request(msg)

        return gated

    def requester(self, reply: str) -> str:
        """Whose turn a request of ``reply`` (passed by ``gate``) takes: its agent's, however
        many inboxes the agent makes up (``_INBOX.<principal>``)."""
        return f"_INBOX.{answers_to(reply)}"

    def _drop(self, msg: Msg) -> None:
        self.dropped += 1
        now = time.monotonic()
        if now >= self._next_drop_log:  # a flood of them must not flood the log
            log.warning(
                "dropped %d request(s) unanswered whose reply was not the requester's own inbox "
                "(last: %s)",
                self.dropped - self._dropped_logged,
                p.quoted(msg.subject),
            )
            self._dropped_logged = self.dropped
            self._next_drop_log = now + DROPS_LOGGED_EVERY

    async def handle(self, engine: Answering, msg: Msg) -> bytes:
        """The answer to a request that passed ``gate``: refused for a revoked credential,
        else the engine's, which makes its command's ownership check and record
        (``engine.Command.owned``) with this broker's ``Ownership`` as the policy."""
        principal = answers_to(msg.reply or "") or ""
        if not self.store.active(principal):
            return RENEWING if self.store.renewing(principal) else REVOKED
        return await engine.handle(
            msg.subject, msg.headers, msg.data, Requester(principal, self.ownership)
        )
