"""The read window's shares (issue #98, item 8): one reader's large reads are not everyone's
wait. In process, no server: readers take turns for the window, a reader holding reads holds at
most half of it, small reads have a room of their own beside it, a large read is never starved
by small ones; and a read is counted at what its mailbox's head says its messages take
(storage/jetstream/sizes.py), not at the largest the servers carry.

The same attack on a real 3-node cluster: test_js_read_shares.py."""

from __future__ import annotations

import asyncio

from mq9_broker.storage.jetstream.sizes import LARGEST, Sizes, largest_of, stored_size
from mq9_broker.storage.jetstream.window import (
    SMALL_READ,
    SMALL_ROOM,
    ReadWindow,
    batch_share,
    largest_entry,
    reader,
    sized,
)
from mq9_wire.nats_floor.fits import PENDING_SHARE
from mq9_wire.nats_floor.jetstream.requests import Requests

MIB = 1024 * 1024
LARGE = largest_entry(64 * MIB)  # a get on servers raised to 64 MB: counted at 32 MiB and more
SMALL = largest_entry(2048)  # a get of a mailbox whose head says 2 KiB
FLOOD = 24  # the flooder's large reads, as the attack keeps going


class Reads:
    """Reads of one window, each by a reader, noting the order they were granted."""

    def __init__(self, window: ReadWindow) -> None:
        self.window = window
        self.granted: list[str] = []
        self.release: dict[str, asyncio.Event] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, who: str, name: str, share: int) -> asyncio.Task[None]:
        """``who``'s read ``name`` of ``share`` bytes: granted, then held until released."""
        release = self.release[name] = asyncio.Event()

        async def read() -> None:
            reader.set(who)  # (the task's own context, as serve.py sets it per request)
            ticket = await self.window.take(share)
            self.granted.append(name)
            try:
                await release.wait()
            finally:
                self.window.give(ticket)

        task = self.tasks[name] = asyncio.ensure_future(read())
        return task

    def done(self, name: str) -> None:
        self.release[name].set()


async def _turns(n: int = 3) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_flooders_large_reads_hold_no_small_read_of_another_reader():
    reads = Reads(ReadWindow())
    for n in range(FLOOD):
        reads.start("mallory", f"large{n}", LARGE)
    await _turns()
    assert reads.granted == ["large0"]  # (each alone: the whole window)
    for n in range(20):
        reads.start("alice", f"small{n}", SMALL)
    await _turns()
    # every one of alice's reads granted while mallory holds the window and 23 wait
    assert reads.granted == ["large0", *(f"small{n}" for n in range(20))]
    assert reads.window.waiting == FLOOD - 1
    for n in range(20):
        reads.done(f"small{n}")
    reads.done("large0")
    await _turns()
    assert reads.granted[-1] == "large1"
    for n in range(1, FLOOD):
        reads.done(f"large{n}")
    await asyncio.gather(*reads.tasks.values())
    assert reads.granted[-1] == f"large{FLOOD - 1}"
    assert (reads.window.taken, reads.window.small_taken, reads.window.held) == (0, 0, {})


async def test_readers_take_turns_for_the_window_a_flooder_goes_behind_the_others():
    reads = Reads(ReadWindow())
    for n in range(FLOOD):
        reads.start("mallory", f"large{n}", LARGE)
    await _turns()
    # bob's and carol's reads are not small (a batch of a mailbox of 1 MiB messages)
    medium = batch_share(MIB, 1000, MIB)
    assert medium > SMALL_READ
    reads.start("bob", "bob", medium)
    reads.start("carol", "carol", medium)
    await _turns()
    assert reads.granted == ["large0"]
    reads.done("large0")
    await _turns()
    # bob and carol joined the turns after mallory's first grant: her next read, then theirs
    # (together: they fit), then hers again; not her 23 reads waiting before theirs
    assert reads.granted == ["large0", "large1"]
    reads.done("large1")
    await _turns()
    assert reads.granted == ["large0", "large1", "bob", "carol"]
    reads.done("bob")
    await _turns()
    assert reads.granted[-1] == "carol"  # (carol still holds her part: large2 waits)
    reads.done("carol")
    await _turns()
    assert reads.granted[-1] == "large2"
    for n in range(2, FLOOD):
        reads.done(f"large{n}")
    await asyncio.gather(*reads.tasks.values())


