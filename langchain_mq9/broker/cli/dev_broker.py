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
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from nats.aio.client import Client as NatsConnection

from ... import protocol as p
from ... import semantic
from ..._cli import (
    ArgumentParser,
    configure_logging,
    count_limit,
    port,
    positive_float,
    positive_int,
)
from ..._version import __version__
from ...client.redaction import describe, redact
from ..cluster.servers import (
    LARGEST_MAX_PAYLOAD,
    NatsProcess,
    find_nats_server,
    server_urls,
    start_nats_server,
)
from ..cluster.survey import (
    JETSTREAM_UNAVAILABLE,
    NO_PEERS_YET,
    POLL,
    ClusterError,
    Waiting,
    check_login,
    check_urls,
    distinct,
    refused_login,
    replicas_for,
    servers_told,
    survey,
)
from ..engine.engine import BrokerEngine, BrokerLimits
from ..identities.callout import BROKER_USER, LOGIN_QUEUE, SETUP_FILE, Issuer, broker_urls
from ..identities.kv_store import KvIdentityStore
from ..identities.ownership import Identities, Logins
from ..identities.store import CredentialError
from ..serving.pacing import AnswerPacer
from ..serving.serve import BULK_ANSWER, serve_on_nats
from ..standby.leader import LEASE_ENDED, NOT_SERVING, LeaderLock, LeaseEngine, serve_while_leader
from ..storage import JetStreamStorage, SqliteStorage, Storage, StorageError
from ..storage.jetstream import DEFAULT_STREAM
from ..storage.sqlite import data_file
from .credentials import (
    add_broker_arguments,
    check_broker_arguments,
    identities_for,
    run_command,
)
from .state import main as state_command

log = logging.getLogger("langchain_mq9.broker")
T = TypeVar("T")

