"""What a COUNT asks of the cluster store: each lane's messages and the delayed
messages held, each counted by the servers from their subject index, never read and written
back by a broker (so any number of brokers count alike).

A lane's count is the pending of a direct get over the lane's subjects (one a message), and
the delayed messages' the ``total`` of the stream's info over theirs (one a schedule), with the
soonest due read from the subject the servers list last (mapping.py's ``schedule_id``): no
message of the mailbox is written for a count, and none but a lane's first read. The
servers' cost grows with the subjects matched (a lane's messages), so COUNTs of one mailbox
asked while one is under way share the next one (``Shared``): a requester keeping many in
flight costs the servers one at a time, and serving/serve.py has its COUNTs take turns as
the costly requests do."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from mq9_wire.protocol import PRIORITY_ORDER

from .mapping import Layout, due_of

if TYPE_CHECKING:
    from .requests import StorageRequests

T = TypeVar("T")

# An offset past any stream's subjects: the stream's info then lists none, and says how many
# the filter matched (its ``total``)
_NONE_LISTED = 1 << 62
_TRIES = 3  # a listing found empty (a schedule written when due meanwhile): asked again


class Shared(Generic[T]):
    """Counts of one kind by mailbox, asked while one of the same mailbox is under way, share
    the next one (begun once it ends: each answer is as of a moment after it was asked)."""

    def __init__(self, count: Callable[[str], Awaitable[T]]) -> None:
        self._count = count
        self._running: dict[str, asyncio.Future[T]] = {}
        self._following: dict[str, asyncio.Future[T]] = {}

    async def __call__(self, mailbox: str) -> T:
        running = self._running.get(mailbox)
        if running is None:
            shared = self._start(mailbox)
        else:
            shared = self._following.get(mailbox) or self._follow(mailbox, running)
        return await asyncio.shield(shared)  # (a waiter cancelled cancels no other's)

    def _start(self, mailbox: str) -> asyncio.Future[T]:
        task = asyncio.ensure_future(self._count(mailbox))
        self._running[mailbox] = task

        def ended(done: asyncio.Future[T]) -> None:
            if self._running.get(mailbox) is done:
                del self._running[mailbox]
            if not done.cancelled():
                done.exception()  # (retrieved: its waiters were told)

        task.add_done_callback(ended)
        return task

    def _follow(self, mailbox: str, running: asyncio.Future[T]) -> asyncio.Future[T]:
        async def after() -> T:
            await asyncio.wait([running])
            del self._following[mailbox]
            return await self._start(mailbox)

        following = self._following[mailbox] = asyncio.ensure_future(after())
        return following


class Counts:
    """The counts a COUNT answers, of ``layout``'s mailboxes."""

    def __init__(self, requests: StorageRequests, layout: Layout) -> None:
        self.requests, self.layout = requests, layout
        self.lanes = Shared(self._lanes)
        self.scheduled = Shared(self._scheduled)

    async def _lanes(self, mailbox: str) -> dict[str, int]:
        """How many messages each priority's lane holds, as the stream holds them (a message
        past its TTL until the retention removes it): one direct get a lane, whose answer
        says how many more match its filter."""
        layout = self.layout
        stream = layout.mailbox_stream(mailbox)
        counts = {}
        for priority in PRIORITY_ORDER:
            request = {"seq": 1, "next_by_subj": layout.lane_filter(mailbox, priority)}
            batch = await self.requests.direct_batch(stream, {**request, "batch": 1})
            counts[priority.value] = len(batch.entries) + batch.pending
        return counts

    async def _scheduled(self, mailbox: str) -> tuple[int, int | None]:
        """How many delayed messages ``mailbox`` holds, and the second the soonest is due
        (None: none, or only schedules held before their subjects said when)."""
        for _ in range(_TRIES):
            held = await self._listed(mailbox, _NONE_LISTED)
            total = int(held.get("total", 0))
            if not total:
                return 0, None
            subjects = (await self._listed(mailbox, total - 1)).get("state", {}).get("subjects")
            if subjects:
                return total, due_of(max(subjects))
        return total, None

    async def _listed(self, mailbox: str, offset: int) -> dict[str, Any]:
        layout = self.layout
        request = {"subjects_filter": layout.schedule_filter(mailbox), "offset": offset}
        return await self.requests.api(f"STREAM.INFO.{layout.mailbox_stream(mailbox)}", request)
