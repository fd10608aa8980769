"""uvicorn's HTTP/1.1 connection, guarded: connections that never finish their headers are
closed, open connections are bounded, and a request its head alone refuses is answered before
any of its body is read. It subclasses uvicorn's ``H11Protocol`` and h11's ``Connection``, whose
internals it relies on: ``check_versions`` refuses versions it was not written for.

Why not a public mechanism: uvicorn's options bound a head's size
(``h11_max_incomplete_event_size``, passed on here) and answer 503 past ``limit_concurrency``,
but give no deadline for a head, never close a connection that sends nothing, and start the
app only once h11 has the head, reading on into the body; an ASGI middleware runs later still.
A refused connection lingering before it closes (``REFUSED_LINGER``) is a socket's matter. The
SDK's Host/Origin check and body limit answer inside the app (``auth.py``, ``limits.py``)."""

from __future__ import annotations

import functools
import logging
import os
import queue
import socket
import threading
from http import HTTPStatus
from importlib.metadata import version
from typing import Any

import h11
import uvicorn
from mcp.server.transport_security import TransportSecurityMiddleware
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from uvicorn.protocols.http.h11_impl import H11Protocol

from .auth import is_loopback, loopback_security
from .limits import MAX_BODY_BYTES, too_long

log = logging.getLogger("mq9_mcp")

# The releases whose internals this module relies on (uvicorn's H11Protocol: conn, flow,
# transport, connections, on_response_complete, shutdown; h11's Connection.next_event), from
# the first tested up to (not including) the next that may rename them.
# mcp: sessions.py closes an idle session through the session manager's own table
SUPPORTED = {"uvicorn": ((0, 30), (1, 0)), "h11": ((0, 14), (1, 0)), "mcp": ((2, 3), (3, 0))}

# How long a connection's request headers may take to arrive.
HEADER_SECONDS = 10.0
# Open connections at once: past this a new one is closed at once, well below the usual limit
# of 1024 file descriptors, so a flood of connections cannot starve the broker connection.
MAX_CONNECTIONS = 512
# How long a connection refused by a request's head stays open, its answer sent and nothing
# read: closed at once, a client repeating a refused large POST starts over at once and keeps
# the server refusing as fast as it can (bench row 9h; docs/mcp.md); lingering, each refusal
# costs the client this long. A slot is held no longer than a client that is slow to send its
# headers holds one anyway.
REFUSED_LINGER = 1.0
# A connection's kernel receive buffer (the kernel doubles it): a refused body's client can
# queue no more than this before the server closes, where Linux would otherwise let the buffer
# grow to net.ipv4.tcp_rmem's maximum for the server to copy and drop. A body of
# ``MAX_BODY_BYTES`` still streams through it at loopback speed.
RECEIVE_BUFFER = 128 * 1024


def check_versions() -> None:
    """Refuse to serve HTTP on a uvicorn, h11 or mcp whose internals this server was not
    written for."""
    for package, (lowest, beyond) in SUPPORTED.items():
        found = version(package)
        release = tuple(int(part) for part in found.split(".")[:2] if part.isdigit())
        if not lowest <= release < beyond:
            wanted = f">={'.'.join(map(str, lowest))},<{'.'.join(map(str, beyond))}"
            raise RuntimeError(
                f"mq9-mcp's HTTP server relies on {package}'s internals as of "
                f"{package}{wanted}, not {found}: install {package}{wanted}"
            )