async def test_a_large_read_is_not_starved_by_a_stream_of_small_ones():
    reads = Reads(ReadWindow())
    reads.start("bob", "bob", 20 * MIB)
    await _turns()
    reads.start("mallory", "large", LARGE)  # waits for the whole window
    await _turns()
    # alice's small reads keep coming: the window is kept for mallory's, they take the room
    # beside it, and never more of the window than bob held
    for n in range(40):
        reads.start("alice", f"small{n}", SMALL)
        await _turns(1)
        assert reads.window.taken == 20 * MIB
        if n >= 10:
            reads.done(f"small{n - 10}")
    reads.done("bob")
    await _turns()
    assert "large" in reads.granted
    assert reads.window.taken == reads.window.size
    for name in list(reads.release):
        reads.done(name)
    await asyncio.gather(*reads.tasks.values())
    assert (reads.window.taken, reads.window.small_taken) == (0, 0)


async def test_a_reader_holding_reads_holds_at_most_half_of_the_window():
    reads = Reads(ReadWindow())
    reads.start("mallory", "m1", 10 * MIB)
    reads.start("mallory", "m2", 10 * MIB)  # 20 MiB would be more than her half
    reads.start("alice", "a1", 10 * MIB)
    await _turns()
    assert reads.granted == ["m1", "a1"]
    reads.done("m1")
    await _turns()
    assert reads.granted == ["m1", "a1", "m2"]
    for name in ("a1", "m2"):
        reads.done(name)
    await asyncio.gather(*reads.tasks.values())


async def test_small_reads_take_turns_in_their_room_and_one_reader_keeps_its_order():
    window = ReadWindow()
    assert (window.small_room, window.small_read) == (SMALL_ROOM, SMALL_READ)
    reads = Reads(window)
    reads.start("mallory", "large", LARGE)
    await _turns()
    # mallory fills the small room with her own small reads, more waiting; alice's small
    # read joins the turns behind mallory (granted before alice came), and goes before
    # mallory's next after that
    for n in range(5):
        reads.start("mallory", f"m{n}", SMALL_READ)
    reads.start("alice", "a", SMALL_READ)
    await _turns()
    assert reads.granted == ["large", "m0", "m1"]
    reads.done("m0")
    await _turns()
    assert reads.granted == ["large", "m0", "m1", "m2"]
    reads.done("m1")
    await _turns()
    assert reads.granted == ["large", "m0", "m1", "m2", "a"]
    reads.done("m2")
    await _turns()
    assert reads.granted[-1] == "m3"
    # a reader's reads go in the order they came, large or small
    reads.start("alice", "a-large", LARGE)
    reads.start("alice", "a-after", SMALL)
    await _turns()
    assert "a-after" not in reads.granted
    for name in list(reads.release):
        reads.done(name)
    await asyncio.gather(*reads.tasks.values())
    assert reads.granted.index("a-large") < reads.granted.index("a-after")


async def test_a_read_given_up_on_while_waiting_leaves_its_turn_to_the_next():
    reads = Reads(ReadWindow())
    reads.start("mallory", "large", LARGE)
    await _turns()
    gone = reads.start("bob", "gone", LARGE)
    reads.start("alice", "next", LARGE)
    await _turns()
    gone.cancel()
    await _turns()
    reads.done("large")
    await _turns()
    assert reads.granted == ["large", "next"] and gone.cancelled()
    reads.done("next")
    await asyncio.gather(*(t for t in reads.tasks.values() if t is not gone))
    assert (reads.window.taken, reads.window.waiting) == (0, 0)


def test_a_head_says_the_largest_message_and_reads_as_of_it_are_counted_at_that():
    data, headers = b"x" * 1000, {"Mq9-Tags": '["a"]'}
    size = stored_size("mq9.S.m.box.normal.-.7", data, headers)
    assert size >= len("mq9.S.m.box.normal.-.7") + 1000 + len("Mq9-Tags") + len('["a"]')
    assert largest_of({LARGEST: "4096"}) == 4096
    assert largest_of({}) is None and largest_of({LARGEST: "x"}) is None
    sizes = Sizes()
    sizes.saw("box", seq=10, next_id=5, largest=4096)
    sizes.saw("box", seq=8, next_id=4, largest=100)  # (an older head: the newer one stands)
    assert sizes.below_id("box", 4) == 4096 and sizes.below_id("box", 5) is None
    assert sizes.below_seq("box", 10) == 4096 and sizes.below_seq("box", 11) is None
    sizes.saw("box", seq=12, next_id=6, largest=None)  # (a head that does not say: kept)
    assert sizes.largest("box") == 4096 and sizes.largest("other") is None


class _Connection:
    max_payload = 64 * MIB


