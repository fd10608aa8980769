"""``SentKeys``: the keyed SENDs a store held in this process answered, per mailbox
and key, until their window ends: the first SEND's msg_id (-1: delayed) and fingerprint.

Kept in the order written, which is the order their windows end (one broker, one window), so
the ones past their end are dropped from the front as new ones come; one found past its end is
absent, whatever is left to drop. Times are milliseconds (a window of whole seconds counted
from a truncated second let a resend 1.2 s into a 2 s window store again).

A key is its sender's: a broker that vouches for the sender keeps it under
``scoped_key(sender, key)``, so another identity's SEND of the same key is a key of its own.
The keys held are counted in all and per party, so a store can refuse one past its bounds
(``room``): a party is the vouched sender of a scoped key, or the client an open broker told
apart for it (the address nats-server vouches for; the key itself stays unscoped there,
one per mailbox as RobustMQ keeps it). A reply inbox is no party (any client may name
another's), so a key nothing vouches for counts in the bound in all alone. What one costs is
measured in bench/RESULTS.md.
"""

from __future__ import annotations

from collections import OrderedDict

from ..key_parties import (
    ALL_FULL,
    CALLER_FULL,
    OPEN_FULL,
    PARTY_FULL,
    caller_party,
    key_sender,
    scoped_key,
)
from ..key_parties import of_caller as _of_caller

# msg_id, fingerprint, the millisecond the window ends, the party it counts against (None: none)
Kept = tuple[int, bytes, int, str | None]
_NEVER = 2**63  # (no key kept: no window ends)
# whose a key is, and the words past a bound: both stores', kept in key_parties.py (the
# cluster store imports nothing of this one); their names here are the engine's imports too
__all__ = [
    "ALL_FULL",
    "CALLER_FULL",
    "OPEN_FULL",
    "PARTY_FULL",
    "SentKeys",
    "caller_party",
    "key_sender",
    "scoped_key",
]


class SentKeys:
    """Each (mailbox, key) answered, with what it was answered and until when."""

    def __init__(self) -> None:
        self._kept: OrderedDict[tuple[str, str], Kept] = OrderedDict()
        # the front's window ends no sooner than this millisecond (a bound, never above it):
        # most SENDs' expire looks no further
        self._soonest = _NEVER
        self._per_party: dict[str, int] = {}  # the keys each party holds

    def __len__(self) -> int:
        return len(self._kept)

    def held_by(self, party: str) -> int:
        """How many keys ``party`` holds (a vouched sender, or a client an open broker told
        apart): ended ones not yet dropped too."""
        return self._per_party.get(party, 0)

    def most_held(self) -> int:
        """The most keys one party holds (0: none holds any)."""
        return max(self._per_party.values(), default=0)

    def room(
        self, key: str, most: int | None, most_each: int | None, party: str | None = None
    ) -> str | None:
        """None when one more key like ``key`` fits ``most`` in all and ``most_each`` for its
        party (None: no bound), the party ``party`` or else the sender ``key`` is scoped to;
        else which bound is reached, in words said to the sender. The words name
        the sender's own bound alone, never a count of what others hold (a server speaking
        for many callers passes them on)."""
        if party is None:
            party = key_sender(key)
        carried = None if party is None else _of_caller(party)
        if carried is not None:  # a carrier's caller: its share, then its sender's bound
            sender, counted, share = carried
            if self.held_by(counted) >= share:
                return CALLER_FULL
            party = sender
        if party is not None and most_each is not None and self.held_by(party) >= most_each:
            return PARTY_FULL
        if most is not None and len(self._kept) >= most:
            return ALL_FULL if party is not None else OPEN_FULL
        return None

    def get(self, mailbox: str, key: str, now: int) -> tuple[int, bytes] | None:
        """The first SEND's msg_id and fingerprint, while its window lasts at ``now`` (ms)."""
        kept = self._kept.get((mailbox, key))
        if kept is None or kept[2] <= now:
            return None
        return kept[0], kept[1]

    def put(
        self,
        mailbox: str,
        key: str,
        msg_id: int,
        fingerprint: bytes,
        until: int,
        party: str | None = None,
    ) -> str | None:
        """Keep a key until millisecond ``until`` (written again: it moves to the end, still
        its first party's), counted against ``party``, else the sender it is scoped to; the
        party it counts against is returned (what a store keeps with it)."""
        kept, name = self._kept, (mailbox, key)
        earlier = kept.pop(name, None)
        if earlier is not None:  # (it may have been the front: the next one is, whatever its end)
            party = earlier[3]
            kept[name] = (msg_id, fingerprint, until, party)
            self._soonest = min(self._soonest, next(iter(kept.values()))[2])
        else:
            if party is None:
                party = key_sender(key)
            kept[name] = (msg_id, fingerprint, until, party)
            for each in self._parties(party):  # (counted against its bounds)
                self._per_party[each] = self._per_party.get(each, 0) + 1
        if until < self._soonest:
            self._soonest = until
        return party

    def expire(self, now: int) -> bool:
        """Drop the keys whose window ended by ``now`` (ms), oldest first; whether any went."""
        if now < self._soonest:
            return False
        kept = self._kept
        dropped = False
        self._soonest = _NEVER
        while kept:
            name, (_, _, until, party) = next(iter(kept.items()))
            if until > now:
                self._soonest = until
                break
            del kept[name]
            for each in self._parties(party):
                self._forget(each)
            dropped = True
        return dropped

    @staticmethod
    def _parties(party: str | None) -> tuple[str, ...]:
        """Whose counts a key of ``party`` is in: its own, and a carried caller's sender."""
        if party is None:
            return ()
        carried = _of_caller(party)
        return (party,) if carried is None else (carried[1], carried[0])

    def _forget(self, party: str) -> None:
        left = self._per_party[party] - 1
        if left:
            self._per_party[party] = left
        else:
            del self._per_party[party]

    def rows(self) -> list[tuple[str, str, int, bytes, int]]:
        """Every key kept: mailbox, key, msg_id, fingerprint, until (ms). (Its party is kept
        by the store beside it, ``Storage.key_sent``.)"""
        return [
            (box, key, msg_id, fp, until)
            for (box, key), (msg_id, fp, until, _) in self._kept.items()
        ]
