"""``mq9-wake``: run a waker beside any mq9 broker, or keep wake rules (docs/wake.md).

    mq9-wake --server nats://127.0.0.1:4222 --allow-host hooks.example.com
    mq9-wake --allow-agent-server http://10.0.0.5:2024 LANGGRAPH_API_KEY \
        --allow-command /usr/local/bin/agent --allow-command-env AGENT_PROFILE
    mq9-wake rules add agent.me --webhook https://hooks.example.com/mq9 --secret-env HOOK_SECRET
    mq9-wake rules list agent.me
    mq9-wake rules remove agent.me default
    mq9-wake failed
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from mq9_wire.command_line import configure_logging, positive_float
from mq9_wire.metrics import MetricsUnavailable, OperatorEndpoint, need_prometheus, operator_address
from mq9_wire.nats_floor.redaction import redact
from mq9_wire.protocol.errors import MailboxNotFound, Mq9Error

from ..client import Mq9Client
from .book import RuleBook
from .deliver import ENV_PREFIX, Deliverer, Destinations
from .limits import COMMANDS_AT_ONCE, MIN_INTERVAL, RUNS_PER_HOUR, RUNS_PER_RULE, Limits
from .metrics import wake_endpoint
from .receivers import DEFAULT_KEY, KEYS
from .rules import RuleError, WakeRule, failed_address
from .waker import LEASE, POLL_INTERVAL, SWEEP_INTERVAL, Waker

SERVER_ENV = "MQ9_SERVER"
STOP_DEADLINE = 10.0  # seconds SIGTERM waits for the waker (its commands end first: 2 + 2 s)
# and then the process exits whatever still runs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mq9-wake",
        description="Wake agents when mail waits in their mailboxes (docs/wake.md).",
    )
    parser.add_argument(
        "--server",
        default=os.environ.get(SERVER_ENV, "nats://127.0.0.1:4222"),
        help=f"the mq9 broker (default ${SERVER_ENV} or nats://127.0.0.1:4222)",
    )
    parser.add_argument("--log-level", default="INFO")
    commands = parser.add_subparsers(dest="command")
    _rules_parser(commands.add_parser("rules", help="add, list or remove a mailbox's wake rules"))
    commands.add_parser("failed", help="the wakes set aside after their retries")
    _destinations_options(parser)
    _ceiling_options(parser)
    _running_options(parser)
    return parser


def _rules_parser(rules: argparse.ArgumentParser) -> None:
    verbs = rules.add_subparsers(dest="verb", required=True)
    add = verbs.add_parser("add", help="add (or replace) a wake rule")
    add.add_argument("mailbox")
    add.add_argument("--name", default="default")
    target = add.add_mutually_exclusive_group(required=True)
    target.add_argument("--webhook", metavar="URL", help="POST a signed wake to URL")
    target.add_argument("--agent-server", metavar="URL", help="start a run on this Agent Server")
    target.add_argument(
        "--command", dest="argv", nargs="+", metavar="ARG", help="start this program (argv)"
    )
    target.add_argument("--callback", metavar="NAME", help="an in-process callback's name")
    add.add_argument(
        "--secret-env", metavar="VAR", help="the environment variable holding the webhook's secret"
    )
    add.add_argument("--include-payload", action="store_true")
    add.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a command's environment (repeatable); only names the waker allows "
        "(--allow-command-env) are ever given",
    )
    add.add_argument("--assistant", default="", help="the Agent Server's assistant or graph")
    add.add_argument("--thread", choices=("mailbox", "sender"), default="mailbox")
    add.add_argument("--group", default="", help="the consumer group the agent reads with")
    add.add_argument("--min-interval", type=float, default=1.0, metavar="SECONDS")
    add.add_argument("--cap", type=int, default=0, metavar="N", help="wakes per --cap-window")
    add.add_argument("--cap-window", type=float, default=3600.0, metavar="SECONDS")
    add.add_argument("--quiet-hours", default="", metavar="HH:MM-HH:MM", help="UTC")
    listing = verbs.add_parser("list", help="a mailbox's rules (secrets hidden)")
    listing.add_argument("mailbox")
    remove = verbs.add_parser("remove", help="remove a rule")
    remove.add_argument("mailbox")
    remove.add_argument("name", nargs="?", default="default")


def _destinations_options(parser: argparse.ArgumentParser) -> None:
    """What a rule may wake: the operator's allow-lists."""
    many: dict[str, Any] = {"action": "append", "default": []}
    parser.add_argument(
        "--allow-host", **many, metavar="HOST|CIDR",
        help="a webhook or Agent Server host (or IP network) wakes may go to; repeatable. "
        "Private and loopback addresses only when a network listed holds them",
    )  # fmt: skip
    parser.add_argument(
        "--allow-command", **many, metavar="PROGRAM",
        help="a program (argv[0], exactly) a command rule may start; repeatable",
    )  # fmt: skip
    parser.add_argument(
        "--allow-command-env", **many, metavar="NAME",
        help=f"an environment name a command rule may set (repeatable; nothing else is "
        f"given), under --allow-command-env-prefix (default {ENV_PREFIX}): a name a program reads "
        "as code (LD_*, PYTHON*, LESSOPEN, VIMINIT, ...) never is",
    )  # fmt: skip
    parser.add_argument(
        "--allow-command-env-prefix", default=ENV_PREFIX, metavar="PREFIX",
        help=f"the prefix of every name --allow-command-env may list (default {ENV_PREFIX}); "
        "one no program reads, ending in '_'",
    )  # fmt: skip
    parser.add_argument(
        "--allow-agent-server", action="append", nargs="+", default=[],
        metavar=("URL", "KEY_VAR"),
        help="a LangGraph Agent Server a rule may start runs on, and the environment "
        "variable holding its API key (sent to that server only); repeatable",
    )  # fmt: skip


