"""``mq9-mcp`` / ``python -m mq9_mcp``: options, environment, logging, and the transport."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import typing
from collections.abc import Sequence

import anyio
from pydantic import ValidationError

from mq9_platform._version import __version__
from mq9_platform.client.auth import read_credential_file
from mq9_platform.client.connection import Mq9Connection
from mq9_platform.client.key_shares import (
    IDENTITY_KEYS,
    KEY_WINDOW,
    KeyShares,
    KeySharesCollector,
    callers_total,
)
from mq9_platform.operations.config import ToolConfig
from mq9_platform.operations.policy import ToolPolicy
from mq9_wire.command_line import ArgumentParser, port, positive_float, positive_int
from mq9_wire.command_line import configure_logging as configure_stderr_logging
from mq9_wire.metrics import MetricsUnavailable, operator_address
from mq9_wire.nats_floor.redaction import redact
from mq9_wire.protocol.errors import Mq9Error

from . import client_lines, events
from .http import (
    DEFAULT_MAX_SESSIONS,
    DEFAULT_SESSION_IDLE_TIMEOUT,
    MCP_PATH,
    create_http_app,
    is_loopback,
    serve_http,
)
from .http.metrics import PREFIX, McpMetrics, mcp_endpoint
from .http.principals import principal_connections
from .http.resource_server import ResourceServer, add_oauth_flags, resource_server
from .mailbox_owners import add_owner_flags, shared_from
from .owners import KEYS_PER_CLIENT
from .server import (
    RECONNECT_ATTEMPTS,
    RECONNECT_DELAY,
    Mq9McpServer,
    create_server,
    tool_definitions,
)
from .stdio import serve_stdio

log = logging.getLogger("mq9_mcp")

DEFAULT_SERVER = "nats://localhost:4222"

# The tools RobustMQ's own MCP server serves (its admin-server's /mcp,
# src/admin-server/src/mcp/mq9/mod.rs), which a client may load beside mq9-mcp. mq9-mcp's
# names without a prefix, or with one not ending in "mq9_" (e.g. "mq9mcp_"), never match them.
ROBUSTMQ_TOOLS = frozenset(
    {
        "mq9_create_mailbox",
        "mq9_send_message",
        "mq9_fetch_messages",
        "mq9_ack_message",
        "mq9_query_mailbox",
        "mq9_register_agent",
        "mq9_discover_agents",
        "mq9_delete_message",
        "mq9_unregister_agent",
    }
)
DEFAULT_PORT = 8000

# Each credential option falls back to these environment variables, first one set wins.
CREDENTIAL_ENV = {
    "user": ("MQ9_USER", "NATS_USER"),
    "password": ("MQ9_PASSWORD", "NATS_PASSWORD"),
    "token": ("MQ9_TOKEN", "NATS_TOKEN"),
    "creds": ("MQ9_CREDS", "NATS_CREDS"),
}

EPILOG = """\
environment:
  MQ9_SERVER, NATS_URL         broker URL when --server is not given
  MQ9_USER, NATS_USER          NATS user             (--user)
  MQ9_PASSWORD, NATS_PASSWORD  NATS password         (--password)
  MQ9_TOKEN, NATS_TOKEN        NATS token            (--token)
  MQ9_CREDS, NATS_CREDS        NATS .creds file      (--creds)
  MQ9_CREDENTIAL               this agent's mq9 credential, <id>:<secret>
  MQ9_CREDENTIAL_FILE          a file holding it     (--credential-file)
  MQ9_MCP_TOKEN                HTTP bearer token     (--auth-token; set but empty: refused)
  MQ9_MCP_STATE_KEYS           keys sealing requestState, comma-separated, each 32+ characters,
                               the first sealing: replicas behind one address share them

examples:
  mq9-mcp --server memory://                      try it with an in-process broker
  (with stdio an MCP client starts mq9-mcp and talks JSON-RPC to it; Ctrl-C stops it)
  mq9-mcp --server nats://localhost:4222          stdio, for Claude Desktop / Cursor
  mq9-mcp --transport http --port 8000            http://127.0.0.1:8000/mcp
  MQ9_MCP_TOKEN=... mq9-mcp --transport http --host 0.0.0.0
