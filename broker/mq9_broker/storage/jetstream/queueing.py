"""Each mailbox's writes waiting to be numbered (numbering.py), one batch of a mailbox at a
time: the servers refuse a second expectation of a subject while one is in process, so while a
batch is under way the next writes gather, and go as the next batch.

The first write of a burst (no batch of its mailbox under way) is written by its caller's own
task, alone (one task less a SEND while each mailbox has one SEND at a time); what joins
its mailbox's queue meanwhile goes on a drain task, as a delayed message's write always does
(``enqueue``). A batch's senders are answered together, so their next SENDs come back together
a hop later: the drain gathers them, for at most ``GATHER_SECONDS``, into one batch.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mq9_wire.protocol import Priority

from ..mailbox_store import Once, StorageError
from .batches import ENTRIES_MOST
from .requests import StorageJetStreamError

BATCH_MOST = 256  # writes one atomic batch carries at most
GATHER_SECONDS = 0.003  # the longest a batch waits for the last batch's senders to send again


@dataclass(slots=True)
class Write:
    """One message waiting for its msg_id: where, what, and the SEND's answer to come."""

    priority: Priority
    key_token: str
    data: bytes
    headers: dict[str, str]
    future: asyncio.Future[int]
    # a staged (delayed) message this write numbers: removed once written
    staged: int = 0
    tags: tuple[str, ...] = ()  # its distinct tags, each an index entry before it
    # the most messages its mailbox may hold for it to be written (None: no bound)
    room: int | None = None
    # a keyed SEND: its key's entry goes first in its part, expecting none (keyed.py)
    once: Once | None = None

    @property
    def entries(self) -> int:
        """The stream messages it writes: its key's entry, its tags' index entries, itself."""
        return len(self.tags) + 1 + (self.once is not None)


class Queues:
    """The writes waiting, by mailbox (``box``: its token), each batch written by
    ``write_batch`` (which answers each write's future, or raises for them all)."""

    def __init__(self, write_batch: Callable[[str, list[Write]], Awaitable[None]]) -> None:
        self._write_batch = write_batch
        self._queues: dict[str, list[Write]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._wanted: dict[str, tuple[int, asyncio.Event]] = {}

    def enqueue(self, box: str, write: Write) -> None:
        """``write`` goes in ``box``'s next batch (sent now when none is under way)."""
        queue = self._queues.get(box)
        if queue is not None:
            self._join(box, queue, write)
            return
        self._queues[box] = queue = [write]
        self._drain_on_a_task(box, queue)

    async def write(self, box: str, write: Write) -> int:
        """``write`` numbered and written in ``box``'s next batch; its msg_id. The first
        write of a burst (no batch of its mailbox under way) is written by its caller's own
        task, alone, and what joined its mailbox's queue meanwhile goes on a task of its own,
        as ``enqueue``'s: one task less a SEND while each mailbox has one SEND at a time,
        the same batches once several come together. Cut (its request's task
        cancelled), it hands what waits to that task, which writes it."""
        queue = self._queues.get(box)
        if queue is not None:
            self._join(box, queue, write)
            return await write.future
        self._queues[box] = queue = []
        try:
            try:
                await self._write_batch(box, [write])
            except Exception as exc:  # (as a drain answers a batch of one)
                self._fail([write], exc)
        finally:
            if queue:
                self._drain_on_a_task(box, queue)
            else:
                del self._queues[box]
        return await write.future  # (answered: by the write, or its failure)

    def _join(self, box: str, queue: list[Write], write: Write) -> None:
        queue.append(write)
        wanted = self._wanted.get(box)
        if wanted is not None and len(queue) >= wanted[0]:
            wanted[1].set()

    def _drain_on_a_task(self, box: str, queue: list[Write]) -> None:
        task = asyncio.get_running_loop().create_task(self._drain(box, queue))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self, box: str, queue: list[Write]) -> None:
        size = 0  # how many the last batch carried
        batch: list[Write] = []
        try:
            while True:
                if size > 1 and len(queue) < size:
                    # the last batch's senders were answered together, so their next SENDs
                    # come back together a hop later: gathered into one batch (one round
                    # trip) rather than the first alone and the rest after it
                    await self._gather(box, size)
                if not queue:
                    break
                batch = _take(queue)
                size = len(batch)
                try:
                    await self._write_batch(box, batch)
                except StorageJetStreamError:
                    if len(batch) == 1:
                        self._fail(batch, sys.exc_info()[1])
                        continue
                    # a batch the server refused whole (its limit of batches at once, say):
                    # each write alone, nothing of the batch having been stored
                    for write in batch:
                        try:
                            await self._write_batch(box, [write])
                        except Exception as exc:
                            self._fail([write], exc)
                except Exception as exc:  # each SEND of the batch answers the failure
                    self._fail(batch, exc)
        finally:
            del self._queues[box]
            # (the store closing: a SEND still waiting is answered, not left to hang)
            self._fail([*batch, *queue], StorageError("the store closed before this write"))

    @staticmethod
    def _fail(batch: list[Write], exc: BaseException | None) -> None:
        for write in batch:
            if not write.future.done():
                write.future.set_exception(exc or StorageError("a write failed"))

    async def _gather(self, box: str, size: int) -> None:
        """Until ``box``'s queue holds ``size`` writes, or ``GATHER_SECONDS`` passed."""
        arrived = asyncio.Event()
        self._wanted[box] = (size, arrived)
        try:
            async with asyncio.timeout(GATHER_SECONDS):
                await arrived.wait()
        except TimeoutError:
            pass
        finally:
            del self._wanted[box]

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _take(queue: list[Write]) -> list[Write]:
    """The next batch from ``queue`` (removed from it): up to ``BATCH_MOST`` writes and
    ``ENTRIES_MOST`` stream messages with the head, one write at least."""
    taken, entries = 0, 0
    for write in queue[:BATCH_MOST]:
        if taken and entries + write.entries + 1 > ENTRIES_MOST:
            break
        taken += 1
        entries += write.entries
    batch = queue[:taken]
    del queue[:taken]
    return batch
