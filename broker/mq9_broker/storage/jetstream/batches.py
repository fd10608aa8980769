"""Writes into one stream gathered per turn of the event loop into atomic batches
(``allow_atomic``): the writes a broker has ready at one moment cost one request and one
acknowledgement, not one each (a SEND's rate is set by what each costs the servers
and the broker, docs/broker.md).

A write is a part: one or more stream messages stored together or not at all. The parts
handed in during one turn go as one batch (up to ``ENTRIES_MOST`` messages); a batch refused
(nothing of it stored) is sent again part by part, so a part refused on its own account (an
expectation another broker's write broke) fails alone, as if it had been sent alone; a batch
whose fate is unknown (no answer) is not sent again.

An atomic batch is one stream's: the parts of a layout of several message streams are
handed in with their stream's index, and a turn's parts go as one batch a stream, sent at
once and answered together once every stream's batch is (the writers a turn's batches answer
send again together, so the next turn's batches carry them all: answered stream by stream,
each next turn's batches would carry a share of a share, and a batch costs the servers and
the broker about as much whatever it carries).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..mailbox_store import StorageError
from .requests import ENTRIES_MOST, Entry, StorageJetStreamError

if TYPE_CHECKING:
    from .requests import StorageRequests

__all__ = ["ENTRIES_MOST", "Batches", "Entry"]


@dataclass(slots=True)
class _Part:
    entries: list[Entry]
    last_seq: asyncio.Future[int]
    stream: int = 0


# (a part's future and what it is to be answered: a sequence or a failure)
_Held = list[tuple[asyncio.Future[int], int | BaseException]]


class Batches:
    """Atomic batches into the stream the entries' subjects belong to (one stream a
    ``Batches``); ``write`` a part, ``stop`` at the end."""

    def __init__(self, requests: StorageRequests) -> None:
        self.requests = requests
        self._parts: list[_Part] = []  # handed in during this turn of the loop
        self._tasks: set[asyncio.Task[None]] = set()

    async def write(self, entries: list[Entry], stream: int = 0) -> int:
        """Store ``entries`` (at most ``ENTRIES_MOST``) together; the last one's sequence.
        ``StorageJetStreamError`` when the servers refused them; ``StorageWriteRefused``
        (nothing sent) when one would not fit their limits, before it joins a batch: a part
        that does not fit fails alone, never the other parts of its batch. ``stream``: the
        index of the message stream its subjects are in."""
        self.requests.check_batched(entries)
        loop = asyncio.get_running_loop()
        part = _Part(entries, loop.create_future(), stream)
        self._parts.append(part)
        if len(self._parts) == 1:
            loop.call_soon(self._flush)  # (after the other parts handed in this turn)
        return await part.last_seq

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _flush(self) -> None:
        parts, self._parts = self._parts, []
        streams: dict[int, list[_Part]] = {}
        for part in parts:
            streams.setdefault(part.stream, []).append(part)
        if len(streams) == 1:
            for group in _groups(parts):
                self._spawn(self._send(group))
            return
        # several streams: a batch each, sent at once, answered together
        groups = [group for parts_of in streams.values() for group in _groups(parts_of)]
        self._spawn(self._send_together(groups))

    async def _send_together(self, groups: list[list[_Part]]) -> None:
        held: _Held = []
        try:
            await asyncio.gather(*(self._send(group, held) for group in groups))
        finally:
            for future, outcome in held:
                _settle(future, outcome)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, group: list[_Part], held: _Held | None = None) -> None:
        """``group`` as one batch; each part answered, or (``held``) its answer kept there
        for the caller to give."""

        def answer(part: _Part, outcome: int | BaseException) -> None:
            if held is None:
                _settle(part.last_seq, outcome)
            else:
                held.append((part.last_seq, outcome))

        entries = [entry for part in group for entry in part.entries]
        try:
            last_seq = await self.requests.publish_batch(entries)
        except StorageJetStreamError as exc:  # refused: nothing of it stored
            if len(group) == 1:
                answer(group[0], exc)
            else:
                await asyncio.gather(*(self._send([part], held) for part in group))
            return
        except asyncio.CancelledError:  # (the store closing)
            # each writer told, not cancelled: a part may be awaited by a request's own task
            # (numbering.write), whose request is answered with the failure
            closed = StorageError("the store closed before this write was acknowledged")
            for part in group:
                answer(part, closed)
            raise
        except Exception as exc:  # (unknown whether stored: not sent again)
            for part in group:
                answer(part, exc)
            return
        # an atomic batch is stored in one piece: each part's last sequence from the batch's
        after = len(entries)
        for part in group:
            after -= len(part.entries)
            answer(part, last_seq - after)


def _groups(parts: list[_Part]) -> list[list[_Part]]:
    """``parts`` in batches of at most ``ENTRIES_MOST`` messages, in order."""
    groups: list[list[_Part]] = []
    group: list[_Part] = []
    size = 0
    for part in parts:
        if group and size + len(part.entries) > ENTRIES_MOST:
            groups.append(group)
            group, size = [], 0
        group.append(part)
        size += len(part.entries)
    if group:
        groups.append(group)
    return groups


def _settle(future: asyncio.Future[int], outcome: int | BaseException) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
