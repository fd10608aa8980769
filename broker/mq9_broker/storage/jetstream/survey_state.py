"""What the cluster store holds, read from JetStream for an operator's scrape, and
whether the store answers at all (a broker's ``/readyz``).

A broker on ``--store jetstream`` holds nothing itself: its figures are the cluster's, read with
the store's own requests. One survey costs a handful of requests whatever the store holds (the
stream's info, the messages counted with one direct get's pending count, the groups' markers
likewise) plus a walk of the mailbox records (paged, ``RECORDS_MOST`` at most) and one counted
read per dead-letter mailbox and per group position (``COUNTS_MOST`` at most); beyond a bound
the figures are lower bounds and ``exact`` is False. A survey is kept ``KEPT_FOR`` seconds: the
scrapes in between (of any number of Prometheus servers) are answered from it. No figure names a
mailbox, an agent or a group.

Readiness asks for a write: a stream leader cut off from its followers answers reads (its
STREAM.INFO) for seconds before it steps down, where a write is acknowledged only once a quorum of
servers holds it. It asks at once for the account's JetStream info, which only the meta leader
answers: with a quorum back, the streams take writes seconds before the servers elect
one, and until then the JetStream API answers "JetStream system temporarily unavailable". The
write is one small record, rolled up in place, in the reports bucket under a key no agent's
digest can take (``PROBE_KEY``), at most once every ``PROBE_KEPT`` seconds, with a TTL
(``PROBE_TTL``) that removes it once the probes stop.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mq9_wire.nats_floor.jetstream.api import (
    API_PREFIX,
    KV_STREAM_PREFIX,
    ROLLUP,
    ROLLUP_SUBJECT,
    ttl,
)
from mq9_wire.nats_floor.jetstream.bucket import Bucket

from .key_counts import counts_stream
from .mapping import Layout, decode_record, msg_id_of, token

if TYPE_CHECKING:
    from .store import ClusterStore

KEPT_FOR = 15.0  # seconds a survey answers the scrapes after it
DEADLINE = 5.0  # seconds one survey may take (a scrape waits for it at most this long)
RECORDS_MOST = 50_000  # mailbox records (and group positions) read in one survey
COUNTS_MOST = 500  # dead-letter mailboxes and group positions counted in one survey
PAGE = 1000  # entries one direct get asks for
AT_ONCE = 16  # counted reads in flight at once
PROBE_KEY = "mq9-ready"  # not 32 hex digits: no agent's token (mapping.token) is it
PROBE_DEADLINE = 3.0  # seconds the readiness write has (quorum lost: 503 well within 5 s)
PROBE_KEPT = 1.0  # seconds one probe's answer serves (a flood of /readyz: one write a second)
# seconds a probe's answer still speaks for the store when the next has not answered in
# time; older, nothing is known (a /readyz asked 10 s after the quorum was lost said 200)
PROBE_FRESH = PROBE_DEADLINE
# seconds the probe's record lives: gone soon after the last probe, so that a layout only probed
# is empty again (``state import`` takes a new or empty layout only)
PROBE_TTL = 5
_DEAD_LETTER_SEGMENT = "dlq"  # <mailbox>.dlq (groups/dead_letters.py; broker/cli/metrics.py)
Key = tuple[Any, ...]  # what a counted read counts: ("dead", mailbox), ("past", group, ...)


@dataclass(frozen=True)
class SurveyFigures:
    """One survey's figures (the names the SQLite and memory brokers export)."""

    mailboxes: int
    messages: int
    message_bytes: int  # the messages stream's stored bytes (JetStream's accounting)
    dead_letters: int
    agents: int
    groups: int
    group_pending_messages: int
    group_pending_max: int
    exact: bool
    at: float  # the clock's reading when it was taken


def is_dead_letters(name: str) -> bool:
    parts = name.split(".")
    return len(parts) > 1 and _DEAD_LETTER_SEGMENT in parts[1:]


