"""A keyed SEND in the cluster store: the key's record as it writes it
(``<msg_id> <fingerprint>``: the first SEND's answer and what it was), its entry in its SEND's
atomic batch, and the look at a key that lives. What a store is given (``Once``) and the
refusal of a key seen with another SEND (``KeyReused``) are the store interface's
(mailbox_store.py).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol, TypeVar

from mq9_wire.nats_floor.jetstream.api import expecting, ttl

from ..mailbox_store import KeyReused, Once, StorageError, answered

if TYPE_CHECKING:
    from .mapping import Layout
    from .requests import Entry, StorageRequests


def key_record(msg_id: int, fingerprint: bytes) -> bytes:
    """What the cluster store keeps under a key: the first SEND's msg_id (-1: delayed) and
    fingerprint."""
    return b"%d %s" % (msg_id, fingerprint.hex().encode())


def read_key_record(data: bytes) -> tuple[int, bytes]:
    """``key_record``'s msg_id and fingerprint; ``StorageError`` for anything else."""
    try:
        number, digest = bytes(data).split(b" ", 1)
        return int(number), bytes.fromhex(digest.decode())
    except ValueError:
        raise StorageError(f"a key record that is not one: {bytes(data[:80])!r}") from None


# -- the cluster store: a key's entry in its SEND's atomic batch (mapping.key_subject) ----------


class KeyedWrite(Protocol):
    """A write waiting for its msg_id (queueing.Write), as this module reads it."""

    once: Once | None
    future: asyncio.Future[int]


W = TypeVar("W", bound=KeyedWrite)


def key_entry(layout: Layout, box: str, once: Once, msg_id: int) -> Entry:
    """``once``'s key entry for mailbox ``box`` (its token), answering ``msg_id``: expecting no
    entry on its subject (the servers refuse the whole batch when one lives), removed by the
    servers when the window ends (``Nats-TTL``)."""
    subject = layout.key_subject(box, once.key)
    return subject, key_record(msg_id, once.fingerprint), expecting(0, ttl(once.window))


async def key_written(
    requests: StorageRequests, layout: Layout, box: str, once: Once
) -> int | None:
    """The answer ``once``'s key holds in mailbox ``box``, from the stream's leader (current):
    the first SEND's msg_id (``once`` a duplicate), ``KeyReused``, or None when none lives."""
    stream = layout.box_stream(box)
    entry = await requests.leader_get(stream, last_by_subject=layout.key_subject(box, once.key))
    if entry is None:
        return None
    return answered(once, *read_key_record(entry.data))


async def keys_found(requests: StorageRequests, layout: Layout, box: str, batch: list[W]) -> bool:
    """After ``batch`` (mailbox ``box``'s) was refused for an expectation: each keyed write
    whose key lives is answered from it (its future set), the others written again; whether
    any was (the refusal then maybe the key's alone: the head expected may still be the
    last)."""
    keyed = [write for write in batch if write.once is not None and not write.future.done()]
    found = await asyncio.gather(
        *(key_written(requests, layout, box, write.once) for write in keyed if write.once),
        return_exceptions=True,
    )
    answered = False
    for write, outcome in zip(keyed, found, strict=True):
        if isinstance(outcome, KeyReused):
            write.future.set_exception(outcome)
        elif isinstance(outcome, BaseException):
            raise outcome
        elif outcome is not None:
            write.future.set_result(outcome)
        answered |= outcome is not None
    return answered


def one_per_key(batch: list[W]) -> tuple[list[W], list[W]]:
    """``batch`` with one write a key (its first), and the later writes of a key: two entries
    of one subject expecting none would refuse the whole batch, every time."""
    if not any(write.once is not None for write in batch):
        return batch, []
    first: list[W] = []
    later: list[W] = []
    keys: set[str] = set()
    for write in batch:
        if write.once is not None and write.once.key in keys:
            later.append(write)
            continue
        if write.once is not None:
            keys.add(write.once.key)
        first.append(write)
    return first, later
