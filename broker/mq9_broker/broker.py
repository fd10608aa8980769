"""``Broker``: the bundled mq9 broker as an object, started and stopped from Python.

    async with Broker(BrokerConfig(nats=URLS, store="jetstream", credentials="./mq9-auth")) as b:
        credential = await b.issue("billing")        # name:secret, for one agent
        await b.serve()                              # until stopped

It answers every ``$mq9.AI.*`` request: with a ``BrokerEngine`` on a nats-server it starts
(``host``/``port``) or on running ones (``nats``), its state in memory or in SQLite (``data``);
or with an ``Engine`` keeping the state in JetStream on the cluster of ``nats``, where
every broker started on the same ``stream`` serves at once (serving/queue_group.py).
``mq9-dev-broker`` is this object behind argparse.

What it says as it starts (where it serves, what it restored, its limits, "ready") goes to
``say``: the command prints it; by default it is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NatsConnection

from mq9_wire import protocol as p
from mq9_wire import semantic
from mq9_wire.nats_floor.redaction import describe, redact

from .banner import banner, cluster_banner
from .config import (
    BrokerConfig,
    StartupError,
    check_credentials,
    credentials_place,
    identities_path,
)
from .engine.engine import Engine
from .engine.process import BrokerEngine
from .forming import await_cluster, placed, refuse_old_format, refused_for_good
from .identities.callout import BROKER_USER, LOGIN_QUEUE, SETUP_FILE, Issuer, broker_urls
from .identities.gate import Identities, Logins
from .identities.kv_store import KvIdentityStore
from .identities.store import CredentialError, IdentityStore
from .nats_servers.processes import (
    LARGEST_MAX_PAYLOAD,
    NatsProcess,
    find_nats_server,
    server_urls,
    start_nats_server,
    url_login,
)
from .nats_servers.survey import ClusterError, Waiting, check_login, refused_login, survey
from .serving.meter import RequestMeter
from .serving.pacing import AnswerPacer
from .serving.queue_group import QUEUE, open_store
from .serving.serve import NatsService, serve_on_nats
from .storage import SqliteStorage, Storage, StorageError
from .storage.in_process.sqlite import data_file
from .storage.jetstream import ClusterStore, Layout, StreamCount

log = logging.getLogger("mq9_broker")

READY = "mq9 dev broker ready on"
CONNECT_TIMEOUT = 10.0
LOOPBACK = ("127.0.0.1", "localhost", "::1")
BURST_MIB = 4  # a large answer after a quiet moment goes at once, up to this far ahead
DEFAULT_ACCOUNT = "$G"  # nats-server's account for clients when its config names none
NAME = "mq9-dev-broker"  # the broker's connections, as the servers list them

Stop = Callable[[], Awaitable[None]]


def _log_said(text: str) -> None:
    for line in text.splitlines():
        log.info("%s", line)


class Broker:
    """The bundled broker ``config`` describes. ``async with Broker(config) as broker:``
    starts it (``start``) and stops it (``stop``); ``serve()`` waits while it serves.

    Errors that stop a start are one line each: ``StartupError``, ``ClusterError``,
    ``StorageError``, ``CredentialError`` and ``semantic.ModelError``. Starting loads the
    embedding model into the process (``config.embedding_model`` sets it, as the
    ``MQ9_EMBEDDING_MODEL`` variable does), and a nats-server it starts lives as long as the
    thread that started it."""

    def __init__(
        self,
        config: BrokerConfig | None = None,
        *,
        say: Callable[[str], None] = _log_said,
        meter: RequestMeter | None = None,
    ) -> None:
        self.config = config or BrokerConfig()
        self.say = say
        self.meter = meter  # what it answers counted (mq9-dev-broker --metrics)
        self.url: str | None = None  # where clients connect, once started
        self.engine: BrokerEngine | Engine[ClusterStore] | None = None  # while it serves
        self._shown = ""  # self.url, redacted
        self._stopping = asyncio.Event()
        self._ended = asyncio.Event()  # it stopped by itself: _failure says why
        self._failure: Exception | None = None
        self._started = False
        self._server: NatsProcess | None = None
        self._storage: Storage | None = None
        self._identities: Identities | None = None
        self._logins: Logins | None = None
        # on JetStream: its engine, over its store
        self._cluster: Engine[ClusterStore] | None = None
        self._opened: list[NatsConnection] = []
        self._service: NatsService | None = None  # while this broker serves alone
        self._issuer: Issuer | None = None  # a cluster's, with credentials
        self._watching: asyncio.Future[None] | None = None  # the nats-server it started

    def __repr__(self) -> str:
        return f"Broker({self._shown or self.config.nats or 'not started'!r})"

    @property
    def identities(self) -> Identities | None:
        """The enforcing part (--credentials) while this broker runs, else None."""
        return self._identities

    @property
    def serving(self) -> bool:
        """Whether this broker answers requests now."""
        return self.engine is not None and not self._ended.is_set()

    @property
    def connections(self) -> tuple[int, int]:
        """Of the NATS connections the broker opened, how many are connected, of
        how many."""
        opened = [c for c in self._opened if not c.is_closed]
        return sum(c.is_connected for c in opened), len(opened)

    async def __aenter__(self) -> Broker:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> Broker:
        """Start serving; returns once it does. A failure
        leaves nothing running and raises one of the errors the class names."""
        if self._started:
            raise RuntimeError("this Broker was started already: make another")
        self._started = True
        try:
            if self.config.store == "jetstream":  # a wrong DIR: said before the servers
                self._issuer = cluster_issuer(self.config)
            infos = await self._survey()
            await asyncio.to_thread(self._load_model)  # seconds of CPU: off the caller's loop
            if self.config.store == "jetstream":
                await self._start_on_cluster(infos)
            else:
                await self._start_alone()
        except BaseException:
            await self.stop()
            raise
        return self

    async def serve(self, until: asyncio.Event | None = None) -> None:
        """Until ``until`` is set (for ever without it), or the broker stops by itself: then
        raises why (its nats-server exited, JetStream refused the state's stream)."""
        waits = [asyncio.ensure_future(self._ended.wait())]
        if until is not None:
            waits.append(asyncio.ensure_future(until.wait()))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        if self._failure is not None:
            raise self._failure

    async def stop(self) -> None:
        """Stop serving, close every connection, stop the nats-server it started and close
        the state's store. Safe to call again."""
        self._stopping.set()  # what closes now is closed by us: no "lost the connection" said
        if self._watching is not None:  # (its thread ends with the nats-server, below)
            self._watching.cancel()
        if self._service is not None:
            service, self._service = self._service, None
            await service.stop()
        if self._identities is not None:
            await self._identities.stop()
        opened, self._opened = self._opened, []
        if self._cluster is not None:  # its requests end before its connection closes
            cluster, self._cluster = self._cluster, None
            await cluster.close()
        logins, self._logins = self._logins, None
        await _close_all(*opened, logins=logins)
        if self._server is not None:
            # stopped now: the thread waiting for it must end before the loop can
            await asyncio.to_thread(self._server.stop)
        if self._storage is not None:
            await asyncio.to_thread(self._storage.close)
        self._server = self._storage = self._identities = self.engine = None

    async def issue(self, name: str, label: str = "") -> str:
        """A new credential ``name:secret`` for the agent ``name`` (the secret is shown only
        here), on a broker enforcing credentials (``credentials``)."""
        holder = self._identities or self._logins
        if holder is None:
            raise CredentialError("this broker does not enforce credentials (credentials=False)")
        secret = await asyncio.to_thread(holder.store.issue, name, label)
        return f"{name}:{secret}"

    # -- the start's common steps --------------------------------------------------------

    async def _survey(self) -> dict[str, dict[str, Any]]:
        """The servers of ``nats`` that answer: one that is not there is said now, before the
        model loads ({} for a nats-server this broker starts)."""
        servers = self.config.servers
        self._shown = ",".join(redact(one) for one in servers)
        if not servers:
            return {}
        try:
            return await survey(servers, self._shown)
        except ClusterError as exc:
            raise StartupError(str(exc)) from None

    def _load_model(self) -> None:
        """The embedding model, loaded now (on a thread of its own), before the broker says ready: a
        REGISTER sent once it did is answered as promptly as any (loaded later, on the
        engine's worker thread at nice 10, beside busy processes the first REGISTER
        timed out)."""
        if not self.config.search and self.config.store == "jetstream":
            # the cluster's engine embeds nothing without search: no model in this process
            # (hundreds of MB, seconds to load, and the time a SIGKILL takes to close its
            # sockets grows with the memory: docs/broker.md)
            return
        if self.config.embedding_model:
            os.environ[semantic.MODEL_ENV] = self.config.embedding_model
        try:
            semantic.embedder()  # loaded once per process: the engine finds it loaded
        except semantic.ModelError:
            if self.config.embedding_model:  # chosen: it loads, or the broker does not start
                raise
            # the default model: the engine logs why, and answers it to each request needing it

    def _pacer(self) -> AnswerPacer | None:
        rate = self.config.answer_rate * 2**20
        return AnswerPacer(rate, BURST_MIB * 2**20) if rate else None

    def _callbacks(self) -> dict[str, Any]:
        """nats-py's callbacks for the broker's connections: a lost link said once."""
        shown, stopping = self._shown, self._stopping

        async def disconnected() -> None:
            if not stopping.is_set():  # not our own close()
                log.warning("lost the connection to nats-server at %s; reconnecting", shown)

        async def reconnected() -> None:
            log.warning("reconnected to nats-server at %s", shown)

        return {
            "disconnected_cb": disconnected,
            "reconnected_cb": reconnected,
            "error_cb": _nats_error,
        }

    async def _connect(self, url: str, *, name: str = NAME, **options: Any) -> NatsConnection:
        made: list[NatsConnection] = []

        async def closed() -> None:
            # nats-py reconnects for ever (``_connect``) but closes for good on a server's
            # -ERR: a broker that lived on without it would be running and serving nothing,
            # so it ends, non-zero, for its supervisor to start again
            if made and not self._stopping.is_set():
                why = describe(made[0].last_error) if made[0].last_error else "closed"
                log.error(
                    "the connection %r to nats-server closed (%s); the broker stops", name, why
                )
                self._end(
                    StartupError(
                        f"the connection to nats-server at {self._shown} "
                        f"closed ({why}); the broker stops"
                    )
                )

        connection = await _connect(url, self._shown, name=name, closed_cb=closed, **options)
        made.append(connection)
        self._opened.append(connection)
        return connection

    # -- alone: memory or SQLite, on a nats-server of its own or on one given ------------

    async def _start_alone(self) -> None:
        config = self.config
        if config.store == "sqlite":
            assert config.data is not None  # (BrokerConfig says so)
            # made the broker's own: it holds every message (docs/security.md)
            data_file(config.data).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._storage = SqliteStorage(config.data, synchronous=config.sync)
        engine = BrokerEngine(limits=config.limits, storage=self._storage, search=config.search)
        self._identities = identities = identities_for(config, engine)  # None without
        engine.load_model_soon()  # loaded already; a default model that is not is logged
        if config.nats:
            self.url = config.nats
        else:
            # (0: the port the system gives nats-server, read back: named in the ready line)
            self._server = _start_server(config.host, config.port or None, identities)
            self.url = self._server.url
            self._shown = redact(self.url)
        serving, bulk = await self._open_alone(self.url)
        pacer, announce = self._pacer(), config.announce
        _check_payload(engine, serving)
        self._service = await serve_on_nats(
            engine, serving, bulk, pacer, identities, announce=announce, meter=self.meter
        )
        self.engine = engine
        self.say(banner(self._shown, self._server, self._storage, engine))
        if identities is not None:
            self.say(identities.describe())
        self.say(f"{READY} {self._shown}")
        if self._server is not None:  # a nats-server that dies under us ends the broker
            self._watching = asyncio.ensure_future(self._watch(self._server))

    async def _open_alone(self, url: str) -> tuple[NatsConnection, NatsConnection]:
        """The connections a broker serving alone answers on, and its bulk one: large
        answers go out on a connection of their own, so that small ones never wait behind
        them (serve.py); it only publishes."""
        identities, callbacks = self._identities, self._callbacks()
        login = identities.broker_login() if identities else {}  # the broker's own user
        # (with credentials the serving connection says when nats-server is lost, once)
        told = callbacks if identities is None else {"error_cb": _nats_error}
        connection = await self._connect(url, **told, **login)
        await _refuse_second_broker(connection, self._shown)  # before it answers anything
        serving = connection
        if identities is not None:  # logins, plain requests refused, revocations
            await identities.start(url)
            # requests heard and answered as a user that may publish only to inboxes
            login = identities.serve_login()
            serving = await self._connect(url, **callbacks, **login)
        bulk = await self._connect(url, name=f"{NAME} answers", error_cb=_nats_error, **login)
        return serving, bulk

    async def _watch(self, server: NatsProcess) -> None:
        code = await asyncio.to_thread(server.process.wait)
        if not self._stopping.is_set():
            self._end(StartupError(f"nats-server exited (status {code}); the broker stops"))

    def _end(self, failure: Exception | None) -> None:
        """The broker stopped by itself, for ``failure``."""
        self._failure = self._failure or failure
        self.engine = None
        self._ended.set()

    # -- on a JetStream cluster: one of any number of brokers serving the cluster's state --

    async def _start_on_cluster(self, infos: dict[str, dict[str, Any]]) -> None:
        """Serve the state kept in JetStream (a stream and buckets named after ``stream``)
        with an ``Engine``, in the queue group every broker of that state answers in:
        no leader, no lock, no takeover (docs/broker.md, "The JetStream store"). A cluster
        still forming is waited for (``cluster_wait``), saying what for."""
        config, shown, issuer = self.config, self._shown, self._issuer
        assert config.nats is not None  # (BrokerConfig says so)
        self.url = url = config.nats
        # with credentials, the servers (configured by 'credentials setup') ask the brokers
        # at each login; every part logs in as the broker's user, and the identities live on
        # the cluster, read by every broker
        parts = config.servers if issuer is None else broker_urls(url, issuer)
        if issuer is not None:
            await _check_logins(infos, parts, shown)
        # the login the URLs carry (deploy.md's open cluster: the brokers' user) given as
        # options, so that a server the cluster advertises is logged in to as well
        login = (
            _url_login(config.servers)
            if issuer is None
            else {"user": BROKER_USER, "password": issuer.broker_password}
        )
        wait = Waiting(config.cluster_wait, log.info)
        callbacks = self._callbacks()
        told = callbacks if issuer is None else {"error_cb": _nats_error}
        connection = await self._connect(url, **told, **login)
        layout = Layout(config.stream)
        replicas = await await_cluster(
            connection, config.servers, config.replicas, layout.messages, shown, wait
        )
        await refuse_old_format(connection, config.stream)
        if issuer is not None:
            self._logins = await _answer_logins(url, config.stream, issuer, parts, replicas, wait)
        else:
            await _warn_default_account(connection, layout.messages)
        store = ClusterStore(
            connection, name=config.stream, replicas=replicas, streams=config.streams
        )
        # the store's large reads on a connection of their own, so no small read's
        # answer (nor a request served on ``connection``) waits behind a 31 MiB one
        large = await self._connect(url, name=f"{NAME} large reads", error_cb=_nats_error, **login)
        await store.requests.use_for_large(large)
        self._cluster = engine = Engine(store, limits=config.limits, search=config.search)
        await open_store(store, _placing(wait))
        layout = store.layout  # (its count of message streams: the recorded one)
        identities = None
        if self._logins is not None:
            identities = await asyncio.to_thread(
                Identities, self._logins.store, engine, logins=self._logins
            )
            self._identities = identities
            await identities.start(url)
        serving = connection
        if self._logins is not None:  # requests heard and answered as a user that may
            login = self._logins.serve_login()  # publish only to inboxes
            serving = await self._connect(url, **callbacks, **login)
        bulk = await self._connect(url, name=f"{NAME} answers", error_cb=_nats_error, **login)
        _check_payload(engine, serving)
        self._service = await serve_on_nats(
            engine, serving, bulk, self._pacer(), identities, meter=self.meter, queue=QUEUE
        )
        self.engine = engine
        self.say(cluster_banner(shown, layout, replicas, engine))
        if identities is not None:
            self.say(identities.describe())
        self.say(f"{READY} {shown} (serving)")  # as every broker of the store does


def _url_login(servers: list[str]) -> dict[str, str]:
    try:
        return url_login(servers)
    except ValueError as exc:
        raise StartupError(f"--nats: {exc}") from None


def _placing(wait: Waiting) -> Callable[[Exception], None]:
    """What ``open_store`` does with a failure: waits on while the cluster cannot place the
    stream and buckets yet, raises what JetStream refuses for good."""

    def tried(exc: Exception) -> None:
        if isinstance(exc, StreamCount):  # (a count other than the layout's: never)
            raise StartupError(str(exc)) from None
        if isinstance(exc, StorageError) and refused_for_good(exc):
            raise StartupError(f"JetStream refuses the broker's stream: {exc}") from None
        wait.until(f"the JetStream cluster to place the broker's stream ({redact(str(exc))})")

    return tried


# -- the parts a broker is made of -----------------------------------------------------------


def identities_for(settings: Any, engine: BrokerEngine) -> Identities | None:
    """The enforcing part of a broker with ``credentials`` on a nats-server of its own (None
    without them). ``settings``: a ``BrokerConfig`` or the command's parsed arguments."""
    path = identities_path(settings)
    if path is None:
        return None
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # the broker's own (security.md)
    return Identities(IdentityStore(path), engine)


def cluster_issuer(settings: Any) -> Issuer | None:
    """The issuer ``credentials setup DIR`` kept, for ``credentials=DIR`` on a cluster."""
    place = credentials_place(settings.credentials)
    if place is None:
        return None
    check_credentials(settings, "jetstream")
    return Issuer.load(Path(place, SETUP_FILE))


def _start_server(
    host: str, port: int | None, identities: Identities | None = None
) -> NatsProcess:
    try:
        find_nats_server()
    except FileNotFoundError as exc:
        raise StartupError(str(exc)) from None
    if port is not None and _listening(host, port):
        raise StartupError(
            f"something already listens on {host}:{port}: pick another --port, or pass "
            f"--nats nats://{host}:{port} to serve on that nats-server"
        )
    if host not in LOOPBACK and identities is None:
        log.warning(
            "nats-server binds %s: anyone who can reach it can use every mailbox whose address "
            "they know (the dev broker has no authentication)",
            host,
        )
    try:
        # Answers may hold many messages: let them be as large as NATS allows
        server = start_nats_server(
            host,
            port,
            max_payload=LARGEST_MAX_PAYLOAD,
            config_text=identities.issuer.server_config() if identities else "",
            die_with_parent=True,
        )
    except RuntimeError as exc:
        raise StartupError(str(exc)) from None
    # Drain nats-server's log pipe as long as it runs: a full pipe would block the server
    threading.Thread(target=_relay_log, args=(server,), daemon=True).start()
    return server


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _relay_log(server: NatsProcess) -> None:
    relay = logging.getLogger("mq9_broker.nats_server")
    stream = server.process.stderr
    if stream is None:
        return
    for raw in stream:
        line = raw.decode(errors="replace").rstrip()
        serious = any(tag in line for tag in ("[ERR]", "[FTL]", "[WRN]"))
        if "Maximum payloads over" in line:  # our own choice of max_payload, see above
            serious = False
        if "Plaintext passwords detected" in line:  # the broker's own, random per start
            serious = False
        relay.log(logging.WARNING if serious else logging.DEBUG, "%s", line)


async def _nats_error(exc: Exception) -> None:
    log.debug("nats: %s", describe(exc))  # describe redacts a URL in the text


async def _connect(url: str, shown: str, **callbacks: Any) -> NatsConnection:
    """A connection to the nats-server at ``url`` (``shown``: the same, redacted), which
    reconnects for as long as it takes once made; ``callbacks``: its name and nats-py's
    ``*_cb`` callbacks."""
    connection = NatsConnection()
    try:
        await asyncio.wait_for(
            connection.connect(
                server_urls(url),
                max_reconnect_attempts=3,  # for the first connection: nothing there, say so
                reconnect_time_wait=0.25,  # type: ignore[arg-type]  # nats-py sleeps it: a float
                **callbacks,
            ),
            CONNECT_TIMEOUT,
        )
    except Exception as exc:
        # a timeout or "no servers": what the last try met says why
        cause = connection.last_error or exc
        with contextlib.suppress(Exception):
            await connection.close()
        raise StartupError(
            f"cannot connect to nats-server at {shown}: {refused_login(cause)}"
        ) from None
    # From now on a nats-server restart must not end the broker: reconnect for as long as it
    # takes (nats-py reads this option at each reconnect).
    connection.options["max_reconnect_attempts"] = -1
    return connection


async def _close_all(*connections: NatsConnection, logins: Logins | None = None) -> None:
    for opened in reversed(connections):  # the last opened first
        with contextlib.suppress(Exception):
            await asyncio.wait_for(opened.close(), 5)
    if logins is not None:
        await logins.stop()
        await asyncio.to_thread(logins.store.close)


async def _refuse_second_broker(connection: NatsConnection, shown: str) -> None:
    """Two brokers answering the same subjects would split the state between them."""
    import nats.errors

    try:
        await connection.request(p.AGENT_DISCOVER, p.DISCOVER_REQUEST.body(limit=1), timeout=0.5)
    except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
        return
    raise StartupError(
        f"an mq9 broker already serves {shown} (something answers {p.PREFIX}.*): use it, "
        "or stop it first"
    )


def _check_payload(engine: BrokerEngine | Engine[ClusterStore], connection: NatsConnection) -> None:
    """A ``--max-payload`` above the largest message the servers carry (in an answer,
    within their max_payload and half a connection's pending bytes; on the cluster store, in
    a file store record) is refused in one line: messages up to it would be taken that no
    answer could carry. The default (1 MiB, nats-server's default max_payload) follows servers
    that carry less: the engine keeps to the smaller (said in the banner)."""
    probe = object()
    engine.carry(probe, connection.max_payload)
    try:
        most, why = engine.sending.bound(engine.message_bound(engine.sending.entry_room))
    finally:
        engine.carry(probe, None)
    given = engine.limits.max_payload
    if most >= given:
        return
    if given != p.DEFAULT_MAX_PAYLOAD:
        raise StartupError(
            f"--max-payload {given} is above the largest message these servers carry: {most} "
            f"bytes in a FETCH answer ({why}); give --max-payload {most} or less"
        )
    # nobody set it: no warning at each start, the banner says what is in effect
    log.debug(
        "messages up to %d bytes: the most these servers carry in a FETCH answer (%s; SEND "
        "refuses larger ones)",
        most,
        why,
    )


async def _warn_default_account(connection: NatsConnection, stream: str) -> None:
    """Say so when the state lands in the servers' default account: the config that enables
    credentials names accounts, and a broker with credentials never reaches this one (nor may
    any config name it), so it would start on an empty state (docs/deploy.md)."""
    try:
        answer = await connection.request("$SYS.REQ.USER.INFO", b"", timeout=2)
        account = json.loads(answer.data)["data"]["account"]
    except Exception:  # an older server, no system account: nothing to tell
        return
    if account == DEFAULT_ACCOUNT:
        log.warning(
            "the JetStream stream %s is kept in the servers' default account (%s): once the "
            "servers' config names accounts (docs/deploy.md's, or those 'credentials setup' "
            "prints), no broker sees it; move it and its buckets across with the NATS CLI's "
            "'nats stream backup' before the change and 'nats stream restore' after "
            "(docs/deploy.md)",
            stream,
            DEFAULT_ACCOUNT,
        )


async def _check_logins(infos: dict[str, dict[str, Any]], parts: list[str], shown: str) -> None:
    """Every server that answered asks a login (a server without the setup's config would
    let any agent in unchecked, so the broker does not start beside it; read from the
    server's INFO: a login tried to find out would be refused, and logged, at each start),
    and the broker's own is taken: a wrong DIR said once, where the connections would retry."""
    for url, info in infos.items():
        if not info.get("auth_required"):
            raise StartupError(
                f"the nats-server at {redact(url)} lets a client in without a credential: add "
                "the config block 'mq9-dev-broker credentials setup DIR' printed to every "
                "server of the cluster"
            )
    try:
        await check_login(parts, shown)
    except ClusterError as exc:
        raise StartupError(str(exc)) from None


async def _answer_logins(
    url: str, stream: str, issuer: Issuer, parts: list[str], replicas: int, wait: Waiting
) -> Logins:
    """The cluster's identities (kept beside ``stream``, its bucket made with ``replicas``),
    and this broker answering logins with them on the servers of ``url``."""
    store = await placed(
        wait, "the identities bucket", KvIdentityStore, parts, stream=stream, replicas=replicas
    )
    logins = Logins(store, issuer, queue=LOGIN_QUEUE)
    try:
        await logins.start(url)
    except Exception as exc:
        await logins.stop()
        await asyncio.to_thread(store.close)
        raise StartupError(f"cannot answer logins on the servers: {describe(exc)}") from None
    return logins
