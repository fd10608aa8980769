"""The nats-servers a broker is given (``--nats``): the URLs checked, each server's INFO read
without logging in, how many servers the cluster tells of (the replica count follows it), and
the wait for a JetStream cluster that is still forming.

A server's INFO is the first line it sends on a new connection, before any login: whether it
is clustered (``cluster``), the client URLs of every server it is routed to, itself included
(``connect_urls``), whether it has JetStream and whether it asks a login (``auth_required``).
Reading it costs the server no login attempt, so a broker's start leaves no "Authorization
Violation" in any log, and an unreachable or misspelt URL fails in one line at once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mq9_wire.nats_floor.redaction import describe
from mq9_wire.nats_floor.urls import address, nats_urls

INFO_TIMEOUT = 5.0  # seconds for a server to send its INFO once the TCP connection is up
_INFO_LIMIT = 1 << 20  # an INFO line listing every server of a large cluster
POLL = 0.5  # seconds between two looks at a forming cluster


class ClusterError(Exception):
    """Why the broker cannot use the servers it was given, in one line for the command line."""


def check_urls(url: str) -> list[str]:
    """The servers of ``url`` (comma-separated), each a NATS URL with a host and a port
    number; refused in the words the client uses for a misspelt URL."""
    try:
        return nats_urls(url)
    except ValueError as exc:
        raise ClusterError(str(exc)) from None


async def read_info(url: str, timeout: float = INFO_TIMEOUT) -> dict[str, Any]:
    """The INFO the nats-server at ``url`` sends a new connection (no login is tried)."""
    host, port = address(url)
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, limit=_INFO_LIMIT), timeout
    )
    try:
        line = await asyncio.wait_for(reader.readline(), timeout)
    finally:
        writer.close()
    if not line.startswith(b"INFO "):
        said = line[:60].decode(errors="replace").strip() or "nothing"
        raise ConnectionError(f"not a nats-server: it said {said!r}")
    info: dict[str, Any] = json.loads(line[5:])
    return info


def servers_told(info: Mapping[str, Any]) -> int:
    """How many servers a server's INFO tells of, each counted once: 1 when it is not
    clustered, else the distinct client URLs of the servers it is routed to (itself too)."""
    if not info.get("cluster"):
        return 1
    return max(len(set(info.get("connect_urls") or ())), 1)


def replicas_for(info: Mapping[str, Any]) -> int:
    """The replicas of a stream or bucket the broker creates on the server whose INFO this is:
    3 where the cluster tells of 3 or more servers, else 1 (a URL given three times is one
    server; a lone server refuses more than 1)."""
    return 3 if servers_told(info) >= 3 else 1


def distinct(urls: Sequence[str]) -> int:
    """How many servers ``urls`` name, each host and port counted once."""
    return len({address(url) for url in urls})


async def survey(urls: Sequence[str], shown: str) -> dict[str, dict[str, Any]]:
    """The INFO of each server of ``urls`` that answers (by URL); none answering is a
    ``ClusterError`` naming why, in one line."""
    answers = await asyncio.gather(*(read_info(url) for url in urls), return_exceptions=True)
    infos = {url: a for url, a in zip(urls, answers, strict=True) if isinstance(a, dict)}
    if not infos:
        why = next(a for a in answers if isinstance(a, BaseException))
        if isinstance(why, asyncio.TimeoutError):
            why = TimeoutError(f"no answer within {INFO_TIMEOUT:g} s")
        raise ClusterError(f"cannot connect to nats-server at {shown}: {describe(why)}")
    return infos


class Waiting:
    """A bounded wait that says once what it waits for, and again when that changes."""

    def __init__(
        self,
        seconds: float,
        say: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.seconds, self.say, self.clock = seconds, say, clock
        self.deadline = clock() + seconds
        self._said = ""

    def until(self, what: str) -> None:
        """Note that the wait goes on for ``what``; past the deadline, a ``ClusterError``."""
        if self.clock() >= self.deadline:
            raise ClusterError(f"gave up after {self.seconds:g} s waiting for {what}")
        if what != self._said:
            self._said = what
            left = max(self.deadline - self.clock(), 0)
            self.say(f"waiting for {what} (up to {left:.0f} s more)")


def refused_login(exc: BaseException) -> str:
    """``exc`` in one line, and what a refused login of the broker's own user means."""
    text = describe(exc)
    if "Authorization Violation" in text:
        text += (
            " (the servers refuse the broker's login: --credentials DIR must be the directory "
            "whose config block 'credentials setup' printed for these servers)"
        )
    return text


