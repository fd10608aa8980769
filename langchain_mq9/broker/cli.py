"""``mq9-dev-broker``: the bundled broker on a real nats-server, for trying mq9 locally.

    mq9-dev-broker                      # nats-server on 127.0.0.1:4222, state in memory
    mq9-dev-broker --data ./mq9-data    # state kept in ./mq9-data/mq9-broker.sqlite3
    mq9-dev-broker --nats nats://127.0.0.1:4222   # serve on a nats-server already running
    mq9-dev-broker --nats nats://h1:4222,nats://h2:4222,nats://h3:4222 --store jetstream
                                        # state replicated in JetStream on that NATS cluster

It starts ``nats-server`` (or attaches to one with ``--nats``), answers every ``$mq9.AI.*``
request with ``BrokerEngine``, prints where it listens and how to connect, and stops on Ctrl-C
or SIGTERM with the nats-server it started (limits: ``--help``). Production and multi-machine
use point the same clients at a RobustMQ broker instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NatsConnection

from .. import protocol as p
from .. import semantic
from .._cli import ArgumentParser, configure_logging, count_limit, port, positive_int
from .._version import __version__
from ..client.redaction import describe, redact
from .callout import LOGIN_QUEUE, SETUP_FILE, Issuer, broker_urls
from .credentials import CredentialError
from .credentials_cli import add_broker_arguments, identities_for, run_command
from .engine import BrokerEngine, BrokerLimits
from .identities import Identities, Logins
from .identities_kv import KvIdentityStore
from .nats_process import (
    LARGEST_MAX_PAYLOAD,
    NatsProcess,
    find_nats_server,
    server_urls,
    start_nats_server,
)
from .pacing import AnswerPacer
from .serve import BULK_ANSWER, serve_on_nats
from .standby import LEASE_ENDED, NOT_SERVING, LeaderLock, LeaseEngine, serve_while_leader
from .storage import JetStreamStorage, SqliteStorage, Storage, StorageError
from .storage.jetstream import DEFAULT_STREAM

log = logging.getLogger("langchain_mq9.broker")

READY = "mq9 dev broker ready on"
CONNECT_TIMEOUT = 10.0
LOOPBACK = ("127.0.0.1", "localhost", "::1")
SWITCH_INTERVAL = 0.0001  # seconds: see main()
# Answers above BULK_ANSWER, in MiB a second (serve.py, pacing.py): a client listing 1,000
# agents (2 MB) back to back left another client's SEND p99 at 1.32x idle at 8 MiB/s, 2.15x at
# 16 and 6x unpaced on 2 cores (bench 9d, one run each); an answer after a quiet moment goes
# at once, up to BURST_MIB ahead of the pace
ANSWER_RATE_MIB = 8
BURST_MIB = 4


class StartupError(Exception):
    """Why the broker cannot start, in words for the command line."""


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="mq9-dev-broker",
        description="Run the bundled mq9 broker on a real nats-server (for development and "
        "tests; use a RobustMQ broker in production).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    where = parser.add_argument_group("where to serve")
    where.add_argument(
        "--host",
        default="127.0.0.1",
        help="address the started nats-server binds (default 127.0.0.1: this machine only)",
    )
    where.add_argument(
        "--port", type=port, default=4222, help="port of the started nats-server (default 4222)"
    )
    where.add_argument(
        "--nats",
        metavar="URL",
        help="serve on this running nats-server instead of starting one (--host/--port "
        "unused); URL may list the servers of one cluster, comma-separated; answers are "
        "then at most that server's max_payload (1 MiB unless it is "
        f"configured otherwise), where a started nats-server carries {LARGEST_MAX_PAYLOAD} "
        "bytes (64 MiB)",
    )
    keep = parser.add_argument_group("state")
    keep.add_argument(
        "--data",
        metavar="PATH",
        help="keep mailboxes, messages, group offsets and agents in SQLite and restore them "
        "on start; without it everything is in memory and lost when the broker stops. PATH is "
        "a directory, created if missing, holding mq9-broker.sqlite3 when it is an existing "
        "directory, ends in /, or does not exist and has no suffix (./mq9-data); it is the "
        "file itself when it is an existing file or has a suffix (./state.sqlite3, ./mq9.db)",
    )
    keep.add_argument(
        "--store",
        choices=("memory", "sqlite", "jetstream"),
        help="where the state is kept: memory (the default without --data), sqlite (the "
        "default with --data: the file it names), or jetstream: a stream (MQ9_STATE) on the "
        "NATS cluster of --nats, which needs JetStream enabled; each answer is given once a "
        "quorum of the stream's replicas holds the change. The same command started again, "
        "here or on another machine, stands by (its ready line says so) and serves within "
        "seconds of the serving one's stop or loss (docs/deploy.md)",
    )
    keep.add_argument(
        "--replicas",
        type=int,
        choices=range(1, 6),
        metavar="N",
        help="with --store jetstream: the stream's replicas when the broker creates it "
        "(default: 3 when the cluster has 3 or more servers, else 1; an existing stream keeps "
        "its own)",
    )
    keep.add_argument(
        "--stream",
        default=DEFAULT_STREAM,
        metavar="NAME",
        help=f"with --store jetstream: the stream holding the state (default {DEFAULT_STREAM}; "
        "another name keeps another broker's state on the same cluster)",
    )
    keep.add_argument(
        "--sync",
        choices=("normal", "full"),
        default="normal",
        help="normal (default): what was answered survives the broker process being killed; "
        "full: also survives an OS crash or power loss (an fsync per request, slower)",
    )
    limits = parser.add_argument_group("limits")
    limits.add_argument(
        "--max-mailboxes", type=positive_int, metavar="N", help="most mailboxes (default no limit)"
    )
    limits.add_argument(
        "--max-messages",
        dest="max_messages_per_mailbox",
        type=positive_int,
        metavar="N",
        help="most messages one mailbox holds (default no limit)",
    )
    limits.add_argument(
        "--max-payload",
        type=positive_int,
        default=p.DEFAULT_MAX_PAYLOAD,
        metavar="BYTES",
        help="largest message the broker accepts, counted as it travels in a FETCH answer: "
        "the payload as JSON text (quotes, backslashes and control characters escaped) with "
        "its headers, so a payload must be somewhat smaller than this "
        f"(default {p.DEFAULT_MAX_PAYLOAD}, nats-server's default max_payload; GroupReader "
        "assumes no larger payload). Answers, which hold many messages, may be as large as "
        "the nats-server's max_payload",
    )
    defaults = BrokerLimits()
    for flag, field, what in (
        ("--max-card-bytes", "max_card_bytes", "largest agent card REGISTER keeps, in bytes"),
        ("--max-agents", "max_agents", "most agents the registry holds"),
        ("--max-groups", "max_groups", "most consumer groups per mailbox (an ACK makes one)"),
    ):
        limits.add_argument(
            flag,
            dest=field,
            type=count_limit,
            default=getattr(defaults, field),
            metavar="N",
            help=f"{what} (default {getattr(defaults, field)}; 0: no limit)",
        )
    limits.add_argument(
        "--answer-rate",
        type=count_limit,
        default=ANSWER_RATE_MIB,
        metavar="MIB",
        help=f"answers above {BULK_ANSWER // 1024} KiB (listings, large FETCHes) go out at "
        f"most this many MiB a second in all, requesters taking turns; one after a quiet "
        f"moment goes at once (default {ANSWER_RATE_MIB}: other clients stay quick while one "
        "asks for large answers back to back; 0: no pace)",
    )
    parser.add_argument(
        "--no-search",
        action="store_true",
        help="answer DISCOVER with text or semantic as RobustMQ's default build does (it has "
        "no agent search without its vector-search feature): with an error; the listing "
        "still answers, and langchain-mq9's client then ranks it itself",
    )
    parser.add_argument(
        "--embedding-model",
        metavar="DIR",
        help="'minilm': rank semantic searches with all-MiniLM-L6-v2, RobustMQ's English model "
        "(the semantic-minilm extra); 'multilingual': the default; else the model in DIR, a "
        "directory laid out as RobustMQ's embedding_model_path (model.onnx, tokenizer.json, "
        "config.json, special_tokens_map.json, tokenizer_config.json), embedded as RobustMQ "
        "embeds with it (the semantic-model-dir extra); the same as setting "
        f"{semantic.MODEL_ENV} (default: Universal Sentence Encoder multilingual v3 from the "
        "semantic extra, 16 languages). docs/discovery.md",
    )
    add_broker_arguments(parser)  # #53: --credentials, and the credentials command
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="logging on stderr (default info)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the dev broker until SIGINT/SIGTERM; returns the process exit status."""
    args = build_parser().parse_args(argv)
    if args.command is not None:  # #53: credentials issue|list|revoke (credentials_cli.py)
        return run_command(args.command, args.command_args)
    configure_logging(args.log_level)
    # each --max-* flag sets the BrokerLimits field its dest names
    limits = BrokerLimits(**{k: v for k, v in vars(args).items() if k.startswith("max_")})
    server: NatsProcess | None = None
    storage: Storage | None = None
    try:
        store = _store_of(args)
        # Storage first: a data file in use by another broker must stop us before anything
        # listens. nats-server is started here, on the main thread, which lives as long as the
        # broker (the child is tied to the thread that started it, see start_nats_server).
        if args.embedding_model:
            os.environ[semantic.MODEL_ENV] = args.embedding_model
        # The model loads now, on this thread, before the broker says ready: a REGISTER sent
        # once it did is answered as promptly as any. (Loaded on the engine's worker thread,
        # which runs at nice 10, beside two busy processes its 0.3 s of CPU took 6-9 s while
        # the broker already said ready, and the first REGISTER timed out; issue #54.)
        try:
            semantic.embedder()  # loaded once per process: the engine finds it loaded
        except semantic.ModelError:
            if args.embedding_model:  # chosen: it loads, or the broker does not start
                raise
            # the default model: the engine logs why, and answers it to each request needing it
        rate, burst = (args.answer_rate or 0) * 2**20, BURST_MIB * 2**20
        pacer = AnswerPacer(rate, burst) if rate else None
        if store == "jetstream":  # one broker serves, others stand by (standby.py)
            sys.setswitchinterval(SWITCH_INTERVAL)
            return asyncio.run(_serve_jetstream(args, limits, pacer))
        if store == "sqlite":
            storage = SqliteStorage(args.data, synchronous=args.sync)
        engine = BrokerEngine(limits=limits, storage=storage, search=not args.no_search)
        identities = identities_for(args, engine)  # #53: None without --credentials
        engine.load_model_soon()  # loaded already; a default model that is not is logged
        # What is held now (the model's objects, the restored state) lives as long as the
        # broker: frozen, Python's full garbage collections (which stop every thread, the loop
        # too, for 15 ms and more) no longer walk it.
        gc.freeze()
        # While the worker thread embeds or ranks, the loop waits for Python's lock at most
        # this long (default 5 ms) each time it wakes: other clients' requests stay quick
        sys.setswitchinterval(SWITCH_INTERVAL)
        if args.nats:
            url = args.nats
        else:
            server = _start_server(args.host, args.port, identities)
            url = server.url
        return asyncio.run(_serve(engine, url, server, storage, pacer, identities))
    except (StartupError, StorageError, semantic.ModelError, CredentialError) as exc:
        # redacted: with --credentials on a cluster, the servers' URLs carry the broker's login
        print(f"mq9-dev-broker: error: {redact(str(exc))}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were in place
        return 130
    finally:
        if server is not None:
            server.stop()
        if storage is not None:
            storage.close()


def _store_of(args: argparse.Namespace) -> str:
    """The store ``--store`` names, or the one ``--data`` implies; contradictions refused."""
    store = args.store or ("sqlite" if args.data else "memory")
    if store == "jetstream" and not args.nats:
        raise StartupError(
            "--store jetstream keeps the state on the NATS cluster the broker serves on: "
            "pass --nats nats://H1:P1,nats://H2:P2,... (servers with JetStream enabled)"
        )
    if store != "sqlite" and args.data:
        raise StartupError(f"--data names a SQLite file, which --store {store} does not use")
    if store == "sqlite" and not args.data:
        raise StartupError("--store sqlite needs --data PATH: where the SQLite file is")
    if args.replicas is not None and store != "jetstream":
        raise StartupError("--replicas is for --store jetstream")
    return store


def _start_server(host: str, port: int, identities: Identities | None = None) -> NatsProcess:
    try:
        find_nats_server()
    except FileNotFoundError as exc:
        raise StartupError(str(exc)) from None
    if _listening(host, port):
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
            config_text=identities.issuer.server_config() if identities else "",  # #53
            die_with_parent=True,
        )
    except RuntimeError as exc:
        raise StartupError(str(exc)) from None
    # Drain nats-server's log pipe as long as it runs: a full pipe would block the server
    threading.Thread(target=_relay_log, args=(server,), daemon=True).start()
    return server