"""


def _env(*names: str) -> str | None:
    """The first of these environment variables that is set and not empty."""
    return next((os.environ[name] for name in names if os.environ.get(name)), None)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="mq9-mcp",
        description="MCP server giving MCP clients (Claude Desktop, Claude Code, Cursor, ...) "
        "persistent mailboxes and an agent registry over mq9.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_broker_flags(parser)
    add_transport_flags(parser)
    add_oauth_flags(parser)  # an OAuth resource server: http/resource_server.py
    add_tool_flags(parser)
    add_event_flags(parser)
    add_owner_flags(parser)  # private mailboxes between principals: mailbox_owners.py
    parser.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="log level; logs always go to stderr (default: info)",
    )
    return parser


def add_broker_flags(parser: argparse.ArgumentParser) -> None:
    """Where the broker is and how to log in to it."""
    broker = parser.add_argument_group("mq9 broker")
    broker.add_argument(
        "--server",
        help="broker URL: nats://host:port, tls://host:port, several comma-separated, or "
        "memory:// for an in-process broker that lives as long as this server "
        f"(default: $MQ9_SERVER, then $NATS_URL, then {DEFAULT_SERVER})",
    )
    broker.add_argument("--user", help="NATS user name")
    broker.add_argument("--password", help="NATS password (prefer $MQ9_PASSWORD)")
    broker.add_argument("--token", help="NATS authentication token (prefer $MQ9_TOKEN)")
    broker.add_argument("--creds", metavar="FILE", help="NATS credentials (.creds) file")
    broker.add_argument(
        "--credential-file",
        metavar="FILE",
        help="a file holding this agent's mq9 credential, <id>:<secret>, for a broker that "
        "enforces per-agent credentials (default: $MQ9_CREDENTIAL_FILE, or the credential "
        "itself in $MQ9_CREDENTIAL; docs/security.md)",
    )
    broker.add_argument(
        "--request-timeout",
        type=positive_float,
        default=5.0,
        metavar="SECONDS",
        help="how long to wait for the broker's answer (default: 5)",
    )


def add_transport_flags(parser: argparse.ArgumentParser) -> None:
    """How MCP clients reach the server: stdio, or HTTP with its address, token and bounds."""
    transport = parser.add_argument_group("MCP transport")
    transport.add_argument(
        "--transport",
        choices=("stdio", "http"),
        default="stdio",
        help="stdio (default; the client starts this process) or http (streamable HTTP at "
        f"{MCP_PATH})",
    )
    transport.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind with --transport http (default: 127.0.0.1); any non-loopback "
        "address needs --auth-token",
    )
    transport.add_argument(
        "--port", type=port, default=DEFAULT_PORT, help=f"HTTP port (default: {DEFAULT_PORT})"
    )
    transport.add_argument(
        "--auth-token",
        metavar="TOKEN",
        help="require 'Authorization: Bearer TOKEN' on every HTTP request (default: "
        "$MQ9_MCP_TOKEN)",
    )
    transport.add_argument(
        "--max-sessions",
        type=positive_int,
        metavar="N",
        help="most HTTP sessions open at once; when full, a new session replaces the least "
        "recently active one that never called a tool, or gets 503 if all have "
        f"(default: {DEFAULT_MAX_SESSIONS})",
    )
    transport.add_argument(
        "--session-idle-timeout",
        type=positive_float,
        metavar="SECONDS",
        help="close an HTTP session after this long with no request (an open event stream "
        f"counts as one) (default: {DEFAULT_SESSION_IDLE_TIMEOUT:g})",
    )
    transport.add_argument(
        "--keys-per-client",
        type=positive_int,
        metavar="N",
        help="the idempotency keys one client's tool calls may hold at once (default: "
        f"{KEYS_PER_CLIENT} a client over HTTP, over stdio the clients' whole part; "
        "$MQ9_MCP_KEYS_PER_CLIENT); a client past it is refused, naming its own count only",
    )
    transport.add_argument(
        "--identity-keys",
        type=positive_int,
        metavar="N",
        help="the keys the broker lets this server's identity hold (its --max-keys-per-sender; "
        f"default {IDENTITY_KEYS}, $MQ9_MCP_IDENTITY_KEYS): all clients together hold at most "
        "nine tenths of it",
    )
    transport.add_argument(
        "--key-window",
        type=positive_int,
        metavar="SECONDS",
        help=f"how long the broker keeps a key (its idempotency window; default {KEY_WINDOW}, "
        "$MQ9_MCP_KEY_WINDOW)",
    )
    transport.add_argument(
        "--metrics",
        metavar="[HOST:]PORT",
        help="with --transport http: serve Prometheus metrics (/metrics), /healthz and /readyz "
        "at HOST:PORT, the operator's address, apart from --port (HOST default 127.0.0.1; "
        "port 0 picks one, printed); off by default. The metrics extra. "
        "docs/broker-watching.md#watching-it",
    )


def add_event_flags(parser: argparse.ArgumentParser) -> None:
    """Where MCP Events may be POSTed (events/subscribe; docs/mcp-events.md)."""
    group = parser.add_argument_group("MCP Events")
    group.add_argument(
        "--webhook-hosts",
        metavar="HOSTS",
        help="comma-separated hosts, *.suffixes, addresses or networks a client's webhook "
        "(events/subscribe) may be POSTed to ('*': any public host); default none: no webhooks",
    )
    group.add_argument(
        "--events-capability",
        action="store_true",
        help="also declare MCP Events as a top-level 'events' capability, which ChatGPT and "
        "the Vercel AI SDK's client look for before they subscribe (SEP-3415 declares it as "
        "the extension alone)",
    )


def add_tool_flags(parser: argparse.ArgumentParser) -> None:
    """A flag for each ``ToolConfig`` field (``--agent-mailbox`` for ``agent_mailbox``), whose
    description is its help; the values are checked by ``ToolConfig`` (``tool_config``)."""
    group = parser.add_argument_group(
        "tool settings (Mq9Toolkit's options, in mq9_platform.operations.config)"
    )
    for name, field in ToolConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if field.annotation is bool:
            group.add_argument(flag, action="store_true", help=field.description)
            continue
        literal = typing.get_origin(field.annotation) is typing.Literal
        shown = f" (default: {field.default})" if field.default not in (None, "") else ""
        choices = typing.get_args(field.annotation) if literal else None
        group.add_argument(flag, choices=choices, help=f"{field.description}{shown}")


def tool_config(args: argparse.Namespace, parser: argparse.ArgumentParser) -> ToolConfig:
    """The ``ToolConfig`` of the flags given (the others keep its defaults); a value it refuses
    stops the program with its flag named."""
    given = {name: getattr(args, name) for name in ToolConfig.model_fields}
    try:
        return ToolConfig(**{name: value for name, value in given.items() if value is not None})
    except ValidationError as exc:
        error = exc.errors()[0]
        flag = "--" + str(error["loc"][0]).replace("_", "-")
        parser.error(f"{flag}: {error['msg'].removeprefix('Value error, ')}")


def robustmq_clashes(policy: ToolPolicy) -> list[str]:
    """The names of ``policy``'s tools that RobustMQ's own MCP server gives its tools too."""
    return sorted({tool.name for tool in tool_definitions(policy)} & ROBUSTMQ_TOOLS)


def configure_logging(level: str) -> None:
    """Everything to stderr: with stdio, stdout carries the MCP messages. Other libraries (the
    MCP SDK logs every request at INFO) only speak up for problems, unless debug is asked for."""
    loud = ("mq9_mcp", "mq9_platform", "mq9_wire", "uvicorn.error")  # mq9_wire: its NATS guard
    configure_stderr_logging(level, loud=loud)
    logging.getLogger("mcp.server.streamable_http").addFilter(_normal_disconnects)


def _normal_disconnects(record: logging.LogRecord) -> bool:
    """Drop the SDK's traceback for a client that closed its session normally (its SSE writer,
    named in the SDK's log line, finds the stream closed); every other record passes."""
    error = record.exc_info[1] if record.exc_info else None
    closed = isinstance(error, anyio.ClosedResourceError)
    return not (closed and "SSE writer" in record.getMessage())


