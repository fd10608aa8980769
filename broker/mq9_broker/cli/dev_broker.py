"""``mq9-dev-broker``: the bundled broker on a real nats-server, for trying mq9 locally.

    mq9-dev-broker                      # nats-server on 127.0.0.1:4222, state in memory
    mq9-dev-broker --data ./mq9-data    # state kept in ./mq9-data/mq9-broker.sqlite3
    mq9-dev-broker --nats nats://127.0.0.1:4222   # serve on a nats-server already running
    mq9-dev-broker --nats nats://h1:4222,nats://h2:4222,nats://h3:4222 --store jetstream
                                        # state replicated in JetStream on that NATS cluster

The options become a ``BrokerConfig``, and a ``Broker`` (``broker/broker.py``) serves until
Ctrl-C or SIGTERM: this module only parses, handles the signals and prints (limits: ``--help``).
Production and multi-machine use point the same clients at a RobustMQ broker instead.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import fields
from typing import Any

from mq9_wire import protocol as p
from mq9_wire import semantic
from mq9_wire.command_line import (
    ArgumentParser,
    configure_logging,
    count_limit,
    port_or_free,
    positive_float,
    positive_int,
)
from mq9_wire.metrics import MetricsUnavailable, OperatorEndpoint, operator_address
from mq9_wire.nats_floor.redaction import redact

from .._version import __version__
from ..broker import Broker
from ..config import BrokerConfig, StartupError
from ..engine.engine import BrokerLimits
from ..identities.store import CredentialError
from ..nats_servers.processes import LARGEST_MAX_PAYLOAD, spawn_env
from ..nats_servers.survey import ClusterError, monitor_urls
from ..serving.serve import BULK_ANSWER
from ..storage import StorageError
from ..storage.jetstream import STREAMS_MOST, Layout
from .credentials import add_broker_arguments, run_command
from .metrics import broker_endpoint
from .state import main as state_command

log = logging.getLogger("mq9_broker")

# While the engine's worker thread embeds or ranks, the loop waits for Python's lock at most
# this long each time it wakes (Python's default is longer): other clients' requests stay quick
SWITCH_INTERVAL = 0.0001  # seconds
DEFAULTS = BrokerConfig()
_LAYOUT = Layout(DEFAULTS.stream)  # the names --store jetstream's help gives
# What `--console` runs (`python -m mq9_cli console`): mq9-cli with its console extra
CONSOLE_MODULES = ("mq9_cli", "starlette", "uvicorn", "jinja2")
CONSOLE_DEFAULT = "127.0.0.1:0"  # --console alone: loopback, a free port (printed)
CONSOLE_START_SECONDS = 120.0  # a cold interpreter importing starlette on a busy machine
CONSOLE_STOP_SECONDS = 10.0
_PASSING: set[asyncio.Future[None]] = set()  # the console's lines being passed on
# What stops a start, said in one line (redacted: a cluster's URLs carry the broker's login)
ERRORS = (
    StartupError, ClusterError, StorageError, semantic.ModelError, CredentialError,
    MetricsUnavailable,
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="mq9-dev-broker",
        description="Run the bundled mq9 broker on a real nats-server (for development and "
        "tests; use a RobustMQ broker in production).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _where_options(parser.add_argument_group("where to serve"))
    keep = parser.add_argument_group("state")
    _state_options(keep)
    _jetstream_options(keep)
    _limit_options(parser.add_argument_group("limits"))
    _feature_options(parser)
    add_broker_arguments(parser)  # --credentials, and the credentials command
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="logging on stderr (default info)",
    )
    return parser


Group = argparse._ArgumentGroup  # what add_argument_group gives (argparse names no public type)


def _where_options(where: Group) -> None:
    where.add_argument(
        "--host",
        default=DEFAULTS.host,
        help=f"address the started nats-server binds (default {DEFAULTS.host}: this machine only)",
    )
    where.add_argument(
        "--port",
        type=port_or_free,
        default=DEFAULTS.port,
        help=f"port of the started nats-server (default {DEFAULTS.port}; 0: a free one the "
        "system gives, named in the ready line)",
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


def _state_options(keep: Group) -> None:
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
        "default with --data: the file it names), or jetstream: a stream and buckets "
        f"({_LAYOUT.messages}, with --streams N also {_LAYOUT.messages}_1 ...; "
        f"{', '.join(_LAYOUT.buckets)}; with --credentials "
        f"{_LAYOUT.name}_IDENTITIES) on the NATS cluster of --nats, which needs JetStream "
        "enabled; each answer is given once a quorum of their replicas holds the change. The "
        "same command started again, here or on other machines, serves the same state at once "
        "beside it (no leader, no standby: a broker lost costs no takeover; docs/deploy.md)",
    )
    keep.add_argument(
        "--sync",
        choices=("normal", "full"),
        default=DEFAULTS.sync,
        help="normal (default): what was answered survives the broker process being killed; "
        "full: also survives an OS crash or power loss (an fsync per request, slower)",
    )


def _jetstream_options(keep: Group) -> None:
    keep.add_argument(
        "--replicas",
        type=int,
        choices=range(1, 6),
        metavar="N",
        help="with --store jetstream: the replicas of the state's stream and buckets when the "
        "broker creates them (default: 3 when the cluster tells of 3 or more servers, each "
        "counted once, else 1; existing ones keep their own)",
    )
    keep.add_argument(
        "--cluster-wait",
        type=positive_float,
        default=DEFAULTS.cluster_wait,
        metavar="SECONDS",
        help="with --store jetstream: how long a start waits for a NATS cluster still forming "
        "(its JetStream leader elected, the servers --nats names joined), saying what for, "
        f"before it gives up (default {DEFAULTS.cluster_wait:g}); an unreachable --nats fails "
        "at once",
    )
    keep.add_argument(
        "--stream",
        default=DEFAULTS.stream,
        metavar="NAME",
        help="with --store jetstream: the prefix of the state's stream and buckets' names "
        f"(default {DEFAULTS.stream}: the stream {_LAYOUT.messages}, the buckets "
        f"{_LAYOUT.mailboxes} ...; another name keeps another state on the same cluster)",
    )
    keep.add_argument(
        "--streams",
        type=_stream_count,
        metavar="N",
        help="with --store jetstream: how many message streams a new layout spreads its "
        f"mailboxes over (1 to {STREAMS_MOST}; each stream's leader takes its share of the "
        "writes, docs/broker.md 'Several streams'); default: the count the layout recorded "
        "(1 for a new one); a count other than the recorded one is refused",
    )


def _stream_count(text: str) -> int:
    value = positive_int(text)
    if value > STREAMS_MOST:
        raise argparse.ArgumentTypeError(f"invalid number {text}: {STREAMS_MOST} at most")
    return value


def _limit_options(limits: Group) -> None:
    """The ``--max-*`` options (each sets the ``BrokerLimits`` field its dest names) and
    ``--answer-rate``."""
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
        "the nats-server's max_payload and half its max_pending (32 MiB); a --max-payload "
        "above the largest message the servers carry is refused at start-up, naming it",
    )
    limits.add_argument(
        "--idempotency-window",
        type=positive_int,
        default=BrokerLimits().idempotency_window,
        metavar="SECONDS",
        help="how long a SEND's idempotency key is kept per mailbox: every SEND with the key "
        "within it answers the first one's msg_id, storing nothing (default "
        f"{BrokerLimits().idempotency_window}: a client's resends and a broker's restart). "
        "docs/protocol.md, 'Exactly once'",
    )
    defaults = BrokerLimits()
    for flag, field, what in (
        ("--max-card-bytes", "max_card_bytes", "largest agent card REGISTER keeps, in bytes"),
        ("--max-agents", "max_agents", "most agents the registry holds"),
        # an agent's share of them: filling it refuses only that agent
        ("--max-agents-per-sender", "max_agents_per_sender",
         "most agents one agent registers and holds at once (--credentials)"),
        ("--max-groups", "max_groups", "most consumer groups per mailbox (an ACK makes one)"),
        # the keys a memory or SQLite store holds (each one's cost: bench/RESULTS.md); the cluster
        # store's are its stream's entries
        ("--max-keys", "max_keys", "most idempotency keys held at once, in all"),
        ("--max-keys-per-sender", "max_keys_per_sender",
         "most idempotency keys held at once for one agent (--credentials)"),
        # without credentials: one client's flood leaves the rest of --max-keys
        ("--max-keys-per-address", "max_keys_per_address",
         "most idempotency keys held at once for one client without --credentials (its "
         "address where nats-server vouches for one, else its connection's reply inbox)"),
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
        default=DEFAULTS.answer_rate,
        metavar="MIB",
        help=f"answers above {BULK_ANSWER // 1024} KiB (listings, large FETCHes) go out at "
        f"most this many MiB a second in all, requesters taking turns; one after a quiet "
        f"moment goes at once (default {DEFAULTS.answer_rate}: other clients stay quick while "
        "one asks for large answers back to back; 0: no pace)",
    )


def _feature_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--announce",
        action="store_true",
        help="announce each message stored on $mq9.WAKE.<digest of its mailbox> (no name, "
        "no payload), so that mq9-wake wakes agents at once instead of polling (docs/wake.md)",
    )
    parser.add_argument(
        "--metrics",
        metavar="[HOST:]PORT",
        help="serve Prometheus metrics (/metrics), /healthz and /readyz at HOST:PORT, the "
        "operator's address (HOST default 127.0.0.1; port 0 picks one, printed); off by "
        "default. The metrics extra (prometheus-client). docs/broker-watching.md#watching-it",
    )
    parser.add_argument(
        "--nats-monitor",
        metavar="URL[,URL...]",
        help="the nats-servers' monitoring endpoints (http://HOST:PORT, each server's "
        "http: HOST:PORT): --metrics also exports whether each answers and is healthy, and "
        "JetStream's meta leader and peers as they say. "
        "docs/broker-watching.md#watching-the-nats-servers",
    )
    parser.add_argument(
        "--console",
        nargs="?",
        const=CONSOLE_DEFAULT,
        metavar="[HOST:]PORT",
        help="also serve the web console for this broker (`mq9 console`, the console extra) "
        "at HOST:PORT (default: loopback, a free port; port 0 picks one); it prints where, "
        "and the token to enter. On a --credentials broker it logs in with "
        "--console-credential-file or $MQ9_CREDENTIAL (docs/console.md)",
    )
    parser.add_argument(
        "--calls",
        action="append",
        metavar="MAILBOX",
        help="a caller's reply mailbox whose calls the console shows (repeatable; --console)",
    )
    parser.add_argument(
        "--console-allow-writes",
        action="store_true",
        help="let the console replay, delete, ack, set aside and answer calls (--console)",
    )
    parser.add_argument(
        "--console-metrics",
        metavar="[HOST:]PORT",
        help="serve the console's own metrics, /healthz and /readyz at HOST:PORT (--console; "
        "port 0 picks one, printed): a process of its own, apart from --metrics, the "
        "broker's. docs/broker-watching.md#watching-it",
    )
    parser.add_argument(
        "--console-credential-file",
        metavar="FILE",
        help="the mq9 credential the console logs in with on a --credentials broker "
        "(else $MQ9_CREDENTIAL or $MQ9_CREDENTIAL_FILE)",
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
        help="'multilingual+minilm': the default, both models of the semantic extra "
        "(Universal Sentence Encoder multilingual v3, 16 languages, with all-MiniLM-L6-v2 "
        "averaged in for a query in ASCII characters); 'multilingual' or 'minilm' (RobustMQ's "
        "English model; the semantic-minilm extra): one of them alone; else the model in DIR, "
        "a directory laid out as RobustMQ's embedding_model_path (model.onnx, tokenizer.json, "
        "config.json, special_tokens_map.json, tokenizer_config.json), embedded as RobustMQ "
        "embeds with it (the semantic-model-dir extra); the same as setting "
        f"{semantic.MODEL_ENV}. docs/discovery.md",
    )


def config_of(args: argparse.Namespace) -> BrokerConfig:
    """The ``BrokerConfig`` the options describe (refused in one line if they contradict):
    each option whose dest names a field sets it; the others are told apart below."""
    given = vars(args)
    settings = {f.name: given[f.name] for f in fields(BrokerConfig) if f.name in given}
    credentials = args.credentials  # off (None), beside --data (""), or DIR
    settings.update(
        limits=BrokerLimits(
            **{k: v for k, v in given.items() if k.startswith("max_")},
            idempotency_window=args.idempotency_window,
        ),
        answer_rate=args.answer_rate or 0,  # 0: no pace (count_limit's None)
        search=not args.no_search,
        credentials=False if credentials is None else credentials or True,
    )
    return BrokerConfig(**settings)


def main(argv: list[str] | None = None) -> int:
    """Run the dev broker until SIGINT/SIGTERM; returns the process exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "state":  # export|import: moving a JetStream store's state
        return state_command(args.command_args)
    if args.command is not None:  # credentials issue|list|revoke (credentials.py)
        return run_command(args.command, args.command_args)
    configure_logging(args.log_level)
    try:
        config = config_of(args)
        sys.setswitchinterval(SWITCH_INTERVAL)
        if args.console_metrics is not None and args.console is None:
            raise StartupError("--console-metrics is the console's: give --console too")
        console = _console_command(args, config) if args.console is not None else None
        metrics = _metrics_address(args.metrics)
        monitors = _monitors(args.nats_monitor, metrics)
        return event_loop_runner()(
            _run(config, console=console, metrics=metrics, monitors=monitors)
        )
    except ERRORS as exc:
        print(f"mq9-dev-broker: error: {redact(str(exc))}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were in place
        return 130


def event_loop_runner() -> Callable[[Coroutine[Any, Any, int]], int]:
    """uvloop's ``run`` where the ``uvloop`` extra is installed (its loop spends less of
    the broker's CPU on each request's reads, writes and tasks), else ``asyncio.run``;
    ``MQ9_EVENT_LOOP=asyncio`` keeps asyncio's own."""
    if os.environ.get("MQ9_EVENT_LOOP", "") == "asyncio":
        return asyncio.run
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    run: Callable[[Coroutine[Any, Any, int]], int] = uvloop.run
    return run


def _metrics_address(given: str | None) -> tuple[str, int] | None:
    if given is None:
        return None
    try:
        return operator_address(given)
    except ValueError as exc:
        raise StartupError(str(exc)) from None


def _monitors(given: str | None, metrics: tuple[str, int] | None) -> list[str]:
    if given is None:
        return []
    if metrics is None:
        raise StartupError("--nats-monitor is read for --metrics: give --metrics too")
    try:
        return monitor_urls(given)
    except ValueError as exc:
        raise StartupError(str(exc)) from None


async def _run(
    config: BrokerConfig, *, console: list[str] | None, metrics: tuple[str, int] | None = None,
    monitors: Sequence[str] = (),
) -> int:  # fmt: skip
    stop = _stop_on_signals()
    broker = Broker(config, say=_say)
    # the operator's endpoint answers while the broker starts (/readyz: not yet)
    endpoint = None if metrics is None else await _start_metrics(broker, *metrics, monitors)
    try:
        return await _serve(broker, stop, console)
    finally:
        if endpoint is not None:
            await endpoint.stop()


async def _start_metrics(
    broker: Broker, host: str, port: int, monitors: Sequence[str] = ()
) -> OperatorEndpoint:
    endpoint = broker_endpoint(broker, host, port, monitors)
    try:
        await endpoint.start()
    except OSError as exc:
        raise StartupError(f"--metrics {host}:{port}: cannot listen there: {exc}") from None
    _say(f"mq9 dev broker metrics on {endpoint.url}/metrics (/healthz, /readyz)")
    return endpoint


async def _serve(broker: Broker, stop: asyncio.Event, console: list[str] | None) -> int:
    config = broker.config
    async with broker:
        if config.store != "jetstream":
            # What is held now (the model's objects, the restored state) lives as long as the
            # broker: frozen, Python's full garbage collections (which stop every thread, the
            # loop too) no longer walk it.
            gc.freeze()
        assert broker.url is not None  # (set by start)
        shell = None
        if console is not None:  # docs/console.md
            shell = await _start_console([*console[:4], broker.url, *console[4:]])
        try:
            await broker.serve(until=stop)
            log.info("stopping")
        finally:
            if shell is not None:
                await _stop_console(shell)
    print("mq9 dev broker stopped", file=sys.stderr, flush=True)
    return 0


def _say(text: str) -> None:
    print(text, flush=True)


def _stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return stop


def _console_command(args: argparse.Namespace, config: BrokerConfig) -> list[str]:
    """``mq9 console``'s command line for ``--console [HOST:]PORT`` and its options (the
    broker's URL goes after ``--server`` once known); refused in one line when it could not
    log in."""
    host, _, port = str(args.console).rpartition(":")
    if not port.isdigit() or int(port) > 65535:
        raise StartupError(f"--console {args.console!r}: give [HOST:]PORT, e.g. 127.0.0.1:8780")
    host = host or "127.0.0.1"
    # The console is mq9-cli's: on the broker-only install it failed only after "ready"
    missing = [m for m in CONSOLE_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise StartupError(
            f"--console serves mq9-cli's web console, which is not installed here (no "
            f"{', '.join(missing)}): in a clone, `.venv/bin/pip install ./wire ./broker "
            './platform "./faces/cli[console]"` (docs/console.md)'
        )
    login = []
    if args.console_credential_file:
        login = ["--credential-file", args.console_credential_file]
    elif config.credentials and not (
        os.environ.get("MQ9_CREDENTIAL") or os.environ.get("MQ9_CREDENTIAL_FILE")
    ):
        raise StartupError(
            "--console on a --credentials broker needs the console's own credential: "
            "--console-credential-file FILE or $MQ9_CREDENTIAL (issue one with "
            "`mq9-dev-broker credentials issue NAME --data DIR`); it shows what that "
            "credential may read"
        )
    command = [sys.executable, "-m", "mq9_cli", "--server", *login]
    command += ["console", "--host", host.strip("[]"), "--port", port]
    command += [f"--calls={mailbox}" for mailbox in args.calls or ()]
    if args.console_metrics is not None:  # the console's process counts its own requests
        try:
            operator_address(args.console_metrics)  # refused here, in the operator's words
        except ValueError:
            raise StartupError(
                f"--console-metrics {args.console_metrics!r}: give [HOST:]PORT, PORT from 0 "
                "(a free one) to 65535"
            ) from None
        command.append(f"--metrics={args.console_metrics}")
    return command + (["--allow-writes"] if args.console_allow_writes else [])


async def _start_console(command: list[str]) -> asyncio.subprocess.Process:
    """``mq9 console`` (docs/console.md) in a process of its own that ends with the broker:
    its lines are passed on; if it stops before it serves, so does the broker, saying why."""
    shell = await asyncio.create_subprocess_exec(  # (spawn_env: the model may be loading)
        *command, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, env=spawn_env()
    )
    assert shell.stderr is not None
    said = ""
    try:
        async with asyncio.timeout(CONSOLE_START_SECONDS):  # a hang guard
            while line := (await shell.stderr.readline()).decode(errors="replace"):
                print(line, end="", file=sys.stderr, flush=True)
                said = line.strip() or said
                if line.startswith("mq9 console on "):
                    break
    except TimeoutError:
        said = f"it did not say where it serves within {CONSOLE_START_SECONDS:.0f} s"
    if shell.returncode is not None or not said.startswith("mq9 console on"):
        await _stop_console(shell)
        raise StartupError(f"the console did not start: {said.removeprefix('mq9: ')}")
    shell_lines = asyncio.ensure_future(_pass_on(shell.stderr))
    _PASSING.add(shell_lines)
    shell_lines.add_done_callback(_PASSING.discard)
    return shell


async def _pass_on(stream: asyncio.StreamReader) -> None:
    while line := await stream.readline():
        print(line.decode(errors="replace"), end="", file=sys.stderr, flush=True)


async def _stop_console(shell: asyncio.subprocess.Process) -> None:
    """The console stopped and reaped (no zombie): asked first, then killed."""
    if shell.returncode is None:
        shell.terminate()
        try:
            await asyncio.wait_for(shell.wait(), CONSOLE_STOP_SECONDS)
        except TimeoutError:
            shell.kill()
    await shell.wait()


if __name__ == "__main__":
    sys.exit(main())