async def _serve(
    engine: BrokerEngine,
    url: str,
    server: NatsProcess | None,
    storage: Storage | None,
    pacer: AnswerPacer | None,
    identities: Identities | None = None,
) -> int:
    loop = asyncio.get_running_loop()
    login = identities.broker_login() if identities else {}  # #53: the broker's own user
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    shown = ",".join(redact(one) for one in server_urls(url))

    async def disconnected() -> None:
        if not stop.is_set() and not connection.is_closed:  # not our own close()
            log.warning("lost the connection to nats-server at %s; reconnecting", shown)

    async def reconnected() -> None:
        log.warning("reconnected to nats-server at %s", shown)

    async def nats_error(exc: Exception) -> None:
        log.debug("nats: %s", describe(exc))  # describe redacts a URL in the text

    connection = await _connect(
        url,
        shown,
        name="mq9-dev-broker",
        disconnected_cb=disconnected,
        reconnected_cb=reconnected,
        error_cb=nats_error,
        **login,
    )
    bulk: NatsConnection | None = None
    try:
        await _refuse_second_broker(connection, shown)
        # Large answers go out on a connection of their own, so that small ones never wait
        # behind them (serve.py); it only publishes (its failures are logged as it retries)
        bulk = await _connect(
            url, shown, name="mq9-dev-broker answers", error_cb=nats_error, **login
        )
        if identities is not None:  # #53: logins, plain requests refused, revocations
            await identities.start(url)
        service = await serve_on_nats(engine, connection, bulk, pacer, identities)
        _warn_payload(engine, connection)
        _banner(shown, server, storage, engine)
        if identities is not None:  # #53
            print(identities.describe(), flush=True)
        print(f"{READY} {shown}", flush=True)

        waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(stop.wait())]  # results unread
        if server is not None:  # a nats-server that dies under us ends the broker, loudly
            waits.append(asyncio.ensure_future(asyncio.to_thread(server.process.wait)))
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        crashed = not stop.is_set()
        stop.set()
        log.info("stopping")
        await service.stop()
    finally:
        if identities is not None:  # #53
            await identities.stop()
        for opened in (bulk, connection):
            if opened is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(opened.close(), 5)
    if crashed and server is not None:  # only its exit ends the wait otherwise
        log.error("nats-server exited (status %s); the broker stops", server.process.returncode)
        return 1
    if server is not None:
        # Stop it now: its waiting thread must end before asyncio.run can return.
        await asyncio.to_thread(server.stop)
    print("mq9 dev broker stopped", file=sys.stderr, flush=True)
    return 0


