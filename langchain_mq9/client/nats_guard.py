"""Keep nats-py connections we own reading: through malformed frames, and on RobustMQ.

nats-py (checked up to 2.16) loses a connection to frames nats-server lets any publisher send
(docs/security.md): a subject, reply subject or header status line that is not UTF-8 ends its
read loop (``UnicodeDecodeError``) while the connection stays "connected", reading nothing until
its pings time out, minutes later; a subject holding ``\\x0b`` or ``\\x0c`` breaks its MSG line
(it splits on the regex ``\\s``, nats-server on spaces and tabs only): a protocol error.

``protect(connection)`` gives one connection (never nats-py as a whole) a parser that splits
control lines as nats-server does, reads subjects that are not UTF-8 leniently and drops only
a frame nats-py still cannot take (logged), and a watchdog that reconnects if the read loop
ends anyway while the connection counts as connected.

RobustMQ's NATS listener differs from nats-server where nats-py cannot follow it
(docs/protocol.md §1.1, points 1 and 4): the parser also takes a reply that comes with a sid it
does not know (RobustMQ's sid 0) for the request whose inbox the subject names, and
``GuardedClient`` finishes its handshake on RobustMQ (``PatientTcpTransport``) and names
``tls_required`` in its CONNECT, without which RobustMQ reads no CONNECT (so no login) at all.

``GuardedClient`` also writes a publish's header block itself (nats-py's way, quicker).

``deliver_inline(connection, subscription)`` hands a subscription's messages to its callback
inside the read loop, and writes what the callbacks published once the read is parsed: a
request and its answer then take one turn of the event loop, not three (nats-py queues a
message for a task of the subscription's, and an answer for its flusher task). The broker's
own subscription uses it (its callback starts a task for whatever waits). ``publish_queued``
and ``write_now`` do the same for answers given in a future's callback.

All of it leans on nats-py internals (the ``_ps`` parser, ``_process_*`` handlers,
``_build_message``, ``_reading_task``, ``_subs``, ``_resp_sub_prefix``, ``_connect_to_server``,
``_send_publish`` and what it calls, the ``_pending`` commands and the ``_transport``, a
subscription's ``_id`` and ``_cb``). ``internals_problem`` checks them: a nats-py that no
longer matches is left unguarded with a warning, and the tests
(tests/client/test_malformed_frames.py, tests/robustmq/test_robustmq_shaped.py,
tests/client/test_inline_delivery.py) fail loudly.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import re
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any
from urllib.parse import ParseResult

from nats.aio.client import PING_PROTO, PONG_PROTO, Client, Srv
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.aio.transport import TcpTransport
from nats.errors import (
    BadSubjectError,
    ConnectionClosedError,
    ConnectionDrainingError,
    MaxPayloadError,
    OutboundBufferLimitError,
    ProtocolError,
)
from nats.protocol import parser as nats_parser
from nats.protocol.command import hpub_cmd, pub_cmd

log = logging.getLogger("langchain_mq9")

WATCH_INTERVAL = 1.0  # seconds between two looks at the read loop: a dead one costs at most this
_CRLF = b"\r\n"
_SEPARATORS = re.compile(rb"[ \t]+")  # nats-server's argument separators, and only those
_BAD_SUBJECT = re.compile(r"[ \t\r\n]")  # what nats-py's publish refuses in a subject
_PARSER_STATE = ("buf", "state", "needed", "header_needed", "msg_arg")
_HANDLERS = {
    "_process_msg": ["sid", "subject", "reply", "data", "headers"],
    "_process_err": ["err_msg"],
    "_process_info": ["info", "initial_connection"],
    "_process_ping": [],
    "_process_pong": [],
    "_process_headers": ["headers"],
    "_build_message": ["sid", "subject", "reply", "data", "headers"],
    "_connect_to_server": ["s"],  # GuardedClient's seams
    "_connect_command": [],
    "_send_publish": ["subject", "reply", "payload", "payload_size", "headers"],
}


class GuardedParser(nats_parser.Parser):
    """nats-py's parser with nats-server's argument splitting, dropping only a frame that
    nats-py fails to turn into a message (and logging it) instead of ending its read loop."""

    nc: Client
    dropped = 0
    # deliver_inline's subscriptions: sid -> callback, and whether answers wait to be written
    inline: dict[int, Callable[[Msg], Awaitable[None]]]
    _answered = False

    async def parse(self, data: bytes = b"") -> None:
        await self._parse(data)
        if self._answered:  # (if parsing failed, nats-py's flusher still writes them)
            self._answered = False
            await self._write_pending()

    async def _parse(self, data: bytes) -> None:
        self.buf.extend(data)
        while self.buf:
            if self.state == nats_parser.AWAITING_MSG_PAYLOAD:
                if len(self.buf) < self.needed + len(_CRLF):
                    return  # the rest of the payload is still on its way
                await self._deliver()
                continue
            end = self.buf.find(_CRLF)
            if end < 0:
                return  # the rest of the line is still on its way
            line = bytes(self.buf[:end])
            del self.buf[: end + len(_CRLF)]
            op, _, rest = line.partition(b" ")
            if op == b"MSG" or op == b"HMSG":  # (most lines: read here, without a coroutine)
                self._read_msg_line(op, _arguments(rest))
            else:
                await self._control(op, rest)

    async def _control(self, op: bytes, rest: bytes) -> None:
        if op == b"PING":
            await self.nc._process_ping()
        elif op == b"PONG":
            await self.nc._process_pong()
        elif op == b"-ERR":
            await self.nc._process_err(rest.strip().decode(errors="replace").lower())
        elif op == b"INFO":
            await self.nc._process_info(json.loads(rest))
        elif op != b"+OK":
            raise ProtocolError("nats: unknown protocol")

    def _read_msg_line(self, op: bytes, args: list[bytes]) -> None:
        # MSG <subject> <sid> [reply] <size>; HMSG <subject> <sid> [reply] <header size> <size>
        sizes = 2 if op == b"HMSG" else 1
        if len(args) not in (2 + sizes, 3 + sizes):
            raise ProtocolError("nats: malformed MSG")
        try:
            needed, sid = int(args[-1]), int(args[1])
            header_needed = int(args[-2]) if sizes == 2 else 0
        except ValueError:
            raise ProtocolError("nats: malformed MSG") from None
        self.needed, self.header_needed = needed, header_needed
        self.msg_arg["sid"] = sid
        self.msg_arg["subject"] = args[0]
        self.msg_arg["reply"] = args[2] if len(args) == 3 + sizes else b""
        self.state = nats_parser.AWAITING_MSG_PAYLOAD

    async def _deliver(self) -> None:
        frame = bytes(self.buf[: self.needed])
        del self.buf[: self.needed + len(_CRLF)]
        split, self.header_needed = self.header_needed, 0
        self.state = nats_parser.AWAITING_CONTROL_LINE
        arg = self.msg_arg
        headers, payload = (frame[:split], frame[split:]) if split else (None, frame)
        # Subjects that are not UTF-8 read as U+FFFD (as nats-py reads header values): the
        # broker answers such a request with an error, as RobustMQ does, instead of hanging it.
        subject, reply = arg["subject"], arg["reply"]
        if not (subject.isascii() and reply.isascii()):
            subject, reply = _lenient(subject), _lenient(reply)
        sid = arg["sid"]
        if sid not in self.nc._subs:  # RobustMQ's sid 0: a reply goes to the request it names
            sid = self._inbox_sid(subject, sid)
        elif sid in self.inline:
            await self._hand_over(sid, subject, reply, payload, headers)
            return
        # (the ignores: nats-py's own parser passes headers=None, its annotation says bytes)
        try:
            try:
                await self.nc._process_msg(sid, subject, reply, payload, headers)  # type: ignore[arg-type]
            except Exception:
                if headers is None:
                    raise
                # A header block nats-py cannot read is read as none, as RobustMQ reads one
                # that is not UTF-8: the request is answered, never dropped
                await self.nc._process_msg(sid, subject, reply, payload, None)  # type: ignore[arg-type]
        except Exception as exc:  # this one frame is lost, the connection keeps reading
            self.dropped += 1
            if self.dropped & (self.dropped - 1) == 0:  # 1st, 2nd, 4th, 8th...: no log flood
                log.warning(
                    "dropped a NATS message nats-py cannot read (subject %r: %s: %s); "
                    "%d dropped on this connection so far",
                    arg["subject"][:80],
                    type(exc).__name__,
                    exc,
                    self.dropped,
                )

    async def _hand_over(
        self, sid: int, subject: bytes, reply: bytes, payload: bytes, headers: bytes | None
    ) -> None:
        """A message of a deliver_inline subscription to its callback, here and now."""
        nc = self.nc
        nc.stats["in_msgs"] += 1
        nc.stats["in_bytes"] += len(payload)
        read = None
        if headers is not None:  # (most requests have none: no coroutine for them)
            try:
                read = await nc._process_headers(headers)
            except Exception:  # read as none, as _deliver does and RobustMQ does
                read = None
        msg = nc._build_message(sid, subject, reply, payload, read)
        self._answered = True
        try:
            await self.inline[sid](msg)
        except Exception:  # as nats-py's subscription task: the callback's error is its own
            log.exception("the callback of %r failed", msg.subject[:80])

    async def _write_pending(self) -> None:
        """Write what was published while the read was parsed (the answers, in order, with
        whatever else waited), as nats-py's flusher would a turn later."""
        transport = self.nc._transport
        if write_now(self.nc) and transport is not None:
            # nats-py's flusher waits for the socket to take it; so does reading the next
            # request (the connection reads nothing while the socket is full; nats-py leaves
            # drain unannotated)
            await transport.drain()  # type: ignore[no-untyped-call]

    def _inbox_sid(self, subject: bytes, sid: int) -> int:
        """The sid of nats-py's request inbox subscription when ``subject`` is one of its
        inboxes, else ``sid`` unchanged (a message for nothing we hold: dropped as before).
        So one wildcard inbox works on RobustMQ too, with no SUB or UNSUB per request."""
        prefix = self.nc._resp_sub_prefix
        if not prefix or not subject.startswith(prefix):
            return sid
        wildcard = prefix.decode() + "*"
        for known, subscription in self.nc._subs.items():
            if subscription.subject == wildcard:
                return known
        return sid