def _ceiling_options(parser: argparse.ArgumentParser) -> None:
    """How often: the operator's floor and ceilings, whatever a rule says."""
    parser.add_argument(
        "--floor-interval", type=_seconds, default=MIN_INTERVAL, metavar="SECONDS",
        help=f"no rule wakes more often than this, whatever its min_interval "
        f"(default {MIN_INTERVAL})",
    )  # fmt: skip
    parser.add_argument(
        "--runs-per-hour", type=_count, default=RUNS_PER_HOUR, metavar="N",
        help=f"wakes per receiver (a URL normalised, a program, a callback), all mailboxes "
        f"together: N at once, refilled at N an hour (default {RUNS_PER_HOUR})",
    )  # fmt: skip
    parser.add_argument(
        "--runs-per-rule", type=_count, default=RUNS_PER_RULE, metavar="N",
        help=f"wakes per rule (a mailbox's rules to one receiver together): N at once, "
        f"refilled at N an hour (default {RUNS_PER_RULE})",
    )  # fmt: skip
    parser.add_argument(
        "--receiver-key", choices=KEYS, default=DEFAULT_KEY,
        help=f"what tells two receivers' URLs apart beside scheme, host and port: nothing "
        f"(origin), the path, or path and query (default {DEFAULT_KEY}); never the fragment",
    )  # fmt: skip
    parser.add_argument(
        "--commands-at-once", type=_count, default=COMMANDS_AT_ONCE, metavar="N",
        help=f"command wakes running at once, at most (default {COMMANDS_AT_ONCE}); they end "
        "with the waker",
    )  # fmt: skip


def _running_options(parser: argparse.ArgumentParser) -> None:
    """What the waker watches, how often, and what it tells its operator."""
    parser.add_argument(
        "--mailbox", action="append", default=None, metavar="ADDRESS",
        help="watch only these mailboxes (else every mailbox the rules index lists); "
        "repeatable. With --credentials: your own mailboxes",
    )  # fmt: skip
    parser.add_argument(
        "--poll", type=positive_float, default=POLL_INTERVAL, metavar="SECONDS",
        help=f"look at every watched mailbox this often when the broker announces nothing "
        f"(RobustMQ; default {POLL_INTERVAL})",
    )  # fmt: skip
    parser.add_argument(
        "--sweep", type=positive_float, default=SWEEP_INTERVAL, metavar="SECONDS",
        help=f"with announcements, look at every mailbox this often anyway "
        f"(default {SWEEP_INTERVAL})",
    )  # fmt: skip
    parser.add_argument(
        "--metrics", metavar="[HOST:]PORT",
        help="serve Prometheus metrics (/metrics), /healthz and /readyz at HOST:PORT, the "
        "operator's address (HOST default 127.0.0.1; port 0 picks one, printed); off by "
        "default. The metrics extra (prometheus-client). docs/broker-watching.md#watching-it",
    )  # fmt: skip
    parser.add_argument(
        "--lease", type=positive_float, default=LEASE, metavar="SECONDS",
        help=f"how long a waker's claim on a mailbox holds if the waker dies (default {LEASE}; "
        "longer than a wake's retries)",
    )  # fmt: skip


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"{text!r}: seconds between 0 and 86400")
    return value


async def _stop(
    waker: Waker,
    starting: asyncio.Future[Waker],
    endpoint: OperatorEndpoint | None,
    client: Mq9Client,
) -> None:
    if endpoint is not None:
        await endpoint.stop()
    starting.cancel()
    await waker.stop()
    await asyncio.gather(starting, return_exceptions=True)
    await client.close()


