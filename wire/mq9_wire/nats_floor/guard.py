"""Keep nats-py connections we own reading and talking: through malformed frames, and on RobustMQ.

``protect(connection)`` gives one connection a parser that splits control lines as nats-server
does, reads subjects that are not UTF-8 leniently, drops only a frame nats-py still cannot take
(logged), and hands a reply with a sid it does not know (RobustMQ's sid 0) to the request whose
inbox the subject names; and a watchdog that reconnects it when its read loop ended.
``GuardedClient`` finishes its handshake on RobustMQ and names ``tls_required`` in its CONNECT.
``flush_in_order``: a flush after which everything written before it has reached the server;
``drain_in_order``: subscriptions ended with nothing the server sent them dropped.
``close_within``: nats-py's close, bounded (a peer that stops reading holds it for ever).

Each override leans on nats-py internals and is checked before its first use
(``internals_problem``): one that does not match stays off, whole, with one warning, and nats-py
behaves as its own. Why each exists: docs/security-broker.md ("Hostile NATS traffic"),
docs/protocol.md §1.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import re
from collections.abc import Awaitable, Callable, Container, Coroutine, Iterable, Mapping
from typing import Any, TypeVar
from urllib.parse import ParseResult

from nats.aio.client import PING_PROTO, PONG_PROTO, Client, Srv
from nats.aio.subscription import Subscription
from nats.aio.transport import TcpTransport
from nats.errors import ConnectionClosedError, ProtocolError
from nats.protocol import parser as nats_parser
from nats.protocol.command import hpub_cmd

log = logging.getLogger(__name__)  # mq9_wire.nats_floor.guard: the wire's, whoever runs it

WATCH_INTERVAL = 1.0  # seconds between two looks at the read loop: a dead one costs at most this
_CRLF = b"\r\n"
_SEPARATORS = re.compile(rb"[ \t]+")  # nats-server's argument separators, and only those
PARSER_STATE = ("buf", "state", "needed", "header_needed", "msg_arg")

# What each override uses of a nats-py connection: methods with their parameters, attributes
_PARSER_USES = (
    {
        "_process_msg": ["sid", "subject", "reply", "data", "headers"],
        "_process_err": ["err_msg"],
        "_process_info": ["info", "initial_connection"],
        "_process_ping": [],
        "_process_pong": [],
        "force_reconnect": [],
    },
    ("_ps", "_reading_task", "_subs", "_resp_sub_prefix", "options"),
)
_HANDSHAKE_USES = (
    {"_connect_to_server": ["s"], "_connect_command": []},
    ("_transport", "_current_server"),
)
_HEADER_WRITER_USES = (
    {
        "_send_publish": ["subject", "reply", "payload", "payload_size", "headers"],
        "_send_command": ["cmd", "priority"],
        "_flush_pending": ["force_flush"],
    },
    ("_flush_queue", "stats"),
)


def internals_problem(
    connection: Client, methods: Mapping[str, list[str]], attributes: Iterable[str]
) -> str | None:
    """What of ``methods`` (name -> parameters, of nats-py's own Client, whatever a subclass
    overrides) and ``attributes`` (of ``connection``) this nats-py lacks or has otherwise, or
    None."""
    for name, params in methods.items():
        method = getattr(Client, name, None)
        if not callable(method) or list(inspect.signature(method).parameters)[1:] != params:
            return f"nats-py's Client.{name} is not ({', '.join(params)})"
    missing = [name for name in attributes if not hasattr(connection, name)]
    return f"nats-py's Client has no {', '.join(missing)}" if missing else None


def _parser_problem(connection: Client) -> str | None:
    parser = getattr(connection, "_ps", None)
    if not isinstance(parser, nats_parser.Parser):
        return f"the connection's parser is {type(parser).__name__}, not nats-py's Parser"
    missing = [name for name in PARSER_STATE if not hasattr(parser, name)]
    if missing:
        return f"nats-py's Parser has no {', '.join(missing)}"
    if not hasattr(nats_parser, "AWAITING_MSG_PAYLOAD"):
        return "nats-py's parser module has no AWAITING_MSG_PAYLOAD"
    return internals_problem(connection, *_PARSER_USES)


_verdicts: dict[str, bool] = {}  # override -> on, decided once per process


def override_on(override: str, connection: Client, problem: Callable[[Client], str | None]) -> bool:
    """Whether ``override`` may be used (checked once, on the first connection; a warning
    when it may not)."""
    verdict = _verdicts.get(override)
    if verdict is None:
        found = problem(connection)
        if found is not None:
            log.warning(
                "this nats-py differs from the one mq9-wire was checked against (%s): %s "
                "is off",
                found,
                override,
            )
        verdict = _verdicts[override] = found is None
    return verdict


class GuardedParser(nats_parser.Parser):
    """nats-py's parser with nats-server's argument splitting, dropping only a frame that
    nats-py fails to turn into a message (and logging it) instead of ending its read loop."""

    nc: Client
    dropped = 0
    # The sids whose messages a subclass takes itself (``take``): the broker's fast path
    taken: Container[int] = frozenset()

    async def parse(self, data: bytes = b"") -> None:
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
        elif sid in self.taken:
            await self.take(sid, subject, reply, payload, headers)
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

    async def take(
        self, sid: int, subject: bytes, reply: bytes, payload: bytes, headers: bytes | None
    ) -> None:
        """A message read whole for a sid in ``taken`` (a subclass's to handle)."""
        raise NotImplementedError

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


P = TypeVar("P", bound=GuardedParser)


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


def replace_parser(connection: Client, kind: type[P]) -> P:
    """``connection``'s parser replaced by one of ``kind``, in the state the old one left
    (a live connection may be halfway through a frame)."""
    old = connection._ps
    if isinstance(old, kind) and type(old) is kind:
        return old
    new = kind(connection)
    for name in PARSER_STATE:
        setattr(new, name, getattr(old, name))
    new.dropped = getattr(old, "dropped", 0)
    connection._ps = new
    return new


def protect(connection: Client) -> asyncio.Task[None] | None:
    """Guard ``connection`` (open or not) and watch it; cancel the returned watchdog task
    when done with the connection. None when this nats-py cannot be guarded (logged once):
    one malformed NATS message can then stop the connection reading until its pings time out."""
    if not override_on("the lenient parser and its watchdog", connection, _parser_problem):
        return None
    if not isinstance(connection._ps, GuardedParser):
        replace_parser(connection, GuardedParser)
    return asyncio.get_running_loop().create_task(_watch(connection))


async def flush_in_order(connection: Client, timeout: int = 10) -> None:
    """A flush after which everything written to ``connection`` before it has reached the
    server. nats-py's ``flush`` writes its PING at once, ahead of commands still waiting for
    its flusher, such as the SUB of a subscription just made: its PONG can come back before the
    server has that SUB. By the time it does, the flusher has written them: a second flush
    follows them (nats-py's public API only, one round trip more)."""
    await connection.flush(timeout)
    await connection.flush(timeout)


_DRAIN_USES: tuple[dict[str, list[str]], tuple[str, ...]] = (
    {"_send_unsubscribe": ["sid", "limit"], "_remove_sub": ["sid", "max_msgs"]},
    ("_subs",),
)
_SUBSCRIPTION_USES = ("_id", "_pending_queue", "_stop_processing", "_closed")


def _drain_problem(connection: Client) -> str | None:
    return internals_problem(connection, *_DRAIN_USES)


async def drain_in_order(
    connection: Client, subscriptions: Iterable[Subscription], timeout: float = 10.0
) -> None:
    """nats-py's ``Subscription.drain`` for each of ``subscriptions``, its round trip made in
    order: the server told to stop sending, everything it sent before that still handed to
    the subscription (its callback), then the subscription gone. nats-py's own drain writes
    its PING ahead of its UNSUB (``flush_in_order``'s reason): the PONG can come back while
    the server still routes to the subscription, and what comes after it is dropped, a
    request of a queue group lost where another member would have answered it. All of them
    in one round trip; within ``timeout`` seconds (a server that stops answering: the
    subscriptions go all the same). nats-py's drain, one after another, where its internals
    differ from those this was checked against (a warning, once)."""
    subscriptions = [sub for sub in subscriptions if not getattr(sub, "_closed", False)]
    if not subscriptions:
        return
    known = all(hasattr(sub, name) for sub in subscriptions for name in _SUBSCRIPTION_USES)
    if not known or not override_on("the in-order drain", connection, _drain_problem):
        for subscription in subscriptions:
            with contextlib.suppress(ConnectionClosedError):
                await subscription.drain()  # type: ignore[no-untyped-call]
        return
    try:
        if connection.is_connected:  # (closed or reconnecting: the server holds none of them)
            for subscription in subscriptions:
                await connection._send_unsubscribe(subscription._id, 0)
            async with asyncio.timeout(timeout):
                await flush_in_order(connection, max(1, int(timeout)))
                for subscription in subscriptions:  # (a callback's: handled before it goes)
                    await subscription._pending_queue.join()
    finally:
        for subscription in subscriptions:
            subscription._stop_processing()
            connection._remove_sub(subscription._id, 0)
            subscription._closed = True


_ABORT_USES: tuple[dict[str, list[str]], tuple[str, ...]] = ({"close": []}, ("_transport",))


def _abort_problem(connection: Client) -> str | None:
    transport = getattr(connection, "_transport", None)
    if transport is not None and not isinstance(transport, TcpTransport):
        return None  # a websocket's: closed as nats-py closes it, then left to its own bound
    if not hasattr(TcpTransport(), "_io_writer"):  # type: ignore[no-untyped-call]
        return "nats-py's TcpTransport has no _io_writer"
    return internals_problem(connection, *_ABORT_USES)


async def close_within(connection: Client, seconds: float) -> bool:
    """nats-py's ``close``, given ``seconds``: it flushes what is pending and waits for the
    socket to close, both for ever when the server has stopped reading (its buffers full).
    Past the bound the socket is dropped at once (nothing pending is sent). Whether the
    close finished in time."""
    if connection.is_closed:
        return True
    try:
        await asyncio.wait_for(connection.close(), seconds)
        return True
    except TimeoutError:
        pass
    transport = getattr(connection, "_transport", None)
    if isinstance(transport, TcpTransport) and override_on(
        "dropping a socket that does not close", connection, _abort_problem
    ):
        writer = getattr(transport, "_io_writer", None)
        if writer is not None:
            writer.transport.abort()
    return False


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


# The first nudge, then each one twice as late (docs/protocol.md §1.1, point 4)
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


def _handshake_problem(connection: Client) -> str | None:
    params = list(inspect.signature(TcpTransport.connect).parameters)
    if params != ["self", "uri", "buffer_size", "connect_timeout"]:
        return f"nats-py's TcpTransport.connect is ({', '.join(params)})"
    return internals_problem(connection, *_HANDSHAKE_USES)


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
    """nats-py's client on ``PatientTcpTransport`` naming ``tls_required`` (the RobustMQ
    handshake, see the module); call ``protect`` on it.

    It also writes a publish's header block faster than nats-py (which takes each header
    through a regex and a translate table on every SEND under a trace: docs/tracing.md,
    "What it costs"): the same bytes. Each of the two is off, whole, when this nats-py's
    internals differ from what it uses: the override then passes nats-py's arguments on.
    """

    def _connect_command(self, *args: Any, **kwargs: Any) -> bytes:
        command = super()._connect_command(*args, **kwargs)
        if not override_on("RobustMQ's handshake", self, _handshake_problem):
            return command
        # RobustMQ 8bd49dc reads a CONNECT only when it names tls_required (docs/protocol.md
        # §1.1, point 8)
        verb, _, options = command.partition(b" ")
        fields = json.loads(options)
        server = self._current_server
        fields.setdefault("tls_required", server is not None and server.uri.scheme == "tls")
        return verb + b" " + json.dumps(fields, sort_keys=True).encode() + _CRLF

    async def _connect_to_server(self, *args: Any, **kwargs: Any) -> None:
        server = args[0] if args else kwargs.get("s")
        if (
            not self._transport
            and isinstance(server, Srv)
            and server.uri.scheme in ("nats", "tls")
            and override_on("RobustMQ's handshake", self, _handshake_problem)
        ):
            # (nats-py leaves TcpTransport.__init__ unannotated)
            self._transport = PatientTcpTransport()  # type: ignore[no-untyped-call]
        await super()._connect_to_server(*args, **kwargs)

    def _send_publish(self, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, None]:
        block = None
        if (
            len(args) == 5
            and args[4]  # (a plain publish has no headers: nats-py's own at once)
            and args[0]
            and not kwargs
            and override_on("the header block writer", self, _header_problem)
        ):
            block = plain_header_block(args[4])
        if block is None:  # nats-py's own coroutine, awaited by the caller (no frame of ours)
            return super()._send_publish(*args, **kwargs)
        subject, reply, payload, payload_size, _ = args
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


def _header_problem(connection: Client) -> str | None:
    return internals_problem(connection, *_HEADER_WRITER_USES)