def _arguments(rest: bytes) -> list[bytes]:
    """A control line's arguments split as nats-server splits them: at runs of spaces and
    tabs (nats-py's \\s also splits at \\x0b, \\x0c, ...), surrounding ones ignored. One
    space between each, as nats-server writes them, takes a plain split."""
    args = rest.split(b" ")
    if b"" in args or b"\t" in rest:
        return _SEPARATORS.split(rest.strip(b" \t"))
    return args


def _lenient(raw: bytes) -> bytes:
    return raw if raw.isascii() else raw.decode("utf-8", "replace").encode()


def internals_problem(connection: Client) -> str | None:
    """What in this nats-py differs from what the guard relies on, or None."""
    parser = getattr(connection, "_ps", None)
    if type(parser) not in (nats_parser.Parser, GuardedParser):
        return f"the connection's parser is {type(parser).__name__}, not nats-py's Parser"
    missing = [name for name in _PARSER_STATE if not hasattr(parser, name)]
    if missing:
        return f"nats-py's Parser has no {', '.join(missing)}"
    if not hasattr(nats_parser, "AWAITING_MSG_PAYLOAD"):
        return "nats-py's parser module has no AWAITING_MSG_PAYLOAD"
    for name, params in _HANDLERS.items():
        handler = getattr(connection, name, None)
        if handler is None or list(inspect.signature(handler).parameters) != params:
            return f"nats-py's Client.{name} is not ({', '.join(params)})"
    for name in (
        "_pending",
        "_pending_data_size",
        "_max_pending_size",
        "_transport",
        "_reading_task",
        "force_reconnect",
        "_subs",
        "_resp_sub_prefix",
        "_send_command",
        "_flush_pending",
        "_flush_queue",
        "stats",
    ):
        if not hasattr(connection, name):
            return f"nats-py's Client has no {name}"
    return None


