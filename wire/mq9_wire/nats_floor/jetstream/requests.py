"""The one JetStream client of the broker, on one NATS connection (the cluster
store's and the identities' alike): API requests with one deadline (``api``, ``stream_info``,
``account_info``), reads from a stream's leader (``STREAM.MSG.GET``: current), batched direct
gets (any replica; the ``min_last_seq`` they carry is ignored by nats-server 2.12 and later, so
a replica behind answers with what it has: docs/broker.md, "Reads from replicas"; nats-py has
none, so the request is sent here and its answers read up to the ``204 EOB`` status message),
and publishes that expect a subject's last sequence. (nats-py's ``nats.js`` is used only for
what must follow a stream as it grows: consumers.py.)

Every request has one deadline; a failure is one of this module's errors, in words, never
nats-py's exception: ``NoAnswer``, ``JetStreamError`` (the API's refusal, with its codes) and
``WriteRefused``. An owner whose callers expect errors of their own subclasses ``Requests``
with its own (the cluster store's are ``StorageError``s: storage/jetstream/requests.py). Every
publish on the connection, these and the atomic batches' alike, is checked against the
server's limits before it is written (``fits.py``: a publish the server cannot take closes the
connection): one that does not fit is a ``WriteRefused``, nothing sent.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from nats.errors import NoRespondersError

from ..fast_path import (
    deliver_inline,
    engage,
    engaged,
    header_block,
    never_waits,
    queue_command,
    replies_inline,
)
from ..fits import CONTROL_LINE, fence, publish_problem, size_problem
from ..guard import protect
from ..requests import request as nats_request
from .api import (
    API_PREFIX,
    BATCH_COMMIT,
    BATCH_ID,
    BATCH_SEQUENCE,
    DESCRIPTION,
    NUM_PENDING,
    STATUS,
    Batch,
    ErrorCode,
    StoredEntry,
    direct_entry,
    gotten,
    parse_headers,
)
from .api import wrong_last_sequence as _wrong_last_sequence
from .ready import Deadline, until_ready
from .window import (
    FILE_RECORD_MOST,
    ReadWindow,
    batch_bytes,
    batch_share,
    entry_most,
    file_record_size,
    json_share,
    largest_entry,
)

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient
    from nats.aio.msg import Msg

ENTRIES_MOST = 1000  # stream messages one atomic batch carries at most (the server's limit)
COUNTER_ADD = "Nats-Incr"  # what a counter stream's message adds to its subject's total
Entry = tuple[str, bytes, dict[str, str]]  # a stream message to write: subject, data, headers
# The most a batch adds to an entry's headers: an entry is checked with them before it joins one
BATCH_HEADERS = {
    BATCH_ID: uuid.UUID(int=0).hex,
    BATCH_SEQUENCE: str(ENTRIES_MOST),
    BATCH_COMMIT: "1",
}
# (their lines' bytes, "<name>: <value>\r\n": what an entry is checked with, no dict made)
_BATCH_LINES = sum(len(name) + len(value) + 4 for name, value in BATCH_HEADERS.items())

__all__ = [
    "Batch",
    "JetStreamError",
    "JetStreamFailure",
    "NoAnswer",
    "Requests",
    "StoredEntry",
    "WriteRefused",
    "api_request",
    "parse_headers",
    "stream_info",
]

# as long as nats-py's request inboxes ("_INBOX." + 22 + "." + 22): a plain subject, so its
# length is checked, not its tokens
_REPLY_BYTES = len("_INBOX.") + 22 + 1 + 22
# A server's max_payload up to which every publish it takes fits a file store record (its
# subject a control line at most, the record's own 38 bytes): no record size to check
_RECORD_SURE = FILE_RECORD_MOST - CONTROL_LINE - 64


class JetStreamFailure(Exception):
    """What the client raises: JetStream did not answer, refused, or a write would not fit."""


class NoAnswer(JetStreamFailure):
    """JetStream did not answer within the request's deadline (or could not be asked: the
    connection closed; ``no_responders``: nothing serves the JetStream API, JetStream off)."""

    def __init__(self, text: str, *, no_responders: bool = False) -> None:
        super().__init__(text)
        self.no_responders = no_responders


class JetStreamError(JetStreamFailure):
    """A JetStream API error: ``code`` (HTTP-like) and ``err_code`` (JetStream's own)."""

    def __init__(self, text: str, code: int = 0, err_code: int = 0) -> None:
        super().__init__(text)
        self.code, self.err_code = code, err_code

    @property
    def wrong_last_sequence(self) -> bool:
        """An expected last (subject) sequence was not the last: another write came first.
        A clustered stream says so with another code and no number ("wrong last sequence")."""
        return _wrong_last_sequence(self)


class WriteRefused(JetStreamFailure):
    """A write or request the servers could not take (a subject, header block or payload
    past their limits), refused before it was sent: sent, it would have closed the
    connection. ``WHO``: who says so (an owner's subclass names itself)."""

    WHO = "the JetStream client"

    def __init__(self, problem: str) -> None:
        super().__init__(f"{self.WHO} refused a write before sending it: {problem}")


def answer_of(subject: str, data: bytes, refused: type[JetStreamError]) -> dict[str, Any]:
    """A JetStream API answer's JSON; ``refused`` (its codes) when it says an error."""
    answer = json.loads(data)
    error = answer.get("error")
    if error:
        raise refused(
            f"JetStream refused {subject}: {error.get('description', error)}",
            int(error.get("code", 0)),
            int(error.get("err_code", 0)),
        )
    return answer  # type: ignore[no-any-return]


async def api_request(
    connection: NatsClient, subject: str, request: Mapping[str, Any] | None, *, timeout: float
) -> dict[str, Any]:
    """One JetStream API request (``subject`` after ``$JS.API.``), asked once on a connection
    no ``Requests`` owns (a cluster's JetStream awaited before a store opens): its answer, a
    ``JetStreamError`` when it says an error, nats-py's own errors when none came (no
    responders: no JetStream; a timeout: no leader yet), for its caller to tell apart."""
    body = b"" if request is None else json.dumps(request).encode()
    reply = await nats_request(connection, API_PREFIX + subject, body, timeout=timeout)
    return answer_of(subject, reply.data, JetStreamError)


async def stream_info(
    connection: NatsClient, stream: str, *, timeout: float
) -> dict[str, Any] | None:
    """``stream``'s info (its ``config`` and ``state``) asked once as ``api_request`` asks;
    None when there is no such stream."""
    try:
        return await api_request(connection, f"STREAM.INFO.{stream}", None, timeout=timeout)
    except JetStreamError as exc:
        if exc.code == 404:
            return None
        raise


class Requests:
    """JetStream requests on ``connection`` (opened and closed by its owner). What they raise
    is this class's ``no_answer``, ``api_error`` and ``write_refused``: a subclass names its
    own (subclasses of this module's)."""

    no_answer: type[NoAnswer] = NoAnswer
    api_error: type[JetStreamError] = JetStreamError
    write_refused: type[WriteRefused] = WriteRefused

    def __init__(self, connection: NatsClient, *, timeout: float) -> None:
        self.connection, self.timeout = connection, timeout
        fence(connection, self.write_refused)  # (every publish on it, the batches' too)
        self._inbox = connection.new_inbox()
        self._waiting: dict[str, asyncio.Queue[Msg]] = {}
        self._numbers = itertools.count()
        self._subscription: Any = None
        self._watchdog: asyncio.Task[None] | None = None
        self.sent_again = 0  # how many unanswered requests were sent again (tests count them)
        # what the reads on the connection may bring at once (window.py)
        self.window = ReadWindow()
        # the most one message of a stream can take, where its owner knows (buckets of
        # small values); a read's own bound (window.sized) first
        self.entry_most: dict[str, int] = {}
        # a connection of their own for the reads that may be large (``use_for_large``):
        # nats-server sends a connection's bytes in order, so a small answer behind a 31 MiB
        # one on the same connection waits until the broker has read it all
        self.large: NatsClient | None = None
        self._large_inbox = ""
        self._large_subscription: Any = None

    async def use_for_large(self, connection: NatsClient) -> None:
        """Send the reads larger than a small read (window.py) on ``connection`` (another
        to the same servers, opened and closed by the owner; fenced here as this one)."""
        fence(connection, self.write_refused)
        inbox = connection.new_inbox()
        self._large_subscription = await connection.subscribe(f"{inbox}.*", cb=self._route)
        self.large, self._large_inbox = connection, inbox

    def _carrier(self, share: int) -> tuple[NatsClient, str]:
        """The connection a read of ``share`` bytes goes on, and its inbox prefix."""
        large = self.large
        if large is not None and share > self.window.small_read and large.is_connected:
            return large, self._large_inbox
        return self.connection, self._inbox

    def room_for(self, stream: str) -> int:
        """The most one stored message a read of ``stream`` brings can take, as a
        max_payload (window.py's formulas): the read's bound when its caller set one
        (``window.sized``: the cluster store's, from what the mailbox's head says), else the
        stream's, else the servers' max_payload."""
        room = self.connection.max_payload
        bound = entry_most.get()
        if bound is None:
            bound = self.entry_most.get(stream)
        return room if bound is None else min(room, bound)

    async def start(self) -> None:
        # One subscription for every batched read: a read's answers come to an inbox below it
        self._subscription = await self.connection.subscribe(f"{self._inbox}.*", cb=self._route)
        deliver_inline(self.connection, self._subscription)  # (with the fast path on)

    def on_fast_path(self) -> bool:
        """Put the broker's fast path (nats_floor/fast_path.py) on this connection where nothing
        put it yet, and hand its answers to the requests waiting for them in the read loop
        (``replies_inline``: once a request was made, nats-py's inbox for them exists);
        whether it is on. A broker serving on the connection its store uses has put it there
        already; one enforcing credentials serves on a connection of its own, which
        left its store's on nats-py's tasks: a publish's coroutine and flush, a task a
        JetStream answer (the cost of credentials, on every SEND)."""
        connection = self.connection
        if not engaged(connection):
            watchdog = protect(connection)  # (reconnects it if its read loop ever stops)
            if not engage(connection):
                if watchdog is not None:
                    watchdog.cancel()
                return False
            self._watchdog = watchdog
        replies_inline(connection)
        return True

    async def stop(self) -> None:
        large, self.large = self.large, None
        if self._large_subscription is not None:
            subscription, self._large_subscription = self._large_subscription, None
            if large is not None and not large.is_closed:
                await subscription.unsubscribe()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._subscription is not None:
            subscription, self._subscription = self._subscription, None
            if not self.connection.is_closed:  # (closed by the server: nothing left to end)
                await subscription.unsubscribe()

    @never_waits  # (in the read loop on the fast path: fast_path.replies_inline)
    async def _route(self, message: Msg) -> None:
        queue = self._waiting.get(message.subject)
        if queue is not None:  # a read given up on: its late answers are dropped
            queue.put_nowait(message)

    # -- the API ---------------------------------------------------------------------------

    async def api(
        self,
        subject: str,
        request: Mapping[str, Any] | None,
        *,
        again: float | None = None,
        connection: NatsClient | None = None,
    ) -> dict[str, Any]:
        """A JetStream API request's answer; ``JetStreamError`` when it says an error.
        ``connection``: another than the client's own (a large read's).

        ``again``: the request is safe to send twice (a read, or a create of the same
        config), so an unanswered one is sent again after that many seconds, within the one
        deadline (``timeout``). A cluster electing a stream's leader drops the requests it
        gets meanwhile and answers a later one: without this the first one waits it all."""
        body = b"" if request is None else json.dumps(request).encode()
        deadline = Deadline(self.timeout, asyncio.get_running_loop().time)

        def ask() -> Any:
            wait = deadline.left() if again is None else min(again, deadline.left())
            subject_sent = API_PREFIX + subject
            on = self.connection if connection is None else connection
            return nats_request(on, subject_sent, body, timeout=max(wait, 0.001))

        def not_yet(exc: Exception) -> None:
            if isinstance(exc, WriteRefused):
                raise exc
            # nats-py: timeouts, no responders, a closed connection
            if again is None or not _unanswered(exc) or deadline.passed():
                text = str(exc) or type(exc).__name__
                raise self.no_answer(
                    f"JetStream did not answer {subject} (deadline {self.timeout:g} s): {text}",
                    no_responders=isinstance(exc, NoRespondersError),
                ) from None
            self.sent_again += 1

        reply = await until_ready(ask, not_yet, pause=0)
        return answer_of(subject, reply.data, self.api_error)

    async def stream_info(
        self, stream: str, *, again: float | None = None
    ) -> dict[str, Any] | None:
        """``stream``'s info (its ``config`` and ``state``, as the servers answer); None when
        there is no such stream."""
        try:
            return await self.api(f"STREAM.INFO.{stream}", None, again=again)
        except JetStreamError as exc:
            if exc.code == 404:
                return None
            raise

    async def account_info(self) -> dict[str, Any]:
        """The account's JetStream info: answered once JetStream has a leader."""
        return await self.api("INFO", None)

    async def leader_get(
        self,
        stream: str,
        *,
        seq: int | None = None,
        last_by_subject: str | None = None,
        next_by_subject: str | None = None,
    ) -> StoredEntry | None:
        """One message read by the stream's leader (current): by sequence, the last on a
        subject, or the first on a subject from ``seq`` on (wildcards allowed); None when
        there is none."""
        request: dict[str, Any] = {}
        if seq is not None:
            request["seq"] = seq
        if last_by_subject is not None:
            request["last_by_subj"] = last_by_subject
        if next_by_subject is not None:
            request["next_by_subj"] = next_by_subject
        # (its answer holds the message in base64: taken from the read window, window.py)
        share = json_share(self.room_for(stream))
        connection, _ = self._carrier(share)
        share = await self.window.take(share)
        try:
            answer = await self.api(f"STREAM.MSG.GET.{stream}", request, connection=connection)
        except JetStreamError as exc:
            if exc.err_code == ErrorCode.NO_MESSAGE_FOUND or exc.code == 404:
                return None
            raise
        finally:
            self.window.give(share)
        if connection is not self.connection:
            # a large answer: its JSON read, then its base64, each holding the loop a
            # while (the longer, the larger the message); what else
            # is ready (another client's small reads) goes between
            await asyncio.sleep(0)
        return gotten(answer["message"])

    async def direct_last(
        self, stream: str, subject: str, *, min_last_seq: int | None
    ) -> StoredEntry | None:
        """The last message on ``subject`` (wildcards allowed: the servers find it in their
        subject index, at a cost that does not grow with the stream) from any replica, asked to
        be at least as new as ``min_last_seq`` (ignored by nats-server 2.12 and later); None
        when none matches."""
        request: dict[str, Any] = {"last_by_subj": subject}
        if min_last_seq is not None:
            request["min_last_seq"] = min_last_seq
        batch = await self.direct_batch(stream, request, single=True)
        return batch.entries[0] if batch.entries else None

    async def direct_batch(
        self, stream: str, request: Mapping[str, Any], *, single: bool = False
    ) -> Batch:
        """A batched direct get (``batch``, ``next_by_subj`` or ``multi_last``, ``seq``,
        ``min_last_seq``, ``max_bytes``): the messages it returned, up to its end; with
        ``single``, a direct get of one message (no batch: no end is sent after it).

        A batch by sequence asks at most ``max_bytes`` of messages at a time (window.py: the
        servers send a batch at once, and more than the connection's pending bytes closes it)
        and, cut short by it, is asked on after its last message until it holds ``batch``
        or nothing more matches: its caller sees one batch."""
        if single or "multi_last" in request or "batch" not in request:
            return await self._direct(stream, request, single=single)
        wanted = int(request["batch"])
        entries: list[StoredEntry] = []
        asked = request
        while True:
            batch = await self._direct(stream, asked, count=wanted - len(entries))
            entries += batch.entries
            if len(entries) >= wanted or not batch.entries or batch.pending == 0:
                return Batch(entries, batch.pending)
            # cut short by its bytes: on from the message after its last
            asked = {k: v for k, v in request.items() if k not in ("start_time", "max_bytes")}
            asked["seq"], asked["batch"] = batch.entries[-1].seq + 1, wanted - len(entries)

    async def _direct(
        self, stream: str, request: Mapping[str, Any], *, single: bool = False, count: int = 1
    ) -> Batch:
        """One direct get's answers, once the read window has room for the most they may
        hold (window.py); a batch by sequence asks no more bytes than leave that room."""
        room = self.room_for(stream)
        if single:
            share = largest_entry(room)
        elif "multi_last" in request:
            share = 0  # (the last of each key of a bucket: small values, not windowed)
        else:
            most = batch_bytes(room, self.window.size)
            request = {**request, "max_bytes": min(int(request.get("max_bytes") or most), most)}
            share = batch_share(request["max_bytes"], count, room)
        connection, prefix = self._carrier(share)
        inbox = f"{prefix}.{next(self._numbers)}"
        queue: asyncio.Queue[Msg] = asyncio.Queue()
        self._waiting[inbox] = queue
        entries: list[StoredEntry] = []
        taken = 0
        try:
            async with asyncio.timeout(self.timeout):
                taken = await self.window.take(share) if share else 0
                await connection.publish(
                    f"{API_PREFIX}DIRECT.GET.{stream}", json.dumps(request).encode(), reply=inbox
                )
                while True:
                    message = await queue.get()
                    headers = dict(message.headers or {})
                    status = headers.get(STATUS)
                    if status is None:
                        entries.append(direct_entry(message.data, headers))
                        if single:
                            return Batch(entries, 0)
                        continue
                    if status == "204":  # the end of the batch
                        return Batch(entries, int(headers.get(NUM_PENDING) or 0))
                    if status == "404":  # nothing matched
                        return Batch(entries, 0)
                    text = headers.get(DESCRIPTION) or status
                    refused = f"JetStream refused a read of {stream}: {text}"
                    raise self.api_error(refused, int(status))
        except TimeoutError:
            raise self.no_answer(
                f"JetStream did not answer a read of {stream} within {self.timeout:g} s"
            ) from None
        finally:
            del self._waiting[inbox]
            if taken:
                self.window.give(taken)

    def check(
        self, subject: str, data: bytes, headers: dict[str, str] | None = None, more: int = 0
    ) -> None:
        """``WriteRefused`` (one line) when a publish of these would not fit the servers'
        limits (``more``: the bytes of further header lines it will carry). Said before
        nats-py's own subject check, which words it less; the fence on the connection checks
        each publish again with its real reply subject."""
        room = self.connection.max_payload
        problem = publish_problem(subject, "", len(data), headers, room, more, _REPLY_BYTES)
        if problem is not None:
            raise self.write_refused(problem)
        if room > _RECORD_SURE:  # (below it, what fits a publish fits a record)
            problem = _record_problem(subject, data, headers, more)
            if problem is not None:
                raise self.write_refused(problem)

    async def send(self, subject: str, data: bytes, headers: dict[str, str]) -> None:
        """Publish without waiting for an answer (an atomic batch's entries before its
        commit: the servers answer only the commit)."""
        self.check(subject, data, headers)
        await self.connection.publish(subject, data, headers=headers)

    def check_batched(self, entries: list[Entry]) -> None:
        """``WriteRefused`` when one of ``entries`` would not fit with a batch's headers."""
        for subject, data, headers in entries:
            self.check(subject, data, headers, _BATCH_LINES)

    async def publish_batch(self, entries: list[Entry]) -> int:
        """``entries`` (at most ``ENTRIES_MOST``, each passed by ``check_batched``) stored
        together or not at all, as one atomic batch (a lone entry: a plain publish); the last
        one's sequence."""
        if len(entries) == 1:
            subject, data, headers = entries[0]
            return await self.publish(subject, data, headers or None)
        batch_id = uuid.uuid4().hex
        last = len(entries)
        direct = engaged(self.connection)
        for number, (subject, data, own) in enumerate(entries, 1):
            headers = {**own, BATCH_ID: batch_id, BATCH_SEQUENCE: str(number)}
            if number < last:
                # (checked with a batch's headers already: the fence's check, once)
                if not (direct and self._queue(subject, data, headers)):
                    await self.connection.publish(subject, data, headers=headers)
                continue
            headers[BATCH_COMMIT] = "1"
            return await self._written(subject, data, headers)
        raise AssertionError("an empty batch")

    def _queue(self, subject: str, data: bytes, headers: dict[str, str]) -> bool:
        """An entry before a batch's commit queued on the connection's fast path, written
        with the commit (one write for the batch, not a publish's coroutine, header loop and
        flush each); False where nats-py's publish must take it. Its subject was checked
        (``check_batched``); what the fence checks of its size, checked here on the bytes
        themselves (the server's max_payload may have changed since)."""
        block = header_block(headers)
        total = len(block) + len(data)
        names = len(subject) if subject.isascii() else len(subject.encode())
        problem = size_problem(len(subject), names, len(block), total, self.connection.max_payload)
        if problem is not None:
            raise self.write_refused(problem)
        line = f"HPUB {subject}  {len(block)} {total}\r\n".encode()
        return queue_command(self.connection, b"".join((line, block, data, b"\r\n")), len(data))

    async def publish(
        self, subject: str, data: bytes, headers: dict[str, str] | None = None
    ) -> int:
        """Store ``data`` on ``subject``; its stream sequence. ``JetStreamError`` with
        ``WRONG_LAST_SEQUENCE`` when an expected sequence was not the last."""
        self.check(subject, data, headers)
        return await self._written(subject, data, headers)

    async def _written(self, subject: str, data: bytes, headers: dict[str, str] | None) -> int:
        answer = await self._acknowledged(subject, data, headers, "a write")
        if "seq" not in answer:
            raise self.no_answer(f"JetStream's answer to a write holds no sequence: {answer}")
        return int(answer["seq"])

    async def add(self, subject: str, by: int) -> int:
        """``by`` added to the counter ``subject`` (a counter stream's, ``allow_msg_counter``:
        the servers add it in one step, whoever adds at once); its new total."""
        answer = await self._acknowledged(subject, b"", {COUNTER_ADD: f"{by:+d}"}, "a count")
        if "val" not in answer:
            raise self.no_answer(f"JetStream's answer to a count holds no total: {answer}")
        return int(answer["val"])

    async def _acknowledged(
        self, subject: str, data: bytes, headers: dict[str, str] | None, what: str
    ) -> dict[str, Any]:
        try:
            reply = await nats_request(
                self.connection, subject, data, timeout=self.timeout, headers=headers
            )
        except WriteRefused:
            raise
        except Exception as exc:
            text = str(exc) or type(exc).__name__
            raise self.no_answer(f"JetStream did not acknowledge {what}: {text}") from None
        answer = json.loads(reply.data) if reply.data else {}
        error = answer.get("error")
        if error:
            raise self.api_error(
                f"JetStream refused {what}: {error.get('description', error)}",
                int(error.get("code", 0)),
                int(error.get("err_code", 0)),
            )
        return answer if isinstance(answer, dict) else {}


def _record_problem(
    subject: str, data: bytes, headers: dict[str, str] | None, more: int
) -> str | None:
    """Why a stream message is refused (one line, with the largest data taken) when larger
    than nats-server's file store keeps, which the servers would refuse ("message too large",
    naming no size) whatever their max_payload."""
    lines = more + sum(len(n) + len(v.encode()) + 4 for n, v in (headers or {}).items())
    block = lines + len("NATS/1.0\r\n\r\n") if lines else 0
    record = file_record_size(subject, block, len(data))
    if record <= FILE_RECORD_MOST:
        return None
    return (
        f"a stream message of {record} bytes as nats-server's file store keeps it "
        f"({block} bytes of headers, {len(data)} of data): it keeps at most "
        f"{FILE_RECORD_MOST} (32 MiB), so this one's data could be at most "
        f"{len(data) - (record - FILE_RECORD_MOST)} bytes"
    )


def _unanswered(exc: Exception) -> bool:
    """A try that got no answer in time (nats-py's timeout is a TimeoutError); no responders
    or a closed connection fail at once, as before."""
    return isinstance(exc, TimeoutError)
