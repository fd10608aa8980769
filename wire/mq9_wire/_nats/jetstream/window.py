"""What the JetStream reads on one connection may bring at once (issue #88, item 2).

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
"""

from __future__ import annotations

import asyncio
from collections import deque

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
    """``size`` bytes of answers the reads on one connection may wait for at once; first
    come, first served."""

    def __init__(self, size: int = PENDING_SHARE) -> None:
        self.size = size
        self.taken = 0
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    async def take(self, share: int) -> int:
        """Wait until ``share`` bytes (at most the whole window) are free and take them; the
        bytes taken, for ``give``."""
        share = min(share, self.size)
        if not self._waiting and self.taken + share <= self.size:
            self.taken += share
            return share
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((share, future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.give(share)  # (given, then cancelled before it ran)
            else:
                self._waiting.remove((share, future))
                self._wake()  # (one behind it may fit now)
            raise
        return share

    def give(self, share: int) -> None:
        self.taken -= share
        self._wake()

    def _wake(self) -> None:
        while self._waiting and self.taken + self._waiting[0][0] <= self.size:
            share, future = self._waiting.popleft()
            self.taken += share
            future.set_result(None)
