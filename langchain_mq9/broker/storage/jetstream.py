"""The broker's state in a NATS JetStream stream, replicated on the NATS cluster it serves on.

Each request's changes (the hooks below, told under the engine's lock) are kept as an ordered
list of change records. The group commit: on leaving ``transaction()`` they join a queue of
batches, and the serving loop publishes the batches one at a time, each as ONE stream message;
while one is under way, the changes of the requests made meanwhile go together in the next.
The engine answers a request only once ``settled()`` says that everything told so far is
acknowledged, that is held by the stream's leader and a quorum of its replicas (2 of 3): an
answer that promises a change, and an answer that shows state (FETCH, QUERY, DISCOVER), never
comes before what it shows is replicated. A request's changes are in one record, whole or not
at all, and the loss of one server of three loses nothing that was answered. The serving loop
publishes on a connection of its own: no hop to another thread per request.

Each publish also says which record it follows (``Nats-Expected-Last-Sequence``), and the
connections buffer nothing while they reconnect: a write this broker gave up on (and answered
as an error) that reaches the stream late, or a write of a second broker on the stream, makes
the next write fail and the engine restore itself from the stream, never a state the engine
does not hold (a reused msg_id).

A publish that is not acknowledged (the stream's leader is gone and a new one not yet elected,
about 6.5 s measured on loopback) is retried with the same ``Nats-Msg-Id`` until
``commit_timeout``: JetStream keeps a message id for its duplicate window (2 minutes), so a
retry of a publish that was stored after all is not stored twice; the requests made meanwhile
wait in the batches behind it. When no retry is acknowledged in time, every request waiting is
answered with an error (``lost()``), and the engine restores itself from the stream, which is
the truth, before it serves again (``BrokerEngine._check_usable``).

What the engine asks synchronously (opening, ``restore``, which reads the stream from its
first message, a change made outside any event loop) runs on this store's own event loop, on a
thread of its own, with its own connection.

Snapshots keep the stream bounded, and a restore short. Once the records written since the
last snapshot take ``snapshot_bytes`` (8 MiB), or as many bytes as that snapshot if it took
more, the serving broker takes the engine's state under the engine's lock (the containers
copied, not the messages: about 2 ms at 100,000 messages), makes it into change records on another
thread, and writes it between the requests' records: a beginning right after the record whose
state it is, then one part after each batch of requests, then an end; each follows the last
record like any other (``Nats-Expected-Last-Sequence``), so a stale broker's snapshot fails
after a takeover's fence. Once its end is stored, the records before its beginning are purged.
A restore reads on from the stream's first record: at a complete snapshot's end, the state is
its parts and the records since its beginning; a snapshot without an end (its broker died, or
was fenced) is skipped (see "snapshots" below). Streams written before snapshots read as before.

Known limit (issue #55): one broker process per stream: a second one's writes make the first's
fail (see above).

The record (version 2): the UTF-8 JSON ``{"v": 2, "blobs": [n, ...], "changes": [ops, ...]}``,
a newline, then the bytes of every payload and header the ops refer to: each request's ops
(``[[kind, ...], ...]``) refer to theirs as ``[start, end]`` into its own ``n`` bytes, which
follow those of the requests before it (no base64: a message as large as the server takes needs
little more room in its record). Version 1 (one request a record, ``{"v": 1, "ops": ops}``) is
still read.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import json
import logging
import uuid
from collections import deque
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar, cast

from ... import protocol as p
from ...client.nats_guard import deliver_inline, flush_in_order, protect, write_now
from ...protocol import Priority
from ...semantic.ranking import AgentEntry
from ..cluster.survey import replicas_for
from ..state.mailbox import Mailbox, StoredMessage
from .base import Restorable, Storage, StorageError
from .loop_thread import LoopThread

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext

log = logging.getLogger("langchain_mq9.broker")

RECORD_VERSION = 2  # 1: one request's changes a record (still read)
SNAPSHOT_VERSION = 3  # a snapshot's records: its begin, its parts, its end
# A snapshot is written once the records written since the last one take this many bytes, or
# as many as the last snapshot took if that is more (so writing snapshots costs at most about
# as much as the records themselves)
DEFAULT_SNAPSHOT_BYTES = 8 * 1024 * 1024
# A snapshot's part takes this much at most (a message alone may take more, up to a record's
# size): a request waits for one part at most, and a restore reads smaller JSON documents
# (parts of 1 MB took longer to read back: the garbage collector's passes over the state)
_PART_BYTES = 256 * 1024
DEFAULT_STREAM = "MQ9_STATE"
SUBJECT_PREFIX = "mq9state"
# How long a transaction retries its publish: longer than a leader election (6.6 s measured)
DEFAULT_COMMIT_TIMEOUT = 15.0
_ATTEMPT_TIMEOUT = 2.0  # one publish's wait for its acknowledgement
_RETRY_PAUSE = 0.1
_CONNECT_TIMEOUT = 10.0
# Bytes a record takes beyond its changes' ops and blobs: the NATS headers (a Nats-Msg-Id of
# 32 hex digits and a count, an expected sequence, "NATS/1.0" and line ends) and the JSON
# framing; and each change's share of it (its blob size, commas)
_NO_PEERS_YET = 10005  # JetStream's error code: not enough servers for the replicas yet
_RECORD_ROOM = 256
_CHANGE_ROOM = 24
# A delayed message's release beside its write, at its widest: ["dr",<a u64>],
_RELEASE_ROOM = len('["dr",18446744073709551615],')
# A request's ops as a record holds them: made once (json.dumps with an option makes one a call)
_OPS_ENCODER = json.JSONEncoder(ensure_ascii=False)

T = TypeVar("T")


class JetStreamStorage(Storage):
    """The engine's state in the JetStream stream ``stream`` on the NATS servers ``servers``.

    >>> storage = JetStreamStorage(["nats://h1:4222", "nats://h2:4222"], replicas=3)
    >>> engine = BrokerEngine(storage=storage)   # replays the stream

    ``replicas``: the stream's replicas when it is created (None: 3 where the cluster tells of 3
    or more servers, else 1); an existing stream keeps its own (``self.replicas`` says which).
    """

    stores_later = True  # the group commit

    def __init__(
        self,
        servers: list[str],
        *,
        replicas: int | None = None,
        stream: str = DEFAULT_STREAM,
        commit_timeout: float = DEFAULT_COMMIT_TIMEOUT,
        snapshot_bytes: int | None = DEFAULT_SNAPSHOT_BYTES,
    ) -> None:
        if replicas is not None and not 1 <= replicas <= 5:
            raise ValueError("replicas must be 1 to 5 (JetStream's limit)")
        if snapshot_bytes is not None and snapshot_bytes < 1:
            raise ValueError("snapshot_bytes must be at least 1 (None: no snapshots)")
        self.servers = servers
        self.stream = stream
        self.subject = f"{SUBJECT_PREFIX}.{stream.lower()}"
        self.commit_timeout = commit_timeout
        self.snapshot_bytes = snapshot_bytes
        self.restored: dict[str, int] = {}
        self.records_read = 0  # the stream messages the last restore read
        # The engine this store restored (a snapshot is taken of it), the snapshot under way,
        # the bytes of the records written since the last complete one, and its own size
        self._engine: Restorable | None = None
        self._snapshot: _Snapshot | None = None
        self._tail_bytes = 0
        self._snapshot_size = 0
        # The changes of the request under way (told under the engine's lock)
        self._ops: list[list[Any]] = []
        self._blobs = bytearray()
        self._delayed_ids: dict[int, int] = {}  # engine heap seq -> the record's delayed id
        self._held: dict[int, tuple[str, int, StoredMessage]] = {}  # delayed id -> its message
        self._next_delayed_id = 1
        self._last_seq = 0  # the stream's last record as this broker knows it
        self._writer_id = uuid.uuid4().hex  # with a count, each record's Nats-Msg-Id
        self._count = 0
        # The group commit, on the serving loop: batches of changes in order, the first
        # under way once ``sent``; each a record, its future set once JetStream acked it
        self._batches: deque[_Batch] = deque()
        self._publisher: asyncio.Task[None] | None = None
        # A snapshot's record being written (on this store's own loop: ``flush`` waits for it)
        self._snapshot_write: concurrent.futures.Future[int] | None = None
        self._lost: StorageError | None = None
        self._epoch = 0  # moved on by every loss and restore: a late ack then counts for nothing
        self._writer: _RecordWriter | None = None  # on the serving loop
        self._writer_loop: asyncio.AbstractEventLoop | None = None
        # Our own event loop on a thread of ours, for what the engine asks synchronously:
        # opening, restoring (replaying the stream), a change made outside any event loop
        self._own = LoopThread("mq9-jetstream")
        self._loop = self._own.loop
        try:
            self.replicas = self._run(self._open(replicas), _CONNECT_TIMEOUT * 2)
        except BaseException:
            self.close()
            raise

    # -- the connection ------------------------------------------------------------------------

    def _run(self, work: Coroutine[Any, Any, T], timeout: float) -> T:
        return self._own.run(work, timeout)

    async def _open(self, replicas: int | None) -> int:
        from nats.errors import NoRespondersError
        from nats.js.api import StorageType, StreamConfig
        from nats.js.errors import NotFoundError

        try:
            self._nc = await _connect(self.servers)
        except Exception as exc:
            raise StorageError(f"cannot connect to NATS at {self.servers}: {exc}") from None
        self._js = self._nc.jetstream(timeout=_ATTEMPT_TIMEOUT)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _CONNECT_TIMEOUT
        while True:  # a cluster just started elects its JetStream leader first
            try:
                info = await self._js.stream_info(self.stream)
                return info.config.num_replicas or 1
            except NotFoundError:
                break
            except Exception as exc:
                # no responders: no JetStream there at all; else it may come within seconds
                if isinstance(exc, NoRespondersError) or loop.time() >= deadline:
                    raise StorageError(
                        f"JetStream is not available on {self.servers}: "
                        f"{type(exc).__name__}: {exc} (start nats-server with -js, or with "
                        "jetstream in its config)"
                    ) from None
                await asyncio.sleep(_RETRY_PAUSE)
        if replicas is None:  # the servers the cluster tells of, each counted once
            replicas = replicas_for(self._nc._server_info)
        config = StreamConfig(
            name=self.stream,
            subjects=[self.subject],
            storage=StorageType.FILE,
            num_replicas=replicas,
        )
        while True:
            try:
                await self._js.add_stream(config)
                return replicas
            except Exception as exc:
                # "no suitable peers for placement" (10005): the servers of a cluster just
                # started have not all joined yet
                joining = getattr(exc, "err_code", None) == _NO_PEERS_YET
                if not joining or loop.time() >= deadline:
                    raise StorageError(
                        f"cannot create the JetStream stream {self.stream}: {exc}"
                    ) from None
                await asyncio.sleep(_RETRY_PAUSE)

    def close(self) -> None:
        self._lose(StorageError("the broker's store is closed"))
        writer, loop = self._writer, self._writer_loop
        self._writer = self._writer_loop = None
        if writer is not None and loop is not None and _running_on(loop):
            self._closing = loop.create_task(writer.close())  # closed on its own loop
        if self._snapshot_write is not None:  # a snapshot's record: given up with the rest
            self._snapshot_write.cancel()
        self._own.close(getattr(self, "_nc", None))

    # -- writing -------------------------------------------------------------------------------

    def transaction(self) -> JetStreamStorage:
        return self

    def __enter__(self) -> JetStreamStorage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self._ops:
            return
        change = _Change(_OPS_ENCODER.encode(self._ops).encode(), bytes(self._blobs))
        self._ops, self._blobs = [], bytearray()
        limit = self._record_limit()
        if change.size > limit:  # alone, no record can hold it: nothing of it is kept
            failure = StorageError(
                "the broker could not save the change, so it did not make it: it takes "
                f"{change.size} bytes in JetStream, more than a record of the NATS server's "
                f"max_payload ({self._nc.max_payload}) holds"
            )
            self._lose(failure)
            raise failure
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # plain code (BrokerEngine.drop_group): stored before returning
            alone = _Batch(None)
            alone.add(change)
            self._store_now(alone)
            return
        last = self._batches[-1] if self._batches else None
        if last is None or last.sent or last.closed or last.size + change.size > limit:
            last = _Batch(loop.create_future())
            self._batches.append(last)
        last.add(change)
        self._kick(loop)
        if self._snapshot is not None and self._snapshot.loop is not loop:
            self._snapshot = None  # of a loop that stopped serving: its rest never comes
        if self._snapshot_due():
            try:
                self._take_snapshot(loop, last)
            except Exception:  # a bug, or a loop closing: the request's change goes on
                log.exception("could not take a snapshot of the broker's state")
                self._snapshot = None

    def _kick(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._publisher is None or self._publisher.done():
            self._publisher = loop.create_task(self._publish_batches())

    def settled(self) -> asyncio.Future[None] | None:
        if not self._batches:
            return None
        # the batch's own future, shared by its requests: a waiter shields it (engine.handle)
        # or never cancels it (serve.py answers a batch's requests together once it is done)
        return self._batches[-1].done

    def flush(self) -> None:
        if not self._batches or self._batches[0].sent:
            return  # nothing queued, or a record under way: the queue follows it shortly
        loop = self._batches[0].done.get_loop()
        if loop.is_running() and not _running_on(loop):
            return  # another thread's loop publishes them, shortly
        writing = self._snapshot_write
        if writing is not None:  # the record it follows (if it fails, so do these)
            with contextlib.suppress(Exception):
                writing.result(self.commit_timeout + _ATTEMPT_TIMEOUT)
        for batch in self._batches:
            self._store_now(batch)
        for batch in self._batches:
            batch.done.set_result(None)
        self._batches.clear()

    def lost(self) -> StorageError | None:
        return self._lost

    def message_refused(self, address: str, message: StoredMessage) -> str | None:
        blobs = len(message.payload) + len(message.header or b"")
        # room for the release a delayed message is written with, in the same change
        limit = self._record_limit() - _RELEASE_ROOM
        if blobs + message_op_bound(address, message) + _CHANGE_ROOM <= limit:
            return None  # (every SEND asks: its JSON below is a tenth of a SEND's own time)
        widest = [self._nc.max_payload] * 2  # a blob's place, at its widest
        op = ["ms", address, p.MAX_U64, p.MAX_U64, self._message_columns(message, widest, widest)]
        size = len(json.dumps(op, ensure_ascii=False).encode()) + blobs + _CHANGE_ROOM
        if size <= limit:
            return None
        return (
            f"the message takes {size} bytes in a JetStream record, more than the NATS "
            f"server's max_payload ({self._nc.max_payload}) leaves for one: send a smaller "
            "message, or raise max_payload in the servers' configuration"
        )

    def entry_refused(self, entry: AgentEntry) -> str | None:
        ops: list[list[Any]] = [["as", entry.name, entry.agent_info, p.MAX_U64]]
        if entry.card is not None:
            ops.append(["is", entry.card_name, entry.name, entry.agent_info, p.MAX_U64])
        size = len(_OPS_ENCODER.encode(ops).encode()) + _CHANGE_ROOM
        if size <= self._record_limit():
            return None
        return (
            f"the registration takes {size} bytes in a JetStream record, more than the NATS "
            f"server's max_payload ({self._nc.max_payload}) leaves for one: register a "
            "smaller card, or raise max_payload in the servers' configuration"
        )

    def _record_limit(self) -> int:
        """The most bytes of changes one record holds: the server's max_payload less the
        room its headers and the record's framing take (nats-server counts the headers). The
        servers announce it (INFO): that of the store's own connection, and of the serving
        writer's, which may be on another server of the cluster, whichever is smaller."""
        writer = self._writer
        payload = self._nc.max_payload
        if writer is not None:
            payload = min(payload, writer.nc.max_payload)
        return payload - _RECORD_ROOM

    async def _publish_batches(self) -> None:
        """Publish the queued batches in order, one record each, one at a time: while one is
        under way, the requests made meanwhile join the next. A snapshot under way goes
        between them, one of its records after each batch: a request waits for one at most."""
        epoch = self._epoch
        snapshot_turn = False
        while epoch == self._epoch:
            snapshot = self._snapshot
            if snapshot is not None and snapshot.may_begin():
                # right after the batch whose state it holds: the state as of this record
                seq = await self._send(snapshot.begin, "a snapshot's beginning", epoch, own=True)
                if seq is None:
                    return
                if self._snapshot is snapshot:  # not given up by a flush meanwhile
                    snapshot.first_seq = seq
                    self._tail_bytes = 0  # the records after it are its tail
                continue
            ready = snapshot is not None and snapshot.first_seq and snapshot.records
            if self._batches and not (snapshot_turn and ready):
                batch = self._batches[0]
                batch.sent = True
                record = batch.record()
                if await self._send(record, f"{batch.changes} changes", epoch) is None:
                    return
                self._tail_bytes += len(record)
                self._batches.popleft()
                batch.done.set_result(None)
            elif ready:
                assert snapshot is not None
                if not await self._write_snapshot_record(snapshot, epoch):
                    return
            else:
                return
            snapshot_turn = not snapshot_turn

    async def _send(self, record: bytes, what: str, epoch: int, *, own: bool = False) -> int | None:
        """Publish ``record`` after the last one; its sequence, or None when it failed (every
        change not yet stored is then lost) or this store restored itself meanwhile.
        ``own``: on this store's own loop (a snapshot's record, which ``flush``, called on this
        loop, may have to wait for), else on a connection of this loop."""
        self._count += 1
        msg_id = f"{self._writer_id}-{self._count}"
        try:
            if own:
                writing = asyncio.run_coroutine_threadsafe(
                    self._store_own(record, msg_id, epoch), self._loop
                )
                self._snapshot_write = writing
                seq = await asyncio.wrap_future(writing)
            else:
                seq = await self._publish(await self._serving_writer(), record, msg_id)
        except Exception as exc:  # a StorageError, or a bug: no request may wait forever
            if not isinstance(exc, StorageError):
                log.exception("storing %s in JetStream failed", what)
            if epoch == self._epoch:
                log.error("could not store %s in JetStream: %s", what, exc)
                self._lose(
                    StorageError(
                        f"the broker could not save the change, so it did not make it: {exc}"
                    )
                )
            return None
        finally:
            self._snapshot_write = None
        if epoch != self._epoch:  # restored meanwhile: the stream is the truth, re-read
            return None
        self._last_seq = max(self._last_seq, seq)  # a flush may have stored more since
        return seq

    async def _store_own(self, record: bytes, msg_id: str, epoch: int) -> int:
        seq = await self._publish(self._js, record, msg_id)
        if epoch == self._epoch:  # (else restored meanwhile: the stream's last is known)
            self._last_seq = seq  # before a flush waiting for it goes on
        return seq

    # -- snapshots -----------------------------------------------------------------------------

    def _snapshot_due(self) -> bool:
        if self.snapshot_bytes is None or self._snapshot is not None or self._engine is None:
            return False
        return self._tail_bytes >= max(self.snapshot_bytes, self._snapshot_size)

    def _take_snapshot(self, loop: asyncio.AbstractEventLoop, last: _Batch) -> None:
        """(under the engine's lock, every change told so far in ``last`` or before) Take the
        engine's state, which is the stream's once ``last`` is stored: its records are made on
        another thread, and written after ``last``'s, between the batches that follow."""
        last.closed = True  # the changes told from now on are not in the snapshot
        snapshot = _Snapshot(uuid.uuid4().hex[:12], last, loop)
        self._snapshot = snapshot
        state = _capture(cast(_Engine, self._engine), self._held)
        limit = min(self._record_limit(), _PART_BYTES)
        made = loop.run_in_executor(None, _snapshot_parts, state, snapshot.id, limit)
        made.add_done_callback(lambda done: self._snapshot_made(snapshot, done, loop))

    def _snapshot_made(
        self,
        snapshot: _Snapshot,
        made: asyncio.Future[list[bytes]],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        if self._snapshot is not snapshot:  # lost or restored meanwhile
            return
        if made.cancelled() or made.exception() is not None:
            log.error("could not make a snapshot of the broker's state: %r", made.exception())
            self._snapshot = None  # its beginning alone, if written, is skipped on reading
            return
        parts = made.result()
        largest = max(len(part) for part in parts)
        if largest > self._record_limit():
            # a message kept from when the server took larger records: no record holds this
            # part, and writing it would fail every request waiting behind it
            log.error(
                "a snapshot of the broker's state is given up: a part of it takes %d bytes, "
                "more than a record of the NATS server's max_payload (%d) holds",
                largest,
                self._nc.max_payload,
            )
            self._snapshot = None
            self._tail_bytes = 0  # tried again once as many records were written again
            return
        snapshot.records.extend(parts)
        snapshot.records.append(_snapshot_head(snapshot.id, "end", len(parts)))
        snapshot.size = sum(len(part) for part in parts)
        self._kick(loop)

    async def _write_snapshot_record(self, snapshot: _Snapshot, epoch: int) -> bool:
        """Write the snapshot's next record; after its end, purge the records before its
        beginning. False: the write failed (every change not yet stored is lost)."""
        record = snapshot.records[0]
        if await self._send(record, "a snapshot's part", epoch, own=True) is None:
            return False
        snapshot.records.popleft()
        if snapshot.records:
            return True
        self._snapshot = None
        self._snapshot_size = snapshot.size
        try:  # the snapshot is complete: no reader needs what it holds
            writer = await self._serving_writer()
            await writer.js.purge_stream(self.stream, seq=snapshot.first_seq)
        except Exception as exc:  # kept until the next snapshot's purge: nothing is lost
            log.warning("could not purge stream %s before a snapshot: %s", self.stream, exc)
        return True

    def _lose(self, failure: StorageError) -> None:
        """Every change not yet stored is lost: its requests are answered ``failure``, and
        the engine restores itself from the stream before it serves again (``lost``)."""
        self._lost = failure
        self._epoch += 1
        self._snapshot = None
        for batch in self._batches:
            if not batch.done.done():
                batch.done.set_exception(failure)
                batch.done.exception()  # retrieved: a batch no request waits for logs nothing
        self._batches.clear()

    def _store_now(self, batch: _Batch) -> None:
        """Store ``batch`` before returning, on this store's own loop (no serving loop)."""
        self._count += 1
        msg_id = f"{self._writer_id}-{self._count}"
        if self._snapshot is not None and not self._snapshot.first_seq:
            # its beginning must follow the record of its state at once: not this one's
            self._snapshot = None
        record = batch.record()
        try:
            self._last_seq = self._run(
                self._publish(self._js, record, msg_id), self.commit_timeout + _ATTEMPT_TIMEOUT
            )
            self._tail_bytes += len(record)
        except StorageError as exc:
            log.error("could not store a transaction in JetStream: %s", exc)
            failure = StorageError(
                f"the broker could not save the change, so it did not make it: {exc}"
            )
            self._lose(failure)
            raise failure from None

    async def _serving_writer(self) -> _RecordWriter:
        """The writer of a connection on the running (serving) loop, opened on first use:
        publishing on it needs no hop to another thread."""
        loop = asyncio.get_running_loop()
        writer = self._writer
        if writer is None or self._writer_loop is not loop or writer.nc.is_closed:
            try:
                writer = await _RecordWriter.open(self.servers, self.stream)
            except Exception as exc:
                raise StorageError(f"cannot connect to NATS at {self.servers}: {exc}") from None
            self._writer, self._writer_loop = writer, loop
        return writer

    async def _publish(
        self, js: JetStreamContext | _RecordWriter, data: bytes, msg_id: str
    ) -> int:
        """Publish one record, retried with the same ``msg_id`` until ``commit_timeout``;
        returns its stream sequence."""
        from nats.js.errors import APIError

        headers = {"Nats-Msg-Id": msg_id, "Nats-Expected-Last-Sequence": str(self._last_seq)}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.commit_timeout
        attempts = 0
        while True:
            attempts += 1
            if self._nc.is_closed:
                raise StorageError("the connection to NATS is closed")
            try:
                ack = await js.publish(self.subject, data, headers=headers)
                if attempts > 1:
                    log.warning("a record was stored after %d attempts", attempts)
                return ack.seq
            except APIError as exc:
                if exc.code is not None and exc.code < 500 and exc.code != 408:
                    # 400 "wrong last sequence": the stream holds a record this broker did
                    # not read (a write it gave up on that landed late, another broker)
                    raise StorageError(f"JetStream refused the write: {exc}") from None
                failure: Exception = exc  # 503: no stream leader yet
            except Exception as exc:  # no responders, timeout, reconnecting: retried
                failure = exc
            if loop.time() + _RETRY_PAUSE >= deadline:
                raise StorageError(
                    f"JetStream did not acknowledge the write in {self.commit_timeout:g} s "
                    f"({attempts} attempts; last: {type(failure).__name__}: {failure})"
                )
            await asyncio.sleep(_RETRY_PAUSE)

    def _note(self, *op: Any) -> None:
        self._ops.append(list(op))

    def _blob(self, data: bytes | None) -> list[int] | None:
        if data is None:
            return None
        start = len(self._blobs)
        self._blobs += data
        return [start, len(self._blobs)]

    def _message(self, message: StoredMessage) -> list[Any]:
        return self._message_columns(
            message, self._blob(message.header), self._blob(message.payload)
        )

    @staticmethod
    def _message_columns(
        message: StoredMessage, header: list[int] | None, payload: list[int] | None
    ) -> list[Any]:
        return [
            message.priority.value,
            message.create_time,
            message.key,
            list(message.tags) if message.tags else None,
            header if message.header is not None else None,
            message.expire_at,
            payload,
        ]

    def mailbox_created(self, mailbox: Mailbox) -> None:
        self._note(
            "mc",
            mailbox.address,
            mailbox.shard,
            mailbox.create_time,
            mailbox.ttl,
            mailbox.desc,
            mailbox.next_id,
            mailbox.start_offset,
        )

    def mailbox_expired(self, mailbox: Mailbox) -> None:
        self._note("mx", mailbox.address)

    def mailbox_removed(self, mailbox: Mailbox) -> None:
        self._note("mr", mailbox.address)

    def message_stored(self, mailbox: Mailbox, message: StoredMessage) -> None:
        self._note("ms", mailbox.address, mailbox.next_id, message.msg_id, self._message(message))

    def message_removed(self, mailbox: Mailbox, msg_id: int) -> None:
        self._note("md", mailbox.address, msg_id)

    def mailbox_start_moved(self, mailbox: Mailbox) -> None:
        self._note("mo", mailbox.address, mailbox.start_offset)

    def delayed_added(self, seq: int, due: int, address: str, message: StoredMessage) -> None:
        delayed_id = self._next_delayed_id
        self._next_delayed_id += 1
        self._delayed_ids[seq] = delayed_id
        self._held[delayed_id] = (address, due, message)
        self._note("da", delayed_id, address, due, self._message(message))

    def delayed_released(self, seq: int) -> None:
        delayed_id = self._delayed_ids.pop(seq, None)
        if delayed_id is not None:
            self._held.pop(delayed_id, None)
            self._note("dr", delayed_id)

    def offset_committed(self, lane: str, shard: str, offset: int) -> None:
        self._note("oc", lane, shard, offset)

    def offset_dropped(self, lane: str, shard: str) -> None:
        self._note("od", lane, shard)

    def agent_saved(self, entry: AgentEntry) -> None:
        self._note("as", entry.name, entry.agent_info, entry.create_time)

    def agent_removed(self, entry: AgentEntry) -> None:
        self._note("ar", entry.name)

    def index_saved(self, entry: AgentEntry) -> None:
        self._note("is", entry.card_name, entry.name, entry.agent_info, entry.create_time)

    def index_removed(self, card_name: str) -> None:
        self._note("ir", card_name)

    # -- reading back --------------------------------------------------------------------------

    def restore(self, engine: Restorable) -> None:
        # Also after a failed write: what was noted since the last restore is void, and a
        # record still under way counts for nothing (the next write's expected sequence
        # fails if it landed after the replay, and the engine restores again)
        self._ops, self._blobs = [], bytearray()
        self._delayed_ids.clear()
        self._held.clear()
        if self._batches:
            self._lose(StorageError("the broker's state was read back from the stream"))
        self._epoch += 1
        self._lost = None
        self._snapshot = None
        self._engine = engine
        try:
            replay = self._run(self._replay(), self.commit_timeout + _CONNECT_TIMEOUT)
        except StorageError as exc:
            raise StorageError(f"cannot read the broker's state from JetStream: {exc}") from None
        state = replay.state
        self._next_delayed_id = max(state.delayed, default=0) + 1
        self._delayed_ids = state.load_into(engine)
        self._held = dict(state.delayed)
        self.restored = state.counts()
        self.records_read = replay.read
        self._tail_bytes, self._snapshot_size = replay.tail_bytes, replay.snapshot_size

    async def _replay(self) -> _Replay:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.commit_timeout
        while True:  # during a leader election the stream answers nothing for a while
            try:
                return await self._read_stream()
            except _NotARecord as exc:
                raise StorageError(str(exc)) from None
            except Exception as exc:
                if loop.time() >= deadline:
                    raise StorageError(f"{type(exc).__name__}: {exc}") from None
                await asyncio.sleep(_RETRY_PAUSE)

    async def _read_stream(self) -> _Replay:
        """Every record of the stream, from its first, applied in order."""
        info = await self._js.stream_info(self.stream)
        state = _Replay()
        last = info.state.last_seq
        if info.state.messages:
            # Many records read back at once make many objects that stay: the garbage
            # collector's passes over them cost up to a third of the time (100,000 messages)
            with _cycle_collection_paused():
                await self._apply_stream(state, last)
        self._last_seq = last
        return state

    async def _apply_stream(self, state: _Replay, last: int) -> None:
        """Take every record of the stream up to ``last``, in order."""
        from nats.js.api import DeliverPolicy

        sub = await self._js.subscribe(
            self.subject, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
        )
        try:
            seq = 0
            while seq < last:
                msg = await sub.next_msg(timeout=_ATTEMPT_TIMEOUT)
                seq = msg.metadata.sequence.stream
                try:
                    state.take(msg.data)
                except (ValueError, KeyError, TypeError, IndexError) as exc:
                    raise _NotARecord(
                        f"stream {self.stream} message {seq} is not a broker record this "
                        f"version reads: {type(exc).__name__}: {exc}"
                    ) from None
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


@contextlib.contextmanager
def _cycle_collection_paused() -> Iterator[None]:
    """Python's cycle collection off meanwhile, for the whole process (objects are still
    freed as they were: only reference cycles wait); on again after, if it was."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _running_on(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether this thread is running ``loop``."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class _Ack(NamedTuple):
    seq: int


class _RecordWriter:
    """The serving loop's connection for the records, and JetStream's publish on it without
    nats-py's request machinery: the acknowledgement comes to an inbox of the writer's own,
    handed over in the connection's read loop (``nats_guard.deliver_inline``), and the record
    leaves at once (``write_now``), not on the flusher's next turn (bench/HOTPATH.md). The
    same answers as ``JetStreamContext.publish``: nats-py's ``APIError``
    for JetStream's error, ``NoStreamResponseError`` when nothing answers, a timeout after
    ``_ATTEMPT_TIMEOUT``; on a connection nats_guard cannot take, that publish itself."""

    def __init__(self, nc: NatsClient) -> None:
        self.nc = nc
        self.js = nc.jetstream(timeout=_ATTEMPT_TIMEOUT)
        self._inbox = nc.new_inbox() + "."
        self._waiting: dict[str, asyncio.Future[Msg]] = {}
        self._watchdog: asyncio.Task[None] | None = None
        self._inline = False

    @classmethod
    async def open(cls, servers: list[str], stream: str) -> _RecordWriter:
        """A writer on a connection near ``stream``'s leader (closed again if it cannot start)."""
        writer = cls(await _connect_near_leader(servers, stream))
        try:
            return await writer.start()
        except BaseException:
            await writer.close()
            raise

    async def start(self) -> _RecordWriter:
        self._watchdog = protect(self.nc)
        if self._watchdog is not None:
            subscription = await self.nc.subscribe(self._inbox + "*", cb=self._acknowledged)
            self._inline = deliver_inline(self.nc, subscription)
            await flush_in_order(self.nc, int(_ATTEMPT_TIMEOUT))
        return self

    async def _acknowledged(self, msg: Msg) -> None:
        waiting = self._waiting.pop(msg.subject, None)
        if waiting is not None and not waiting.done():
            waiting.set_result(msg)

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> _Ack:
        if not self._inline:
            return _Ack((await self.js.publish(subject, payload, headers=headers)).seq)
        from nats.js.errors import APIError, NoStreamResponseError

        inbox = self._inbox + uuid.uuid4().hex  # unguessable, as nats-py's request tokens
        loop = asyncio.get_running_loop()
        answered: asyncio.Future[Msg] = loop.create_future()
        self._waiting[inbox] = answered
        # (not asyncio.wait_for: its waiter costs the answer two more turns of the loop)
        timer = loop.call_later(_ATTEMPT_TIMEOUT, _time_out, answered)
        try:
            await self.nc.publish(subject, payload, reply=inbox, headers=headers)
            write_now(self.nc)
            msg = await answered
        finally:
            timer.cancel()
            self._waiting.pop(inbox, None)
        if msg.headers and msg.headers.get("Status") == "503":  # nothing answers: no leader
            raise NoStreamResponseError
        answer = json.loads(msg.data)
        if "error" in answer:
            raise APIError.from_error(answer["error"])
        return _Ack(int(answer["seq"]))

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        await self.nc.close()


def _time_out(answered: asyncio.Future[Msg]) -> None:
    if not answered.done():
        answered.set_exception(TimeoutError("JetStream did not acknowledge the write in time"))


async def _connect(servers: list[str], *, in_order: bool = False) -> NatsClient:
    import nats

    return await nats.connect(
        servers,
        connect_timeout=2,
        # no buffering while reconnecting: a write given up on must not land later
        pending_size=0,
        max_reconnect_attempts=-1,
        allow_reconnect=True,
        reconnect_time_wait=0.25,
        dont_randomize=in_order,
    )


async def _connect_near_leader(servers: list[str], stream: str) -> NatsClient:
    """A connection to the server that holds ``stream``'s leader, when one of ``servers`` is
    it: a record then crosses no route between servers to the leader and back (a SEND's p50
    under load, bench 14b: about an eighth less). Else, or when that cannot be told, a
    connection to any of them. After a leader moves the connection stays where it is."""
    nc = await _connect(servers)
    if len(servers) < 2:
        return nc
    try:
        info = await nc.jetstream(timeout=_ATTEMPT_TIMEOUT).stream_info(stream)
        leader = info.cluster.leader if info.cluster is not None else None
    except Exception:  # no stream yet (it is made on this store's own connection first)
        return nc
    if leader is None or _server_name(nc) in (leader, None):
        return nc
    for url in servers:
        try:
            candidate = await _connect([url, *(s for s in servers if s != url)], in_order=True)
        except Exception:
            continue
        if _server_name(candidate) == leader:
            await nc.close()
            return candidate
        await candidate.close()
    return nc


def _server_name(nc: NatsClient) -> str | None:
    """The name of the server ``nc`` is connected to, from the INFO it sent (nats-py keeps it
    in a private attribute, in the version pinned in pyproject.toml: None when it does not)."""
    info = getattr(nc, "_server_info", None)
    name = info.get("server_name") if isinstance(info, dict) else None
    return name if isinstance(name, str) else None


@dataclass
class _Change:
    """One request's changes: its ops as JSON (blob places relative to ``blobs``)."""

    ops: bytes
    blobs: bytes

    @property
    def size(self) -> int:
        return len(self.ops) + len(self.blobs) + _CHANGE_ROOM


# A stored message's op beyond its text: its numbers (u64s and a blob's places at their widest,
# 20 digits each), the priority, "null"s, quotes, commas and brackets; and a text's character at
# its widest in JSON (a control character as \uXXXX)
_MESSAGE_OP_ROOM = 512
_WIDEST_CHARACTER = 6


def message_op_bound(address: str, message: StoredMessage) -> int:
    """At least the bytes a stored message's op takes in a record's JSON, its blobs aside,
    from lengths alone (``JetStreamStorage.message_refused`` writes it only when near the
    limit)."""
    texts = len(address) + len(message.key or "") + sum(len(tag) + 1 for tag in message.tags)
    return _WIDEST_CHARACTER * texts + _MESSAGE_OP_ROOM


@dataclass
class _Batch:
    """Requests' changes stored together in one record; ``done`` is set once JetStream
    acknowledged it (None: stored outside any event loop)."""

    done: asyncio.Future[None] | Any
    changes: int = 0
    size: int = 0
    sent: bool = False
    closed: bool = False  # no more changes join it (a snapshot holds the state up to it)
    _ops: list[bytes] = field(default_factory=list)
    _blobs: list[bytes] = field(default_factory=list)

    def add(self, change: _Change) -> None:
        self._ops.append(change.ops)
        self._blobs.append(change.blobs)
        self.changes += 1
        self.size += change.size

    def record(self) -> bytes:
        sizes = ",".join(str(len(blobs)) for blobs in self._blobs)
        head = b'{"v":%d,"blobs":[%s],"changes":[%s]}\n' % (
            RECORD_VERSION,
            sizes.encode(),
            b",".join(self._ops),
        )
        return head + b"".join(self._blobs)


class _NotARecord(Exception):
    """A message of the stream this version cannot read: retrying will not help."""


# -- snapshots: the engine's whole state as change records ---------------------------------------
#
# A snapshot is written into the stream between the other records: its beginning (the stream
# holds the snapshot's state as of this record), its parts (the state as change ops, each part
# a record of at most the records' size), then its end (how many parts). Each is the UTF-8 JSON
# ``{"v": 3, "snap": [id, "begin" | "part" | "end", n], ...}``, a part's other keys those of a
# version 2 record. A reader applies the records as they come, and keeps those after an open
# snapshot's beginning aside as well; at its end, the snapshot's parts and then these records
# are the state. A snapshot without an end (its broker died, or was fenced) is skipped. Once
# the end is stored, the stream is purged of the records before the beginning.


class _Engine(Restorable, Protocol):
    """What a snapshot is taken of: a ``BrokerEngine`` as its store sees it."""

    mailboxes: dict[str, Mailbox]  # the live ones
    topics: dict[str, Mailbox]  # every log


@dataclass
class _Snapshot:
    """A snapshot being written: of the state as of ``after``, the batch before it."""

    id: str
    after: _Batch
    loop: asyncio.AbstractEventLoop  # the serving loop that writes it
    first_seq: int = 0  # its beginning's sequence, once written
    records: deque[bytes] = field(default_factory=deque)  # its parts and end, once made
    size: int = 0  # its parts' bytes

    @property
    def begin(self) -> bytes:
        return _snapshot_head(self.id, "begin", 0)

    def may_begin(self) -> bool:
        return not self.first_seq and self.after.done.done()


@dataclass
class _Log:
    """A mailbox's log as a snapshot takes it (its fields change once the lock is let go)."""

    address: str
    columns: list[Any]  # shard, create_time, ttl, desc, next_id, start_offset
    live: bool
    messages: dict[int, StoredMessage]


@dataclass
class _Taken:
    logs: list[_Log]
    offsets: list[tuple[str, str, int]]
    agents: list[AgentEntry]
    index: list[tuple[str, AgentEntry]]
    delayed: list[tuple[int, tuple[str, int, StoredMessage]]]


def _capture(engine: _Engine, held: dict[int, tuple[str, int, StoredMessage]]) -> _Taken:
    """(under the engine's lock) The engine's state, copied as little as it may be: the
    containers the engine changes in place, not the messages and entries, which it never does
    (a delayed message changes when it is released, after its release is told: a record after
    the snapshot's state says so)."""
    live = engine.mailboxes
    logs = [
        _Log(
            box.address,
            [box.shard, box.create_time, box.ttl, box.desc, box.next_id, box.start_offset],
            live.get(box.address) is box,
            dict(box.messages),
        )
        for box in engine.topics.values()
    ]
    return _Taken(
        logs,
        [
            (lane, shard, n)
            for lane, shards in engine.offsets.items()
            for shard, n in shards.items()
        ],
        list(engine.registry.entries.values()),
        list(engine.registry.index.items()),
        list(held.items()),
    )


def _snapshot_parts(taken: _Taken, snapshot_id: str, limit: int) -> list[bytes]:
    """``taken`` as the records of snapshot ``snapshot_id``'s parts, of ``limit`` bytes at
    most each (but for a message that alone takes more, which a record holds, see
    ``message_refused``): the change ops that replayed onto nothing give the state."""
    parts: list[bytes] = []
    ops: list[bytes] = []
    blobs = bytearray()
    size = 0

    def encoded(op: list[Any], message: StoredMessage | None) -> bytes:
        if message is not None:  # its blobs' places in this part's
            start = len(blobs)
            header = None if message.header is None else [start, start + len(message.header)]
            at = start + len(message.header or b"")
            payload = [at, at + len(message.payload)]
            op = [*op, JetStreamStorage._message_columns(message, header, payload)]
        return json.dumps(op, ensure_ascii=False).encode()

    def add(op: list[Any], message: StoredMessage | None = None) -> None:
        nonlocal size
        blob = b"" if message is None else (message.header or b"") + message.payload
        text = encoded(op, message)
        if ops and size + len(text) + len(blob) + _CHANGE_ROOM > limit:
            parts.append(_snapshot_part(snapshot_id, len(parts), ops, blobs))
            ops.clear()
            blobs.clear()
            size = 0
            text = encoded(op, message)
        ops.append(text)
        blobs.extend(blob)
        size += len(text) + len(blob) + 1

    for log_ in taken.logs:
        add(["mc", log_.address, *log_.columns])
        if not log_.live:
            add(["mx", log_.address])
        next_id = log_.columns[4]
        for msg_id in sorted(log_.messages):
            add(["ms", log_.address, next_id, msg_id], log_.messages[msg_id])
    for lane, shard, offset in taken.offsets:
        add(["oc", lane, shard, offset])
    for entry in taken.agents:
        add(["as", entry.name, entry.agent_info, entry.create_time])
    for card, entry in taken.index:
        add(["is", card, entry.name, entry.agent_info, entry.create_time])
    for delayed_id, (address, due, message) in taken.delayed:
        add(["da", delayed_id, address, due], message)
    if ops or not parts:
        parts.append(_snapshot_part(snapshot_id, len(parts), ops, blobs))
    return parts


def _snapshot_head(snapshot_id: str, kind: str, n: int) -> bytes:
    return b'{"v":%d,"snap":["%s","%s",%d]}\n' % (
        SNAPSHOT_VERSION,
        snapshot_id.encode(),
        kind.encode(),
        n,
    )


def _snapshot_part(snapshot_id: str, n: int, ops: list[bytes], blobs: bytearray) -> bytes:
    head = b'{"v":%d,"snap":["%s","part",%d],"blobs":[%d],"changes":[[%s]]}\n' % (
        SNAPSHOT_VERSION,
        snapshot_id.encode(),
        n,
        len(blobs),
        b",".join(ops),
    )
    return head + bytes(blobs)


@dataclass
class _Opened:
    """A snapshot met while reading the stream, its end not yet."""

    id: str
    state: _State = field(default_factory=lambda: _State())
    parts: int = 0
    size: int = 0
    after: list[tuple[dict[str, Any], bytes]] = field(default_factory=list)  # records since
    after_bytes: int = 0


@dataclass
class _Replay:
    """The stream read in order: the state of its last complete snapshot and the records
    after it (or of all its records, when it holds no complete snapshot)."""

    state: _State = field(default_factory=lambda: _State())
    opened: _Opened | None = None
    read: int = 0  # stream messages read
    tail_bytes: int = 0  # the bytes of the records after the last complete snapshot
    snapshot_size: int = 0  # the bytes of its parts

    def take(self, data: bytes) -> None:
        self.read += 1
        head, _, blobs = data.partition(b"\n")
        record = json.loads(head)
        opened = self.opened
        if record.get("v") != SNAPSHOT_VERSION:
            self.state.apply_record(record, blobs)
            self.tail_bytes += len(data)
            if opened is not None:
                opened.after.append((record, blobs))
                opened.after_bytes += len(data)
            return
        snapshot_id, kind, n = record["snap"]
        if kind == "begin":  # an open one before it never ends: its broker was cut off
            self.opened = _Opened(snapshot_id)
        elif opened is None or opened.id != snapshot_id:
            return  # the rest of a snapshot that was given up
        elif kind == "part":
            if n != opened.parts:
                raise ValueError(f"snapshot {snapshot_id} part {n}, expected {opened.parts}")
            opened.state.apply_record(record, blobs)
            opened.parts += 1
            opened.size += len(data)
        elif kind == "end":
            if n != opened.parts:
                raise ValueError(f"snapshot {snapshot_id} ends after {n} parts, not {opened.parts}")
            for after, after_blobs in opened.after:
                opened.state.apply_record(after, after_blobs)
            self.state, self.opened = opened.state, None
            self.tail_bytes, self.snapshot_size = opened.after_bytes, opened.size
        else:
            raise ValueError(f"snapshot record kind {kind!r}")


@dataclass
class _Mailbox:
    shard: str
    create_time: int
    ttl: int
    desc: str
    next_id: int
    start_offset: int
    live: bool = True
    messages: dict[int, StoredMessage] = field(default_factory=dict)


@dataclass
class _State:
    """What the stream's records add up to, as the SQLite store's tables hold it."""

    mailboxes: dict[str, _Mailbox] = field(default_factory=dict)
    orphans: dict[str, dict[int, StoredMessage]] = field(default_factory=dict)
    delayed: dict[int, tuple[str, int, StoredMessage]] = field(default_factory=dict)
    offsets: dict[tuple[str, str], int] = field(default_factory=dict)
    agents: dict[str, tuple[str, int]] = field(default_factory=dict)  # in registration order
    index: dict[str, tuple[str, str, int]] = field(default_factory=dict)  # in writing order

    def apply_record(self, record: dict[str, Any], blobs: bytes) -> None:
        """Apply a record: its head (the JSON before its newline), read, and its blobs."""
        version = record.get("v")
        if version == 1:  # one request's changes
            self._apply(record["ops"], blobs)
        elif version in (RECORD_VERSION, SNAPSHOT_VERSION):  # changes, their blob bytes
            start = 0
            for ops, size in zip(record["changes"], record["blobs"], strict=True):
                self._apply(ops, blobs[start : start + size])
                start += size
        else:
            raise ValueError(f"record version {version!r}, expected 1 or {RECORD_VERSION}")

    def _apply(self, ops: list[list[Any]], blobs: bytes) -> None:
        for kind, *args in ops:
            getattr(self, f"_op_{kind}")(blobs, *args)

    # One method per change record: replaying them in order rebuilds the state

    def _op_mc(self, _b: bytes, address: str, shard: str, *fields: Any) -> None:
        create_time, ttl, desc, next_id, start_offset = fields
        old = self.mailboxes.get(address)
        # a new log does not take up the messages an interrupted write left under its name
        self.orphans.pop(address, None)
        messages = old.messages if old is not None else {}
        self.mailboxes[address] = _Mailbox(
            shard, create_time, ttl, desc, next_id, start_offset, True, messages
        )

    def _op_mx(self, _b: bytes, address: str) -> None:
        if address in self.mailboxes:
            self.mailboxes[address].live = False

    def _op_mr(self, _b: bytes, address: str) -> None:
        self.mailboxes.pop(address, None)

    def _op_ms(
        self, blobs: bytes, address: str, next_id: int, msg_id: int, cols: list[Any]
    ) -> None:
        message = _message_from(msg_id, cols, blobs)
        mailbox = self.mailboxes.get(address)
        if mailbox is None:
            self.orphans.setdefault(address, {})[msg_id] = message
            return
        mailbox.messages[msg_id] = message
        mailbox.next_id = next_id

    def _op_md(self, _b: bytes, address: str, msg_id: int) -> None:
        if address in self.mailboxes:
            self.mailboxes[address].messages.pop(msg_id, None)

    def _op_mo(self, _b: bytes, address: str, start_offset: int) -> None:
        if address in self.mailboxes:
            self.mailboxes[address].start_offset = start_offset

    def _op_da(
        self, blobs: bytes, delayed_id: int, address: str, due: int, cols: list[Any]
    ) -> None:
        self.delayed[delayed_id] = (address, due, _message_from(-1, cols, blobs))

    def _op_dr(self, _b: bytes, delayed_id: int) -> None:
        self.delayed.pop(delayed_id, None)

    def _op_oc(self, _b: bytes, lane: str, shard: str, offset: int) -> None:
        self.offsets[(lane, shard)] = offset

    def _op_od(self, _b: bytes, lane: str, shard: str) -> None:
        self.offsets.pop((lane, shard), None)

    def _op_as(self, _b: bytes, name: str, agent_info: str, create_time: int) -> None:
        self.agents.pop(name, None)  # a replaced registration goes last, as in SQLite
        self.agents[name] = (agent_info, create_time)

    def _op_ar(self, _b: bytes, name: str) -> None:
        self.agents.pop(name, None)

    def _op_is(self, _b: bytes, card: str, name: str, agent_info: str, create_time: int) -> None:
        self.index.pop(card, None)
        self.index[card] = (name, agent_info, create_time)

    def _op_ir(self, _b: bytes, card: str) -> None:
        self.index.pop(card, None)

    def load_into(self, engine: Restorable) -> dict[int, int]:
        """Fill ``engine``; returns the engine's heap seq of each delayed id."""
        for address, kept in self.mailboxes.items():
            mailbox = Mailbox(
                address, create_time=kept.create_time, ttl=kept.ttl, desc=kept.desc,
                shard=kept.shard,
            )  # fmt: skip
            mailbox.start_offset = kept.start_offset
            engine.add_mailbox(mailbox, live=kept.live)
            for msg_id in sorted(kept.messages):
                mailbox.insert(kept.messages[msg_id])
            # ids of deleted messages stay used
            mailbox.next_id = max(kept.next_id, mailbox.next_id)
        for (lane, shard), offset in self.offsets.items():
            engine.offsets.setdefault(lane, {})[shard] = offset
        seqs = {
            engine.hold_delayed(due, address, message): delayed_id
            for delayed_id, (address, due, message) in sorted(self.delayed.items())
        }
        registered = engine.registry.entries
        for name, (agent_info, create_time) in self.agents.items():
            registered[name] = AgentEntry.make(name, agent_info, create_time)
        for name, agent_info, create_time in self.index.values():
            entry = registered.get(name)
            if entry is None or (entry.agent_info, entry.create_time) != (agent_info, create_time):
                entry = AgentEntry.make(name, agent_info, create_time)  # unregistered since
            if entry.card is None:
                raise StorageError(f"the search index holds {name!r}, which is no A2A card")
            engine.registry.put_index(entry)
        for address, messages in self.orphans.items():
            log.warning("skipped %d messages of mailbox %r, not stored", len(messages), address)
        return seqs

    def counts(self) -> dict[str, int]:
        return {
            "mailboxes": len(self.mailboxes),
            "messages": sum(len(m.messages) for m in self.mailboxes.values()),
            "delayed": len(self.delayed),
            "offsets": len(self.offsets),
            "agents": len(self.agents),
            "skipped": sum(len(m) for m in self.orphans.values()),
        }


def _message_from(msg_id: int, cols: list[Any], blobs: bytes) -> StoredMessage:
    priority, create_time, key, tags, header, expire_at, payload = cols
    return StoredMessage(
        msg_id,
        _slice(blobs, payload) or b"",
        Priority(priority),
        create_time,
        key,
        tuple(tags) if tags else (),
        _slice(blobs, header),
        expire_at,
    )


def _slice(blobs: bytes, where: list[int] | None) -> bytes | None:
    return None if where is None else blobs[where[0] : where[1]]
