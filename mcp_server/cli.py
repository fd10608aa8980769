"""``mq9-mcp`` / ``python -m mcp_server``: options, environment, logging, and the transport."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence

import anyio

from langchain_mq9 import __version__
from langchain_mq9._cli import configure_logging as configure_stderr_logging
from langchain_mq9._cli import port, positive_float, positive_int
from langchain_mq9.connection import Mq9Connection
from langchain_mq9.leases import DEFAULT_LEASE_TTL
from langchain_mq9.operations import (
    DEFAULT_DISCOVER_LIMIT,
    DEFAULT_GROUP,
    DEFAULT_MAX_PAYLOAD_CHARS,
    DEFAULT_NUM_MSGS,
    DELIVER_CHOICES,
    DISCOVER_CHOICES,
    ToolPolicy,
)
from langchain_mq9.protocol import Mq9Error, check_group_name, is_valid_address

from .http_app import (
    DEFAULT_MAX_SESSIONS,
    DEFAULT_SESSION_IDLE_TIMEOUT,
    MCP_PATH,
    create_http_app,
    is_loopback,
    serve_http,
)
from .server import RECONNECT_ATTEMPTS, RECONNECT_DELAY, create_server, redact, serve_stdio

log = logging.getLogger("mcp_server")

DEFAULT_SERVER = "nats://localhost:4222"
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
  MQ9_MCP_TOKEN                HTTP bearer token     (--auth-token; set but empty: refused)

examples:
  mq9-mcp --server memory://                      try it with an in-process broker
  (with stdio an MCP client starts mq9-mcp and talks JSON-RPC to it; Ctrl-C stops it)
  mq9-mcp --server nats://localhost:4222          stdio, for Claude Desktop / Cursor
  mq9-mcp --transport http --port 8000            http://127.0.0.1:8000/mcp
  MQ9_MCP_TOKEN=... mq9-mcp --transport http --host 0.0.0.0
"""


TERMINAL_HELP = """\
mq9-mcp speaks MCP (JSON-RPC) over stdin/stdout: an MCP client starts it and talks to it; it
does not read commands typed here. Add it to a client instead, for example:
  Claude Code:  claude mcp add mq9 -- mq9-mcp --server nats://localhost:4222
  Claude Desktop / Cursor (JSON config):
    {"mcpServers": {"mq9": {"command": "mq9-mcp", "args": ["--server", "nats://localhost:4222"]}}}
  or serve HTTP:  mq9-mcp --transport http --port 8000   (then http://127.0.0.1:8000/mcp)
Waiting for MCP messages on stdin; press Ctrl-C to stop."""


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