class StoreSurvey:
    """The surveys and readiness probes of one broker's ``store``. ``clock``: monotonic
    seconds; ``wall``: the epoch's (a mailbox's expiry)."""

    def __init__(
        self,
        store: ClusterStore,
        *,
        kept_for: float = KEPT_FOR,
        deadline: float = DEADLINE,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.kept_for, self.deadline = kept_for, deadline
        self.clock, self.wall = clock, wall
        self.last: SurveyFigures | None = None
        self.failure: str | None = None  # why the last survey failed (None: it did not)
        self._running: asyncio.Task[SurveyFigures] | None = None
        self._probed: tuple[float, str | None] | None = None
        self._probing: asyncio.Task[str | None] | None = None
        # counted reads kept across surveys (``_counted``): by key, and in which survey
        self._counts: dict[Key, int] = {}
        self._counted_at: dict[Key, int] = {}
        self._rounds = 0

    @property
    def layout(self) -> Layout:
        """The store's layout (its count of message streams known once it opened)."""
        return self.store.layout

    # -- the figures -----------------------------------------------------------------------

    async def held(self) -> SurveyFigures | None:
        """The figures, surveyed again when the last are older than ``kept_for``; the last
        ones (or None) when the store does not answer within ``deadline`` (``failure`` says
        why). Scrapes at once share one survey."""
        last = self.last
        if last is not None and self.clock() - last.at < self.kept_for:
            return last
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(self._survey())
        try:
            self.last = await asyncio.wait_for(asyncio.shield(self._running), self.deadline)
            self.failure = None
        except TimeoutError:
            self.failure = f"the store did not answer a survey within {self.deadline:g} s"
        except Exception as exc:  # the store's refusal or a lost connection: said, not raised
            self.failure = f"the survey failed: {str(exc) or type(exc).__name__}"
        return self.last

    async def _survey(self) -> SurveyFigures:
        store, layout = self.store, self.layout
        requests = store.requests
        message_bytes, messages = 0, 0
        for index, stream in enumerate(layout.message_streams):  # (summed over them)
            info = await requests.api(f"STREAM.INFO.{stream}", None)
            message_bytes += int(info.get("state", {}).get("bytes", 0))
            messages += await self._matching(stream, f"{layout.stream_prefix(index)}.m.>")
        group_bucket = Bucket(requests, layout.groups)
        groups = await self._matching(group_bucket.stream, group_bucket.subject("*._"))
        records, complete = await Bucket(requests, layout.mailboxes).values(
            ">", most=RECORDS_MOST, page=PAGE
        )
        now = int(self.wall())
        live = {}
        for entry in records:
            value = decode_record(entry.data)
            ttl = int(value.get("ttl", 0))
            if ttl == 0 or now < int(value["create_time"]) + ttl:  # (MailboxRecord.live)
                live[str(value["name"])] = str(value.get("log", ""))
        agents = len(await store.agents())
        dead_names = [name for name in live if is_dead_letters(name)]
        positions, all_positions = await group_bucket.values("*.*", most=RECORDS_MOST, page=PAGE)
        dead, counted = await self._dead_letters(dead_names)
        per_group, walked = await self._pending(positions, live)
        return SurveyFigures(
            mailboxes=len(live),
            messages=messages,
            message_bytes=message_bytes,
            dead_letters=dead,
            agents=agents,
            groups=groups,
            group_pending_messages=sum(per_group.values()),
            group_pending_max=max(per_group.values(), default=0),
            exact=complete and all_positions and counted and walked,
            at=self.clock(),
        )

    async def _matching(self, stream: str, subjects: str) -> int:
        """How many messages of ``stream`` match ``subjects``: one direct get whose pending
        count the server keeps by subject."""
        batch = await self.store.requests.direct_batch(
            stream, {"seq": 1, "next_by_subj": subjects, "batch": 1}
        )
        return len(batch.entries) + batch.pending

    async def _dead_letters(self, names: list[str]) -> tuple[int, bool]:
        keys: list[Key] = [("dead", name) for name in names]
        counts, exact = await self._counted("dead", keys, lambda key: self._exactly(key[1]))
        return sum(counts.values()), exact

    async def _exactly(self, mailbox: str) -> tuple[int, bool]:
        return await self.store.count(mailbox), True

    async def _counted(
        self, kind: str, keys: list[Key], count: Callable[[Key], Awaitable[tuple[int, bool]]]
    ) -> tuple[dict[Key, int], bool]:
        """Each key's count: ``COUNTS_MOST`` of them counted now, those counted longest ago
        (or never) first, the others as last counted (0 when never: then not exact), so that
        every key is counted again within len(keys) / COUNTS_MOST surveys."""
        self._rounds += 1
        order = sorted(keys, key=lambda key: self._counted_at.get(key, -1))
        now = order[:COUNTS_MOST]
        results = await _bounded(count(key) for key in now)
        exact = len(keys) <= COUNTS_MOST
        for key, (value, sure) in zip(now, results, strict=True):
            self._counts[key], self._counted_at[key] = value, self._rounds
            exact = exact and sure
        wanted = set(keys)  # a key of this kind gone (a position moved, a mailbox gone): dropped
        for gone in [key for key in self._counts if key[0] == kind and key not in wanted]:
            del self._counts[gone], self._counted_at[gone]
        return {key: self._counts.get(key, 0) for key in keys}, exact

    async def _pending(
        self, positions: list[Any], live: dict[str, str]
    ) -> tuple[dict[str, int], bool]:
        """The messages past each group's committed offsets, summed by group: a position
        counts when its mailbox is live and its log the mailbox's (a position in a log
        forgotten since counts nothing, as the store reads it)."""
        by_token = {token(name): (name, log) for name, log in live.items()}
        wanted: list[tuple[str, str, int, int]] = []
        for entry in positions:
            group, box = entry.subject.rsplit(".", 2)[1:]  # $KV.<bucket>.<group>.<mailbox>
            if box == "_" or box not in by_token:
                continue
            value = decode_record(entry.data)
            name, log = by_token[box]
            if value.get("log") != log:
                continue
            wanted.append((group, name, int(value["offset"]), int(value.get("seq", 0))))
        keys: list[Key] = [("past", *position) for position in wanted]
        counts, exact = await self._counted("past", keys, lambda key: self._past(*key[2:]))
        per_group: dict[str, int] = {}
        for key, count in counts.items():
            per_group[key[1]] = per_group.get(key[1], 0) + count
        return per_group, exact

    async def _past(self, mailbox: str, offset: int, seq: int) -> tuple[int, bool]:
        """How many of ``mailbox``'s messages are numbered ``offset`` or more, read from
        stream sequence ``seq`` on (at or below the first of them: the position's); whether
        that is exact (the first few read from there reached ``offset``)."""
        batch = await self.store.requests.direct_batch(
            self.layout.mailbox_stream(mailbox),
            {"seq": max(seq, 1), "next_by_subj": self.layout.mailbox_filter(mailbox), "batch": 8},
        )
        below = sum(1 for entry in batch.entries if msg_id_of(entry.subject) < offset)
        reached = below < len(batch.entries) or not batch.pending
        return len(batch.entries) + batch.pending - below, reached

    # -- readiness ---------------------------------------------------------------------------

    async def answers(self) -> str | None:
        """None when the store acknowledged a write, and its servers have a JetStream meta
        leader and a leader for each of its streams, all within ``PROBE_DEADLINE``, else why
        not in one line. One probe serves ``PROBE_KEPT`` s."""
        probed = self._probed
        if probed is not None and self.clock() - probed[0] < PROBE_KEPT:
            return probed[1]
        if self._probing is None or self._probing.done():
            self._probing = asyncio.ensure_future(self._probe())
        why = await asyncio.shield(self._probing)
        self._probed = (self.clock(), why)
        return why

    def recent(self) -> tuple[str | None] | None:
        """The last probe's answer, in a tuple, while it is under ``PROBE_FRESH`` s
        old; None when there is none that recent (a /readyz that cannot wait for the probe
        under way must not say what the store did before it lost its quorum)."""
        probed = self._probed
        if probed is None or self.clock() - probed[0] >= PROBE_FRESH:
            return None
        return (probed[1],)

    async def _probe(self) -> str | None:
        # All at once: the write needs its stream's quorum; a SEND's lookups (the
        # mailbox's record, read through the JetStream API) need the meta leader as well, and
        # its write the leader of its own stream: with a quorum back, the servers elect those
        # seconds after the leader of the stream the write went to
        layout = self.layout
        buckets = (KV_STREAM_PREFIX + b for b in layout.buckets)
        # (a keyed SEND's count needs the leader of the keys' counts too)
        streams = (*layout.message_streams, *buckets, counts_stream(layout))
        wrote, *led = await asyncio.gather(
            self._asked(
                layout.kv_subject(layout.reports, PROBE_KEY), b'{"probe":1}',
                {ROLLUP: ROLLUP_SUBJECT, **ttl(PROBE_TTL)}, "a write",
            ),
            # the account's JetStream info: in a cluster only the meta leader answers it
            self._asked(API_PREFIX + "INFO", b"", None, "the meta leader's account info"),
            *(self._asked(API_PREFIX + f"STREAM.INFO.{name}", b"", None, f"{name}'s info",
                          _leader_of(name)) for name in streams),
        )  # fmt: skip
        return wrote or next((why for why in led if why is not None), None)

    async def _asked(
        self, subject: str, body: bytes, headers: dict[str, str] | None, what: str,
        check: Callable[[dict[str, Any]], str | None] = lambda _: None,
    ) -> str | None:  # fmt: skip
        """Why the store did not answer ``what`` within ``PROBE_DEADLINE``, answered it an
        error, or one ``check`` finds wanting; None when it answered."""
        connection = self.store.requests.connection
        try:
            answer = await connection.request(
                subject, body, timeout=PROBE_DEADLINE, headers=headers
            )
        except Exception as exc:  # nats-py: a timeout, no responders, a closed connection
            text = str(exc) or type(exc).__name__
            return f"the JetStream store did not answer {what} within {PROBE_DEADLINE:g} s ({text})"
        try:
            answered = json.loads(answer.data)
        except ValueError:
            answered = {"error": {"description": "an answer that is not JSON"}}
        error = answered.get("error") if isinstance(answered, dict) else None
        if error:
            return f"the JetStream store refused {what}: {error.get('description', error)}"
        return check(answered) if isinstance(answered, dict) else None


def _leader_of(stream: str) -> Callable[[dict[str, Any]], str | None]:
    """The check of ``stream``'s info: on a cluster, it names the stream's leader."""

    def check(info: dict[str, Any]) -> str | None:
        cluster = info.get("cluster")
        if isinstance(cluster, dict) and not cluster.get("leader"):
            return f"the JetStream store's stream {stream} has no leader yet"
        return None

    return check


async def _bounded(reads: Iterable[Any]) -> list[Any]:
    """Run ``reads`` (awaitables), ``AT_ONCE`` at a time, their results in order."""
    gate = asyncio.Semaphore(AT_ONCE)

    async def one(read: Any) -> Any:
        async with gate:
            return await read

    return list(await asyncio.gather(*(one(read) for read in reads)))


__all__ = ["Layout", "StoreSurvey", "SurveyFigures", "is_dead_letters"]