async def check_login(urls: Sequence[str], shown: str) -> None:
    """Log in once with what ``urls`` carry (no reconnect, no retry), then leave: a refused
    login is a ``ClusterError`` in one line, where a client retrying would print one a try."""
    import nats

    async def quiet(exc: Exception) -> None:
        """nats-py's default logs each error with its traceback: the one raised says it."""

    try:
        connection = await nats.connect(
            list(urls), allow_reconnect=False, connect_timeout=INFO_TIMEOUT, error_cb=quiet
        )
    except Exception as exc:
        raise ClusterError(
            f"cannot log in to nats-server at {shown}: {refused_login(exc)}"
        ) from None
    await connection.close()


# -- the servers' monitoring endpoints -------------------------------------------------------
# nats-server serves its health (/healthz) and JetStream's state (/jsz) over HTTP on its
# monitoring port (``http: HOST:PORT`` in its config); a broker given those URLs
# (--nats-monitor) reads them for its operator's scrape (broker/cli/metrics.py).

MONITOR_TIMEOUT = 3.0  # seconds one read of a server's monitoring endpoint may take
_MONITOR_LIMIT = 4 << 20  # bytes of one answer (a /jsz of a large cluster)


def monitor_urls(text: str) -> list[str]:
    """The monitoring endpoints of ``text`` (comma-separated ``http://HOST:PORT``), as
    ``HOST:PORT``; ``ValueError`` in one line for anything else."""
    found = []
    for url in (one.strip() for one in text.split(",")):
        rest = url.removeprefix("http://")
        host, _, port = rest.rstrip("/").rpartition(":")
        if rest == url or not host or "/" in host or not port.isdigit() or int(port) > 65535:
            raise ValueError(
                f"--nats-monitor {url!r}: give each server's monitoring endpoint as "
                "http://HOST:PORT (its config's http: HOST:PORT), comma-separated"
            )
        found.append(f"{host}:{port}")
    return list(dict.fromkeys(found))


async def read_monitor(
    server: str, path: str, timeout: float = MONITOR_TIMEOUT
) -> tuple[int, dict[str, Any]]:
    """The HTTP status and JSON body of ``GET path`` on the monitoring endpoint ``server``
    (``HOST:PORT``); an ``OSError`` or ``TimeoutError`` when it does not answer, a
    ``ValueError`` when the answer is not nats-server's."""
    host, _, port = server.rpartition(":")
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host.strip("[]"), int(port))
        try:
            writer.write(f"GET {path} HTTP/1.0\r\nHost: {server}\r\n\r\n".encode())
            await writer.drain()
            raw = b""
            while chunk := await reader.read(65536):  # HTTP/1.0: the server closes at the end
                raw += chunk
                if len(raw) > _MONITOR_LIMIT:
                    raise ValueError(f"{server}{path} answered over {_MONITOR_LIMIT} bytes")
        finally:
            writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)
    if len(status) < 2 or not status[0].startswith(b"HTTP/") or not status[1].isdigit():
        raise ValueError(f"{server} answered no HTTP")
    found = json.loads(body or b"{}")
    if not isinstance(found, dict):
        raise ValueError(f"{server}{path} answered no JSON object")
    return int(status[1]), found