READY = "mq9 dev broker ready on"
CONNECT_TIMEOUT = 10.0
LOOPBACK = ("127.0.0.1", "localhost", "::1")
SWITCH_INTERVAL = 0.0001  # seconds: see main()
# Answers above BULK_ANSWER, in MiB a second (serve.py, pacing.py): the pace at which a client
# listing the registry back to back leaves another client's SEND close to idle (bench 9d,
# bench/HOTPATH.md); an answer after a quiet moment goes at once, up to BURST_MIB ahead
ANSWER_RATE_MIB = 8
BURST_MIB = 4
DEFAULT_ACCOUNT = "$G"  # nats-server's account for clients when its config names none
CLUSTER_WAIT = 60.0  # seconds: a cluster's servers started by hand, one after another


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
        "(default: 3 when the cluster tells of 3 or more servers, each counted once, else 1; "
        "an existing stream keeps its own)",
    )
    keep.add_argument(
        "--cluster-wait",
        type=positive_float,
        default=CLUSTER_WAIT,
        metavar="SECONDS",
        help="with --store jetstream: how long a start waits for a NATS cluster still forming "
        "(its JetStream leader elected, the servers --nats names joined), saying what for, "
        f"before it gives up (default {CLUSTER_WAIT:g}); an unreachable --nats fails at once",
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
        "--announce",
        action="store_true",
        help="announce each message stored on $mq9.WAKE.<digest of its mailbox> (no name, "
        "no payload), so that mq9-wake wakes agents at once instead of polling (docs/wake.md)",
    )
    parser.add_argument(
        "--console",
        action="store_true",
        help="also serve the web console for this broker (`mq9 console`, the console extra), "
        "on loopback; it prints where, and the token to enter (docs/console.md)",
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
    if args.command == "state":  # export|import: moving a JetStream store's state
        return state_command(args.command_args)
    if args.command is not None:  # #53: credentials issue|list|revoke (credentials_cli.py)
        return run_command(args.command, args.command_args)
    configure_logging(args.log_level)
    # each --max-* flag sets the BrokerLimits field its dest names
    limits = BrokerLimits(**{k: v for k, v in vars(args).items() if k.startswith("max_")})
    server: NatsProcess | None = None
    storage: Storage | None = None
    try:
        store = _store_of(args)
        check_broker_arguments(args, store)  # #53: before the servers are reached
        if args.nats:  # servers that are not there: said now, before the model loads
            urls = server_urls(args.nats)
            asyncio.run(_survey(urls, ",".join(redact(one) for one in urls)))
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
            # made the broker's own: it holds every message (docs/security.md, the data directory)
            data_file(args.data).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
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
        console = _start_console(url) if args.console else None  # docs/console.md
        try:
            return asyncio.run(
                _serve(engine, url, server, storage, pacer, identities, announce=args.announce)
            )
        finally:
            if console is not None:
                console.terminate()
    except (StartupError, ClusterError, StorageError, semantic.ModelError, CredentialError) as exc:
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
    if args.nats:
        _checked_urls(args.nats)  # a misspelt URL: one line now, before anything loads
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
    announce: bool = False,
) -> int:
    loop = asyncio.get_running_loop()
    login = identities.broker_login() if identities else {}  # #53: the broker's own user
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    shown = ",".join(redact(one) for one in server_urls(url))

    async def disconnected() -> None:
        if not stop.is_set():  # not our own close()
            log.warning("lost the connection to nats-server at %s; reconnecting", shown)

    async def reconnected() -> None:
        log.warning("reconnected to nats-server at %s", shown)

    async def nats_error(exc: Exception) -> None:
        log.debug("nats: %s", describe(exc))  # describe redacts a URL in the text

    if server is None:  # --nats: one that is not there is said in one line, at once
        await _survey(server_urls(url), shown)
    callbacks = {
        "disconnected_cb": disconnected,
        "reconnected_cb": reconnected,
        "error_cb": nats_error,
    }
    # (with credentials the serving connection says when nats-server is lost, once)
    told = callbacks if identities is None else {"error_cb": nats_error}
    connection = await _connect(url, shown, name="mq9-dev-broker", **told, **login)
    opened = [connection]
    try:
        await _refuse_second_broker(connection, shown)  # before this broker answers anything
        serving = connection
        if identities is not None:  # #53: logins, plain requests refused, revocations
            await identities.start(url)
            # #61: requests heard and answered as a user that may publish only to inboxes
            login = identities.serve_login()
            serving = await _connect(url, shown, name="mq9-dev-broker", **callbacks, **login)
            opened.append(serving)
        # Large answers go out on a connection of their own, so that small ones never wait
        # behind them (serve.py); it only publishes (its failures are logged as it retries)
        bulk = await _connect(
            url, shown, name="mq9-dev-broker answers", error_cb=nats_error, **login
        )
        opened.append(bulk)
        service = await serve_on_nats(engine, serving, bulk, pacer, identities, announce=announce)
        _warn_payload(engine, serving)
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
        stop.set()  # what closes now is closed by us: no "lost the connection" said
        if identities is not None:  # #53
            await identities.stop()
        await _close_all(*opened)
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
    standing by while another broker holds it (standby.py); until SIGINT/SIGTERM. A cluster
    still forming is waited for (``--cluster-wait``), saying what for."""
    servers = _checked_urls(args.nats)
    shown = ",".join(redact(one) for one in servers)
    stop = _stop_on_signals()
    # #53: with --credentials, the servers (configured by 'credentials setup') ask the brokers
    # at each login; every part logs in as the broker's user, and the identities live on the
    # cluster, read by every broker, serving or standing by
    issuer = _cluster_issuer(args)
    infos = await _survey(servers, shown)
    parts = servers if issuer is None else broker_urls(args.nats, issuer)  # URLs with a login
    if issuer is not None:
        _require_logins(infos)
        try:  # a wrong DIR: said once, where the connections below would retry for long
            await check_login(parts, shown)
        except ClusterError as exc:
            raise StartupError(str(exc)) from None
    login = {} if issuer is None else {"user": BROKER_USER, "password": issuer.broker_password}
    wait = Waiting(args.cluster_wait, log.info)
    nats_error, disconnected, reconnected = _connection_callbacks(shown, stop)
    logins: Logins | None = None
    lock: LeaderLock | None = None
    opened: list[NatsConnection] = []
    callbacks = {
        "disconnected_cb": disconnected,
        "reconnected_cb": reconnected,
        "error_cb": nats_error,
    }
    try:
        # (with credentials the serving connection says when nats-server is lost, once)
        told = callbacks if issuer is None else {"error_cb": nats_error}
        connection = await _connect(args.nats, shown, name="mq9-dev-broker", **told, **login)
        opened.append(connection)
        replicas = await _await_cluster(
            connection, servers, args.replicas, args.stream, shown, wait
        )
        if issuer is not None:
            logins = await _answer_logins(args, issuer, parts, replicas, wait)
        else:
            await _warn_default_account(connection, args.stream)
        lock = await _placed(
            wait, "the lock bucket", LeaderLock, parts, args.stream, replicas=replicas
        )
        serving = connection
        if logins is not None:  # #61: requests heard and answered as a user that may publish
            login = logins.serve_login()  # only to inboxes, never as the one keeping the state
            serving = await _connect(args.nats, shown, name="mq9-dev-broker", **callbacks, **login)
            opened.append(serving)
        bulk = await _connect(
            args.nats, shown, name="mq9-dev-broker answers", error_cb=nats_error, **login
        )
        opened.append(bulk)
        await _take_or_stand_by(lock, connection, shown)  # asked as the broker's user
        refused: list[str] = []  # why the stream cannot be had, if it cannot: the broker exits
        start = _starter(args, limits, pacer, parts, replicas, lock, serving, bulk, logins)

        async def start_or_exit() -> Callable[[], Awaitable[None]]:
            try:
                return await start()
            except StorageError as exc:
                if not _refused(exc):
                    raise  # no quorum yet, say: serve_while_leader stands by, tries again
                refused.append(str(exc))
                stop.set()
                return _nothing

        def standing_by() -> None:
            print(f"mq9 dev broker standing by on {shown}", flush=True)

        await serve_while_leader(lock, stop, start_or_exit, standing_by=standing_by)
        if refused:
            raise StartupError(refused[0])
    finally:
        stop.set()  # what closes now is closed by us: no "lost the connection" said
        await _close_all(*opened, lock=lock, logins=logins)
    print("mq9 dev broker stopped", file=sys.stderr, flush=True)
    return 0


def _checked_urls(url: str) -> list[str]:
    try:
        return check_urls(url)
    except ClusterError as exc:
        raise StartupError(f"--nats: {exc}") from None


async def _survey(servers: list[str], shown: str) -> dict[str, dict[str, Any]]:
    try:
        return await survey(servers, shown)
    except ClusterError as exc:
        raise StartupError(str(exc)) from None


def _stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return stop


def _connection_callbacks(shown: str, stop: asyncio.Event) -> tuple[Any, Any, Any]:
    """nats-py's error, disconnected and reconnected callbacks of the broker's connection."""

    async def nats_error(exc: Exception) -> None:
        log.debug("nats: %s", describe(exc))

    async def disconnected() -> None:
        if not stop.is_set():
            log.warning("lost the connection to nats-server at %s; reconnecting", shown)

    async def reconnected() -> None:
        log.warning("reconnected to nats-server at %s", shown)

    return nats_error, disconnected, reconnected


async def _await_cluster(
    connection: NatsConnection, servers: list[str], replicas: int | None, stream: str,
    shown: str, wait: Waiting,
) -> int:  # fmt: skip
    """Wait until JetStream answers on the cluster and, when the state's stream is still to
    be made, until the cluster tells of as many servers as it needs: ``replicas``
    (``--replicas``), else 3 when ``servers`` name 3 or more distinct servers, else 1. The
    replicas of what the broker creates: ``replicas``, else the existing stream's, else from the
    servers the cluster tells of (``cluster.replicas_for``), never from the URLs' spelling."""
    await _await_jetstream(connection, shown, wait)
    existing = await _stream_replicas(connection, stream, wait)
    if existing:  # made already: a server down for a while does not keep the broker waiting
        return replicas or existing
    log.info(
        "no JetStream stream %s in the account the broker logs in to: it starts on a new, "
        "empty state (one kept before the servers' accounts changed is moved with "
        "'mq9-dev-broker state export' and 'state import': docs/deploy.md)",
        stream,
    )
    want = replicas or (3 if distinct(servers) >= 3 else 1)
    while True:
        infos = await _survey(servers, shown)
        url, info = max(infos.items(), key=lambda item: servers_told(item[1]))
        if want > 1 and not info.get("cluster"):
            raise StartupError(
                f"the nats-server at {redact(url)} is not clustered (no cluster block in its "
                f"config), so it cannot hold {want} replicas of the state: name the servers "
                "of a NATS cluster in --nats, or pass --replicas 1"
            )
        told = servers_told(info)
        if told >= want:
            return replicas or replicas_for(info)
        wait.until(f"the NATS cluster at {shown} to have {want} servers (it has {told} so far)")
        await asyncio.sleep(POLL)