def _count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 10**6:
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number from 1 to 1000000")
    return int(text)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The waker's own records; httpx's line per request (every webhook URL) only at debug
    configure_logging(args.log_level, loud=("mq9_platform", "mq9_wire"))
    try:
        if args.command == "rules":
            return asyncio.run(_rules(args))
        if args.command == "failed":
            return asyncio.run(_failed(args))
        return asyncio.run(_serve(args))
    except (RuleError, Mq9Error, OSError, ValueError, MetricsUnavailable) as exc:
        print(f"mq9-wake: error: {redact(str(exc))}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130


def _rule(args: argparse.Namespace) -> WakeRule:
    secret = ""
    if args.webhook:
        if not args.secret_env or not os.environ.get(args.secret_env):
            raise RuleError("a webhook needs --secret-env VAR naming its signing secret")
        secret = os.environ[args.secret_env]
    target = (
        "webhook"
        if args.webhook
        else "agent_server"
        if args.agent_server
        else "command"
        if args.argv
        else "callback"
    )
    return WakeRule(
        mailbox=args.mailbox,
        name=args.name,
        target=target,
        url=args.webhook or args.agent_server or "",
        secret=secret,
        include_payload=args.include_payload,
        assistant=args.assistant,
        thread=args.thread,
        argv=tuple(args.argv or ()),
        env=_env(args.env),
        callback=args.callback or "",
        group=args.group,
        min_interval=args.min_interval,
        cap=args.cap,
        cap_window=args.cap_window,
        quiet_hours=args.quiet_hours,
    )


def _env(pairs: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or not name:
            raise RuleError(f"--env {pair!r}: NAME=VALUE")
        if name in env:
            raise RuleError(f"--env {name}: given twice")
        env[name] = value
    return env


def _agent_servers(entries: list[list[str]]) -> dict[str, str | None]:
    servers: dict[str, str | None] = {}
    for entry in entries:
        if len(entry) > 2:
            raise ValueError("--allow-agent-server URL [KEY_VAR]: a URL and at most one name")
        key = None
        if len(entry) == 2:
            key = os.environ.get(entry[1])
            if not key:
                raise ValueError(f"--allow-agent-server {entry[0]}: ${entry[1]} is not set")
        servers[entry[0]] = key
    return servers


async def _rules(args: argparse.Namespace) -> int:
    async with Mq9Client(args.server) as client:
        book = RuleBook(client)
        if args.verb == "add":
            rule = await book.add(_rule(args))
            print(json.dumps(rule.view()))
        elif args.verb == "list":
            for rule in await book.list(args.mailbox):
                print(json.dumps(rule.view()))
        elif not await book.remove(args.mailbox, args.name):
            print(f"mq9-wake: no rule {args.name!r} for {args.mailbox!r}", file=sys.stderr)
            return 1
    return 0


async def _failed(args: argparse.Namespace) -> int:
    async with Mq9Client(args.server) as client:
        try:
            found = await client.query(failed_address(client.principal))
        except MailboxNotFound:
            return 0
        for message in found:
            print(message.text())
    return 0


async def _serve(args: argparse.Namespace) -> int:
    metrics = None if args.metrics is None else operator_address(args.metrics)
    if metrics is not None:
        need_prometheus()  # without the extra: one line, before connecting
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    destinations = Destinations(
        hosts=args.allow_host,
        commands=args.allow_command,
        agent_servers=_agent_servers(args.allow_agent_server),
        command_env=args.allow_command_env,
        command_env_prefix=args.allow_command_env_prefix,
    )
    limits = Limits(
        min_interval=args.floor_interval,
        runs_per_hour=args.runs_per_hour,
        runs_per_rule=args.runs_per_rule,
        receiver_key=args.receiver_key,
        commands_at_once=args.commands_at_once,
    )
    client = await Mq9Client(args.server).connect()
    waker = Waker(
        client,
        Deliverer(destinations, limits=limits),
        mailboxes=args.mailbox,
        poll_interval=args.poll,
        sweep_interval=args.sweep,
        lease=args.lease,
    )
    endpoint = None if metrics is None else wake_endpoint(waker, *metrics)
    # The first sweep reads every rules mailbox (10,000 QUERYs at 10,000 mailboxes): a SIGTERM
    # meanwhile stops it, rather than waiting for it to end
    starting = asyncio.ensure_future(waker.start())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()
            if endpoint is not None:
                try:
                    await endpoint.start()
                except OSError as exc:
                    raise OSError(f"--metrics {args.metrics}: cannot listen there: {exc}") from None
                print(
                    f"mq9-wake: metrics on {endpoint.url}/metrics (/healthz, /readyz)", flush=True
                )
            print(f"mq9-wake: watching {redact(args.server)} ({destinations!r})", flush=True)
            await stopped
    finally:
        stopped.cancel()
        try:  # one deadline for the whole stop: the waker, its first sweep, the connection
            async with asyncio.timeout(STOP_DEADLINE):
                await _stop(waker, starting, endpoint, client)
        except TimeoutError:
            # what is left may never end (a task that lost its cancel): the process does
            # not wait for it; its commands end with it (the kernel, deliver.py)
            print(
                f"mq9-wake: the waker did not stop within {STOP_DEADLINE:.0f} s; exiting",
                file=sys.stderr,
                flush=True,
            )
            sys.stdout.flush()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # ended as by a SIGTERM unhandled
            os.kill(os.getpid(), signal.SIGTERM)
    return 0
