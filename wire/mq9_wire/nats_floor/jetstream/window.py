"""What the JetStream reads on one connection may bring at once.

nats-server queues what it sends one connection and closes it, as a slow consumer, when more
than its ``max_pending`` waits there ("Slow Consumer Detected: MaxPending of 67108864
Exceeded"): every request of the broker on it fails. A read asks and the servers answer at
once, whatever its size: a batched direct get sends its messages until their bytes reach its
``max_bytes`` (by default the server's max_pending: three of 31 MiB), and sixteen gets by
msg_id sent together answer together. So each read takes, before it is sent, the most its
answers may hold from a ``ReadWindow`` of half the connection's pending bytes (the other half
is room for what else arrives meanwhile: a SEND as large), and gives it back once they are in.
A read that may hold more than the window waits for the window to be empty and goes alone.

A message's size is unknown before it is read: a get is taken at the largest a stream message
can be on these servers (``largest_entry``), a batch at its ``max_bytes`` and one such
message more (the servers stop after the message that reaches it). On servers of the default
max_payload (1 MiB) that is some thirty gets at once; on servers whose max_payload was raised
to 32 MiB or more, one at a time.

On servers raised so, counting every read at 32 MiB made every read wait for every other,
and one client keeping many reads of large messages going held another's small reads for
seconds. So:

- a read whose owner knows the most one of its messages can take (``sized``: the cluster store
  reads it from the mailbox's head, which says the largest message the mailbox was written)
  is counted at that, not at the largest the servers carry, and its batches ask ``max_bytes``
  as on servers of that size;
- the window is shared by reader (``reader``: the requester the serving layer names, the
  broker's own reads ""): readers take turns, one granted going behind the others, a newcomer
  joining behind those granted before it came (a name made up for each read is no extra
  turn); a reader
  holding reads may hold at most half the window (a read alone may take it all); a read that
  does not fit the window's free room keeps it for itself, the readers behind it waiting, so
  a large read is never starved by small ones;
- small reads apart: a read of at most ``SMALL_READ`` that finds the window kept or full
  takes room from ``SMALL_ROOM`` beside it, which no larger read takes. So one reader's large
  reads hold another's small ones by none of theirs: at most by other small reads, in turns.
  (The most the reads may wait for at once is the window and that room: 36 MiB of the
  connection's 64 MiB.)
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from ..fits import CONTROL_LINE, PENDING_SHARE

# nats-server's file store keeps a message as one record of at most 32 MiB (filestore.go
# rlBadThresh): its subject, headers and data with 38 bytes of its own (length, sequence,
# time, the subject's and the headers' lengths, a hash). A larger one is refused at the write
# ("message too large"), whatever the max_payload.
FILE_RECORD_MOST = 32 * 1024 * 1024
_RECORD_OWN = 4 + 8 + 8 + 2 + 4 + 8

# What a direct get's answer carries besides the stored message: the headers it adds
# (Nats-Stream, -Subject, -Sequence, -Time-Stamp, -Num-Pending, -Last-Sequence: some 200
# bytes) and the protocol line before it (the reply inbox, sizes)
_ANSWER_OWN = 512
# A batch asks for at most this many bytes of messages (and the one message that reaches it)
BATCH_BYTES = 1024 * 1024
# Room beside the window for small reads alone, and what a small read takes at most: a
# batch of 1,000 messages of up to 256 KiB asked 1 MiB, or a get of a message of up to 2 MiB
SMALL_ROOM = 4 * 1024 * 1024
SMALL_READ = 2 * 1024 * 1024
# Who a read is for (the serving layer sets it for each request it answers: its requester):
# readers take turns for the window. "" is the broker's own.
reader: ContextVar[str] = ContextVar("mq9_reader", default="")
# The most one message a read brings can take, where its caller knows (``sized``): its share
# is counted at that, not at the largest the servers carry
entry_most: ContextVar[int | None] = ContextVar("mq9_entry_most", default=None)


@contextmanager
def sized(most: int | None) -> Iterator[None]:
    """The reads made within (and the tasks started within) bring messages of at most
    ``most`` bytes as the servers keep them (None: unknown, the servers' largest)."""
    token = entry_most.set(most)
    try:
        yield
    finally:
        entry_most.reset(token)


def file_record_size(subject: str, block: int, data: int) -> int:
    """The bytes nats-server's file store takes for a message on ``subject`` with a header
    block of ``block`` bytes and ``data`` bytes (filestore.go fileStoreMsgSize)."""
    subject_bytes = len(subject) if subject.isascii() else len(subject.encode())
    return _RECORD_OWN - (4 if not block else 0) + subject_bytes + block + data


def largest_entry(max_payload: int) -> int:
    """The most bytes one stream message can take in a direct get's answer on servers of
    ``max_payload``: its headers and data came in one publish (at most ``max_payload``) and
    the file store keeps no larger record; its subject fits a control line."""
    return min(max_payload, FILE_RECORD_MOST) + CONTROL_LINE + _ANSWER_OWN


def batch_bytes(max_payload: int, window: int = PENDING_SHARE) -> int:
    """The ``max_bytes`` a batched get asks on servers of ``max_payload``: what leaves room in
    the window for the one message that reaches it (1 when none is left: one message a batch)."""
    return max(1, min(BATCH_BYTES, window - largest_entry(max_payload)))


def batch_share(max_bytes: int, count: int, max_payload: int) -> int:
    """The most a batch of ``count`` messages asked ``max_bytes`` may bring: the bytes before
    its last message, that message, and each one's own headers."""
    return max_bytes + largest_entry(max_payload) + count * _ANSWER_OWN


def json_share(max_payload: int) -> int:
    """The most a JSON answer holding one stream message may bring (``STREAM.MSG.GET``: its
    data and headers in base64, 4 bytes for 3)."""
    return largest_entry(max_payload) * 4 // 3 + 4


class ReadWindow:
    """``size`` bytes of answers the reads on one connection may wait for at once, and
    ``small_room`` beside it for small reads; taken in turns by reader (``reader``), each
    reader's reads in the order they came.

    ``take`` answers a ticket for ``give``: the bytes taken from the window, or (negative)
    from the small reads' room. ``give`` is called by the task that took (its reader)."""

    def __init__(self, size: int = PENDING_SHARE, small_room: int | None = None) -> None:
        self.size = size
        self.small_room = min(SMALL_ROOM, size // 8) if small_room is None else small_room
        self.small_read = min(SMALL_READ, self.small_room // 2)
        self.per_reader = size // 2  # what a reader holding reads may hold in all
        self.taken = 0  # of the window
        self.small_taken = 0  # of the small reads' room
        self.held: dict[str, int] = {}  # of the window, by reader
        # the reads waiting, by reader, each reader's in the order they came
        self._waiting: dict[str, deque[tuple[int, asyncio.Future[int]]]] = {}
        # when each reader holding or waiting was last granted a read (a count; a newcomer:
        # just after the last grant before it came): the one granted longest ago goes next
        self._served: dict[str, float] = {}
        self._grants = 0

    @property
    def waiting(self) -> int:
        """How many reads wait (tests count them)."""
        return sum(len(queue) for queue in self._waiting.values())

    async def take(self, share: int) -> int:
        """Wait until ``share`` bytes (at most the whole window) are free, in the reader's
        turn, and take them; the ticket, for ``give``."""
        share = min(share, self.size)
        who = reader.get()
        if not self._waiting:
            ticket = self._grant(who, share, kept=False)
            if ticket:
                return ticket
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(who, deque()).append((share, future))
        # a newcomer joins the turns behind the readers granted before it came, ahead of
        # those granted since: a client making up a new name for each read gets no more
        # turns for it than a reader that waits
        self._served.setdefault(who, self._grants + 0.5)
        self._wake()
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.give(future.result())  # (given, then cancelled before it ran)
            else:
                queue = self._waiting.get(who)
                if queue is not None and (share, future) in queue:
                    queue.remove((share, future))
                    if not queue:
                        del self._waiting[who]
                        if who not in self.held:
                            self._served.pop(who, None)
                self._wake()  # (one behind it may fit now)
            raise

    def give(self, ticket: int) -> None:
        who = reader.get()
        if ticket < 0:
            self.small_taken += ticket
        else:
            self.taken -= ticket
            held = self.held.get(who, 0) - ticket
            if held > 0:
                self.held[who] = held
            else:
                self.held.pop(who, None)
        if who not in self.held and who not in self._waiting:
            self._served.pop(who, None)  # (holds and waits for nothing: a newcomer again)
        self._wake()

    def _fits(self, who: str, share: int) -> bool:
        """Within the reader's part of the window (a reader holding none may take it all)."""
        held = self.held.get(who, 0)
        return not held or held + share <= self.per_reader

    def _grant(self, who: str, share: int, *, kept: bool) -> int:
        """``share`` taken for ``who``: its ticket, 0 when it must wait. ``kept``: the window
        is kept for a reader ahead in turn (only the small reads' room is free)."""
        if not kept and self.taken + share <= self.size and self._fits(who, share):
            self.taken += share
            self.held[who] = self.held.get(who, 0) + share
            ticket = share
        elif share <= self.small_read and self.small_taken + share <= self.small_room:
            self.small_taken += share
            ticket = -share
        else:
            return 0
        self._grants += 1
        self._served[who] = self._grants
        return ticket

    def _wake(self) -> None:
        """Grant what waits and may go, readers in turn (the one granted longest ago first, a
        newcomer as if granted just as it came): each grant puts its reader behind the others
        and starts again from the first. A reader's first read that would fit its part but
        not the window's free room keeps the window for itself."""
        granted = True
        while granted and self._waiting:
            granted, kept = False, False
            served = self._served
            for who in sorted(self._waiting, key=lambda w: served.get(w, -1.0)):
                queue = self._waiting[who]
                share, future = queue[0]
                if future.done():  # (cancelled: its task removes it)
                    continue
                ticket = self._grant(who, share, kept=kept)
                if not ticket:
                    kept = kept or self._fits(who, share)
                    continue
                queue.popleft()
                if not queue:
                    del self._waiting[who]
                future.set_result(ticket)
                granted = True
                break
