"""``SentKeys``: the keyed SENDs (issue #90) a store held in this process answered, per mailbox
and key, until their window ends: the first SEND's msg_id (-1: delayed) and fingerprint.

Kept in the order written, which is the order their windows end (one broker, one window), so
the ones past their end are dropped from the front as new ones come; one found past its end is
absent, whatever is left to drop. Times are milliseconds (#98: a window of whole seconds counted
from a truncated second let a resend 1.2 s into a 2 s window store again).

A key is its sender's (#98): a broker that vouches for the sender keeps it under
``scoped_key(sender, key)``, so another identity's SEND of the same key is a key of its own.
The keys held are counted in all and per vouched sender, so a store can refuse one past its
bounds (``room``). What one costs is measured in docs/bench.md.
"""

from __future__ import annotations

from collections import OrderedDict

Kept = tuple[int, bytes, int]  # msg_id, fingerprint, the millisecond the window ends
_NEVER = 2**63  # (no key kept: no window ends)
_SCOPE = "\n"  # between a sender and its key: no header value (so no key) holds a newline


def scoped_key(sender: str | None, key: str) -> str:
    """The key a store keeps for ``sender``'s SEND keyed ``key``: its own, whoever else uses
    ``key`` (``sender`` None: the key as sent, one space for every unvouched sender)."""
    return key if sender is None else f"{sender}{_SCOPE}{key}"


def key_sender(scoped: str) -> str | None:
    """The sender a kept key is scoped to (``scoped_key``'s), None for an unscoped one."""
    sender, scope, _ = scoped.partition(_SCOPE)
    return sender if scope else None


class SentKeys:
    """Each (mailbox, key) answered, with what it was answered and until when."""

    def __init__(self) -> None:
        self._kept: OrderedDict[tuple[str, str], Kept] = OrderedDict()
        # the front's window ends no sooner than this millisecond (a bound, never above it):
        # most SENDs' expire looks no further (#90)
        self._soonest = _NEVER
        self._per_sender: dict[str, int] = {}  # the keys scoped to each vouched sender

    def __len__(self) -> int:
        return len(self._kept)

    def held_by(self, sender: str) -> int:
        """How many keys scoped to ``sender`` are kept (ended ones not yet dropped too)."""
        return self._per_sender.get(sender, 0)

    def room(self, key: str, most: int | None, most_each: int | None) -> str | None:
        """None when one more key like ``key`` (a scoped key's sender counted) fits ``most`` in
        all and ``most_each`` a sender (None: no bound); else which bound is reached, in
        words (#98)."""
        if most is not None and len(self._kept) >= most:
            return f"this broker holds {most} keys in all"
        held = self._per_sender.get(key.partition(_SCOPE)[0], 0) if _SCOPE in key else 0
        if most_each is not None and held >= most_each:
            return f"you hold {most_each} keys, the most one sender may"
        return None

    def get(self, mailbox: str, key: str, now: int) -> tuple[int, bytes] | None:
        """The first SEND's msg_id and fingerprint, while its window lasts at ``now`` (ms)."""
        kept = self._kept.get((mailbox, key))
        if kept is None or kept[2] <= now:
            return None
        return kept[0], kept[1]

    def put(self, mailbox: str, key: str, msg_id: int, fingerprint: bytes, until: int) -> None:
        """Keep a key until millisecond ``until`` (written again: it moves to the end)."""
        kept, name = self._kept, (mailbox, key)
        moved = kept.pop(name, None) is not None
        kept[name] = (msg_id, fingerprint, until)
        if moved:  # (it may have been the front: the next one is, whatever its end)
            self._soonest = min(self._soonest, next(iter(kept.values()))[2])
        elif _SCOPE in key:  # (a vouched sender's: counted against its bound)
            sender = key.partition(_SCOPE)[0]
            self._per_sender[sender] = self._per_sender.get(sender, 0) + 1
        if until < self._soonest:
            self._soonest = until

    def expire(self, now: int) -> bool:
        """Drop the keys whose window ended by ``now`` (ms), oldest first; whether any went."""
        if now < self._soonest:
            return False
        kept = self._kept
        dropped = False
        self._soonest = _NEVER
        while kept:
            name, (_, _, until) = next(iter(kept.items()))
            if until > now:
                self._soonest = until
                break
            del kept[name]
            if _SCOPE in name[1]:
                self._forget(name[1].partition(_SCOPE)[0])
            dropped = True
        return dropped

    def _forget(self, sender: str) -> None:
        left = self._per_sender[sender] - 1
        if left:
            self._per_sender[sender] = left
        else:
            del self._per_sender[sender]

    def rows(self) -> list[tuple[str, str, int, bytes, int]]:
        """Every key kept: mailbox, key, msg_id, fingerprint, until (ms)."""
        return [(box, key, *kept) for (box, key), kept in self._kept.items()]