async def _stream_replicas(connection: NatsConnection, stream: str, wait: Waiting) -> int | None:
    """The replicas of ``stream`` when it exists, None when it does not; while it does not
    answer (its leader being elected), waited for."""
    from nats.js.errors import NotFoundError

    js = connection.jetstream(timeout=2)
    while True:
        try:
            info = await js.stream_info(stream)
            return info.config.num_replicas or 1
        except NotFoundError:
            return None
        except Exception:  # there, but no leader answering just now
            wait.until(f"the JetStream stream {stream} to elect its leader")
        await asyncio.sleep(POLL)


async def _await_jetstream(connection: NatsConnection, shown: str, wait: Waiting) -> None:
    """Until JetStream answers the broker's user: a cluster just started (or still missing
    servers) elects its JetStream leader first; JetStream off is said at once."""
    import nats.errors
    from nats.js.errors import APIError

    js = connection.jetstream(timeout=2)
    while True:
        try:
            await js.account_info()
            return
        except (nats.errors.NoRespondersError, APIError) as exc:
            code = getattr(exc, "err_code", None)
            if code == JETSTREAM_UNAVAILABLE:
                pass  # no leader yet
            elif code is None:  # nothing answers the JetStream API (nats-py's "503")
                raise StartupError(
                    f"JetStream is not available on {shown}: start each nats-server with -js, "
                    "or with a jetstream block in its config (or drop --store jetstream)"
                ) from None
            else:
                raise StartupError(f"JetStream on {shown} refuses the broker: {exc}") from None
        except (TimeoutError, nats.errors.TimeoutError):
            pass  # no JetStream leader to answer yet
        wait.until(f"the JetStream cluster at {shown} to elect its leader")
        await asyncio.sleep(POLL)