def _warn_payload(engine: BrokerEngine, connection: NatsConnection) -> None:
    if engine.limits.max_payload > connection.max_payload:
        # The engine keeps to the smaller limit (BrokerEngine.carry): a message NATS could
        # not hand out in an answer is refused at SEND instead of blocking its readers
        log.warning(
            "--max-payload %d is above nats-server's max_payload %d: messages are limited "
            "to what one %d-byte answer carries (SEND refuses larger ones)",
            engine.limits.max_payload,
            connection.max_payload,
            connection.max_payload,
        )


async def _serve_jetstream(
    args: argparse.Namespace, limits: BrokerLimits, pacer: AnswerPacer | None
) -> int:
    """Serve the state kept in JetStream while this process holds the stream's leader lock,
    standing by while another broker holds it (standby.py); until SIGINT/SIGTERM."""
    servers = server_urls(args.nats)
    shown = ",".join(redact(one) for one in servers)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    async def nats_error(exc: Exception) -> None:
        log.debug("nats: %s", describe(exc))

    async def disconnected() -> None:
        if not stop.is_set():
            log.warning("lost the connection to nats-server at %s; reconnecting", shown)

    async def reconnected() -> None:
        log.warning("reconnected to nats-server at %s", shown)

    # #53: with --credentials, the servers (configured by 'credentials setup') ask the brokers
    # at each login; every part logs in as the broker's user, and the identities live on the
    # cluster, read by every broker, serving or standing by
    issuer = _cluster_issuer(args)
    logins: Logins | None = None
    login: dict[str, str] = {}
    if issuer is not None:
        servers = broker_urls(args.nats, issuer)
        store = await asyncio.to_thread(
            KvIdentityStore, servers, stream=args.stream, replicas=args.replicas
        )
        logins = Logins(store, issuer, queue=LOGIN_QUEUE)
        login = logins.broker_login()
    lock: LeaderLock | None = None
    connection: NatsConnection | None = None
    bulk: NatsConnection | None = None
    try:
        if logins is not None:
            await _answer_logins(logins, server_urls(args.nats), shown)
        lock = await asyncio.to_thread(LeaderLock, servers, args.stream, replicas=args.replicas)
        connection = await _connect(
            args.nats,
            shown,
            name="mq9-dev-broker",
            disconnected_cb=disconnected,
            reconnected_cb=reconnected,
            error_cb=nats_error,
            **login,
        )
        bulk = await _connect(
            args.nats, shown, name="mq9-dev-broker answers", error_cb=nats_error, **login
        )
        if await asyncio.to_thread(lock.try_take):
            try:  # a broker keeping its state elsewhere may serve these subjects
                await _refuse_second_broker(connection, shown)
            except StartupError:
                await asyncio.to_thread(lock.release)
                raise
        else:
            _standby_banner(shown, lock)
            print(f"{READY} {shown} (standby)", flush=True)
        serving, stopped, held = connection, bulk, lock  # bound for start()

        async def start() -> Callable[[], Awaitable[None]]:
            await asyncio.to_thread(held.fence)
            storage = await asyncio.to_thread(
                JetStreamStorage, servers, replicas=args.replicas, stream=args.stream
            )
            try:
                engine = await asyncio.to_thread(
                    LeaseEngine, held.holds, limits=limits, storage=storage,
                    search=not args.no_search,
                )  # fmt: skip
                # #53: who owns what, as the cluster holds it at the takeover
                identities = (
                    None
                    if logins is None
                    else await asyncio.to_thread(Identities, logins.store, engine, logins=logins)
                )
            except BaseException:
                storage.close()
                raise
            engine.load_model_soon()
            if identities is not None:
                await identities.start(args.nats)
            service = await serve_on_nats(engine, serving, stopped, pacer, identities)
            _warn_payload(engine, serving)
            _banner(shown, None, storage, engine)
            if identities is not None:
                print(identities.describe(), flush=True)
            print(f"{READY} {shown} (serving)", flush=True)

            async def stop_serving() -> None:
                if held.holds():  # stopped (SIGTERM)
                    await service.stop()
                else:  # the lease ended: say so to what is still under way or waiting
                    await service.stop(unfinished=LEASE_ENDED, unread=NOT_SERVING)
                if identities is not None:
                    await identities.stop()
                await asyncio.to_thread(storage.close)

            return stop_serving

        def standing_by() -> None:
            print(f"mq9 dev broker standing by on {shown}", flush=True)

        await serve_while_leader(lock, stop, start, standing_by=standing_by)
    finally:
        for opened in (bulk, connection):
            if opened is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(opened.close(), 5)
        if lock is not None:
            await asyncio.to_thread(lock.close)
        if logins is not None:
            await logins.stop()
            await asyncio.to_thread(logins.store.close)
    print("mq9 dev broker stopped", file=sys.stderr, flush=True)
    return 0