def protect(connection: Client) -> asyncio.Task[None] | None:
    """Guard ``connection`` (open or not) and watch it; cancel the returned watchdog task
    when done with the connection. None when this nats-py cannot be guarded (logged)."""
    problem = internals_problem(connection)
    if problem is not None:
        log.warning(
            "this nats-py is not the one langchain-mq9 was built against (%s): one malformed "
            "NATS message can stop this connection reading until its pings time out",
            problem,
        )
        return None
    old = connection._ps
    if not isinstance(old, GuardedParser):
        guarded = GuardedParser(connection)
        for name in _PARSER_STATE:  # a live connection may be halfway through a frame
            setattr(guarded, name, getattr(old, name))
        guarded.inline = {}
        connection._ps = guarded
    return asyncio.get_running_loop().create_task(_watch(connection))


def write_now(connection: Client) -> bool:
    """Write what waits to be written on ``connection`` now, as nats-py's flusher would on its
    next turn (it then finds nothing); False when nothing was written. Not while connecting or
    reconnecting: nats-py keeps it for the new connection."""
    transport = connection._transport
    pending = connection._pending
    if not pending or transport is None or not connection.is_connected or connection.is_connecting:
        return False
    transport.writelines(pending)
    connection._pending = []
    connection._pending_data_size = 0
    return True


