"""One reader's large reads are not everyone's wait (issue #98, item 8), played as the
attacker on a real 3-node JetStream cluster whose servers' max_payload an operator raised to
64 MB (docs/deploy.md, for large messages).

Before: every read of the cluster store was counted at 32 MiB, the largest message such
servers carry, so reads went one at a time, first come first served; while one login-less
client kept 24 reads of 31 MiB messages going, another client's small QUERY got 1-2 answers in
20 s and then failed ("JetStream did not answer a read ... within 15 s"). Now a read is
counted at what its mailbox's head says the mailbox's messages take, readers take turns, and
small reads have a room of their own (``nats_floor/jetstream/window.py``, storage/jetstream/
sizes.py). No timing is asserted: completions, order and counts, each wait one generous
deadline (testbed/support/waiting.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from mq9_broker import Broker, BrokerConfig
from mq9_broker.engine.limits import BrokerLimits
from mq9_broker.state.mailbox import StoredMessage
from mq9_broker.storage.jetstream.mapping import token
from mq9_broker.storage.jetstream.sizes import largest_of
from mq9_broker.storage.jetstream.window import SMALL_READ, reader
from mq9_broker.storage.mailbox_store import Mark
from mq9_platform.client import Mq9Client
from mq9_wire.protocol import Priority
from testbed.support.jetstream_servers import (
    JetStreamCluster,
    close_store,
    open_replicated_store,
)
from testbed.support.waiting import until

pytestmark = pytest.mark.slow

MIB = 1024 * 1024
RAISED = "max_payload: 64MB\nmax_pending: 64MB\n"  # as deploy.md has an operator raise it
LARGE = 31 * MIB
FLOOD = 12  # the flooder's reads of 31 MiB messages kept in flight
ROUNDS = 8  # the victim's rounds of small reads (a QUERY, a group FETCH and its ACKs)
SMALL_MESSAGES = 20
DEADLINE = 600.0  # one generous guard on a busy 2-core machine, never a timing claim


@pytest.fixture(scope="module")
def raised():
    with JetStreamCluster(3, extra_config=RAISED) as cluster:
        yield cluster


def _body(size: int, mark: str) -> bytes:
    return (mark * (size // len(mark) + 1)).encode()[:size]


async def test_a_flooders_large_reads_leave_another_clients_small_reads_answered(raised):
    urls = ",".join(raised.urls)
    config = BrokerConfig(
        nats=urls,
        store="jetstream",
        stream="SHARES",
        limits=BrokerLimits(max_payload=32 * MIB - 4096),
        answer_rate=0,  # (no pace: the flood's answers as fast as the broker reads them)
        search=False,
        cluster_wait=DEADLINE,
    )
    async with (
        Broker(config, say=lambda _: None),
        Mq9Client(raised.urls[0], request_timeout=DEADLINE) as mallory,
        Mq9Client(raised.urls[1], request_timeout=DEADLINE) as alice,
    ):
        large_box = await mallory.mailbox_create(name="mallory.large")
        for n in range(3):
            await mallory.send(large_box, _body(LARGE, f"{n}."), key=f"k{n}")
        box = await alice.mailbox_create(name="alice.small")
        sent = {await alice.send(box, f"small {n}".encode()): n for n in range(SMALL_MESSAGES)}

        answered, failed = [0], [0]
        stop = asyncio.Event()

        async def flood(worker: int) -> None:
            """One of mallory's reads kept in flight: a QUERY of one 31 MiB message."""
            while not stop.is_set():
                try:
                    (message,) = await mallory.query(large_box, key=f"k{worker % 3}")
                    assert len(message.payload) == LARGE
                    answered[0] += 1
                except Exception:  # (her own reads may wait past the store's deadline)
                    failed[0] += 1

        flooding = [asyncio.ensure_future(flood(n)) for n in range(FLOOD)]
        try:
            await until(lambda: answered[0] >= 1, timeout=DEADLINE, what="the flood answered")
            before = answered[0]
            fetched: set[int] = set()
            for _ in range(ROUNDS):
                queried = await alice.query(box)
                assert sorted(m.msg_id for m in queried) == sorted(sent)
                batch = await alice.fetch(
                    box, group_name="victim", deliver="earliest", num_msgs=5, max_wait_ms=0
                )
                for message in batch:
                    await alice.ack(box, "victim", message.msg_id)
                    fetched.add(message.msg_id)
            during = answered[0] - before
            # the flood held its reads in flight throughout: none of its workers ended
            assert not any(task.done() for task in flooding)
        finally:
            stop.set()
            await asyncio.wait_for(
                asyncio.gather(*flooding, return_exceptions=True), timeout=DEADLINE
            )
        # every one of alice's rounds answered whole while mallory's 12 reads were in flight
        assert fetched == set(sorted(sent)[: 5 * ROUNDS])
        # and not one behind another of mallory's whole queue: before, each of alice's reads
        # waited for every read of mallory's ahead of it (first come, first served)
        assert during < ROUNDS * FLOOD, (during, failed[0])
        assert answered[0] > before  # the large reads were not starved either


