"""How large a mailbox's messages are, as its head says (issue #98, item 8): the reads of a
mailbox are counted in the read window (``_nats/jetstream/window.py``) at the largest message
the mailbox was ever written, not at the largest the servers carry.

Every write of a mailbox ends with its head (numbering.py), expecting the head before it: so
the heads of a mailbox are one chain, and each says (``LARGEST``) the most bytes any message
written into the mailbox up to it takes as the servers keep it (its subject, headers and data,
``stored_size``): the one before's, or this batch's largest if larger. A head without it
(written before heads said it, or after one that did not: a layout's older mailboxes, whose
messages no head vouches for) says nothing, and reads of the mailbox are counted at the
servers' largest, as before.

A broker keeps, for each mailbox, the newest head it wrote or read (``Sizes``): a read as of
that head (its msg_id or sequence at or below the head's) asks with its largest. A read that
may bring a message newer than any head this broker saw (a mailbox's newest by key, a lane's
last without a head) is counted at the servers' largest."""

from __future__ import annotations

from dataclasses import dataclass

LARGEST = "Mq9-Largest"  # on a head: the most bytes a message of the mailbox takes, as kept
# The most a head, a tag index entry or a group's position takes as kept (a subject of some
# 1.1 KB at most, a tag of 1,024 bytes, a few headers): read counted at that
SMALL_ENTRY = 8192
# What a stored message carries besides its subject, headers and data: an atomic batch's
# headers, the header block's first line and end (counted over, never under)
_OWN = 256
KEPT = 65_536  # mailboxes whose head a broker remembers, then forgets all


def stored_size(subject: str, data: bytes, headers: dict[str, str]) -> int:
    """The most bytes a message written with these takes as the servers keep it (less the
    file store's own: window.py adds what an answer carries besides)."""
    lines = sum(len(name) + len(value.encode()) + 4 for name, value in headers.items())
    return len(subject.encode()) + lines + len(data) + _OWN


def largest_of(headers: dict[str, str]) -> int | None:
    """A head's largest message (``LARGEST``); None when it does not say."""
    text = headers.get(LARGEST)
    if text is None:
        return None
    try:
        largest = int(text)
    except ValueError:
        return None
    return largest if largest >= 0 else None


@dataclass(frozen=True, slots=True)
class Head:
    """A mailbox's head as a broker last saw it: its sequence, the next msg_id it says, and
    the largest message written up to it."""

    seq: int
    next_id: int
    largest: int


class Sizes:
    """The newest head of each mailbox (by token) this broker wrote or read, that says how
    large its messages are."""

    def __init__(self) -> None:
        self._heads: dict[str, Head] = {}

    def forget(self) -> None:
        self._heads.clear()

    def saw(self, box: str, seq: int, next_id: int, largest: int | None) -> None:
        """``box``'s head at ``seq`` says ``next_id`` and ``largest`` (None: nothing)."""
        if largest is None:
            return
        known = self._heads.get(box)
        if known is not None and known.seq >= seq:
            return
        if len(self._heads) >= KEPT:
            self._heads.clear()
        self._heads[box] = Head(seq, next_id, largest)

    def largest(self, box: str) -> int | None:
        """The most a message of ``box`` takes as of the newest head seen; None: unknown."""
        head = self._heads.get(box)
        return None if head is None else head.largest

    def below_id(self, box: str, msg_id: int) -> int | None:
        """The most a message of ``box`` numbered ``msg_id`` or less takes; None: unknown."""
        head = self._heads.get(box)
        return head.largest if head is not None and msg_id < head.next_id else None

    def below_seq(self, box: str, seq: int) -> int | None:
        """The most a message of ``box`` at sequence ``seq`` or before takes; None: unknown."""
        head = self._heads.get(box)
        return head.largest if head is not None and seq <= head.seq else None