def _up_to_100(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be from 1 to 100, got {value}")
    return value


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mq9-mcp",
        description="MCP server giving MCP clients (Claude Desktop, Claude Code, Cursor, ...) "
        "persistent mailboxes and an agent registry over mq9.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")

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
        "--request-timeout",
        type=positive_float,
        default=5.0,
        metavar="SECONDS",
        help="how long to wait for the broker's answer (default: 5)",
    )

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
        f"counts as one) and free its state (default: {DEFAULT_SESSION_IDLE_TIMEOUT:g})",
    )

    safety = parser.add_argument_group("what the tools may do")
    safety.add_argument(
        "--allowed-mailboxes",
        metavar="PREFIXES",
        help="comma-separated address prefixes the tools may touch, e.g. 'team,agent.me' "
        "('team' allows team and team.x), as mailboxes and as agent names; mailboxes a "
        "client creates are allowed too (default: all)",
    )
    safety.add_argument(
        "--read-only",
        action="store_true",
        help="only agent_discover, query_messages and fetch_messages without a consumer group",
    )
    safety.add_argument(
        "--default-group",
        default=DEFAULT_GROUP,
        metavar="NAME",
        help=f"consumer group for fetch/ack when a call names none (default: {DEFAULT_GROUP})",
    )
    safety.add_argument(
        "--max-payload-chars",
        type=positive_int,
        default=DEFAULT_MAX_PAYLOAD_CHARS,
        metavar="N",
        help="cut payloads shown to the model after N characters, with a note "
        f"(default: {DEFAULT_MAX_PAYLOAD_CHARS})",
    )

    knobs = parser.add_argument_group(
        "pinned tool settings (what the model does not choose)",
    )
    knobs.add_argument(
        "--agent-mailbox",
        metavar="ADDRESS",
        help="this agent's own mailbox: fetch, ack, query and delete default to it, "
        "agent_register registers it, and the tool descriptions name it (e.g. as reply_to)",
    )
    knobs.add_argument(
        "--agent-card",
        type=_json_object,
        metavar="JSON",
        help="extra A2A AgentCard fields agent_register publishes, e.g. "
        '\'{"version": "1.0", "provider": {"organization": "Acme"}}\'',
    )
    knobs.add_argument(
        "--deliver",
        choices=DELIVER_CHOICES,
        default="earliest",
        help="where the consumer group starts the first time it reads a mailbox: everything "
        "stored, or from the newest stored message on (default: earliest)",
    )
    knobs.add_argument(
        "--num-msgs",
        type=_up_to_100,
        default=DEFAULT_NUM_MSGS,
        metavar="N",
        help=f"messages per fetch_messages call (default: {DEFAULT_NUM_MSGS})",
    )
    knobs.add_argument(
        "--worker",
        metavar="NAME",
        help="this server's name among the competing workers of the consumer group (several "
        "agents sharing a mailbox, each with its own name): leases keep them from getting the "
        "same message. Default: none, the group's one reader; what it fetched and did not ack "
        "is handed out again to whoever reads the group next (docs/groups.md)",
    )
    knobs.add_argument(
        "--lease-ttl",
        type=int,
        default=DEFAULT_LEASE_TTL,
        metavar="SECONDS",
        help="with --worker: how long a worker may hold a message before another takes it "
        f"over; longer than handling one takes (default: {DEFAULT_LEASE_TTL})",
    )
    knobs.add_argument(
        "--discover-by",
        choices=DISCOVER_CHOICES,
        default="semantic",
        help="how agent_discover searches: by meaning, or full-text keywords (default: semantic)",
    )
    knobs.add_argument(
        "--discover-limit",
        type=_up_to_100,
        default=DEFAULT_DISCOVER_LIMIT,
        metavar="N",
        help=f"agents per agent_discover search (default: {DEFAULT_DISCOVER_LIMIT})",
    )

    parser.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="log level; logs always go to stderr (default: info)",
    )
    return parser


def configure_logging(level: str) -> None:
    """Everything to stderr: with stdio, stdout carries the MCP messages. Other libraries (the
    MCP SDK logs every request at INFO) only speak up for problems, unless debug is asked for."""
    configure_stderr_logging(level, loud=("mcp_server", "langchain_mq9", "uvicorn.error"))
    logging.getLogger("mcp.server.streamable_http").addFilter(_normal_disconnects)


def _normal_disconnects(record: logging.LogRecord) -> bool:
    """Drop the SDK's traceback for a client that closed its session normally (its SSE writer
    finds the stream closed); every other record passes."""
    error = record.exc_info[1] if record.exc_info else None
    return not (
        type(error).__name__ == "ClosedResourceError" and "SSE writer" in record.getMessage()
    )


def _policy(args: argparse.Namespace, parser: argparse.ArgumentParser) -> ToolPolicy:
    allowed = None
    if args.allowed_mailboxes is not None:
        prefixes = (p.strip().rstrip(".") for p in args.allowed_mailboxes.split(","))
        allowed = tuple(p for p in prefixes if p)
        bad = [p for p in allowed if not is_valid_address(p)]
        if bad or not allowed:
            parser.error(
                f"--allowed-mailboxes: {bad[0] if bad else 'no prefix given'!r} is not a "
                "mailbox address prefix (lowercase letters, digits and dots, e.g. 'team')"
            )
    try:
        check_group_name(args.default_group)
    except Mq9Error as exc:
        parser.error(f"--default-group: {exc}")
    if args.agent_mailbox is not None and not is_valid_address(args.agent_mailbox):
        parser.error(
            f"--agent-mailbox: {args.agent_mailbox!r} is not a mailbox address (lowercase "
            "letters, digits and dots, e.g. 'agent.me')"
        )
    try:
        return ToolPolicy(
            default_group=args.default_group,
            allowed_mailboxes=allowed,
            read_only=args.read_only,
            max_payload_chars=args.max_payload_chars,
            agent_mailbox=args.agent_mailbox,
            agent_card=args.agent_card,
            deliver=args.deliver,
            num_msgs=args.num_msgs,
            discover_by=args.discover_by,
            discover_limit=args.discover_limit,
            worker=args.worker,
            lease_ttl=args.lease_ttl,
        )
    except ValueError as exc:  # what the policy itself refuses (e.g. a reserved prefix)
        parser.error(str(exc))