def _stdin_is_terminal() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (OSError, ValueError):
        return False


def main(argv: Sequence[str] | None = None) -> int:
    # SIGTERM stops the server as Ctrl-C does (each transport handles both while it serves);
    # this covers the moments before and after, and uvicorn raising it again once stopped.
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return _main(argv)
    except KeyboardInterrupt:
        return 0
    except RuntimeError as error:
        # a Ctrl-C that lands in a class's __set_name__ while a module is still being imported
        # (anyio's backend, at the loop's start) is raised again by Python as a RuntimeError
        # whose cause is the interrupt: a clean stop all the same (a clean-clone run met one)
        if not isinstance(error.__cause__, KeyboardInterrupt):
            raise
        return 0
    except BaseExceptionGroup as group:
        # the interrupt landed inside a task group (stdio's, before its own signal handler is
        # in place), which wraps it: still a clean stop, anything else among it is not
        if group.split(KeyboardInterrupt)[1] is not None:
            raise
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


def _new_loop() -> asyncio.AbstractEventLoop:
    """A new event loop, made with SIGINT and SIGTERM held: either, turned into
    KeyboardInterrupt in the middle of the loop's construction, would leave a half-made loop
    whose finaliser prints a traceback. Held, the signal lands once the loop is whole."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows
        return asyncio.new_event_loop()
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        return asyncio.new_event_loop()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    auth_token = http_token(args, parser)
    resource = resource_server(args, parser, auth_token) if args.transport == "http" else None
    server_url = args.server or _env("MQ9_SERVER", "NATS_URL") or DEFAULT_SERVER
    credentials = broker_credentials(args, parser)
    policy = tool_policy(args, parser)
    connection = broker_connection(args, parser, server_url, credentials)
    server = create_server(
        connection,
        policy,
        sessions_compete=args.transport == "http",
        webhook_hosts=[h for h in (args.webhook_hosts or "").split(",") if h.strip()],
        state_keys=state_keys(parser),
    )
    server.policies.key_shares = key_shares(args, parser)
    server.mailbox_owners.shared = shared_from(args, parser)
    if args.events_capability:
        server.middleware.append(events.top_level_capability)
    timeout = args.request_timeout
    principals = principal_connections(
        args, parser, server_url, connection, request_timeout=timeout, name="mq9-mcp"
    )
    if principals is not None:  # each principal at the broker as itself
        server.use_principals(principals)

    host = f"[{args.host}]" if ":" in args.host else args.host
    where = "stdio" if args.transport == "stdio" else f"http://{host}:{args.port}{MCP_PATH}"
    log.info(
        "mq9 MCP server %s: broker %s, %s%s%s",
        __version__,
        redact(server_url),
        "read-only, " if policy.read_only else "",
        f"mailboxes {','.join(policy.allowed_mailboxes)}, " if policy.allowed_mailboxes else "",
        where,
    )
    if args.transport == "stdio":
        if _stdin_is_terminal():
            help_text = client_lines.terminal_help(_client_args(args, server_url, policy))
            print(help_text, file=sys.stderr, flush=True)
        anyio.run(serve_stdio, server, connection, backend_options={"loop_factory": _new_loop})
        return 0
    # server.acting: its close at shutdown closes the principals' connections too
    return _run_http(args, server, server.acting, auth_token, resource)


def key_shares(args: argparse.Namespace, parser: argparse.ArgumentParser) -> KeyShares:
    """The ledger of the clients' idempotency keys, from the options, else their
    environment variables, else the broker's defaults."""

    def given(value: int | None, env: str) -> int | None:
        text = os.environ.get(env, "").strip()
        if value is not None or not text:
            return value
        if not text.isdigit() or int(text) < 1:
            parser.error(f"${env} must be a whole number 1 or more, not {text[:40]!r}")
        return int(text)

    total = callers_total(given(args.identity_keys, "MQ9_MCP_IDENTITY_KEYS") or IDENTITY_KEYS)
    each = given(args.keys_per_client, "MQ9_MCP_KEYS_PER_CLIENT")
    if each is None:
        each = min(KEYS_PER_CLIENT, total) if args.transport == "http" else total
    window = given(args.key_window, "MQ9_MCP_KEY_WINDOW") or KEY_WINDOW
    return KeyShares(each, total=total, window=window, where="server")