async def _answer_logins(logins: Logins, servers: list[str], shown: str) -> None:
    """Start answering logins, then make sure every server asks: a server without the setup's
    config would let any agent in unchecked, so the broker does not start beside it."""
    try:
        await logins.start(",".join(servers))
    except Exception as exc:
        raise StartupError(f"cannot answer logins on {shown}: {describe(exc)}") from None
    for server in servers:
        probe = NatsConnection()
        try:
            await probe.connect(
                [server], allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=5
            )
        except Exception:
            continue  # refused: this server asks the brokers (or is down: it takes nobody)
        with contextlib.suppress(Exception):
            await probe.close()
        raise StartupError(
            f"the nats-server at {redact(server)} lets a client in without a credential: add "
            "the config block 'mq9-dev-broker credentials setup DIR' printed to every server "
            "of the cluster"
        )


def _cluster_issuer(args: argparse.Namespace) -> Issuer | None:
    """The issuer ``credentials setup DIR`` kept, for ``--credentials DIR`` on a cluster."""
    if args.credentials is None:
        return None
    if not args.credentials:
        raise CredentialError(
            "--credentials on --store jetstream needs DIR: run 'mq9-dev-broker credentials "
            "setup DIR', add the config it prints to every nats-server, then pass "
            "--credentials DIR"
        )
    return Issuer.load(Path(args.credentials, SETUP_FILE))


