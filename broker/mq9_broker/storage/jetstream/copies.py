"""A broker's copy of a registry bucket (the agents, the search index), brought up to date
before each read: DISCOVER and REGISTER's limit read the registry without reading the whole
bucket each time (docs/broker.md, "What each command costs").

The bucket keeps one value a key, so the entries after the copy's sequence are exactly the
keys written (or purged) since. A read asks the bucket's leader for its last sequence, then
reads what came after the copy's from any replica: what any broker wrote before the read
began is in the answer, as when the bucket was read whole. A replica behind the leader ends
its answer short of that sequence (nats-server 2.12 and later ignore ``min_last_seq``, which
was to make it refuse: docs/broker.md, "Reads from replicas"): when the leader holds an entry
at that sequence, the rest is asked again, of whichever replica answers, a few times; the
copy goes no further than the entries it read, so what one read missed the next one reads.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from mq9_wire.nats_floor.jetstream.bucket import Bucket, live

from .mapping import decode_record

if TYPE_CHECKING:
    from .requests import StorageRequests

Row = tuple[str, str, int]  # a registration: (name, agent_info, create_time)
_READ_MOST = 1000  # entries one read asks for
_SHORT_TRIES = 3  # answers short of the leader's last sequence taken before the read ends
# The registry's count, a key of the agents bucket beside the registrations' digests (never
# one: they are 32 hex digits), written with each registration and unregistration
COUNT_KEY = "_count"


class BucketCopy:
    """The rows of bucket ``bucket`` (a registry's ``{name, agent_info, create_time}``
    values), in the order they were last written."""

    def __init__(self, requests: StorageRequests, bucket: str) -> None:
        self.requests, self.bucket = requests, bucket
        self._bucket = Bucket(requests, bucket)
        self.seq = 0  # the bucket's sequence the copy has reached
        self._rows: dict[str, Row] = {}  # key -> row, oldest write first
        self._lock = asyncio.Lock()

    async def rows(self) -> list[Row]:
        """The bucket's rows as its leader holds them now, oldest write first."""
        stream = self._bucket.stream
        info = await self.requests.api(f"STREAM.INFO.{stream}", None)
        last = int(info.get("state", {}).get("last_seq", 0))
        async with self._lock:  # (one catch-up at a time: the others find it done)
            short = 0
            while self.seq < last and short < _SHORT_TRIES:
                request = {
                    "seq": self.seq + 1,
                    "next_by_subj": self._bucket.subject(">"),
                    "batch": _READ_MOST,
                    "min_last_seq": last,
                }
                batch = await self._bucket.batch(request)
                for entry in batch.entries:
                    key = entry.subject.rsplit(".", 1)[1]
                    if key == COUNT_KEY:
                        continue
                    self._rows.pop(key, None)  # (a row written again goes last)
                    if live(entry):
                        value = decode_record(entry.data)
                        row = (value["name"], value["agent_info"], int(value["create_time"]))
                        self._rows[key] = row
                if batch.entries:
                    self.seq = max(self.seq, batch.entries[-1].seq)
                if self.seq < last and (not batch.entries or batch.pending == 0):
                    # the end of what the answering replica holds, short of ``last``: it is
                    # behind the leader, unless the leader holds no entry at ``last`` either
                    # (gone: a key's TTL), and then nothing is missing
                    if await self.requests.leader_get(stream, seq=last) is None:
                        self.seq = last
                    short += 1
            return list(self._rows.values())

    def forget(self) -> None:
        self.seq = 0
        self._rows.clear()