async def flush_in_order(connection: Client, timeout: int = 10) -> None:
    """nats-py's ``flush``, with what waits for its flusher written first. nats-py (checked
    with 2.16) writes flush's PING at once, ahead of commands still waiting for the flusher's
    next turn, such as the SUB of a subscription just made: its PONG can come back before the
    server has that SUB, and a request another connection sends then finds no responder.
    After this, everything written before it has reached the server."""
    if internals_problem(connection) is None:
        write_now(connection)
    await connection.flush(timeout)


def publish_queued(connection: Client, subject: str, payload: bytes) -> None:
    """nats-py's publish of ``payload`` to ``subject`` (no reply subject, no headers) from
    plain code (nats-py's publish is a coroutine): queued for the caller's ``write_now``, which
    writes all it queued in one go. Raises as publish does: a bad subject, a closed or draining
    connection, a payload above max_payload, and while reconnecting, a buffer nats-py would
    refuse to grow. Only on a guarded connection (``protect``)."""
    if not subject or _BAD_SUBJECT.search(subject):
        raise BadSubjectError
    if connection.is_closed:
        raise ConnectionClosedError
    if connection.is_draining_pubs:
        raise ConnectionDrainingError
    if len(payload) > connection.max_payload:
        raise MaxPayloadError
    command = pub_cmd(subject, "", payload)
    if not connection.is_connected:
        limit = connection._max_pending_size
        if limit <= 0 or connection._pending_data_size + len(command) > limit:
            raise OutboundBufferLimitError
    connection.stats["out_msgs"] += 1
    connection.stats["out_bytes"] += len(payload)
    connection._pending.append(command)
    connection._pending_data_size += len(command)


def deliver_inline(connection: Client, subscription: Subscription) -> bool:
    """Hand ``subscription``'s messages to its callback in ``connection``'s read loop (see the
    module), False when the connection is not guarded (``protect``), which leaves nats-py's
    own delivery. For a callback that returns without waiting: the connection reads nothing
    while it runs."""
    parser = connection._ps
    sid, callback = getattr(subscription, "_id", None), getattr(subscription, "_cb", None)
    if not isinstance(parser, GuardedParser) or not isinstance(sid, int) or callback is None:
        return False
    parser.inline = {known: cb for known, cb in parser.inline.items() if known in connection._subs}
    parser.inline[sid] = callback
    return True


async def _watch(connection: Client) -> None:
    """Reconnect ``connection`` when its read loop has ended while it counts as connected
    (nats-py itself would only notice when its pings go unanswered, minutes later)."""
    while not connection.is_closed:
        await asyncio.sleep(WATCH_INTERVAL)
        reading = connection._reading_task
        if connection.is_connected and reading is not None and reading.done():
            log.warning("the NATS connection stopped reading; reconnecting")
            if connection.options.get("allow_reconnect", True):
                await connection.force_reconnect()
            else:  # closed is at least visible: our transport dials again, a user sees it
                with contextlib.suppress(Exception):
                    await connection.close()


# The first nudge, then each one twice as late: RobustMQ answers a PING in about a millisecond.
FIRST_NUDGE = 0.05

# nats-py annotates its abstract Transport but not TcpTransport's methods: the ones called
# below, with the types Transport gives them.
_tcp_write: Callable[[TcpTransport, bytes], None] = TcpTransport.write
_tcp_readline: Callable[[TcpTransport], Awaitable[bytes]] = TcpTransport.readline
_tcp_drain: Callable[[TcpTransport], Awaitable[None]] = TcpTransport.drain


