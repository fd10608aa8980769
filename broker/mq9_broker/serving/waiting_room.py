"""Costly requests waiting their turn (serve.py), and who may hold how much of the room.

A requester (serve.py's: a reply inbox, an agent, or on the open cluster a connection) may
have ``per_requester`` waiting, and everyone together ``in_all``. Requesters take turns in
the order they came, one that took a turn going behind the others.

On the open cluster nats-server tells the broker which connection sent a request
and from which address (pacing.client_of): a flooder opening many connections from one
address held ``per_requester`` for each, and six of them filled the whole room, so every other
client's costly requests were refused. So where an address is vouched for:

- the connections of one address hold at most ``per_address`` together;
- and a full room keeps no one out who holds less than the largest holder: a request of a
  connection holding fewer than the connection of its address holding most (its address at
  its ``per_address``), or of an address holding fewer than the address holding most (the room
  at ``in_all``), takes the place of that holder's newest request, which is refused as it
  would have been had it come last (it was never read: nothing of it was done).

A requester nothing vouches for (a reply inbox the client chose: the dev broker without
credentials) takes no one's place, and no one takes its place: it could make up a new
inbox for each request, each holding nothing. Enforcing brokers key by agent, which
their credential vouches for: serve.py passes the agent as its address.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class RoomFull(Exception):
    """A request that may not wait: the message says whose waiting requests fill the room."""


class WaitingRoom(Generic[T]):
    """What waits, by requester, within ``per_requester``, ``per_address`` and ``in_all``."""

    def __init__(self, per_requester: int, per_address: int, in_all: int) -> None:
        self.per_requester, self.per_address, self.in_all = per_requester, per_address, in_all
        # requesters in the order of their turns (a dict keeps insertion order)
        self._queued: dict[str, deque[T]] = {}
        self._address_of: dict[str, str] = {}  # requesters with an address, waiting
        self._at: dict[str, int] = {}  # requests waiting, by address
        self.count = 0  # requests waiting in all

    def __len__(self) -> int:
        return self.count

    def waiting(self, who: str) -> int:
        queue = self._queued.get(who)
        return 0 if queue is None else len(queue)

    def enter(self, who: str, address: str | None, item: T) -> list[T]:
        """Let ``item`` of ``who`` (from ``address``, None if unknown) wait; returns the
        requests it took the place of (to be refused: nothing of them was done). Raises
        ``RoomFull`` when it may not wait."""
        mine = self.waiting(who)
        if mine >= self.per_requester:
            raise RoomFull(f"{mine} of your")
        pushed: list[T] = []
        if address is not None and self._at.get(address, 0) >= self.per_address:
            largest = self._largest(lambda w: self._address_of.get(w) == address)
            if largest is None or mine + 1 >= self.waiting(largest):
                raise RoomFull(f"{self._at[address]} of your address's")
            pushed.append(self._pop_newest(largest))
        elif self.count >= self.in_all:
            address_held = 0 if address is None else self._at.get(address, 0)
            fullest = max(self._at, key=self._at.__getitem__, default=None)
            if address is None or fullest is None:
                raise RoomFull(f"{self.count}")
            if address_held + 1 >= self._at[fullest]:
                raise RoomFull(f"{self.count}")
            largest = self._largest(lambda w: self._address_of.get(w) == fullest)
            assert largest is not None  # an address holds requests of its requesters
            pushed.append(self._pop_newest(largest))
        self._queued.setdefault(who, deque()).append(item)
        self.count += 1
        if address is not None:
            self._address_of[who] = address
            self._at[address] = self._at.get(address, 0) + 1
        return pushed

    def _largest(self, among: Callable[[str], bool]) -> str | None:
        """The requester ``among`` those waiting holding the most (the first, on a tie)."""
        chosen, most = None, 0
        for who, queue in self._queued.items():
            if len(queue) > most and among(who):
                chosen, most = who, len(queue)
        return chosen

    def _pop_newest(self, who: str) -> T:
        queue = self._queued[who]
        item = queue.pop()
        if not queue:
            del self._queued[who]
        self._left(who)
        return item

    def _left(self, who: str) -> None:
        """One request of ``who`` no longer waits."""
        self.count -= 1
        address = self._address_of.get(who)
        if address is None:
            return
        left = self._at[address] - 1
        if left:
            self._at[address] = left
        else:
            del self._at[address]
        if who not in self._queued:
            del self._address_of[who]

    def take(self, may_run: Callable[[str], bool]) -> tuple[str, T] | None:
        """The next request to run: the first requester in turn that ``may_run``, its oldest;
        the requester goes behind the others. None when none may."""
        turn = next((w for w in self._queued if may_run(w)), None)
        if turn is None:
            return None
        queue = self._queued.pop(turn)
        item = queue.popleft()
        if queue:
            self._queued[turn] = queue  # its next waits behind the other requesters
        self._left(turn)
        return turn, item

    def clear(self) -> list[T]:
        """Everything waiting, in no particular order; the room left empty."""
        items = [item for queue in self._queued.values() for item in queue]
        self._queued.clear()
        self._address_of.clear()
        self._at.clear()
        self.count = 0
        return items
