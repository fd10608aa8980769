"""The broker's fast path on its own NATS connections: a subscription's messages handed to its
callback inside the read loop, and what was published meanwhile written when the read is
parsed, so that a request and its answer take one turn of the event loop, not three (nats-py
queues a message for a task of the subscription's, and an answer for its flusher task).

``engage(connection)`` turns it on for a connection ``protect`` guards, on a nats-py of a
version in ``CHECKED`` whose internals match what it uses (checked once per process), unless
``MQ9_BROKER_FAST_PATH=0``. Without it each function does the same through nats-py's public
API, a turn or two later; bench/HOTPATH.md has what each way costs.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import TypeVar

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import (
    BadHeaderError,
    BadSubjectError,
    ConnectionClosedError,
    ConnectionDrainingError,
    MaxPayloadError,
    OutboundBufferLimitError,
)
from nats.protocol.command import pub_cmd

from .guard import GuardedParser, internals_problem, override_on, replace_parser

log = logging.getLogger("mq9_broker")

ENV = "MQ9_BROKER_FAST_PATH"  # "0": nats-py's public API only
CHECKED = ((2, 16),)  # the nats-py minors whose internals this was written and tested against
_USES = (
    {
        "_process_headers": ["headers"],
        "_build_message": ["sid", "subject", "reply", "data", "headers"],
        "_request_sub_callback": ["msg"],
    },
    (
        "_ps",
        "_pending",
        "_pending_data_size",
        "_max_pending_size",
        "_transport",
        "_subs",
        "stats",
        "is_connecting",
        "is_draining_pubs",
    ),
)
_BAD_SUBJECT = re.compile(r"[ \t\r\n]")  # what nats-py's publish refuses in a subject
# nats-py's header writing (Client._send_publish): a name it takes, a value's line breaks
_HEADER_KEY = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE_NEWLINES = str.maketrans({"\r": " ", "\n": " "})
_TOKEN_NAMES: set[str] = set()  # header names seen to be tokens with nothing to strip
# A request's header block as read_headers takes it: no status, the version line alone
_PLAIN_HEAD = b"NATS/1.0\r\n"
_SPACE_IN_NAME = re.compile(r"\s")  # what str.isspace() holds: nats-py drops such a name
_ONE_TOKEN_HEADER = re.compile(rb"NATS/1\.0\r\n([!#$%&'*+\-.^_`|~0-9A-Za-z]+):([^\r\n]*)\r\n\r\n")

_NAMES_KEPT = 256
_publishing: set[asyncio.Task[None]] = set()  # publish_queued's, without the fast path
# Callbacks that never wait (a reply's future set, a message put in a queue): delivered in the
# read loop once the fast path is on (``replies_inline``), a turn sooner than through their
# subscription's queue and task. nats-py's own for its requests' replies, and those marked.
_NEVER_WAITING: set[object] = {getattr(Client, "_request_sub_callback", None)}
_Callback = TypeVar("_Callback", bound=Callable[..., Awaitable[None]])


class _Block(enum.Enum):
    UNUSUAL = "nats-py reads it"  # read_headers': a block only nats-py's own reading takes


def _problem(connection: Client) -> str | None:
    try:
        found = version("nats-py")
    except PackageNotFoundError:
        return "nats-py's version is unknown"
    if tuple(int(part) for part in found.split(".")[:2] if part.isdigit()) not in CHECKED:
        checked = ", ".join(f"{major}.{minor}" for major, minor in CHECKED)
        return f"nats-py {found}, the fast path was checked on {checked}"
    return internals_problem(connection, *_USES)


class InlineParser(GuardedParser):
    """The guarded parser handing the messages of ``taken``'s subscriptions (sid -> callback)
    to their callback itself, and writing what waits to be written once a read is parsed."""

    taken: dict[int, Callable[[Msg], Awaitable[None]]]
    _answered = False

    async def parse(self, data: bytes = b"") -> None:
        await super().parse(data)
        if self._answered:  # (if parsing failed, nats-py's flusher still writes them)
            self._answered = False
            transport = self.nc._transport
            if write_now(self.nc) and transport is not None:
                # nats-py's flusher waits for the socket to take it; so does reading the next
                # request (nats-py leaves drain unannotated)
                await transport.drain()  # type: ignore[no-untyped-call]

    async def take(
        self, sid: int, subject: bytes, reply: bytes, payload: bytes, headers: bytes | None
    ) -> None:
        nc = self.nc
        nc.stats["in_msgs"] += 1
        nc.stats["in_bytes"] += len(payload)
        read: dict[str, str] | None = None
        if headers is not None:  # (most requests have none: no coroutine for them)
            plain = read_headers(headers)
            if not isinstance(plain, _Block):
                read = plain
            else:  # a status line, or no header line: nats-py's own reading
                try:
                    read = await nc._process_headers(headers)
                except Exception:  # read as none, as the guarded parser does and RobustMQ does
                    read = None
        msg = nc._build_message(sid, subject, reply, payload, read)
        self._answered = True
        try:
            await self.taken[sid](msg)
        except Exception:  # as nats-py's subscription task: the callback's error is its own
            log.exception("the callback of %r failed", msg.subject[:80])


def read_headers(block: bytes) -> dict[str, str] | _Block | None:
    """A request's header block read as nats-py's ``_process_headers`` reads it (its
    ``_parse_header_lines``, the same dict, None when empty) without its coroutine and its
    per-character name check: the broker reads a keyed SEND's one header on its hot path.
    ``_Block.UNUSUAL`` for what only nats-py reads (an inline status, a block not ``NATS/1.0``)."""
    one = _ONE_TOKEN_HEADER.fullmatch(block)
    if one is not None:  # (a keyed SEND's: one header named by a token, nothing to skip)
        return {one[1].decode(): one[2].strip().decode("utf-8", "replace")}
    if not block.startswith(_PLAIN_HEAD):
        return _Block.UNUSUAL
    read: dict[str, str] = {}
    for line in block[len(_PLAIN_HEAD) :].split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if not sep or not name.isascii():  # (nats-py skips both)
            continue
        key = name.strip().decode()
        if _SPACE_IN_NAME.search(key) is None:
            read[key] = value.strip().decode("utf-8", "replace")
    return read or None


def engage(connection: Client) -> bool:
    """Put the fast path on ``connection``, which ``protect`` guards. False when it is not
    guarded, when the environment turns the fast path off (said at INFO), or when this nats-py
    is not one it was checked on (a warning, once per process)."""
    if os.environ.get(ENV, "1") == "0":
        log.info("%s=0: the broker uses nats-py's public API only", ENV)
        return False
    if not isinstance(getattr(connection, "_ps", None), GuardedParser):
        return False  # protect() could not guard it (it said why)
    if not override_on("the broker's fast path", connection, _problem):
        return False
    parser = replace_parser(connection, InlineParser)
    if not isinstance(parser.taken, dict):
        parser.taken = {}
    return True


def _parser(connection: Client) -> InlineParser | None:
    parser = getattr(connection, "_ps", None)
    return parser if isinstance(parser, InlineParser) else None


def deliver_inline(connection: Client, subscription: Subscription) -> bool:
    """Hand ``subscription``'s messages to its callback in ``connection``'s read loop, False
    (nats-py's own delivery) without the fast path (``engage``). For a callback that returns
    without waiting: the connection reads nothing while it runs."""
    parser = _parser(connection)
    sid, callback = getattr(subscription, "_id", None), getattr(subscription, "_cb", None)
    if parser is None or not isinstance(sid, int) or callback is None:
        return False
    subs = connection._subs
    parser.taken = {known: cb for known, cb in parser.taken.items() if known in subs}
    parser.taken[sid] = callback
    return True


def never_waits(function: _Callback) -> _Callback:
    """Mark ``function`` (a subscription's callback, or the method it is bound from) as one
    that never waits: ``replies_inline`` delivers its messages in the read loop."""
    _NEVER_WAITING.add(function)
    return function


def replies_inline(connection: Client) -> int:
    """Hand the messages of ``connection``'s subscriptions whose callback never waits
    (``never_waits``: nats-py's requests' replies, the cluster store's reads) to it in the
    read loop (``deliver_inline``); how many. None without the fast path. (A JetStream
    request's answer then wakes its requester a turn sooner, with no task of nats-py's in
    between: every SEND's batch is acknowledged so, every FETCH's and ACK's reads answered.)"""
    if _parser(connection) is None:
        return 0
    count = 0
    for subscription in list(connection._subs.values()):
        callback = getattr(subscription, "_cb", None)
        if getattr(callback, "__func__", callback) not in _NEVER_WAITING:
            continue
        count += deliver_inline(connection, subscription)
    return count


def write_now(connection: Client) -> bool:
    """Write what waits to be written on ``connection`` now, as nats-py's flusher would on its
    next turn (it then finds nothing); False when nothing was written (without the fast path
    the flusher writes it). Not while connecting or reconnecting: nats-py keeps it for the new
    connection."""
    if _parser(connection) is None:
        return False
    transport = connection._transport
    pending = connection._pending
    if not pending or transport is None or not connection.is_connected or connection.is_connecting:
        return False
    transport.writelines(pending)
    connection._pending = []
    connection._pending_data_size = 0
    return True


def publish_queued(connection: Client, subject: str, payload: bytes) -> None:
    """nats-py's publish of ``payload`` to ``subject`` (no reply subject, no headers) from
    plain code (nats-py's publish is a coroutine). Raises as publish does: a bad subject, a
    closed or draining connection, a payload above max_payload. With the fast path, queued for
    the caller's ``write_now``, which writes all it queued in one go (and, while reconnecting,
    refused beyond the buffer nats-py would keep); without it, nats-py's publish in a task,
    whose failure is logged."""
    if not subject or _BAD_SUBJECT.search(subject):
        raise BadSubjectError
    if connection.is_closed:
        raise ConnectionClosedError
    if connection.is_draining_pubs:
        raise ConnectionDrainingError
    if len(payload) > connection.max_payload:
        raise MaxPayloadError
    if _parser(connection) is None:
        task = asyncio.get_running_loop().create_task(_publish(connection, subject, payload))
        _publishing.add(task)
        task.add_done_callback(_publishing.discard)
        return
    command = pub_cmd(subject, "", payload)
    if not connection.is_connected:
        limit = connection._max_pending_size
        if limit <= 0 or connection._pending_data_size + len(command) > limit:
            raise OutboundBufferLimitError
    connection.stats["out_msgs"] += 1
    connection.stats["out_bytes"] += len(payload)
    connection._pending.append(command)
    connection._pending_data_size += len(command)


async def _publish(connection: Client, subject: str, payload: bytes) -> None:
    try:
        await connection.publish(subject, payload)
    except Exception as exc:  # the requester may be gone; the broker serves on
        log.warning("could not publish to %s: %s", subject[:80], exc)


def engaged(connection: Client) -> bool:
    """Whether the fast path is on for ``connection`` (``engage``)."""
    return _parser(connection) is not None


def header_block(headers: Mapping[str, str]) -> bytes:
    """The header block nats-py's publish writes for ``headers``, byte for byte (names and
    values stripped, an empty name left out, a value's line breaks made spaces);
    ``BadHeaderError`` for a name that is no token, as nats-py raises."""
    lines = ["NATS/1.0\r\n"]
    for name, value in headers.items():
        if name not in _TOKEN_NAMES:  # (the few names a store writes: looked at once)
            key = name.strip()
            if not key:
                continue
            if not _HEADER_KEY.fullmatch(key):
                raise BadHeaderError(key)
            if key != name or len(_TOKEN_NAMES) >= _NAMES_KEPT:
                lines.append(f"{key}: {_value(value)}\r\n")
                continue
            _TOKEN_NAMES.add(name)
        lines.append(f"{name}: {_value(value)}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode()


def _value(value: str) -> str:
    value = value.strip()
    return value.translate(_VALUE_NEWLINES) if "\r" in value or "\n" in value else value


def queue_command(connection: Client, command: bytes, payload_size: int) -> bool:
    """A ``PUB``/``HPUB`` ``command`` (its payload ``payload_size`` bytes) queued as nats-py's
    publish queues it, written with what the connection writes next (a publish or request
    made after it in the same turn: the order kept), without a coroutine, a flush request
    or a check of the subject (the caller's). With the fast path only (``engaged``). Raises
    as publish does (a closed or draining connection, a payload above max_payload, the
    buffer full while reconnecting); False, nothing queued, where nats-py's publish would
    wait for its buffer to be written (the caller then publishes through nats-py)."""
    if connection.is_closed:
        raise ConnectionClosedError
    if connection.is_draining_pubs:
        raise ConnectionDrainingError
    limit, pending = connection._max_pending_size, connection._pending_data_size
    if not connection.is_connected and (limit <= 0 or payload_size + pending > limit):
        raise OutboundBufferLimitError
    if payload_size > connection.max_payload:
        raise MaxPayloadError
    size = pending + len(command)
    if limit > 0 and size > limit:
        return False
    connection.stats["out_msgs"] += 1
    connection.stats["out_bytes"] += payload_size
    connection._pending.append(command)
    connection._pending_data_size = size
    return True