async def test_reads_of_a_small_mailbox_go_while_another_reader_holds_the_whole_window(raised):
    store = await open_replicated_store(raised.urls[0], "SHARES_STORE")
    try:
        now = int(time.time())
        for n in range(100):
            message = StoredMessage(0, f"m{n}".encode(), Priority.NORMAL, now, tags=("t",))
            await store.append("small", message, now=now)
        big = StoredMessage(0, _body(8 * MIB, "b"), Priority.NORMAL, now)
        await store.append("large", big, now=now)
        # each head says the largest message its mailbox was written
        layout, requests = store.layout, store.requests
        for mailbox, least, most in (("small", 1, SMALL_READ // 4), ("large", 8 * MIB, 9 * MIB)):
            box = token(mailbox)
            head = await requests.leader_get(
                layout.box_stream(box), last_by_subject=layout.head_subject(box)
            )
            assert head is not None
            largest = largest_of(head.headers)
            assert largest is not None and least <= largest <= most, (mailbox, largest)

        window = requests.window
        release = asyncio.Event()
        held = asyncio.Event()

        async def hold() -> None:
            reader.set("mallory")
            ticket = await window.take(window.size)  # the whole window, as a 31 MiB read
            held.set()
            try:
                await release.wait()
            finally:
                window.give(ticket)

        async def read_small() -> tuple[list[StoredMessage], list[list[StoredMessage]]]:
            reader.set("alice")
            last = await store.last("small")
            assert last is not None
            found = await store.read("small", Mark(0, 0), 100, upto=last, now=now)
            tagged = await store.by_tags("small", ["t"], 100, upto=last.seq, now=now)
            lanes = await store.read_lanes("small", Mark(90, 0), 10, upto=last, now=now)
            return found, [tagged[0], *lanes]

        async def read_large() -> list[StoredMessage]:
            reader.set("bob")
            last = await store.last("large")
            assert last is not None
            return await store.read("large", Mark(0, 0), 1, upto=last, now=now)

        holding = asyncio.ensure_future(hold())
        await asyncio.wait_for(held.wait(), timeout=DEADLINE)
        small = asyncio.ensure_future(read_small())
        large = asyncio.ensure_future(read_large())
        found, (tagged, *lanes) = await asyncio.wait_for(small, timeout=DEADLINE)
        # alice's 100 small messages read, by order, tag and lane, while the window was held
        assert [m.payload for m in found] == [f"m{n}".encode() for n in range(100)]
        assert len(tagged) == 100 and [len(lane) for lane in lanes] == [0, 0, 10]
        # bob's read of a mailbox of 8 MiB messages waits for the window
        assert not large.done() and window.waiting >= 1
        release.set()
        (message,) = await asyncio.wait_for(large, timeout=DEADLINE)
        assert len(message.payload) == 8 * MIB
        await holding
        assert (window.taken, window.small_taken, window.waiting) == (0, 0, 0)
    finally:
        with contextlib.suppress(Exception):
            await close_store(store)
