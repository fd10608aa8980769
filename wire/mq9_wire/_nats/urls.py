"""NATS server URLs as a user writes them: one, or a comma-separated list of one cluster's.

Both sides read them (the client dialling, the broker's command line checking its ``--nats``),
in the same words, so a misspelt URL reads the same wherever it is refused.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from .redaction import redact

NATS_PORT = 4222
NATS_SCHEMES = ("nats", "tls", "ws", "wss")  # what nats-py dials


def nats_urls(servers: str | list[str], *, also: str = "") -> list[str]:
    """The servers named, each checked to be a NATS URL with a host and a numeric port;
    ``ValueError`` in one line (the URL's password redacted) otherwise. ``also`` names what
    else the caller takes, for the refusal's words (e.g. ``memory://``)."""
    if isinstance(servers, str):
        servers = servers.split(",")
    urls = [part.strip() for part in servers if part.strip()]
    for url in urls or [""]:
        scheme, sep, rest = url.partition("://")
        if not sep or scheme.lower() not in NATS_SCHEMES or not rest:
            listed = (
                f"a comma-separated list of those, or {also}"
                if also
                else ("or a comma-separated list of those")
            )
            raise ValueError(
                f"unsupported server URL {redact(url)!r}: use nats://host:port, "
                f"tls://host:port, {listed}"
            )
        address(url)
    return urls


def address(url: str) -> tuple[str, int]:
    """The host and port of a NATS URL (4222 when it names none)."""
    parts = urlsplit(url)
    try:
        port = parts.port or NATS_PORT
    except ValueError:
        raise ValueError(
            f"unsupported server URL {redact(url)!r}: its port is not a number"
        ) from None
    if not parts.hostname:
        raise ValueError(f"unsupported server URL {redact(url)!r}: it names no host")
    return parts.hostname, port