def _stdin_is_terminal() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (OSError, ValueError):
        return False


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    # SIGTERM stops the server as Ctrl-C does (each transport handles both while it serves);
    # this covers the moments before and after.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _main(argv)
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level)

    auth_token = args.auth_token if args.auth_token is not None else os.environ.get("MQ9_MCP_TOKEN")
    if args.transport == "http" and auth_token is not None and not auth_token.strip():
        where = "--auth-token" if args.auth_token is not None else "MQ9_MCP_TOKEN"
        parser.error(
            f"{where} is set but empty: refusing to start without the bearer token it seems "
            "meant to require; set it to a long random secret, or unset it to serve without "
            "a token (loopback only)"
        )
    if args.transport == "http" and not is_loopback(args.host) and not auth_token:
        parser.error(
            f"--host {args.host} is not a loopback address, so anyone who can reach it could "
            "use your mailboxes: set --auth-token (or MQ9_MCP_TOKEN) to a long random secret, "
            "or bind 127.0.0.1"
        )

    if args.transport == "stdio":
        for option in ("auth_token", "max_sessions", "session_idle_timeout"):
            if getattr(args, option):
                log.warning(
                    "--%s only applies to --transport http; ignored with stdio",
                    option.replace("_", "-"),
                )

    server_url = args.server or _env("MQ9_SERVER", "NATS_URL") or DEFAULT_SERVER
    credentials = {
        option: getattr(args, option) or _env(*names) for option, names in CREDENTIAL_ENV.items()
    }
    policy = _policy(args, parser)
    try:
        connection = Mq9Connection(
            server_url,
            request_timeout=args.request_timeout,
            reconnect_attempts=RECONNECT_ATTEMPTS,
            reconnect_delay=RECONNECT_DELAY,
            name="mq9-mcp",
            **{k: v for k, v in credentials.items() if v},
        )
    except (Mq9Error, ValueError) as exc:
        parser.error(f"--server: {redact(str(exc))}")
    server = create_server(connection, policy, sessions_compete=args.transport == "http")

    where = "stdio" if args.transport == "stdio" else f"http://{_netloc(args.host, args.port)}"
    log.info(
        "mq9 MCP server %s: broker %s, %s%s%s",
        __version__,
        redact(server_url),
        "read-only, " if policy.read_only else "",
        f"mailboxes {','.join(policy.allowed_mailboxes)}, " if policy.allowed_mailboxes else "",
        where if args.transport == "stdio" else where + MCP_PATH,
    )
    if args.transport == "http":
        if auth_token:
            log.info("HTTP bearer token enforced: every request needs Authorization: Bearer")
        else:
            log.info(
                "no HTTP bearer token (set --auth-token or MQ9_MCP_TOKEN to require one): any "
                "local process can use this server"
            )
    elif _stdin_is_terminal():
        print(TERMINAL_HELP, file=sys.stderr, flush=True)
    if args.transport == "stdio":
        anyio.run(serve_stdio, server, connection)
    else:
        max_sessions = args.max_sessions or DEFAULT_MAX_SESSIONS
        idle_timeout = args.session_idle_timeout or DEFAULT_SESSION_IDLE_TIMEOUT
        log.info(
            "at most %d HTTP sessions, each closed after %gs without requests",
            max_sessions,
            idle_timeout,
        )
        app = create_http_app(
            server,
            connection,
            host=args.host,
            auth_token=auth_token,
            max_sessions=max_sessions,
            session_idle_timeout=idle_timeout,
        )
        asyncio.run(serve_http(app, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
