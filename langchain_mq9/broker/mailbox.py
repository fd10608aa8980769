"""One mailbox: its messages, their priority lanes, and the consumer groups reading them.

Costs are kept independent of how many messages a mailbox holds:

* each priority has a *lane*, the ascending list of its msg_ids (ids only grow, so appending
  keeps it sorted); a FETCH bisects into the lanes and walks at most the messages it returns
  plus the ones it must skip (leased to another worker, or already removed);
* removed messages (deleted, replaced by key, expired) leave a hole in the lists that is
  skipped and, once holes are the majority, compacted away in one pass (amortised O(1));
* a group remembers a per-lane *floor* below which everything is done, plus the acks and
  leases above it, so a group's state stays the size of its in-flight window.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field

from ..protocol import PRIORITY_ORDER, Priority

Admit = Callable[["StoredMessage"], bool]
"""Asked before each message joins an answer; False = the answer is full, stop there."""

_COMPACT_MIN_HOLES = 256


@dataclass(slots=True)
class StoredMessage:
    msg_id: int
    payload: bytes
    priority: Priority
    create_time: int
    key: str | None = None
    tags: tuple[str, ...] = ()

    def to_wire(self, encode_payload) -> dict:
        wire = {
            "msg_id": self.msg_id,
            "payload": encode_payload(self.payload),
            "priority": self.priority.value,
            "create_time": self.create_time,
        }
        if self.key is not None:
            wire["key"] = self.key
        if self.tags:
            wire["tags"] = list(self.tags)
        return wire


@dataclass(slots=True)
class Group:
    """A stateful consumer group: where it stands, what it acked, what it holds on lease."""

    floors: dict[Priority, int]
    acked: set[int] = field(default_factory=set)
    leases: dict[int, float] = field(default_factory=dict)  # msg_id -> lease end
    batches: dict[int, tuple[int, ...]] = field(default_factory=dict)  # msg_id -> its FETCH

    @classmethod
    def starting_at(cls, msg_id: int) -> Group:
        return cls(floors={priority: msg_id for priority in PRIORITY_ORDER})


class Mailbox:
    def __init__(self, address: str, *, created_at: float, ttl: int) -> None:
        self.address = address
        self.expires_at: float | None = created_at + ttl if ttl else None
        self.next_id = 0
        self.messages: dict[int, StoredMessage] = {}
        self.lanes: dict[Priority, list[int]] = {p: [] for p in PRIORITY_ORDER}
        # Every msg_id in arrival order with its create_time, for time-based starts and QUERY.
        self.order: list[int] = []
        self.times: list[int] = []
        self.keys: dict[str, int] = {}
        self.groups: dict[str, Group] = {}
        self._holes = 0

    # -- storing ---------------------------------------------------------------------------

    def append(
        self,
        payload: bytes,
        priority: Priority,
        create_time: int,
        key: str | None,
        tags: tuple[str, ...],
    ) -> StoredMessage:
        if key is not None and key in self.keys:
            self.remove(self.keys[key])
        message = StoredMessage(self.next_id, payload, priority, create_time, key, tags)
        self.insert(message)
        return message

    def insert(self, message: StoredMessage) -> None:
        """Index ``message`` under its own msg_id (``append``, and durable storage restoring a
        mailbox). msg_ids must arrive in increasing order."""
        self.next_id = max(self.next_id, message.msg_id + 1)
        self.messages[message.msg_id] = message
        self.lanes[message.priority].append(message.msg_id)
        self.order.append(message.msg_id)
        self.times.append(message.create_time)
        if message.key is not None:
            self.keys[message.key] = message.msg_id

    def remove(self, msg_id: int) -> bool:
        message = self.messages.pop(msg_id, None)
        if message is None:
            return False
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
        pairs = [(i, t) for i, t in zip(self.order, self.times, strict=False) if i in live]
        self.order = [i for i, _ in pairs]
        self.times = [t for _, t in pairs]
        # A dict never shrinks as entries are popped: copy it so the table is sized for what
        # is left, and a mailbox that held 100,000 messages gives that memory back when
        # they are gone.
        self.messages = dict(live)
        self._holes = 0

    def first_id_at_or_after(self, create_time: int) -> int:
        """The msg_id where a ``from_time`` start begins (create_time never decreases)."""
        index = bisect_left(self.times, create_time)
        return self.order[index] if index < len(self.order) else self.next_id

    # -- handing out -----------------------------------------------------------------------

    def peek(self, start: int, limit: int, admit: Admit | None = None) -> list[StoredMessage]:
        """Stateless FETCH: up to ``limit`` messages with msg_id >= ``start``, by priority.
        ``admit`` may end the answer early (it is full): nothing after that is handed out."""
        taken: list[StoredMessage] = []
        for priority in PRIORITY_ORDER:
            lane = self.lanes[priority]
            index = bisect_left(lane, start)
            while index < len(lane) and len(taken) < limit:
                message = self.messages.get(lane[index])
                if message is not None:
                    if admit is not None and not admit(message):
                        limit = len(taken)  # full: lower priorities must wait as well
                        break
                    taken.append(message)
                index += 1
        return taken

    def lease(
        self,
        group: Group,
        limit: int,
        now: float,
        lease_until: float,
        admit: Admit | None = None,
    ) -> list[StoredMessage]:
        """Stateful FETCH: hand out up to ``limit`` messages the group neither acked nor holds.
        ``admit`` may end the answer early (it is full): what did not fit is not leased."""
        taken: list[StoredMessage] = []
        for priority in PRIORITY_ORDER:
            if len(taken) >= limit:
                break
            lane = self.lanes[priority]
            index = bisect_left(lane, group.floors[priority])
            advancing = True  # everything walked so far is done: the floor may follow
            while index < len(lane) and len(taken) < limit:
                msg_id = lane[index]
                index += 1
                message = self.messages.get(msg_id)
                if message is None or msg_id in group.acked:
                    if advancing:  # done and contiguous with the floor: forget it
                        group.floors[priority] = msg_id + 1
                        group.acked.discard(msg_id)
                        group.leases.pop(msg_id, None)
                        group.batches.pop(msg_id, None)
                    continue
                advancing = False
                lease_end = group.leases.get(msg_id)
                if lease_end is not None and lease_end > now:
                    continue
                if admit is not None and not admit(message):
                    limit = len(taken)  # full: lower priorities must wait as well
                    break
                taken.append(message)
        batch = tuple(m.msg_id for m in taken)
        for msg_id in batch:
            group.leases[msg_id] = lease_until
            group.batches[msg_id] = batch
        return taken

    def ack(self, group: Group, msg_id: int) -> None:
        """Confirm ``msg_id`` and everything handed out before it in the same FETCH answer."""
        batch = group.batches.get(msg_id)
        confirmed = batch[: batch.index(msg_id) + 1] if batch else (msg_id,)
        for done in confirmed:
            group.leases.pop(done, None)
            group.batches.pop(done, None)
            message = self.messages.get(done)
            if message is not None and done >= group.floors[message.priority]:
                group.acked.add(done)

    # -- reading without consuming ---------------------------------------------------------

    def query(
        self,
        *,
        key: str | None,
        tags: tuple[str, ...],
        since: int | None,
        limit: int | None,
        admit: Admit | None = None,
    ) -> list[StoredMessage]:
        """Messages matching every given filter, newest ``limit`` of them, in msg_id order.
        ``admit`` may end the answer early (it is full): the newest that fit are kept."""
        if key is not None:
            newest = self.keys.get(key)
            candidates = [self.messages[newest]] if newest is not None else []
        else:
            candidates = self._newest_first(since)
        found: list[StoredMessage] = []
        for message in candidates:
            if limit is not None and len(found) >= limit:
                break
            if since is not None and message.create_time <= since:
                continue
            if tags and not set(tags).issubset(message.tags):
                continue
            if admit is not None and not admit(message):
                break
            found.append(message)
        found.reverse()
        return found

    def _newest_first(self, since: int | None):
        """Live messages newest first, down to the first with create_time <= ``since``.

        ``messages`` holds them in msg_id order (create_time never decreases along it) and,
        unlike ``order``, without the holes removed messages leave until the next compaction:
        reading the newest few costs the same however many were removed near the end.
        """
        for message in reversed(self.messages.values()):
            if since is not None and message.create_time <= since:
                return
            yield message
