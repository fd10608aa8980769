"""``SentKeys``: the keyed SENDs (issue #90) a store held in this process answered, per mailbox
and key, until their window ends: the first SEND's msg_id (-1: delayed) and fingerprint.

Kept in the order written, which is the order their windows end (one broker, one window), so
the ones past their end are dropped from the front as new ones come; one found past its end is
absent, whatever is left to drop. What one costs is measured in docs/bench.md.
"""

from __future__ import annotations

from collections import OrderedDict

Kept = tuple[int, bytes, int]  # msg_id, fingerprint, the second the window ends
_NEVER = 2**63  # (no key kept: no window ends)


class SentKeys:
    """Each (mailbox, key) answered, with what it was answered and until when."""

    def __init__(self) -> None:
        self._kept: OrderedDict[tuple[str, str], Kept] = OrderedDict()
        # the front's window ends no sooner than this second (a bound, never above it): most
        # SENDs' expire looks no further (#90)
        self._soonest = _NEVER

    def __len__(self) -> int:
        return len(self._kept)

    def get(self, mailbox: str, key: str, now: int) -> tuple[int, bytes] | None:
        """The first SEND's msg_id and fingerprint, while its window lasts at ``now``."""
        kept = self._kept.get((mailbox, key))
        if kept is None or kept[2] <= now:
            return None
        return kept[0], kept[1]

    def put(self, mailbox: str, key: str, msg_id: int, fingerprint: bytes, until: int) -> None:
        """Keep a key until second ``until`` (written again: it moves to the end)."""
        kept, name = self._kept, (mailbox, key)
        moved = kept.pop(name, None) is not None
        kept[name] = (msg_id, fingerprint, until)
        if moved:  # (it may have been the front: the next one is, whatever its end)
            self._soonest = min(self._soonest, next(iter(kept.values()))[2])
        if until < self._soonest:
            self._soonest = until

    def expire(self, now: int) -> bool:
        """Drop the keys whose window ended by ``now``, oldest first; whether any went."""
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
            dropped = True
        return dropped

    def rows(self) -> list[tuple[str, str, int, bytes, int]]:
        """Every key kept: mailbox, key, msg_id, fingerprint, until."""
        return [(box, key, *kept) for (box, key), kept in self._kept.items()]