async def _placed(wait: Waiting, what: str, make: Callable[..., T], *args: Any, **kw: Any) -> T:
    """``make(*args, **kw)`` on a thread, tried again while the cluster cannot place ``what``
    yet (its servers still registering with JetStream), within ``wait``."""
    while True:
        try:
            return await asyncio.to_thread(make, *args, **kw)
        except (StorageError, CredentialError) as exc:
            if isinstance(exc, StorageError) and _refused(exc):
                raise
            wait.until(f"the JetStream cluster to place {what} ({redact(str(exc))})")
        await asyncio.sleep(POLL)


def _refused(exc: StorageError) -> bool:
    """Whether JetStream refused for good (a request it will never grant, such as more
    replicas than a lone server holds: err 10074), not for now (no leader, no peers yet)."""
    code = getattr(exc.__context__, "err_code", None)  # the nats-py error it was made from
    return code is not None and code not in (NO_PEERS_YET, JETSTREAM_UNAVAILABLE)


async def _nothing() -> None:
    """How to stop serving what never started."""


async def _take_or_stand_by(lock: LeaderLock, connection: NatsConnection, shown: str) -> None:
    """Take the lock now if no one holds it, refusing to serve beside another broker; else
    say that this one stands by."""
    if await asyncio.to_thread(lock.try_take):
        try:  # a broker keeping its state elsewhere may serve these subjects
            await _refuse_second_broker(connection, shown)
        except StartupError:
            await asyncio.to_thread(lock.release)
            raise
    else:
        _standby_banner(shown, lock)
        print(f"{READY} {shown} (standby)", flush=True)


