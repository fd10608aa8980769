"""Writes into one stream gathered per turn of the event loop into atomic batches
(``allow_atomic``): the writes a broker has ready at one moment cost one request and one
acknowledgement, not one each (issue #72: a SEND's rate is set by what each costs the servers
and the broker, docs/broker.md).

A write is a part: one or more stream messages stored together or not at all. The parts
handed in during one turn go as one batch (up to ``ENTRIES_MOST`` messages); a batch refused
(nothing of it stored) is sent again part by part, so a part refused on its own account (an
expectation another broker's write broke) fails alone, as if it had been sent alone; a batch
whose fate is unknown (no answer) is not sent again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..base import StorageError
from .requests import ENTRIES_MOST, Entry, JetStreamError

if TYPE_CHECKING:
    from .requests import Requests

__all__ = ["ENTRIES_MOST", "Batches", "Entry"]


@dataclass(slots=True)
class _Part:
    entries: list[Entry]
    last_seq: asyncio.Future[int]


class Batches:
    """Atomic batches into the stream the entries' subjects belong to (one stream a
    ``Batches``); ``write`` a part, ``stop`` at the end.

    ``paced``: while a batch is under way, the parts handed in wait for its answer and go
    together then (one batch a round trip, as many parts as came meanwhile), rather than one
    batch a turn of the loop. For a layout of several streams (#81): the writers one batch
    answers go on to mailboxes of every stream, so batches sent each turn would carry a
    stream's share of a share, each costing the servers and the broker a batch."""

    def __init__(self, requests: Requests, *, paced: bool = False) -> None:
        self.requests, self.paced = requests, paced
        self._parts: list[_Part] = []  # handed in during this turn of the loop
        self._tasks: set[asyncio.Task[None]] = set()
        self._under_way = 0  # (paced) the batches sent and not answered yet
        self._stopping = False

    async def write(self, entries: list[Entry]) -> int:
        """Store ``entries`` (at most ``ENTRIES_MOST``) together; the last one's sequence.
        ``JetStreamError`` when the servers refused them; ``WriteRefused`` (nothing sent)
        when one would not fit their limits, before it joins a batch: a part that does not
        fit fails alone, never the other parts of its batch (#77)."""
        self.requests.check_batched(entries)
        loop = asyncio.get_running_loop()
        part = _Part(entries, loop.create_future())
        self._parts.append(part)
        if len(self._parts) == 1 and not self._under_way:
            loop.call_soon(self._flush)  # (after the other parts handed in this turn)
        return await part.last_seq

    async def stop(self) -> None:
        self._stopping = True  # (a batch cancelled sends none after it)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _flush(self) -> None:
        parts, self._parts = self._parts, []
        if not parts:
            return
        group: list[_Part] = []
        size = 0
        for part in parts:
            if group and size + len(part.entries) > ENTRIES_MOST:
                self._spawn(self._send(group))
                group, size = [], 0
            group.append(part)
            size += len(part.entries)
        if group:
            self._spawn(self._send(group))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if self.paced:
            self._under_way += 1
            task.add_done_callback(self._answered)

    def _answered(self, _task: asyncio.Task[None]) -> None:
        """(paced) A batch answered: once none is under way, the parts that waited go."""
        self._under_way -= 1
        if not self._under_way and self._parts and not self._stopping:
            self._flush()

    async def _send(self, group: list[_Part]) -> None:
        entries = [entry for part in group for entry in part.entries]
        try:
            last_seq = await self.requests.publish_batch(entries)
        except JetStreamError as exc:  # refused: nothing of it stored
            if len(group) == 1:
                _settle(group[0].last_seq, exc)
            else:
                await asyncio.gather(*(self._send([part]) for part in group))
            return
        except asyncio.CancelledError:  # (the store closing)
            # each writer told, not cancelled: a part may be awaited by a request's own task
            # (numbering.write), whose request is answered with the failure
            closed = StorageError("the store closed before this write was acknowledged")
            for part in group:
                _settle(part.last_seq, closed)
            raise
        except Exception as exc:  # (unknown whether stored: not sent again)
            for part in group:
                _settle(part.last_seq, exc)
            return
        # an atomic batch is stored in one piece: each part's last sequence from the batch's
        after = len(entries)
        for part in group:
            after -= len(part.entries)
            if not part.last_seq.done():
                part.last_seq.set_result(last_seq - after)


def _settle(future: asyncio.Future[int], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