def test_a_read_sized_by_its_mailbox_is_counted_at_that_and_asks_its_batches_as_usual():
    requests = Requests.__new__(Requests)  # (no connection: only the sizing is looked at)
    requests.connection = _Connection()  # type: ignore[assignment]
    requests.entry_most = {"KV_GROUPS": 8192}
    requests.window = ReadWindow()
    assert requests.room_for("MSGS") == 64 * MIB  # unknown: the servers' largest
    assert requests.room_for("KV_GROUPS") == 8192
    with sized(2048):
        assert requests.room_for("MSGS") == 2048
    assert requests.room_for("MSGS") == 64 * MIB
    # so a get of such a mailbox is small, and its batches ask 1 MiB as on servers of 1 MiB
    assert largest_entry(2048) < SMALL_READ < largest_entry(64 * MIB)
    assert PENDING_SHARE + SMALL_ROOM < 64 * MIB  # what the reads may wait for at once


class _Carrier:
    is_connected = True


def test_the_reads_larger_than_a_small_one_go_on_the_large_reads_connection():
    requests = Requests.__new__(Requests)
    main, large = _Connection(), _Carrier()
    requests.connection = main  # type: ignore[assignment]
    requests.window = ReadWindow()
    requests._inbox, requests._large_inbox = "_INBOX.main", "_INBOX.large"
    requests.large = None
    assert requests._carrier(LARGE) == (main, "_INBOX.main")  # (none given: the one)
    requests.large = large  # type: ignore[assignment]
    assert requests._carrier(LARGE) == (large, "_INBOX.large")
    assert requests._carrier(SMALL) == (main, "_INBOX.main")
    assert requests._carrier(SMALL_READ + 1) == (large, "_INBOX.large")
    large.is_connected = False  # (reconnecting: the one connection meanwhile)
    assert requests._carrier(LARGE) == (main, "_INBOX.main")


async def test_a_reader_making_up_a_name_for_each_read_gets_no_more_turns_than_another():
    reads = Reads(ReadWindow())
    reads.start("bob", "hold", LARGE)
    await _turns()
    medium = batch_share(MIB, 1000, MIB)  # (not small: each waits for the window)
    for n in range(6):  # mallory's reads, each under a name never seen (an inbox a request)
        reads.start(f"mallory-{n}", f"m{n}", medium)
    for n in range(3):
        reads.start("alice", f"a{n}", medium)
    await _turns()
    reads.done("hold")
    await _turns()
    for n in range(6):  # (all fit the window together: granted in their turns' order)
        reads.done(f"m{n}")
    for n in range(3):
        reads.done(f"a{n}")
    await asyncio.gather(*reads.tasks.values())
    # mallory's newcomers came before alice's first read: ahead of it, as first come
    assert reads.granted == ["hold", *(f"m{n}" for n in range(6)), "a0", "a1", "a2"]
    # but a name new each read is no turn ahead of a reader already waiting
    later = Reads(ReadWindow())
    later.start("bob", "hold", LARGE)
    later.start("alice", "a0", medium)
    await _turns()
    later.done("hold")
    await _turns()
    later.start("alice", "a1", LARGE)  # alice holds a0: her next waits its turn
    await _turns()
    for n in range(4):
        later.start(f"mallory-{n}", f"m{n}", LARGE)
    await _turns()
    later.done("a0")
    await _turns()
    # a1 waited before mallory's newcomers came: granted first, not behind four new names
    assert later.granted == ["hold", "a0", "a1"]
    for name in list(later.release):
        later.done(name)
    await asyncio.gather(*later.tasks.values())


async def test_the_serving_layer_names_each_requests_reader_for_the_store_on_its_own_task():
    from nats.aio.msg import Msg

    from mq9_broker.serving.serve import NatsService

    seen: list[str] = []

    class Engine:
        answers_in_read_loop = False  # (the cluster store's: each request a task of its own)

        def __init__(self) -> None:
            self.arrivals: list[object] = []

        def carry(self, carrier: object, max_bytes: int | None) -> None:
            pass

        async def handle(self, subject: str, headers: object, data: bytes) -> bytes:
            seen.append(reader.get())
            return b'{"error":""}'

    class Connection:
        max_payload = MIB
        is_connected = True

        async def publish(self, subject: str, data: bytes) -> None:
            pass

    service = NatsService(Engine(), Connection())  # type: ignore[arg-type]
    for reply in ("_INBOX.mallory.1", "_INBOX.alice.7", "_INBOX.mallory.2"):
        subject = "$mq9.AI.MSG.QUERY.box"
        msg = Msg(None, subject=subject, reply=reply, data=b"{}")  # type: ignore[arg-type]
        await asyncio.ensure_future(service._answer(msg))
    assert seen == ["_INBOX.mallory", "_INBOX.alice", "_INBOX.mallory"]
    assert reader.get() == ""  # (set on each request's task, never on the caller's)