def _starter(
    args: argparse.Namespace, limits: BrokerLimits, pacer: AnswerPacer | None,
    parts: list[str], replicas: int, held: LeaderLock, serving: NatsConnection,
    stopped: NatsConnection, logins: Logins | None,
) -> Callable[[], Awaitable[Callable[[], Awaitable[None]]]]:  # fmt: skip
    """What ``serve_while_leader`` runs once this broker holds the lock: fence the stream,
    read it back, serve; it returns how to stop."""
    shown = ",".join(redact(one) for one in server_urls(args.nats))

    async def start() -> Callable[[], Awaitable[None]]:
        await asyncio.to_thread(held.fence)
        storage = await asyncio.to_thread(
            JetStreamStorage, parts, replicas=replicas, stream=args.stream
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
        service = await serve_on_nats(
            engine, serving, stopped, pacer, identities, announce=args.announce
        )
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

    return start


async def _close_all(
    *connections: NatsConnection, lock: LeaderLock | None = None, logins: Logins | None = None
) -> None:
    for opened in reversed(connections):  # the last opened first
        with contextlib.suppress(Exception):
            await asyncio.wait_for(opened.close(), 5)
    if lock is not None:
        await asyncio.to_thread(lock.close)
    if logins is not None:
        await logins.stop()
        await asyncio.to_thread(logins.store.close)


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
            "prints), no broker sees it; move it across with 'mq9-dev-broker state export' "
            "before the change and 'state import' after (docs/deploy.md)",
            stream,
            DEFAULT_ACCOUNT,
        )


def _require_logins(infos: dict[str, dict[str, Any]]) -> None:
    """Every server that answered asks a login: a server without the setup's config would let
    any agent in unchecked, so the broker does not start beside it. (Read from the server's
    INFO: a login tried to find out would be refused, and logged as an error, at each start.)"""
    for url, info in infos.items():
        if not info.get("auth_required"):
            raise StartupError(
                f"the nats-server at {redact(url)} lets a client in without a credential: add "
                "the config block 'mq9-dev-broker credentials setup DIR' printed to every "
                "server of the cluster"
            )


async def _answer_logins(
    args: argparse.Namespace, issuer: Issuer, parts: list[str], replicas: int, wait: Waiting
) -> Logins:
    """The cluster's identities (its bucket, made with ``replicas``), and this broker
    answering logins with them."""
    store = await _placed(
        wait, "the identities bucket", KvIdentityStore, parts, stream=args.stream,
        replicas=replicas,
    )  # fmt: skip
    logins = Logins(store, issuer, queue=LOGIN_QUEUE)
    try:
        await logins.start(args.nats)
    except Exception as exc:
        await logins.stop()
        await asyncio.to_thread(store.close)
        raise StartupError(f"cannot answer logins on the servers: {describe(exc)}") from None
    return logins


def _cluster_issuer(args: argparse.Namespace) -> Issuer | None:
    """The issuer ``credentials setup DIR`` kept, for ``--credentials DIR`` on a cluster."""
    if args.credentials is None:
        return None
    check_broker_arguments(args, "jetstream")
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


def _start_console(url: str) -> subprocess.Popen[bytes]:
    """``mq9 console`` for the broker at ``url`` (docs/console.md), in a process of its own
    that ends with the broker."""
    return subprocess.Popen([sys.executable, "-m", "mq9_cli", "--server", url, "console"])


if __name__ == "__main__":
    sys.exit(main())
