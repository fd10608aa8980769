"""NATS server URLs as a user writes them: one, or a comma-separated list of one cluster's.

Both sides read them (the client dialling, the broker's command line checking its ``--nats``),
in the same words, so a misspelt URL reads the same wherever it is refused.
"""

from __future__ import annotations

from ipaddress import ip_address
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


def on_this_machine(urls: list[str]) -> bool:
    """Whether every server is a loopback address (``localhost``, ``127.0.0.0/8``, ``::1``):
    only then is "run a broker on this machine" the way to reach it; a remote broker that is
    down is not started by a broker here."""
    for url in urls:
        try:
            host = address(url)[0]
        except ValueError:
            return False
        if host.lower() == "localhost" or host.lower().endswith(".localhost"):
            continue
        try:
            if not ip_address(host).is_loopback:
                return False
        except ValueError:  # a name other than localhost's
            return False
    return bool(urls)
