"""One mailbox: its message log, read the ways RobustMQ reads it.

A mailbox is one append-only log (RobustMQ: a single-shard topic): every message gets the next
offset, its ``msg_id``, whatever its priority. On it sit RobustMQ's indexes: one *lane* per
priority (its tag index), the key index, and create_time for time-based starts. Costs stay
independent of how many messages a mailbox holds:

* a lane is the ascending list of its msg_ids; a read bisects to its start and walks what it
  returns plus the holes it skips;
* removed messages (deleted, replaced by key, past the retention) leave holes, compacted away
  in one pass once they are the majority (amortised O(1));
* messages whose TTL ended stay in the indexes, so each index remembers the long runs of dead
  entries a read walked through (``_runs``) and the next read jumps over them: every QUERY
  reads from the beginning, and would otherwise walk every expired message each time;
* each lane's count of live messages is kept as messages are written and removed, the ones
  whose TTL ended taken off as their second passes (``live_counts``): a count walks
  nothing, however many messages the mailbox holds.

Messages whose own TTL ended are hidden, not removed: RobustMQ keeps them until its shard
retention (7 days by create_time) removes the oldest records, as ``drop_before`` does.
Consumer-group offsets are keyed by group name across mailboxes: the engine keeps them.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice

from mq9_wire import protocol as p
from mq9_wire.protocol import PRIORITY_ORDER, Priority

_COMPACT_MIN_HOLES = 256
_MIN_RUN = 32
_ONE_DIGIT = bytes(range(10))
_TWO_DIGITS = bytes(range(100))


# -- a tag's subtree: what a read by tag finds, in every store (one meaning, here) -----------


def subtree(tag: str) -> tuple[str, str]:
    """The tags below ``tag`` (``tag/...``), as the range of sorted names ``low <= name <
    high``: what a read by ``tag`` finds besides its own. RobustMQ's tag index is a key scan
    of ``<tag>/`` (rocksdb-engine ``tag_index_key``, storage-engine rocksdb ``read.rs``
    ``read_by_tag``), so it finds ``team/alpha`` for ``team`` ("0" is the character after "/")."""
    return tag + "/", tag + "0"


def finds(asked: str, tag: str) -> bool:
    """Whether a read by tag ``asked`` finds a message tagged ``tag``: its own, or below it."""
    low, high = subtree(asked)
    return tag == asked or low <= tag < high


def tags_above(tag: str) -> Iterator[str]:
    """The tags whose reads find ``tag`` besides its own (``finds(above, tag)``): its parts
    before each of its slashes."""
    slash = tag.find("/")
    while slash >= 0:
        yield tag[:slash]
        slash = tag.find("/", slash + 1)


def _json_numbers_size(data: bytes) -> int:
    """The length of ``data`` written as a JSON list of numbers, ``[78,65,...]``: each byte
    takes one digit, one more from 10 and another from 100, and a comma between two."""
    if not data:
        return len(b"[]")
    digits = len(data) + len(data.translate(None, _ONE_DIGIT))
    digits += len(data.translate(None, _TWO_DIGITS))
    return len(b"[]") + digits + len(data) - 1


@dataclass(slots=True)
class StoredMessage:
    msg_id: int
    payload: bytes
    priority: Priority
    create_time: int
    key: str | None = None
    tags: tuple[str, ...] = ()
    header: bytes | None = None  # the SEND's NATS header block, handed back as sent
    expire_at: int = 0  # whole seconds; 0 = no message TTL
    _wire: bytes | None = None

    def expired(self, now_second: int) -> bool:
        # RobustMQ: hidden once expire_at < now, so visible through the second expire_at
        return 0 < self.expire_at < now_second

    def wire(self) -> bytes:
        """The message as a FETCH or QUERY item (RobustMQ's MsgItem), encoded once."""
        if self._wire is None:
            self._wire = self._encoded(None if self.header is None else list(self.header))
        return self._wire

    def wire_size(self) -> int:
        """``len(self.wire())``, without keeping it or writing the header block out: a SEND's
        size check comes before its msg_id is known, and a header block is a JSON list of
        numbers, costlier to encode than all the rest."""
        size = len(self._encoded(None))  # the header written as null
        if self.header is not None:
            size += _json_numbers_size(self.header) - len(b"null")
        return size

    def wire_size_bound(self) -> int:
        """At least ``wire_size()``, from lengths alone: a SEND far below its limit needs no
        encoding to know it fits (a 200-byte payload's encoding cost as much as its commit).
        JSON writes a payload byte as at most 6 (a control byte as ``\\u00XX``; an invalid
        one as U+FFFD, 3), a header byte as at most 4 (three digits and a comma)."""
        size = _ITEM_FRAME + len(self.priority.value) + len(str(self.create_time))
        size += len(str(self.msg_id)) + 6 * len(self.payload)
        if self.header is not None:
            size += 4 * len(self.header) + len(b"[]")
        return size

    def _encoded(self, header: list[int] | None) -> bytes:
        return p.encode(
            p.MSG_ITEM.write(
                msg_id=self.msg_id,
                payload=p.payload_text(self.payload),
                priority=self.priority.value,
                header=header,
                create_time=self.create_time,
            )
        )


# An item's bytes besides its fields' values (msg_id, payload, priority, create_time, null header)
_ITEM_FRAME = len(StoredMessage(0, b"", Priority.NORMAL, 0).wire()) - len(b"0normal0")


_LANE = {priority: index for index, priority in enumerate(PRIORITY_ORDER)}


class _Tally:
    """A mailbox's lanes counted as messages come and go: each lane's messages held
    (``held``), those of them whose TTL ended as of second ``hidden_at`` (``hidden``: msg_id ->
    lane, ``hidden_each``), and the messages with a TTL not yet found ended, soonest first
    (``dying``: an entry of a message removed since is skipped when it comes up, and dropped
    when the mailbox compacts its holes). A message past its TTL is taken off as its second
    passes, each once; a clock set back puts the hidden ones back first (our clock is
    injected, and the system's may step back)."""

    __slots__ = ("dying", "held", "hidden", "hidden_at", "hidden_each")

    def __init__(self) -> None:
        self.held = [0, 0, 0]
        self.hidden: dict[int, int] = {}
        self.hidden_each = [0, 0, 0]
        self.hidden_at = 0
        self.dying: list[tuple[int, int]] = []

    def added(self, message: StoredMessage) -> None:
        self.held[_LANE[message.priority]] += 1
        if message.expire_at:
            heapq.heappush(self.dying, (message.expire_at, message.msg_id))

    def removed(self, message: StoredMessage) -> None:
        lane = _LANE[message.priority]
        self.held[lane] -= 1
        if self.hidden.pop(message.msg_id, None) is not None:
            self.hidden_each[lane] -= 1

    def kept(self, live: dict[int, StoredMessage]) -> None:
        """Only the entries of ``live`` messages kept (the mailbox compacted its holes)."""
        self.dying = [(at, msg_id) for at, msg_id in self.dying if msg_id in live]
        heapq.heapify(self.dying)

    def live(self, now: int, messages: dict[int, StoredMessage]) -> dict[Priority, int]:
        if now < self.hidden_at:
            for msg_id in self.hidden:
                heapq.heappush(self.dying, (messages[msg_id].expire_at, msg_id))
            self.hidden.clear()
            self.hidden_each = [0, 0, 0]
        self.hidden_at = now
        dying = self.dying
        while dying and dying[0][0] < now:  # (RobustMQ: hidden once expire_at < now)
            expire_at, msg_id = heapq.heappop(dying)
            message = messages.get(msg_id)
            if message is not None and message.expire_at == expire_at:
                lane = _LANE[message.priority]
                self.hidden[msg_id] = lane
                self.hidden_each[lane] += 1
        held, hidden = self.held, self.hidden_each
        return {p: held[i] - hidden[i] for p, i in _LANE.items()}


class Mailbox:
    def __init__(
        self,
        address: str,
        *,
        create_time: int,
        ttl: int,
        desc: str = "",
        shard: str | None = None,
    ) -> None:
        self.address = address
        self.create_time = create_time
        self.ttl = ttl  # seconds; 0 = never expires
        self.desc = desc
        # The log's identity. Group offsets are kept per shard, so a mailbox created again
        # under the same name after it expired does not inherit the old one's offsets.
        self.shard = shard or f"{address}/{create_time}/{id(self)}"
        self.next_id = 0
        # RobustMQ's earliest offset: 0 until the retention removes the oldest messages
        self.start_offset = 0
        self.messages: dict[int, StoredMessage] = {}
        self.lanes: dict[Priority, list[int]] = {p: [] for p in PRIORITY_ORDER}
        # Every msg_id in write order with its create_time, for time-based starts.
        self.order: list[int] = []
        self.times: list[int] = []
        self.keys: dict[str, int] = {}
        self.tagged: dict[str, list[int]] = {}  # tag -> msg_ids, ascending
        self._tag_names: list[str] = []  # the keys of ``tagged``, sorted (``read_tag``)
        # Each tag name's part before each of its slashes ("a/b/c": "a", "a/b"): the tags a
        # read also finds tags below. A tag not in it reads its own messages alone, and a tag
        # in neither this nor ``tagged`` finds nothing (a QUERY of thousands of tags is mostly
        # such). It may hold a part whose tags are gone (made again by ``_compact``).
        self._parents: set[str] = set()
        self._holes = 0
        # Per index ("order", ("lane", priority) or ("tag", tag)): {i: (j, t)} = its entries
        # i to j-1 were all removed or expired at time t. Expiry never ends as time goes on,
        # so this holds at any later time; a clock set back ignores it.
        self._runs: dict[object, dict[int, tuple[int, int]]] = {}
        self._tally: _Tally | None = None  # made with the first message

    @property
    def expires_at(self) -> int | None:
        """When the mailbox is gone: RobustMQ removes it once ``now - create_time >= ttl``."""
        return self.create_time + self.ttl if self.ttl else None

    @property
    def end_offset(self) -> int:
        """RobustMQ's end offset: the newest msg_id ever written (0 when none was)."""
        return max(self.next_id - 1, 0)

    # -- storing ---------------------------------------------------------------------------

    def append(self, message: StoredMessage) -> None:
        """Write ``message`` at the next offset; an older message with its key is removed."""
        if message.key is not None and message.key in self.keys:
            self.remove(self.keys[message.key])
        message.msg_id = self.next_id
        self.insert(message)

    def insert(self, message: StoredMessage) -> None:
        """Index ``message`` under its own msg_id; msg_ids must arrive in increasing order."""
        self.next_id = max(self.next_id, message.msg_id + 1)
        self.messages[message.msg_id] = message
        tally = self._tally
        if tally is None:
            tally = self._tally = _Tally()
        tally.added(message)
        self.lanes[message.priority].append(message.msg_id)
        self.order.append(message.msg_id)
        self.times.append(message.create_time)
        if message.key is not None:
            self.keys[message.key] = message.msg_id
        for tag in dict.fromkeys(message.tags):
            if tag not in self.tagged:
                insort(self._tag_names, tag)
                self._parents.update(tags_above(tag))
            self.tagged.setdefault(tag, []).append(message.msg_id)

    def remove(self, msg_id: int) -> bool:
        message = self.messages.pop(msg_id, None)
        if message is None:
            return False
        if self._tally is not None:
            self._tally.removed(message)
        if message.key is not None and self.keys.get(message.key) == msg_id:
            del self.keys[message.key]
        self._holes += 1
        if self._holes >= _COMPACT_MIN_HOLES and self._holes * 2 > len(self.order):
            self._compact()
        return True

    def _compact(self) -> None:
        live = self.messages
        for priority, lane in self.lanes.items():
            self.lanes[priority] = [i for i in lane if i in live]
        tagged = {tag: [i for i in ids if i in live] for tag, ids in self.tagged.items()}
        self.tagged = {tag: ids for tag, ids in tagged.items() if ids}
        self._tag_names = sorted(self.tagged)
        self._parents = {part for tag in self.tagged for part in tags_above(tag)}
        pairs = [(i, t) for i, t in zip(self.order, self.times, strict=False) if i in live]
        self.order = [i for i, _ in pairs]
        self.times = [t for _, t in pairs]
        # A dict never shrinks as entries are popped: a copy gives the memory back
        self.messages = dict(live)
        self._holes = 0
        self._runs.clear()  # the indexes changed shape
        if self._tally is not None:
            self._tally.kept(live)

    # -- how many it holds ------------------------------------------------------------------

    def live_counts(self, now: int) -> dict[Priority, int]:
        """How many live messages each lane holds at second ``now`` (what a read finds),
        kept as messages come and go (``_Tally``): no walk of the log."""
        if self._tally is None:
            return dict.fromkeys(PRIORITY_ORDER, 0)
        return self._tally.live(now, self.messages)

    # -- where a read starts ---------------------------------------------------------------

    def offset_at_time(self, timestamp: int) -> int:
        """The first msg_id written at or after ``timestamp``; when none was, the earliest
        offset (RobustMQ's fallback, so a time in the future means "from the start")."""
        index = bisect_left(self.times, timestamp)
        while index < len(self.order):  # skip removed messages: they are no longer written
            if self.order[index] in self.messages:
                return self.order[index]
            index += 1
        return self.start_offset

    def clamp(self, offset: int) -> int:
        """``offset`` held within [earliest, end], as RobustMQ holds a ``from_id``."""
        return min(max(offset, self.start_offset), self.end_offset)

    def drop_before(self, cutoff: int) -> list[int]:
        """RobustMQ's shard retention (storage-engine ``rocksdb/expire.rs``): remove the oldest
        messages, in msg_id order, up to the first one written at or after ``cutoff``, and
        move the earliest offset past them. The msg_ids removed."""
        if not self.times or self.times[0] >= cutoff:
            return []
        index = bisect_left(self.times, cutoff)  # create_times only grow along the log
        victims = [i for i in self.order[:index] if i in self.messages]
        for msg_id in victims:
            self.remove(msg_id)
        if victims:
            self.start_offset = max(self.start_offset, victims[-1] + 1)
        return victims

    # -- reading ---------------------------------------------------------------------------

    def _walk(
        self, name: object, ids: list[int], start: int | None, now: int
    ) -> Iterator[StoredMessage]:
        """The live messages of index ``name`` (its ``ids``) from msg_id ``start`` on,
        jumping over the dead runs known and noting those found."""
        index = 0 if start is None else bisect_left(ids, start)
        runs = self._runs.get(name)
        messages = self.messages
        dead_from = index  # where the run of dead entries being walked began
        while index < len(ids):
            jump = runs.get(index) if runs else None
            if jump is not None and jump[1] <= now:
                index = jump[0]
                continue
            message = messages.get(ids[index])
            if message is None or message.expired(now):
                index += 1
                continue
            self._note_run(name, dead_from, index, now)  # before the yield: a reader may stop
            index += 1
            dead_from = index
            yield message
        self._note_run(name, dead_from, index, now)

    def _note_run(self, name: object, first: int, end: int, now: int) -> None:
        if end - first >= _MIN_RUN:  # short runs cost less to walk than to remember
            self._runs.setdefault(name, {})[first] = (end, now)

    def read_lane(
        self, priority: Priority, start: int | None, limit: int, now: int
    ) -> Iterator[StoredMessage]:
        """Up to ``limit`` live messages of one priority from msg_id ``start`` on (None: from
        the lane's beginning), oldest first."""
        walk = self._walk(("lane", priority), self.lanes[priority], start, now)
        return islice(walk, max(limit, 0))

    def read(self, start: int | None, limit: int, now: int) -> Iterator[StoredMessage]:
        """Up to ``limit`` live messages of any priority from msg_id ``start`` on."""
        return islice(self._walk("order", self.order, start, now), max(limit, 0))

    def read_tag(self, tag: str, limit: int, now: int) -> Iterator[StoredMessage]:
        """Up to ``limit`` live messages carrying ``tag`` or a tag below it (``tag/...``), in
        RobustMQ's order: its tag index is a key scan of ``<tag>/`` (rocksdb-engine keys
        ``tag_index_key``, storage-engine rocksdb ``read.rs`` ``read_by_tag``), so it finds
        ``team/alpha`` for ``team`` and returns the entries in the order of their keys,
        ``<tag>/<msg_id as 20 digits>`` (``finds``, ``subtree``)."""
        if tag not in self._parents:  # no tag below it: its own messages, if it has any
            ids = self.tagged.get(tag)
            walk = () if ids is None else self._walk(("tag", tag), ids, None, now)
            return islice(walk, max(limit, 0))
        # the tags below it are one range of the sorted names
        names, (low, high) = self._tag_names, subtree(tag)
        below = names[bisect_left(names, low) : bisect_left(names, high)]
        found = [tag, *below] if tag in self.tagged else below
        if found == [tag]:  # the common case: one tag, its ids ascending
            walks = self._walk(("tag", tag), self.tagged[tag], None, now)
        else:
            keyed = heapq.merge(*(self._keyed_walk(t, now) for t in found), key=lambda k: k[0])
            walks = (message for _, message in keyed)
        return islice(walks, max(limit, 0))

    def _keyed_walk(self, tag: str, now: int) -> Iterator[tuple[str, StoredMessage]]:
        for message in self._walk(("tag", tag), self.tagged[tag], None, now):
            yield f"{tag}/{message.msg_id:020}", message

    def by_key(self, key: str, now: int) -> StoredMessage | None:
        msg_id = self.keys.get(key)
        message = None if msg_id is None else self.messages.get(msg_id)
        return None if message is None or message.expired(now) else message