def _standby_banner(shown: str, lock: LeaderLock) -> None:
    print(
        f"mq9 dev broker: standby for JetStream stream {lock.stream} at {shown}; serving now: "
        f"{lock.current_holder() or 'no one (taking over)'}; this broker serves once that "
        f"one stops or loses NATS for {lock.ttl - lock.margin:g} s",
        flush=True,
    )


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
        cause = connection.last_error if isinstance(exc, asyncio.TimeoutError) else exc
        with contextlib.suppress(Exception):
            await connection.close()
        raise StartupError(
            f"cannot connect to nats-server at {shown}: {describe(cause or exc)}"
        ) from None
    # From now on a nats-server restart must not end the broker: reconnect for as long as it
    # takes (nats-py reads this option at each reconnect).
    connection.options["max_reconnect_attempts"] = -1
    return connection


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


def _banner(
    shown: str, server: NatsProcess | None, storage: Storage | None, engine: BrokerEngine
) -> None:
    limits, answer_limit = engine.limits, engine.answer_limit
    pid = "" if server is None else f" (pid {server.process.pid})"
    lines = [f"mq9 dev broker: BrokerEngine on nats-server{pid} at {shown}"]
    if isinstance(storage, JetStreamStorage):
        counts = storage.restored
        lines.append(
            f"storage: JetStream stream {storage.stream} ({storage.replicas} replicas; each "
            f"answer after a quorum holds it); restored {counts['mailboxes']} mailboxes, "
            f"{counts['messages']} messages, {counts['delayed']} delayed messages, "
            f"{counts['offsets']} group offsets, {counts['agents']} agents"
        )
    elif not isinstance(storage, SqliteStorage):
        lines.append(
            "storage: in memory only; everything is lost when the broker stops "
            "(use --data PATH to keep it)"
        )
    else:
        counts = storage.restored
        lines.append(
            f"storage: {storage.path} (SQLite, WAL, synchronous={storage.synchronous}); "
            f"restored {counts['mailboxes']} mailboxes, {counts['messages']} messages, "
            f"{counts['delayed']} delayed messages, {counts['offsets']} group offsets, "
            f"{counts['agents']} agents"
        )
        if counts["wal_lost"]:
            lines.append(
                f"storage: NOT restored: {counts['wal_lost']} acknowledged writes that came "
                "after a damaged part of the write-ahead log (SQLite replays it only up to "
                "the damage); the log above says so too"
            )
        if counts["wal_redone"]:
            lines.append(
                f"storage: the write-ahead log was damaged: the {counts['wal_redone']} writes "
                "after the damage were restored from the request log"
            )
        if counts["log_lost"]:
            lines.append(
                f"storage: NOT restored: {counts['log_lost']} acknowledged writes that came "
                "after a damaged part of the request log (kept beside it as .damaged); the "
                "log above says so too"
            )
        if counts["damaged"] or counts["skipped"]:
            lines.append(
                f"storage: NOT restored: {counts['damaged']} damaged messages (checksum "
                f"mismatch), {counts['skipped']} messages of mailboxes not stored; the log "
                "above names them"
            )

    def most(n: int | None) -> str:
        return "no limit" if n is None else str(n)

    effective = ""
    if answer_limit is not None and answer_limit < limits.max_payload:
        effective = f" (in effect {answer_limit}: what one answer carries)"
    lines.append(
        f"limits: max payload {limits.max_payload} bytes{effective}, "
        f"mailboxes {most(limits.max_mailboxes)}, "
        f"messages per mailbox {most(limits.max_messages_per_mailbox)}, "
        f"agents {most(limits.max_agents)} (cards up to {most(limits.max_card_bytes)} bytes), "
        f"groups {most(limits.max_groups)}"
    )
    lines.append(
        f"answers: up to {answer_limit} bytes (the nats-server's max_payload); a FETCH or "
        "QUERY answer holds as many messages as fit"
    )
    if not engine.search:
        lines.append(
            "agent search: off (--no-search), as on RobustMQ's default build: DISCOVER with "
            "text or semantic answers an error, clients rank the listing themselves"
        )
    else:
        lines.append(f"agent search: on; semantic ranks by {semantic.describe()}")
    lines += [
        "connect with:",
        f'  Mq9Client("{shown}")',
        f'  Mq9Toolkit(server="{shown}")',
        f"  mq9-mcp --server {shown}",
    ]
    print("\n".join(lines), flush=True)


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _relay_log(server: NatsProcess) -> None:
    relay = logging.getLogger("langchain_mq9.broker.nats_server")
    stream = server.process.stderr
    if stream is None:
        return
    for raw in stream:
        line = raw.decode(errors="replace").rstrip()
        serious = any(tag in line for tag in ("[ERR]", "[FTL]", "[WRN]"))
        if "Maximum payloads over" in line:  # our own choice of max_payload, see above
            serious = False
        if "Plaintext passwords detected" in line:  # #53: the broker's own, random per start
            serious = False
        relay.log(logging.WARNING if serious else logging.DEBUG, "%s", line)


if __name__ == "__main__":
    sys.exit(main())
