"""``JetStreamStorage``: the engine's state in a NATS JetStream stream, replicated on the cluster.

The group commit: each request's changes join a queue of batches, the serving loop publishes
the batches one at a time, each ONE record; ``settled()`` completes once everything told so far
is acknowledged by a quorum of the stream's replicas, and the engine answers only then. Each
publish follows the last record it knows (``Nats-Expected-Last-Sequence``) and is retried with
the same ``Nats-Msg-Id`` until ``commit_timeout``; one that fails makes every waiting request an
error (``lost()``), and the engine restores itself from the stream, the truth. Snapshots
(snapshot.py) keep the stream bounded. What the engine asks synchronously runs on this store's
own loop thread. One broker process per stream (issue #55). docs/broker.md tells the whole.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any, TypeVar, cast

from .... import protocol as p
from ...._nats.info import server_info
from ....semantic.ranking import AgentEntry
from ...cluster.survey import replicas_for
from ...state.mailbox import StoredMessage
from ..base import Restorable, Storage, StorageError
from ..loop_thread import LoopThread, Patience
from .changes import ChangeNotes
from .records import (
    CHANGE_ROOM,
    OPS_ENCODER,
    RECORD_ROOM,
    RELEASE_ROOM,
    Batch,
    Change,
    message_columns,
    message_op_bound,
    snapshot_head,
)
from .replay import NotARecord, Replay, read_stream
from .snapshot import PART_BYTES, Engine, Snapshot, capture, snapshot_parts
from .writer import ATTEMPT_TIMEOUT, RecordWriter

if TYPE_CHECKING:
    from nats.js import JetStreamContext

log = logging.getLogger("langchain_mq9.broker")

# A snapshot is written once the records written since the last one take this many bytes, or
# as many as the last snapshot took if that is more (so writing snapshots costs at most about
# as much as the records themselves)
DEFAULT_SNAPSHOT_BYTES = 8 * 1024 * 1024
DEFAULT_STREAM = "MQ9_STATE"
SUBJECT_PREFIX = "mq9state"
# How long a transaction retries its publish: longer than a stream leader election
DEFAULT_COMMIT_TIMEOUT = 15.0
_RETRY_PAUSE = 0.1
_CONNECT_TIMEOUT = 10.0
_PATIENCE = Patience(ask=ATTEMPT_TIMEOUT, wait=_CONNECT_TIMEOUT, pause=_RETRY_PAUSE)
_NO_PEERS_YET = 10005  # JetStream's error code: not enough servers for the replicas yet

T = TypeVar("T")


class JetStreamStorage(ChangeNotes, Storage):
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
        self._snapshot: Snapshot | None = None
        self._tail_bytes = 0
        self._snapshot_size = 0
        ChangeNotes.__init__(self)  # the changes of the request under way
        self._last_seq = 0  # the stream's last record as this broker knows it
        self._writer_id = uuid.uuid4().hex  # with a count, each record's Nats-Msg-Id
        self._count = 0
        # The group commit, on the serving loop: batches of changes in order, the first
        # under way once ``sent``; each a record, its future set once JetStream acked it
        self._batches: deque[Batch] = deque()
        self._publisher: asyncio.Task[None] | None = None
        # A snapshot's record being written (on this store's own loop: ``flush`` waits for it)
        self._snapshot_write: concurrent.futures.Future[int] | None = None
        self._lost: StorageError | None = None
        self._epoch = 0  # moved on by every loss and restore: a late ack then counts for nothing
        self._writer: RecordWriter | None = None  # on the serving loop
        self._writer_loop: asyncio.AbstractEventLoop | None = None
        # Our own event loop on a thread of ours, for what the engine asks synchronously:
        # opening, restoring (replaying the stream), a change made outside any event loop
        self._own = LoopThread("mq9-jetstream")
        self._loop = self._own.loop
        try:
            self.replicas = self._own.run(self._open(replicas), _CONNECT_TIMEOUT * 2)
        except BaseException:
            self.close()
            raise

    # -- the connection ------------------------------------------------------------------------

    async def _open(self, replicas: int | None) -> int:
        from nats.js.api import StorageType, StreamConfig
        from nats.js.errors import NotFoundError

        loop = asyncio.get_running_loop()
        deadline = loop.time() + _CONNECT_TIMEOUT
        self._nc, self._js, info = await self._own.open(
            self.servers, lambda js: js.stream_info(self.stream), NotFoundError, _PATIENCE
        )
        if info is not None:
            return info.config.num_replicas or 1
        if replicas is None:  # the servers the cluster tells of, each counted once
            replicas = replicas_for(server_info(self._nc))
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
        self._own.close()

    # -- writing -------------------------------------------------------------------------------

    def transaction(self) -> JetStreamStorage:
        return self

    def __enter__(self) -> JetStreamStorage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self._ops:
            return
        change = Change(OPS_ENCODER.encode(self._ops).encode(), bytes(self._blobs))
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
            alone = Batch(None)
            alone.add(change)
            self._store_now(alone)
            return
        last = self._batches[-1] if self._batches else None
        if last is None or last.sent or last.closed or last.size + change.size > limit:
            last = Batch(loop.create_future())
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
                writing.result(self.commit_timeout + ATTEMPT_TIMEOUT)
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
        limit = self._record_limit() - RELEASE_ROOM
        if blobs + message_op_bound(address, message) + CHANGE_ROOM <= limit:
            return None  # (every SEND asks: its JSON below is a tenth of a SEND's own time)
        widest = [self._nc.max_payload] * 2  # a blob's place, at its widest
        op = ["ms", address, p.MAX_U64, p.MAX_U64, message_columns(message, widest, widest)]
        size = len(json.dumps(op, ensure_ascii=False).encode()) + blobs + CHANGE_ROOM
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
        size = len(OPS_ENCODER.encode(ops).encode()) + CHANGE_ROOM
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
        return payload - RECORD_ROOM

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

    def _take_snapshot(self, loop: asyncio.AbstractEventLoop, last: Batch) -> None:
        """(under the engine's lock, every change told so far in ``last`` or before) Take the
        engine's state, which is the stream's once ``last`` is stored: its records are made on
        another thread, and written after ``last``'s, between the batches that follow."""
        last.closed = True  # the changes told from now on are not in the snapshot
        snapshot = Snapshot(uuid.uuid4().hex[:12], last, loop)
        self._snapshot = snapshot
        state = capture(cast(Engine, self._engine), self._held)
        limit = min(self._record_limit(), PART_BYTES)
        made = loop.run_in_executor(None, snapshot_parts, state, snapshot.id, limit)
        made.add_done_callback(lambda done: self._snapshot_made(snapshot, done, loop))

    def _snapshot_made(
        self,
        snapshot: Snapshot,
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
        snapshot.records.append(snapshot_head(snapshot.id, "end", len(parts)))
        snapshot.size = sum(len(part) for part in parts)
        self._kick(loop)

    async def _write_snapshot_record(self, snapshot: Snapshot, epoch: int) -> bool:
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

    def _store_now(self, batch: Batch) -> None:
        """Store ``batch`` before returning, on this store's own loop (no serving loop)."""
        self._count += 1
        msg_id = f"{self._writer_id}-{self._count}"
        if self._snapshot is not None and not self._snapshot.first_seq:
            # its beginning must follow the record of its state at once: not this one's
            self._snapshot = None
        record = batch.record()
        try:
            self._last_seq = self._own.run(
                self._publish(self._js, record, msg_id), self.commit_timeout + ATTEMPT_TIMEOUT
            )
            self._tail_bytes += len(record)
        except StorageError as exc:
            log.error("could not store a transaction in JetStream: %s", exc)
            failure = StorageError(
                f"the broker could not save the change, so it did not make it: {exc}"
            )
            self._lose(failure)
            raise failure from None

    async def _serving_writer(self) -> RecordWriter:
        """The writer of a connection on the running (serving) loop, opened on first use:
        publishing on it needs no hop to another thread."""
        loop = asyncio.get_running_loop()
        writer = self._writer
        if writer is None or self._writer_loop is not loop or writer.nc.is_closed:
            try:
                writer = await RecordWriter.open(self.servers, self.stream)
            except Exception as exc:
                raise StorageError(f"cannot connect to NATS at {self.servers}: {exc}") from None
            self._writer, self._writer_loop = writer, loop
        return writer

    async def _publish(self, js: JetStreamContext | RecordWriter, data: bytes, msg_id: str) -> int:
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
            replay = self._own.run(self._replay(), self.commit_timeout + _CONNECT_TIMEOUT)
        except StorageError as exc:
            raise StorageError(f"cannot read the broker's state from JetStream: {exc}") from None
        state = replay.state
        self._next_delayed_id = max(state.delayed, default=0) + 1
        self._delayed_ids = state.load_into(engine)
        self._held = dict(state.delayed)
        self.restored = state.counts()
        self.records_read = replay.read
        self._tail_bytes, self._snapshot_size = replay.tail_bytes, replay.snapshot_size

    async def _replay(self) -> Replay:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.commit_timeout
        while True:  # during a leader election the stream answers nothing for a while
            try:
                replay = await read_stream(self._js, self.stream, self.subject)
                self._last_seq = replay.last_seq
                return replay
            except NotARecord as exc:
                raise StorageError(str(exc)) from None
            except Exception as exc:
                if loop.time() >= deadline:
                    raise StorageError(f"{type(exc).__name__}: {exc}") from None
                await asyncio.sleep(_RETRY_PAUSE)


def _running_on(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether this thread is running ``loop``."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