class BoundedConnections(H11Protocol):
    """uvicorn's HTTP/1.1 connection, closed when its request headers have not all arrived
    ``HEADER_SECONDS`` after it opened or its last response ended, and refused outright while
    ``MAX_CONNECTIONS`` are open: connections that never finish their headers cannot pile up
    to the file descriptor limit. A request its head alone refuses (``refusal_by_head``) is
    answered here, with the connection closed, before any of its body is read or the app runs:
    a client repeating one costs the server little more than the connection."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.conn = _ScreenedConnection(self, config.h11_max_incomplete_event_size)
        self.security = _early_security(config.host)
        self.refused = False  # answered by refuse_early, which h11 never saw

    def refuse_early(self, request: h11.Request) -> bool:
        """Answer ``request`` and end its side of the connection, if its head alone refuses it:
        the client gets the whole answer, nothing more of its body is read, and the connection
        closes ``REFUSED_LINGER`` seconds later."""
        refusal = refusal_by_head(self.security, list(request.headers), MAX_BODY_BYTES)
        if refusal is None:
            return False
        self.refused = True
        self.transport.write(refusal)
        self.transport.write_eof()
        self.flow.pause_reading()
        self.loop.call_later(REFUSED_LINGER, self.transport.close)
        return True

    def shutdown(self) -> None:
        if self.refused:  # uvicorn's would tell h11 of a close while it awaits an answer
            self.transport.close()
        else:
            super().shutdown()

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:  # see RECEIVE_BUFFER
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        if len(self.connections) > MAX_CONNECTIONS:
            log.warning("refused a connection: %d are open", MAX_CONNECTIONS)
            transport.close()
            return
        self._arm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        deadline = getattr(self, "_header_deadline", None)
        if deadline is not None:
            deadline.cancel()
        super().connection_lost(exc)
        self._close_off_the_loop()

    def _close_off_the_loop(self) -> None:
        """Have the socket's last close happen on a worker thread: closing a connection whose
        client still had megabytes on the way (a refused body) makes the kernel drop them and
        reset it, time the event loop would otherwise spend on each. asyncio closes its
        own descriptor right after ``connection_lost``; this duplicate is closed after that."""
        sock = self.transport.get_extra_info("socket")
        if sock is None or sock.fileno() < 0:
            return
        try:
            duplicate = os.dup(sock.fileno())
        except OSError:  # at the descriptor limit: asyncio's close on the loop does it all
            return
        self.loop.call_soon(_CLOSER.close, duplicate)

    def _arm_header_deadline(self) -> None:
        deadline = getattr(self, "_header_deadline", None)
        if deadline is not None:
            deadline.cancel()
        self._header_deadline = self.loop.call_later(HEADER_SECONDS, self._headers_overdue)

    def _headers_overdue(self) -> None:
        # IDLE: the client has not finished a request's headers since the deadline was armed.
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            log.debug("closed a connection whose request headers took over %gs", HEADER_SECONDS)
            self.transport.close()


@functools.cache
def _early_security(host: str) -> TransportSecurityMiddleware | None:
    """The Host and Origin check ``create_http_app`` puts in front of the app, for ``host``."""
    return TransportSecurityMiddleware(loopback_security(host)) if is_loopback(host) else None


class _Closer:
    """Closes descriptors on a daemon thread of its own: the event loop only queues them (an
    executor's future would wake the loop once more for each)."""

    def __init__(self) -> None:
        self.descriptors: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.thread: threading.Thread | None = None

    def close(self, descriptor: int) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="mq9-mcp-closer", daemon=True)
            self.thread.start()
        self.descriptors.put(descriptor)

    def _run(self) -> None:
        while True:
            os.close(self.descriptors.get())


_CLOSER = _Closer()


class _ScreenedConnection(h11.Connection):
    """h11's server side, showing each request's head to its connection first: a request the
    connection refuses is never handed on, and ``NEED_DATA`` ends uvicorn's reading."""

    def __init__(self, protocol: BoundedConnections, largest_head: int | None) -> None:
        sizes = {} if largest_head is None else {"max_incomplete_event_size": largest_head}
        super().__init__(h11.SERVER, **sizes)
        self.protocol = protocol

    def next_event(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        event = super().next_event()
        if isinstance(event, h11.Request) and self.protocol.refuse_early(event):
            return h11.NEED_DATA
        return event


def refusal_by_head(
    security: TransportSecurityMiddleware | None, headers: list[tuple[bytes, bytes]], limit: int
) -> bytes | None:
    """The whole HTTP answer refusing a request by its head (``HostAndOrigin``'s wrong Host or
    Origin, then ``read_body``'s declared length over ``limit``), with ``Connection: close``;
    None when the head is acceptable, or when the SDK's check does not decide at once."""
    if security is not None:
        check = security.validate_request(Request({"type": "http", "headers": headers}))
        try:
            check.send(None)  # it awaits nothing: it decides at once
        except StopIteration as decided:
            if decided.value is not None:
                return _written(decided.value)
        else:  # a version that awaits something: the app's HostAndOrigin decides
            check.close()
    declared = Headers(raw=headers).get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return _written(JSONResponse(too_long(limit), 413))
    return None


def _written(response: Response) -> bytes:
    """``response`` as the bytes on the wire, closing the connection."""
    head = [f"HTTP/1.1 {response.status_code} {HTTPStatus(response.status_code).phrase}"]
    head += [f"{name.decode()}: {value.decode()}" for name, value in response.raw_headers]
    return "\r\n".join([*head, "connection: close", "", ""]).encode() + bytes(response.body)
