"""Large answers paced (issue #35, bench 9d): a byte rate with a burst, requesters in turns.

The pacer keeps time with an injected clock and sleep, so these tests wait for nothing: the
sleep moves the clock on and records how long the pacer asked to wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest

from mq9_broker.serving.pacing import AnswerPacer, Backlog, requester
from mq9_wire import protocol as p

MB = 1_000_000


class Time:
    """A clock the pacer's sleeps move on."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def _pacer(time: Time, rate: float = 10 * MB, burst: float = 4 * MB) -> AnswerPacer:
    return AnswerPacer(rate, burst, clock=time.clock, sleep=time.sleep)


async def test_an_answer_after_a_quiet_moment_goes_at_once_however_large():
    time = Time()
    pacer = _pacer(time)
    await pacer.admit("_INBOX.a", 50 * MB)  # ten times the burst, alone: not held
    assert time.slept == []
    time.now += 5.0  # paid for (50 MB at 10 MB/s)
    await pacer.admit("_INBOX.a", 3 * MB)
    assert time.slept == []


async def test_answers_back_to_back_go_at_the_rate_beyond_the_burst():
    """2 MB answers at 10 MB/s with 4 MB of burst: the first three go at once (0, 2 and 4 MB
    ahead when each is admitted), then each waits for 2 MB more to be paid: 0.2 s."""
    time = Time()
    pacer = _pacer(time)
    for _ in range(6):
        await pacer.admit("_INBOX.a", 2 * MB)
    assert time.slept == pytest.approx([0.2, 0.2, 0.2])
    assert time.now == pytest.approx(100.6)


async def test_requesters_take_turns():
    """One requester with five answers waiting holds another's answer by one of its own,
    not by all five."""
    time = Time()
    pacer = _pacer(time, burst=0)
    await pacer.admit("_INBOX.hog", MB)  # alone: at once, and now 0.1 s ahead
    order: list[str] = []

    async def answer(who: str, i: int) -> None:
        await pacer.admit(who, MB)
        order.append(f"{who[7:]}{i}")

    # the hog's five ask first (tasks start in the order they are made)
    hogging = [asyncio.create_task(answer("_INBOX.hog", i)) for i in range(5)]
    other = asyncio.create_task(answer("_INBOX.other", 0))
    await asyncio.gather(*hogging, other)
    assert order == ["hog0", "other0", "hog1", "hog2", "hog3", "hog4"]
    assert time.slept == pytest.approx([0.1] * 6)


async def test_a_cancelled_request_gives_its_turn_away():
    time = Time()
    pacer = _pacer(time, burst=0)
    await pacer.admit("_INBOX.a", MB)
    gone = asyncio.create_task(pacer.admit("_INBOX.a", 50 * MB))
    staying = asyncio.create_task(pacer.admit("_INBOX.b", MB))
    await asyncio.sleep(0)
    gone.cancel()
    await staying
    assert gone.cancelled()
    # b waited for a's first answer only; the cancelled 50 MB were never paid for
    assert time.slept == pytest.approx([0.1])


async def test_one_requester_may_have_only_so_much_waiting():
    """Answers held for the pace are held in memory: a requester's fourth 6 MB answer would
    wait behind 18 MB of its own (above 16): refused at once. Another requester still waits
    its turn, and once the first one's answers have gone it may wait again."""
    time = Time()
    pacer = AnswerPacer(10 * MB, 0, clock=time.clock, sleep=time.sleep, per_requester=16 * MB)
    await pacer.admit("_INBOX.hog", 6 * MB)  # alone: at once, and now 0.6 s ahead
    waiting = [asyncio.create_task(pacer.admit("_INBOX.hog", 6 * MB)) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(Backlog, match="behind 12000000 bytes of your earlier answers"):
        await pacer.admit("_INBOX.hog", 6 * MB)
    other = asyncio.create_task(pacer.admit("_INBOX.other", 6 * MB))
    await asyncio.gather(*waiting, other)
    assert time.slept == pytest.approx([0.6, 0.6, 0.6])  # the refused one was never paid
    later = [asyncio.create_task(pacer.admit("_INBOX.hog", 6 * MB)) for _ in range(2)]
    await asyncio.gather(*later)  # its earlier answers have gone: room again


async def test_all_requesters_together_may_have_only_so_much_waiting():
    time = Time()
    pacer = AnswerPacer(
        10 * MB, 0, clock=time.clock, sleep=time.sleep, per_requester=100 * MB, in_all=10 * MB
    )
    await pacer.admit("_INBOX.a", MB)
    first = asyncio.create_task(pacer.admit("_INBOX.a", 8 * MB))
    await asyncio.sleep(0)
    with pytest.raises(Backlog, match="behind 8000000 bytes of answers"):
        await pacer.admit("_INBOX.b", 3 * MB)
    await first
    await pacer.admit("_INBOX.b", 3 * MB)  # nothing waits now: it may wait, however full


async def test_an_answer_with_nothing_waiting_may_wait_however_large():
    time = Time()
    pacer = AnswerPacer(10 * MB, 0, clock=time.clock, sleep=time.sleep, per_requester=MB, in_all=MB)
    await pacer.admit("_INBOX.a", MB)
    await pacer.admit("_INBOX.a", 50 * MB)  # behind the pace, nothing of its own waiting
    assert time.slept == pytest.approx([0.1])


async def test_a_cancelled_answer_gives_its_room_back():
    time = Time()
    pacer = AnswerPacer(10 * MB, 0, clock=time.clock, sleep=time.sleep, per_requester=10 * MB)
    await pacer.admit("_INBOX.a", MB)
    gone = asyncio.create_task(pacer.admit("_INBOX.a", 8 * MB))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    await pacer.admit("_INBOX.b", MB)  # the turn that finds the cancelled one
    await asyncio.gather(pacer.admit("_INBOX.a", 8 * MB), pacer.admit("_INBOX.a", 2 * MB))


def test_a_requester_is_its_reply_subject_without_the_last_token():
    assert requester("_INBOX.Kx9aQ.17") == "_INBOX.Kx9aQ"
    assert requester("_INBOX.Kx9aQ.18") == "_INBOX.Kx9aQ"
    assert requester("replies") == "replies"


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (1, -1)])
def test_a_pace_that_could_never_send_is_refused(rate, burst):
    with pytest.raises(ValueError, match="rate must be above 0"):
        AnswerPacer(rate, burst)


