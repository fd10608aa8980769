"""The agent registry of the cluster store: registrations (the agents bucket, with its count
``_count``), each agent's last report (the reports bucket) and the search index's rows (the
index bucket, by card name). DISCOVER reads the registry through a copy of each bucket kept
up to date (copies.py)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from mq9_wire.nats_floor.jetstream.api import expecting
from mq9_wire.nats_floor.jetstream.bucket import Bucket, live, purge_marker

from ..mailbox_store import Full, StorageError
from .batches import Batches
from .copies import COUNT_KEY, BucketCopy
from .mapping import Layout, decode_record, encode_record, token
from .positions import COUNT_TRIES
from .requests import StorageJetStreamError

if TYPE_CHECKING:
    from .requests import StorageRequests

Row = tuple[str, str, int]  # a registration: (name, agent_info, create_time)


class Registry:
    """The agents, reports and index buckets of ``layout``."""

    def __init__(self, requests: StorageRequests, layout: Layout) -> None:
        self.agents_bucket = Bucket(requests, layout.agents)
        self.reports = Bucket(requests, layout.reports)
        self.index = Bucket(requests, layout.index)
        # a registration and the registry's count: one atomic batch into the agents bucket
        self._batches = Batches(requests)
        # the registry's buckets as this broker last read them, brought up to date per read
        self._agents = BucketCopy(requests, layout.agents)
        self._index = BucketCopy(requests, layout.index)

    async def stop(self) -> None:
        await self._batches.stop()

    def forget(self) -> None:
        self._agents.forget()
        self._index.forget()

    async def register(
        self, name: str, agent_info: str, create_time: int, *, room: int | None = None
    ) -> bool:
        """Keep the registration unless ``name`` is registered (RobustMQ keeps the first);
        True when kept. ``room``: the most registrations the bucket may hold before it
        (``Full`` when it does). The bucket's count (key ``_count``) is written with the
        registration in one atomic batch expecting the count's last sequence, so no number
        of brokers registering at once passes ``room``."""
        key = token(name)
        value = encode_record({"name": name, "agent_info": agent_info, "create_time": create_time})
        for _ in range(COUNT_TRIES):  # each turn lost to another broker's write reads again
            entry, (count, count_seq) = await asyncio.gather(
                self.agents_bucket.last(key), self._count()
            )
            if live(entry):
                return False
            if room is not None and count >= room:
                raise Full(room)
            expected = 0 if entry is None else entry.seq  # unregistered: take its place
            if await self._counted(key, value, {}, expected, count + 1, count_seq):
                return True
        raise StorageError(f"agent {name!r}: the registry written by others {COUNT_TRIES} times")

    async def unregister(self, name: str) -> bool:
        """Remove the registration ``name``; False when there was none (the count lowered
        with it, in one atomic batch)."""
        key = token(name)
        purge = purge_marker()
        for _ in range(COUNT_TRIES):
            entry, (count, count_seq) = await asyncio.gather(
                self.agents_bucket.last(key), self._count()
            )
            if not live(entry):
                return False
            following = max(count - 1, 0)
            if await self._counted(key, b"", purge, entry.seq, following, count_seq):
                await self.reports.purge(key)  # a report is kept while registered
                return True
        raise StorageError(f"agent {name!r}: the registry written by others {COUNT_TRIES} times")

    async def _count(self) -> tuple[int, int]:
        """How many registrations the bucket holds (its ``_count``, from the leader) and that
        key's sequence (0: none yet: counted from the bucket, a layout's before the count)."""
        entry = await self.agents_bucket.last(COUNT_KEY)
        if entry is not None:
            return int(entry.data or 0), entry.seq
        return len(await self._agents.rows()), 0

    async def _counted(
        self,
        key: str,
        value: bytes,
        headers: dict[str, str],
        expected: int,
        count: int,
        count_seq: int,
    ) -> bool:
        """``value`` on ``key`` (expecting ``expected``) and the registry's count set to
        ``count`` (expecting ``count_seq``), stored together or not at all; False when
        another write came first."""
        bucket = self.agents_bucket
        entries = [
            (bucket.subject(key), value, expecting(expected, headers)),
            (bucket.subject(COUNT_KEY), str(count).encode(), expecting(count_seq)),
        ]
        try:
            await self._batches.write(entries)
        except StorageJetStreamError as exc:
            if not exc.wrong_last_sequence:
                raise
            return False
        return True

    async def agents(self) -> list[Row]:
        """Every registration ``(name, agent_info, create_time)``, by name."""
        return sorted(await self._agents.rows())

    async def report(self, name: str, report_info: str, at: int) -> bool:
        """Keep ``name``'s last report (the last write wins, whichever broker took it) while
        ``name`` is registered; False, nothing written, for a name no registration
        holds (an UNREGISTER purges its report)."""
        key = token(name)
        if not live(await self.agents_bucket.last(key)):
            return False
        value = encode_record({"name": name, "report_info": report_info, "at": at})
        await self.reports.put(key, value)
        return True

    async def last_report(self, name: str) -> tuple[str, int] | None:
        """``name``'s last report and its second; None when it never reported."""
        entry = await self.reports.get(token(name))
        if entry is None:
            return None
        value = decode_record(entry.data)
        return str(value["report_info"]), int(value["at"])

    async def index_put(self, card_name: str, row: Row) -> None:
        """The search index's row of ``card_name`` is ``row`` (a registration's ``(name,
        agent_info, create_time)``), replacing any row of that card name (RobustMQ's
        search-engine names a row by the card)."""
        name, agent_info, create_time = row
        value = encode_record({"name": name, "agent_info": agent_info, "create_time": create_time})
        await self.index.put(token(card_name), value)

    async def index_drop(self, card_name: str) -> None:
        await self.index.purge(token(card_name))

    async def index_rows(self) -> list[Row]:
        """The search index's rows, in the order they were written (a replaced row last)."""
        return await self._index.rows()