# Each key sealing requestState is secret randomness of at least this many characters (the
# SDK's floor for its AES-GCM key derivation).
MIN_STATE_KEY = 32


def state_keys(parser: argparse.ArgumentParser) -> list[str]:
    """The keys sealing the ``requestState`` of 2026-07-28's InputRequiredResult
    (``MQ9_MCP_STATE_KEYS``, comma-separated, the first sealing and all opening, so a key can be
    rotated in); none: a key made at start. Stops the program on a key too short to be one."""
    keys = [k.strip() for k in os.environ.get("MQ9_MCP_STATE_KEYS", "").split(",") if k.strip()]
    for number, key in enumerate(keys, 1):
        if len(key) < MIN_STATE_KEY:
            parser.error(
                f"MQ9_MCP_STATE_KEYS: key {number} has {len(key)} characters, fewer than "
                f"{MIN_STATE_KEY}; make one with: python -c 'import secrets; "
                "print(secrets.token_hex(32))'"
            )
    return keys


def http_token(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str | None:
    """The bearer token HTTP requests must carry (``--auth-token``, else ``MQ9_MCP_TOKEN``).
    Stops the program when it is set but empty, or missing while a non-loopback address is
    bound; with stdio, says that the HTTP options are ignored."""
    auth_token = args.auth_token if args.auth_token is not None else os.environ.get("MQ9_MCP_TOKEN")
    if args.transport == "stdio":
        for option in ("auth_token", "max_sessions", "session_idle_timeout", "metrics"):
            if getattr(args, option):
                log.warning(
                    "--%s only applies to --transport http; ignored with stdio",
                    option.replace("_", "-"),
                )
    elif auth_token is not None and not auth_token.strip():
        where = "--auth-token" if args.auth_token is not None else "MQ9_MCP_TOKEN"
        parser.error(
            f"{where} is set but empty: refusing to start without the bearer token it seems "
            "meant to require; set it to a long random secret, or unset it to serve without "
            "a token (loopback only)"
        )
    elif not is_loopback(args.host) and not (auth_token or args.oauth_issuer or args.tokens_file):
        parser.error(
            f"--host {args.host} is not a loopback address, so anyone who can reach it could "
            "use your mailboxes: set --auth-token (or MQ9_MCP_TOKEN) to a long random secret, "
            "or bind 127.0.0.1"
        )
    return auth_token


def tool_policy(args: argparse.Namespace, parser: argparse.ArgumentParser) -> ToolPolicy:
    """The tools' policy from the tool flags, warning of a prefix that names RobustMQ's tools."""
    policy = ToolPolicy(tool_config(args, parser))
    clashes = robustmq_clashes(policy)
    if clashes:
        log.warning(
            "--tool-prefix %s names %s as RobustMQ's own MCP server (admin-server /mcp) names "
            "its tools: a client loading both sees two tools of one name; pick another prefix "
            "(e.g. mq9mcp_) or none",
            policy.tool_prefix,
            ", ".join(clashes),
        )
    return policy


def broker_credentials(
    args: argparse.Namespace, parser: argparse.ArgumentParser
) -> dict[str, typing.Any]:
    """The broker credentials given (each option, else its environment variables); an
    unreadable ``--credential-file`` stops the program saying so."""
    # Only credentials (strings) are passed on: never ``client=`` (Mq9Connection's other keyword)
    credentials: dict[str, typing.Any] = {
        option: getattr(args, option) or _env(*names) for option, names in CREDENTIAL_ENV.items()
    }
    if args.credential_file:  # (MQ9_CREDENTIAL and MQ9_CREDENTIAL_FILE: the client reads them)
        try:
            credential = read_credential_file(args.credential_file)
        except Mq9Error as exc:
            parser.error(f"--credential-file: {exc.message}")
        credentials["credential"] = ":".join(credential)
    return credentials


def broker_connection(
    args: argparse.Namespace,
    parser: argparse.ArgumentParser,
    server_url: str,
    credentials: dict[str, typing.Any],
) -> Mq9Connection:
    """The one broker connection every client shares; a bad URL or credential stops the
    program saying which."""
    try:
        return Mq9Connection(
            server_url,
            request_timeout=args.request_timeout,
            reconnect_attempts=RECONNECT_ATTEMPTS,
            reconnect_delay=RECONNECT_DELAY,
            name="mq9-mcp",
            **{k: v for k, v in credentials.items() if v},
        )
    except (Mq9Error, ValueError) as exc:  # (a credential's words name where it came from)
        parser.error(f"--server: {redact(str(exc))}")


def _client_args(args: argparse.Namespace, server_url: str, policy: ToolPolicy) -> list[str]:
    """The arguments an MCP client's configuration starts this server with (the terminal help
    shows them; the executable is named by its absolute path: Claude Desktop does not search
    PATH)."""
    server_args = ["--server", redact(server_url)]
    if args.credential_file:  # its path: the secret stays in the file
        server_args += ["--credential-file", args.credential_file]
    if policy.tool_prefix:
        server_args += ["--tool-prefix", policy.tool_prefix]
    return server_args


def _run_http(
    args: argparse.Namespace,
    server: Mq9McpServer,
    connection: Mq9Connection,
    auth_token: str | None,
    resource: ResourceServer | None = None,
) -> int:
    if resource is not None:
        log.info("HTTP requests need a token naming a principal: %s", resource.hint())
    elif auth_token:
        log.info("HTTP bearer token enforced: every request needs Authorization: Bearer")
    else:
        log.info(
            "no HTTP bearer token (set --auth-token or MQ9_MCP_TOKEN to require one): any "
            "local process can use this server"
        )
    max_sessions = args.max_sessions or DEFAULT_MAX_SESSIONS
    idle_timeout = args.session_idle_timeout or DEFAULT_SESSION_IDLE_TIMEOUT
    log.info(
        "at most %d HTTP sessions, each closed after %gs without requests",
        max_sessions,
        idle_timeout,
    )
    metrics = None
    if args.metrics is not None:  # refused in one line before anything is served
        try:
            address = operator_address(args.metrics)
            metrics = McpMetrics()
            # the clients' keys held, and the keyed calls refused past a share
            metrics.registry.register(KeySharesCollector(server.policies.key_shares, PREFIX))
        except (ValueError, MetricsUnavailable) as exc:
            print(f"mq9-mcp: {exc}", file=sys.stderr, flush=True)
            return 1
    app = create_http_app(
        server,
        connection,
        host=args.host,
        auth_token=auth_token,
        resource_server=resource,
        max_sessions=max_sessions,
        session_idle_timeout=idle_timeout,
        metrics=metrics,
    )
    busy = client_lines.port_in_use(args.host, args.port)
    if busy:  # uvicorn would only log the bind error and stop
        print(busy, file=sys.stderr, flush=True)
        return 1
    if metrics is None:
        asyncio.run(serve_http(app, args.host, args.port))
        return 0
    return asyncio.run(_serve_watched(app, args, metrics, connection, address))


async def _serve_watched(
    app: typing.Any, args: argparse.Namespace, metrics: McpMetrics, connection: Mq9Connection,
    address: tuple[str, int],
) -> int:  # fmt: skip
    """``serve_http`` with the operator's endpoint beside it, on the same loop."""
    endpoint = mcp_endpoint(metrics, connection, *address)
    try:
        await endpoint.start()
    except OSError as exc:
        print(f"mq9-mcp: --metrics {args.metrics}: cannot listen there: {exc}",
              file=sys.stderr, flush=True)  # fmt: skip
        return 1
    print(f"mq9-mcp: metrics on {endpoint.url}/metrics (/healthz, /readyz)", file=sys.stderr,
          flush=True)  # fmt: skip
    try:
        await serve_http(app, args.host, args.port)
    finally:
        await endpoint.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