class PatientTcpTransport(TcpTransport):
    """nats-py's TCP transport, patient with a broker that answers the handshake late.

    nats-py's handshake takes the line after its CONNECT and PING for the PONG; RobustMQ may
    first send a PING of its own, and holds a PING read together with CONNECT until more bytes
    arrive (docs/protocol.md §1.1, point 4). Until its PONG this transport answers the broker's
    PINGs and, while none comes, sends another PING, each ``FIRST_NUDGE`` later than the last
    (the extra PONGs arrive after the handshake, where nats-py ignores them).
    """

    _handshaking = False
    _pinged = False

    def __bool__(self) -> bool:
        # nats-py replaces a transport that is false (not yet connected) with a plain one
        return True

    async def connect(self, uri: ParseResult, buffer_size: int, connect_timeout: int) -> None:
        await super().connect(uri, buffer_size, connect_timeout)
        self._handshaking, self._pinged = True, False

    def write(self, payload: bytes) -> None:
        if self._handshaking and payload == PING_PROTO:
            self._pinged = True
        _tcp_write(self, payload)

    async def readline(self) -> bytes:
        if not self._handshaking:
            return await _tcp_readline(self)
        while True:
            line = await self._line_nudging()
            if line == PING_PROTO:  # the broker's own PING: answer it, the PONG is still due
                _tcp_write(self, PONG_PROTO)
                await _tcp_drain(self)
                continue
            if line == PONG_PROTO or line.startswith(b"-ERR"):
                self._handshaking = False
            return line

    async def _line_nudging(self) -> bytes:
        reading = asyncio.ensure_future(_tcp_readline(self))
        pause = FIRST_NUDGE
        # nats-py bounds the whole handshake with its connect_timeout: cancelled, stop reading.
        try:
            while not (await asyncio.wait({reading}, timeout=pause))[0]:
                if self._pinged:
                    _tcp_write(self, PING_PROTO)
                    await _tcp_drain(self)
                    pause *= 2
        finally:
            reading.cancel()
        return reading.result()


# Header lines exactly as nats-py writes them: a token name, the value already stripped
# (str.strip and re's \s agree on what whitespace is), no CR or LF but the line's end.
_PLAIN_HEADER_LINES = re.compile(r"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+: (?:\S(?:[^\r\n]*\S)?)?\r\n)+")


def plain_header_block(headers: dict[str, str]) -> bytes | None:
    """The NATS header block nats-py writes for ``headers``, written at once; None when one of
    them is not already in the form nats-py would put it in (nats-py then writes it itself)."""
    lines = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
    # (a CRLF inside a name or value would pass as a line of its own: counted out)
    if lines.count("\r\n") != len(headers) or not _PLAIN_HEADER_LINES.fullmatch(lines):
        return None
    return f"NATS/1.0\r\n{lines}\r\n".encode()


class GuardedClient(Client):
    """nats-py's client on ``PatientTcpTransport`` (see the module); call ``protect`` on it.

    It also writes a publish's header block faster than nats-py (which takes each header
    through a regex and a translate table on every SEND under a trace: docs/tracing.md,
    "What it costs"): the same bytes.
    """

    def _connect_command(self) -> bytes:
        # RobustMQ 8bd49dc reads a CONNECT only when it names tls_required (nats-server and the
        # Go client send it; nats-py leaves it out): without it RobustMQ drops the CONNECT
        # without a word, so with logins required every publish of a client that gave the
        # right password is an 'Authorization Violation' (docs/protocol.md §1.1, point 7).
        command = super()._connect_command()
        verb, _, options = command.partition(b" ")
        fields = json.loads(options)
        server = self._current_server
        fields.setdefault("tls_required", server is not None and server.uri.scheme == "tls")
        return verb + b" " + json.dumps(fields, sort_keys=True).encode() + _CRLF

    async def _connect_to_server(self, s: Srv) -> None:  # nats-py's name for the server
        if not self._transport and s.uri.scheme in ("nats", "tls"):
            # (nats-py leaves TcpTransport.__init__ unannotated)
            self._transport = PatientTcpTransport()  # type: ignore[no-untyped-call]
        await super()._connect_to_server(s)

    def _send_publish(
        self,
        subject: str,
        reply: str,
        payload: bytes,
        payload_size: int,
        headers: dict[str, Any] | None,
    ) -> Coroutine[Any, Any, None]:
        block = plain_header_block(headers) if headers and subject else None
        if block is None:  # nats-py's own coroutine, awaited by the caller (no frame of ours)
            return super()._send_publish(subject, reply, payload, payload_size, headers)
        return self._send_block(subject, reply, block, payload, payload_size)

    async def _send_block(
        self, subject: str, reply: str, block: bytes, payload: bytes, payload_size: int
    ) -> None:
        """nats-py's _send_publish with a header block written already."""
        self.stats["out_msgs"] += 1
        self.stats["out_bytes"] += payload_size
        await self._send_command(hpub_cmd(subject, reply, block, payload))
        if self._flush_queue is not None and self._flush_queue.empty():
            await self._flush_pending()
