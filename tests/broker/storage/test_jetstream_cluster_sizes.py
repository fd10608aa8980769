"""#106, item 4: a mailbox's reads on the cluster store are sized by what it holds now, not by
the largest message it was ever written (storage/jetstream/sizes.py). Before, one 31 MiB SEND
into alice's mailbox, deleted at once, had every later read of hers counted at 31 MiB in the
read window, for good: her small reads waited behind another client's large ones (p50 34 ms ->
5,855 ms). Now the mailbox's head lists each large message until it is deleted (the head
written again without it, by whichever broker deletes) or its TTL ends (the servers remove
it); the head says what is left.

Played on the session's JetStream server (max_payload 1 MiB: "large" here is 600 KiB, above
``LISTED_FROM``); two stores on one layout are two brokers. The size a read is counted at is
what its direct gets are asked under (``window.entry_most``)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import pytest

from mq9_broker.state.mailbox import StoredMessage
from mq9_broker.storage.jetstream import ClusterStore
from mq9_broker.storage.jetstream.mapping import token
from mq9_broker.storage.jetstream.sizes import (
    LARGE,
    LARGEST,
    LISTED_FROM,
    LISTED_MOST,
    SMALL,
    HeadSizes,
    largest_of,
)
from mq9_broker.storage.mailbox_store import Mark
from mq9_wire.nats_floor.jetstream.window import entry_most
from mq9_wire.protocol import Priority
from testbed.support.jetstream_servers import close_store, open_store
from testbed.support.waiting import until

pytestmark = pytest.mark.slow  # a nats-server process

LARGE_BYTES = 600 * 1024


@pytest.fixture
async def pair(shared_jetstream: list[str]) -> AsyncIterator[tuple[ClusterStore, ClusterStore]]:
    layout = f"Z{uuid.uuid4().hex[:10]}"
    first = await open_store(shared_jetstream, layout)
    second = await open_store(shared_jetstream, layout)
    try:
        yield first, second
    finally:
        await close_store(first)
        await close_store(second)


def _now() -> int:
    return int(time.time())


def _message(payload: bytes, **fields) -> StoredMessage:
    return StoredMessage(-1, payload, Priority.NORMAL, _now(), **fields)


async def _head_says(store: ClusterStore, mailbox: str) -> int | None:
    layout, box = store.layout, token(mailbox)
    head = await store.requests.leader_get(
        layout.box_stream(box), last_by_subject=layout.head_subject(box)
    )
    assert head is not None
    return largest_of(head.headers)


async def _read_sized(store: ClusterStore, mailbox: str) -> tuple[int, int | None]:
    """A QUERY's read of the whole mailbox: how many it found, and the most its gets were
    counted at."""
    asked: list[int | None] = []
    direct = store.requests.direct_batch

    async def noted(stream, request, **kwargs):
        asked.append(entry_most.get())
        return await direct(stream, request, **kwargs)

    store.requests.direct_batch = noted  # type: ignore[method-assign]
    try:
        last = await store.last(mailbox)
        assert last is not None
        found = await store.read(mailbox, Mark(0, 0), 100, upto=last, now=_now())
    finally:
        del store.requests.direct_batch
    return len(found), max((most or 1 << 40) for most in asked)


async def test_a_large_message_deleted_leaves_reads_sized_by_what_is_left(pair):
    first, second = pair
    await first.create_mailbox("alice.box", ttl=0, desc="", now=_now())
    for n in range(3):
        await first.append("alice.box", _message(b"small %d" % n), now=_now())
    large = await first.append("alice.box", _message(b"L" * LARGE_BYTES), now=_now())
    await second.append("alice.box", _message(b"small after"), now=_now())
    assert (await _head_says(first, "alice.box") or 0) > LARGE_BYTES
    found, most = await _read_sized(first, "alice.box")
    assert found == 5 and most > LARGE_BYTES
    assert await second.delete("alice.box", large)  # the other broker deletes it
    assert (await _head_says(first, "alice.box") or 1 << 40) < LISTED_FROM
    for store in pair:  # the next read of either broker is sized by what is left
        found, most = await _read_sized(store, "alice.box")
        assert found == 4 and most < LISTED_FROM
    # the head still numbers on and says each lane's newest: writes go on from it
    after = await first.append("alice.box", _message(b"next"), now=_now())
    assert after == large + 2
    assert (await first.last("alice.box")).lanes == (-1, -1, after)  # type: ignore[union-attr]


async def test_a_large_message_whose_ttl_ends_is_removed_and_no_longer_counted(pair):
    first, _ = pair
    await first.create_mailbox("bob.box", ttl=0, desc="", now=_now())
    await first.append("bob.box", _message(b"kept"), now=_now())
    ending = _message(b"T" * LARGE_BYTES, expire_at=_now() + 1)
    await first.append("bob.box", ending, now=_now())
    found, most = await _read_sized(first, "bob.box")
    assert found == 2 and most > LARGE_BYTES

    async def gone() -> bool:
        found, most = await _read_sized(first, "bob.box")
        return found == 1 and most < LISTED_FROM

    # (the servers' clock: its TTL, then their tick and the margin a listing keeps)
    await until(gone, timeout=60, what="the large message removed at its TTL, reads smaller")
    assert await first.count("bob.box") == 1  # the servers removed it


def test_a_head_lists_its_large_messages_and_says_the_rest_by_their_most():
    held = HeadSizes().written([(0, 100, 50), (1, LISTED_FROM + 1, 50), (2, 900, 50)], now=10)
    assert held == HeadSizes(900, ((1, LISTED_FROM + 1, 50),))
    said = held.headers()
    assert said[LARGEST] == str(LISTED_FROM + 1) and said[SMALL] == "900"
    assert HeadSizes.of(said) == held
    assert held.most(now=10) == LISTED_FROM + 1 and held.most(now=51) == 900
    assert held.without(1).most() == 900 and held.without(1).headers()[LARGEST] == "900"
    assert LARGE not in held.without(1).headers()
    assert held.written([], now=51) == HeadSizes(900)  # (a listed one past its end: dropped)
    # a head written before #106 (its largest alone) says that of every message
    assert HeadSizes.of({LARGEST: "31000000"}) == HeadSizes(31_000_000)
    assert HeadSizes.of({}) is None
    assert HeadSizes.of({LARGEST: "5", SMALL: "5", LARGE: "x:y"}) == HeadSizes(5)


def test_a_head_lists_at_most_its_share_keeping_the_largest():
    many = [(n, LISTED_FROM + 1 + n, 99) for n in range(LISTED_MOST + 3)]
    held = HeadSizes().written(many, now=0)
    assert len(held.large) == LISTED_MOST and held.large[0][0] == 3
    # the smallest three said together, until the last of them may be gone
    assert held.spilled == (LISTED_FROM + 3, 99) and held.small == 0
    assert HeadSizes.of(held.headers()) == held
    assert held.most() == LISTED_FROM + 1 + LISTED_MOST + 2
    emptied = held
    for msg_id in range(3, LISTED_MOST + 3):
        emptied = emptied.without(msg_id)
    assert emptied.most(now=99) == LISTED_FROM + 3  # (the spilled ones: maybe still held)
    assert emptied.most(now=100) == 0 and emptied.written([], now=100) == HeadSizes()
