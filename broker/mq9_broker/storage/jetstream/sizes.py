"""How large a mailbox's messages are, as its head says: the reads of a
mailbox are counted in the read window (``nats_floor/jetstream/window.py``) at the largest message
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
last without a head) is counted at the servers' largest.

A head says what the mailbox holds now, not the most it was ever written: each
message above ``LISTED_FROM`` is listed on the heads by its msg_id (``LARGE``), until it is
deleted (messages.py writes the head again without it), passes its TTL (such a message carries
a ``Nats-TTL``: the servers remove it) or the retention; the messages below are said by the
most any took (``SMALL``), and large ones past the list's room by the most they take until the
last of them may be gone (``SPILLED``). ``LARGEST`` is what is held at most, which an earlier
broker reads. So one 31 MiB SEND, deleted, leaves the mailbox's reads sized by what is left.
(An ACK removes nothing: a QUERY still reads the message, and a group's read past it starts at
a sequence at or below its position, which may be before it: reads stay sized for it.)"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, replace

LARGEST = "Mq9-Largest"  # on a head: the most bytes a message of the mailbox takes, as kept
# On a head: the messages above LISTED_FROM the mailbox holds, "msg_id:size:until" each
# (until: the second after which the servers hold it no more), and the most any other took
LARGE = "Mq9-Large"
SMALL = "Mq9-Small"
# The most the large messages a head could not list take, "size:until" (until: the latest
# second one of them may be held): counted until then, as the servers may hold any of them
SPILLED = "Mq9-Spilled"
LISTED_FROM = 64 * 1024
# Listed at most (some 4 KiB of a head, read at SMALL_ENTRY): a head of more keeps the largest,
# the others said by SPILLED until the last of them would be gone
LISTED_MOST = 128
# Seconds a listed message with a TTL is still counted after it ended: the servers remove it
# at their next tick of TTLs (about a second), not at once
TTL_MARGIN = 5
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
class HeadSizes:
    """What a head says its mailbox's messages take: the most any unlisted one took
    (``small``), each listed one, ``(msg_id, size, until)`` in msg_id order, and the large ones
    past the list's room (``spilled``: the most they take and when the last may go)."""

    small: int = 0
    large: tuple[tuple[int, int, int], ...] = ()
    spilled: tuple[int, int] = (0, 0)

    @classmethod
    def of(cls, headers: dict[str, str]) -> HeadSizes | None:
        """What a head says (None: it does not); a head written before it listed (its
        ``LARGEST`` alone) says that of every message."""
        largest = largest_of(headers)
        if largest is None:
            return None
        small = _number(headers.get(SMALL))
        if small is None:
            return cls(largest)
        listed = [_numbers(item, 3) for item in (headers.get(LARGE) or "").split()]
        spilled = _numbers(headers.get(SPILLED) or "0:0", 2)
        if spilled is None or None in listed:
            return cls(largest)  # (not what a broker writes: the most it says, for all)
        return cls(small, tuple(sorted(listed)), spilled)  # type: ignore[arg-type]

    def headers(self) -> dict[str, str]:
        said = {LARGEST: str(self.most()), SMALL: str(self.small)}
        if self.large:
            said[LARGE] = " ".join(f"{i}:{size}:{until}" for i, size, until in self.large)
        if self.spilled[0]:
            said[SPILLED] = "{}:{}".format(*self.spilled)
        return said

    def most(self, from_id: int = 0, now: int | None = None) -> int:
        """The most a message numbered ``from_id`` or more takes, at second ``now`` (None:
        every listed one counted)."""
        sizes = [
            size
            for msg_id, size, until in self.large
            if msg_id >= from_id and (now is None or now <= until)
        ]
        spilled, until = self.spilled
        if now is None or now <= until:
            sizes.append(spilled)
        return max([self.small, *sizes])

    def written(self, messages: Iterable[tuple[int, int, int]], now: int) -> HeadSizes:
        """With ``messages`` written, ``(msg_id, size, until)`` each; those past their
        ``until`` at ``now`` dropped."""
        small, large = self.small, [item for item in self.large if now <= item[2]]
        spilled = self.spilled if now <= self.spilled[1] else (0, 0)
        for msg_id, size, until in messages:
            if size > LISTED_FROM:
                large.append((msg_id, size, until))
            else:
                small = max(small, size)
        if len(large) > LISTED_MOST:  # the smallest said by SPILLED until the last is gone
            large.sort(key=lambda item: item[1], reverse=True)
            for _, size, until in large[LISTED_MOST:]:
                spilled = (max(spilled[0], size), max(spilled[1], until))
            large = large[:LISTED_MOST]
        return HeadSizes(small, tuple(sorted(large)), spilled)

    def without(self, msg_id: int) -> HeadSizes:
        """With message ``msg_id`` deleted."""
        return replace(self, large=tuple(item for item in self.large if item[0] != msg_id))

    def lists(self, msg_id: int) -> bool:
        return any(item[0] == msg_id for item in self.large)


def _numbers(text: str, count: int) -> tuple[int, ...] | None:
    """``count`` numbers written "a:b:...", or None."""
    parts = [_number(part) for part in text.split(":")]
    if len(parts) != count or None in parts:
        return None
    return tuple(part for part in parts if part is not None)


def _number(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value >= 0 else None


@dataclass(frozen=True, slots=True)
class Head:
    """A mailbox's head as a broker last saw it: its sequence, the next msg_id it says, and
    what it says its messages take."""

    seq: int
    next_id: int
    held: HeadSizes


class Sizes:
    """The newest head of each mailbox (by token) this broker wrote or read, that says how
    large its messages are."""

    def __init__(self) -> None:
        self._heads: dict[str, Head] = {}

    def forget(self) -> None:
        self._heads.clear()

    def saw(self, box: str, seq: int, next_id: int, largest: int | HeadSizes | None) -> None:
        """``box``'s head at ``seq`` says ``next_id`` and what its messages take (``largest``:
        a ``HeadSizes``, or the most any takes; None: nothing)."""
        if largest is None:
            return
        known = self._heads.get(box)
        if known is not None and known.seq >= seq:
            return
        if len(self._heads) >= KEPT:
            self._heads.clear()
        held = largest if isinstance(largest, HeadSizes) else HeadSizes(largest)
        self._heads[box] = Head(seq, next_id, held)

    def largest(self, box: str) -> int | None:
        """The most a message of ``box`` takes as of the newest head seen; None: unknown."""
        head = self._heads.get(box)
        return None if head is None else head.held.most(0, _now())

    def below_id(self, box: str, msg_id: int) -> int | None:
        """The most message ``msg_id`` of ``box`` (or one below it) takes; None: unknown."""
        head = self._heads.get(box)
        if head is None or msg_id >= head.next_id:
            return None
        return head.held.most(msg_id, _now())

    def below_seq(self, box: str, seq: int) -> int | None:
        """The most a message of ``box`` at sequence ``seq`` or before takes; None: unknown."""
        head = self._heads.get(box)
        return head.held.most(0, _now()) if head is not None and seq <= head.seq else None


def _now() -> int:
    """(the servers' clock removes a listed message at its TTL: this host's tells when)"""
    return int(time.time())
