"""``mq9 console``: the checks before the console listens (a token to enter, always; one given
by hand to bind beyond loopback), and uvicorn serving it."""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import socket
import sys
from typing import Any
from urllib.parse import urlsplit

import uvicorn

from ..connect import USAGE, Failure, Target, failure
from .app import Settings, create_app

# The start-up line on what a person may do: said whole, as "read-only (--allow-writes)" read
# as if writes were on
WRITES_ALLOWED = "writes allowed (deletes, acks, replays, answers: --allow-writes was given)"
READ_ONLY = "read-only (start it with --allow-writes to change things)"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def settings_for(
    target: Target,
    *,
    host: str,
    console_token: str | None,
    allow_writes: bool,
    mailboxes: tuple[str, ...],
    reply_mailboxes: tuple[str, ...],
    public_origins: tuple[str, ...] = (),
    audit_log: str | None = None,
    metrics: str | None = None,
) -> tuple[Settings, bool]:
    """The console's settings, and whether its token was made here (then printed)."""
    if console_token is not None and len(console_token.strip()) < 16:
        raise Failure(
            "--token (or MQ9_CONSOLE_TOKEN) must be at least 16 characters: a long random "
            "secret, e.g. from `python -c 'import secrets; print(secrets.token_urlsafe())'`",
            USAGE,
        )
    if not is_loopback(host) and console_token is None:
        raise Failure(
            f"--host {host} is not a loopback address, so anyone who can reach it could read "
            "and steer the agents' mail: give --token (or MQ9_CONSOLE_TOKEN) a long random "
            "secret, or bind 127.0.0.1",
            USAGE,
        )
    for origin in public_origins:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/"):
            raise Failure(
                f"--public-origin {origin[:80]!r}: give the scheme and host a browser shows, "
                "e.g. https://mq9.example.com (no path)",
                USAGE,
            )
    if metrics is not None:  # one line now, not a traceback once serving
        from mq9_wire.metrics import MetricsUnavailable, need_prometheus, operator_address

        try:
            where = operator_address(metrics)
            need_prometheus()
            socket.create_server(where).close()  # taken: said here, not by uvicorn's lifespan
        except (ValueError, MetricsUnavailable) as exc:
            raise Failure(str(exc), USAGE) from None
        except OSError as exc:
            raise Failure(f"--metrics {metrics}: cannot listen there: {exc}", USAGE) from None
    made = console_token is None
    token = console_token.strip() if console_token else secrets.token_urlsafe(24)
    settings = Settings(
        token=token,
        other_secrets=target.login_secrets(),
        allow_writes=allow_writes,
        mailboxes=mailboxes,
        reply_mailboxes=reply_mailboxes,
        server=target.shown,
        public_origins=tuple(o.rstrip("/") for o in public_origins),
        audit_log=audit_log,
        metrics=metrics,
    )
    return settings, made


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port`` (port 0: a free one, the system's pick), bound
    here so that a port taken is one line (uvicorn would only log it) and the port printed
    is the one served."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        why = f"cannot listen on {host}:{port}: {exc.strerror}: give another port (0: a free one)"
        raise Failure(why, USAGE) from None
    sock.set_inheritable(True)
    return sock


async def _reachable(target: Target) -> None:
    """The broker answers a connection now: else one line, not a traceback from uvicorn."""
    client = target.client("mq9-console")
    try:
        await client.connect()
    except Exception as exc:
        raise failure(exc) from None
    finally:
        await client.close()


def serve(target: Target, *, host: str, port: int, **options: Any) -> None:
    settings, made = settings_for(target, host=host, **options)
    asyncio.run(_reachable(target))
    sock = listen(host, port)
    port = sock.getsockname()[1]
    shown_host = f"[{host}]" if ":" in host else host
    where = f"http://{shown_host}:{port}/login"
    lines = [f"mq9 console on {where} for {target.shown}"]
    lines.append(WRITES_ALLOWED if settings.allow_writes else READ_ONLY)
    if made:
        lines.append(f"token (enter it on the login page): {settings.token}")
    print("\n".join(lines), file=sys.stderr, flush=True)
    app = create_app(lambda: target.client("mq9-console"), settings)
    # Live pages hold their event streams open: a stop waits for them 2 s at most.
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