@contextlib.asynccontextmanager
async def _paced_broker(nats_server, pacer: AnswerPacer):
    """The engine served at ``pacer``'s pace, on a main and a bulk connection, with 40 agents
    registered (a listing well above BULK_ANSWER); yields a client connection."""
    import nats

    from mq9_broker import BrokerEngine, serve_on_nats

    engine = BrokerEngine()
    engine.search_index.ranker.embedder = None
    main, bulk, client = [await nats.connect(nats_server.url) for _ in range(3)]
    service = await serve_on_nats(engine, main, bulk, pacer)
    try:
        for i in range(40):
            card = p.agent_card(f"agent.{i}", description=f"agent {i} translates " * 200)
            await client.request(p.AGENT_REGISTER, p.encode(card), timeout=5)
        yield client
    finally:
        await service.stop()
        for connection in (client, bulk, main):
            await connection.close()


@pytest.mark.slow
async def test_the_dev_broker_paces_large_answers_only(nats_server):
    """Wired into serve_on_nats: two listings back to back wait for the pace, on the bulk
    connection; a SEND's small answer between them never asks the pacer."""
    from mq9_broker.serving.serve import BULK_ANSWER

    time = Time()
    pacer = AnswerPacer(MB, 0, clock=time.clock, sleep=time.sleep)
    async with _paced_broker(nats_server, pacer) as client:
        await client.request(p.MAILBOX_CREATE, p.encode({"name": "paced.box"}), timeout=5)
        first = await client.request(p.AGENT_DISCOVER, b"{}", timeout=5)
        size = len(first.data)
        assert size > BULK_ANSWER and time.slept == []
        sent = await client.request(p.send_subject("paced.box"), b"small", timeout=5)
        assert json.loads(sent.data) == {"error": "", "msg_id": 0}
        assert time.slept == []
        second = await client.request(p.AGENT_DISCOVER, b"{}", timeout=5)
        assert second.data == first.data
        assert time.slept == pytest.approx([size / MB])


@pytest.mark.slow
async def test_the_dev_broker_answers_what_may_not_wait_with_an_error_at_once(nats_server):
    """Five listings asked at once without waiting: the first waits for the pace (held until
    the test lets it go), and the four behind it, above what one requester may have waiting,
    are answered at once with the error; none is left unanswered."""
    time, go = Time(), asyncio.Event()

    async def held_sleep(seconds: float) -> None:
        await go.wait()

    pacer = AnswerPacer(MB, 0, clock=time.clock, sleep=held_sleep)
    async with _paced_broker(nats_server, pacer) as client:
        listing = (await client.request(p.AGENT_DISCOVER, b"{}", timeout=5)).data  # at once
        pacer.per_requester = len(listing) + 1  # room for one more of them, not two
        inbox, answers = client.new_inbox(), asyncio.Queue()
        await client.subscribe(f"{inbox}.*", cb=answers.put)
        for i in range(5):
            await client.publish(p.AGENT_DISCOVER, b"{}", reply=f"{inbox}.{i}")
        refused = [json.loads((await asyncio.wait_for(answers.get(), 5)).data) for _ in range(4)]
        assert all("ask again once those have arrived" in r["error"] for r in refused)
        go.set()
        assert (await asyncio.wait_for(answers.get(), 5)).data == listing
