"""``Mq9Client.consume``: the background fetch loop, over ``memory://`` and a real nats-server.

With a group the loop runs on a ``GroupReader``: every message reaches the handler once, a
failing one is called again later, and the group's position is committed only past what was
handled. Handlers signal progress through ``asyncio.Event``s awaited under ``asyncio.wait_for``
bounds. No sleep is used to synchronise.
"""

from __future__ import annotations

import asyncio

import pytest

from mq9_platform import Message, Mq9Error
from mq9_wire import protocol as p
from mq9_wire.protocol.errors import MailboxNotFound

WAIT = 5  # a correctness bound for things that should happen within milliseconds
POLL_MS = 50  # the consumers' long-poll: short, so stop() returns quickly


class Recorder:
    """A handler that records what it saw and wakes waiters once ``count`` have arrived."""

    def __init__(self, fail_on: set[bytes] = frozenset()) -> None:
        self.seen: list[Message] = []
        self.fail_on = set(fail_on)
        self.errors: list[tuple[Message, Exception]] = []
        self._targets: list[tuple[int, asyncio.Event]] = []

    async def __call__(self, message: Message) -> None:
        self.seen.append(message)
        self._check()
        if message.payload in self.fail_on:
            raise RuntimeError(f"cannot handle {message.payload!r}")

    def on_error(self, message: Message, exc: Exception) -> None:
        self.errors.append((message, exc))
        self._check()

    def _check(self) -> None:
        for ready, event in self._targets:
            if ready():
                event.set()

    async def wait_for(self, count: int) -> None:
        """Until the handler was called ``count`` times."""
        await self.wait_until(lambda: len(self.seen) >= count)

    async def wait_for_payload(self, payload: bytes, times: int = 1) -> None:
        await self.wait_until(lambda: self.payloads.count(payload) >= times)

    async def wait_until(self, ready) -> None:
        event = asyncio.Event()
        self._targets.append((ready, event))
        self._check()
        await asyncio.wait_for(event.wait(), WAIT)

    @property
    def payloads(self) -> list[bytes]:
        return [m.payload for m in self.seen]


async def test_handler_called_in_priority_order_and_auto_ack(broker, client):
    box = await client.mailbox_create()
    for payload, priority in [
        (b"n1", "normal"),
        (b"u1", "urgent"),
        (b"c1", "critical"),
        (b"n2", "normal"),
        (b"c2", "critical"),
    ]:
        await client.send(box, payload, priority=priority)
    handler = Recorder()
    consumer = await client.consume(
        box, handler, group_name="g", deliver="earliest", max_wait_ms=POLL_MS
    )
    await handler.wait_for(5)
    await consumer.stop()
    assert handler.payloads == [b"c1", b"c2", b"u1", b"n1", b"n2"]
    assert consumer.processed_count == 5
    # auto_ack committed the group past everything
    assert await client.fetch(box, group_name="g", max_wait_ms=0) == []


async def test_consumer_keeps_going_with_new_messages(broker, client):
    box = await client.mailbox_create()
    handler = Recorder()
    consumer = await client.consume(box, handler, group_name="g", max_wait_ms=POLL_MS)
    for i in range(3):
        await client.send(box, f"m{i}")
        await handler.wait_for(i + 1)
    await consumer.stop()
    assert handler.payloads == [b"m0", b"m1", b"m2"]
    assert consumer.processed_count == 3


async def test_handler_error_reported_retried_and_the_group_held_before_it(broker, client):
    box = await client.mailbox_create()
    for payload in (b"ok1", b"bad", b"ok2"):
        await client.send(box, payload)
    handler = Recorder(fail_on={b"bad"})
    consumer = await client.consume(
        box,
        handler,
        group_name="g",
        deliver="earliest",
        max_wait_ms=POLL_MS,
        error_handler=handler.on_error,
    )
    await handler.wait_for_payload(b"ok2")
    await client.send(box, b"ok3")  # the loop goes on after the failure
    await handler.wait_for_payload(b"ok3")
    await handler.wait_for_payload(b"bad", times=2)  # called again later
    await consumer.stop()
    assert not consumer.is_running
    assert consumer.processed_count == 3
    assert [x for x in handler.payloads if x != b"bad"] == [b"ok1", b"ok2", b"ok3"]
    assert {failed.payload for failed, _ in handler.errors} == {b"bad"}
    assert all(isinstance(exc, RuntimeError) for _, exc in handler.errors)
    # ACK moves every lane: the group's position stays before the failed message, so a new
    # consumer of the group gets it (and what followed) again
    again = await client.fetch(box, group_name="g", max_wait_ms=0)
    assert [m.payload for m in again] == [b"bad", b"ok2", b"ok3"]


async def test_failed_message_is_retried_by_the_consumer(broker, client):
    box = await client.mailbox_create()
    await client.send(box, b"flaky")
    await client.send(box, b"after")
    handler = Recorder(fail_on={b"flaky"})
    consumer = await client.consume(
        box,
        handler,
        group_name="g",
        deliver="earliest",
        max_wait_ms=POLL_MS,
        error_handler=handler.on_error,
    )
    await handler.wait_for_payload(b"after")
    assert consumer.processed_count == 1
    handler.fail_on.clear()
    # the next call after the clear succeeds
    await handler.wait_for_payload(b"flaky", times=handler.payloads.count(b"flaky") + 1)
    await consumer.stop()
    # handled again until it worked; "after" was not run twice
    assert handler.payloads[:2] == [b"flaky", b"after"]
    assert set(handler.payloads[2:]) == {b"flaky"}
    assert consumer.processed_count == 2
    assert await client.fetch(box, group_name="g", max_wait_ms=0) == []


async def test_async_error_handler_and_failing_error_handler(client):
    box = await client.mailbox_create()
    reported = asyncio.Event()
    calls: list[bytes] = []

    async def handler(message: Message) -> None:
        calls.append(message.payload)
        raise ValueError("no")

    async def error_handler(message: Message, exc: Exception) -> None:
        reported.set()
        raise RuntimeError("the error handler fails too")

    consumer = await client.consume(
        box, handler, group_name="g", max_wait_ms=POLL_MS, error_handler=error_handler
    )
    await client.send(box, b"x")
    await asyncio.wait_for(reported.wait(), WAIT)
    done = asyncio.Event()
    second = Recorder()

    async def other(message: Message) -> None:
        await second(message)
        done.set()

    consumer2 = await client.consume(
        box, other, group_name="g2", deliver="earliest", max_wait_ms=POLL_MS
    )
    await client.send(box, b"y")
    await asyncio.wait_for(done.wait(), WAIT)
    await second.wait_for_payload(b"y")
    assert consumer.is_running  # a failing error handler does not end the loop
    await consumer.stop()
    await consumer2.stop()
    assert consumer.processed_count == 0
    assert b"x" in calls


async def test_stop_is_clean_and_idempotent(client):
    box = await client.mailbox_create()
    handler = Recorder()
    consumer = await client.consume(box, handler, group_name="g", max_wait_ms=POLL_MS)
    assert consumer.is_running
    await asyncio.wait_for(consumer.stop(), WAIT)
    assert not consumer.is_running
    await asyncio.wait_for(consumer.stop(), WAIT)
    await client.send(box, b"after stop")
    # nothing consumed it: the group still gets it
    assert [m.payload for m in await client.fetch(box, group_name="g", max_wait_ms=0)] == [
        b"after stop"
    ]
    assert handler.seen == []


async def test_stop_finishes_the_batch_and_commits_it(broker, client):
    box = await client.mailbox_create()
    release = asyncio.Event()
    started = asyncio.Event()
    handled: list[bytes] = []

    async def slow(message: Message) -> None:
        started.set()
        await release.wait()
        handled.append(message.payload)

    for payload in (b"a", b"b", b"c"):
        await client.send(box, payload)
    consumer = await client.consume(
        box, slow, group_name="g", deliver="earliest", max_wait_ms=POLL_MS
    )
    await asyncio.wait_for(started.wait(), WAIT)
    stopping = asyncio.create_task(consumer.stop())
    release.set()
    await asyncio.wait_for(stopping, WAIT)
    assert handled == [b"a", b"b", b"c"]  # the batch under way was finished
    assert consumer.processed_count == 3
    assert await client.fetch(box, group_name="g", max_wait_ms=0) == []  # and acked


async def test_stop_right_after_a_first_batch_past_the_groups_start_acks_it(broker, client):
    """A fresh consumer's first answer starts past the group's position, which proves too
    little to ack (state.py, ``horizon``): the loop's next FETCH would. A stop that comes
    before it acks all the same (CI saw a group handed out again what a stopped consumer had
    handled)."""
    box = await client.mailbox_create()
    ids = [await client.send(box, f"m{i}") for i in range(6)]
    await client.ack(box, "g", ids[2])  # the group's position, where an earlier reader left it
    seen = asyncio.Event()
    handled: list[int] = []
    stopping: list[asyncio.Task] = []

    def stop_at_the_last(message: Message) -> None:
        handled.append(message.msg_id)
        if len(handled) == 3:  # the stop arrives before the loop can fetch again
            stopping.append(asyncio.create_task(consumer.stop()))
            seen.set()

    consumer = await client.consume(box, stop_at_the_last, group_name="g", max_wait_ms=POLL_MS)
    await asyncio.wait_for(seen.wait(), WAIT)
    await asyncio.wait_for(stopping[0], WAIT)
    assert handled == ids[3:]
    assert await client.fetch(box, group_name="g", max_wait_ms=0) == []


async def test_consume_without_group_sees_each_message_once(client):
    box = await client.mailbox_create()
    for i in range(5):
        await client.send(box, f"old{i}", priority="urgent" if i % 2 else "normal")
    handler = Recorder()
    consumer = await client.consume(
        box, handler, deliver="earliest", num_msgs=2, max_wait_ms=POLL_MS
    )
    await handler.wait_for(5)
    for i in range(4):
        await client.send(box, f"new{i}", priority="critical" if i == 2 else "normal")
    await handler.wait_for(9)
    await client.send(box, "last")
    await handler.wait_for(10)
    await consumer.stop()
    payloads = [x.decode() for x in handler.payloads]
    assert sorted(payloads) == sorted(
        [f"old{i}" for i in range(5)] + [f"new{i}" for i in range(4)] + ["last"]
    )
    assert len(set(payloads)) == len(payloads)
    assert consumer.processed_count == 10
    assert payloads.index("last") == 9


async def test_consume_without_group_records_nothing_in_the_broker(broker, client):
    box = await client.mailbox_create()
    handler = Recorder()
    consumer = await client.consume(box, handler, max_wait_ms=POLL_MS)
    await client.send(box, b"x")
    await handler.wait_for(1)
    await consumer.stop()
    assert broker.engine.offsets == {}
    assert [m.payload for m in await client.query(box)] == [b"x"]  # not acked away


@pytest.mark.parametrize("group", ["g", None])
async def test_deliver_latest_starts_at_the_newest_stored_message(client, group):
    """RobustMQ's latest starts AT the newest stored message: it is handed out too; older
    ones are not, and everything sent after consume returns is seen."""
    box = await client.mailbox_create()
    await client.send(box, b"old")
    await client.send(box, b"newest")
    handler = Recorder()
    consumer = await client.consume(
        box, handler, group_name=group, deliver="latest", max_wait_ms=POLL_MS
    )
    await client.send(box, b"right after")  # no pause: the start point is already fixed
    await client.send(box, b"then", priority="critical")
    await handler.wait_for(3)
    await consumer.stop()
    assert sorted(handler.payloads) == [b"newest", b"right after", b"then"]


@pytest.mark.parametrize("group", ["g", None])
async def test_deliver_latest_on_an_empty_mailbox_sees_everything_sent_after(client, group):
    box = await client.mailbox_create()
    handler = Recorder()
    consumer = await client.consume(box, handler, group_name=group, max_wait_ms=POLL_MS)
    for payload in (b"a", b"b", b"c"):  # several before the loop's next fetch: none skipped
        await client.send(box, payload)
    await handler.wait_for(3)
    await consumer.stop()
    assert handler.payloads == [b"a", b"b", b"c"]


async def test_competing_consumers_with_workers_handle_each_message_once(client):
    box = await client.mailbox_create()
    shared = Recorder()
    owners: dict[bytes, list[str]] = {}

    def handler_of(name: str):
        async def handler(message: Message) -> None:
            owners.setdefault(message.payload, []).append(name)
            await shared(message)

        return handler

    consumers = [
        await client.consume(
            box,
            handler_of(name),
            group_name="g",
            deliver="earliest",
            num_msgs=2,
            max_wait_ms=POLL_MS,
            worker=name,
        )
        for name in ("one", "two")
    ]
    sent = [f"job{i}".encode() for i in range(12)]
    for i, payload in enumerate(sent):
        await client.send(box, payload, priority="urgent" if i % 3 == 0 else "normal")
    await shared.wait_for(len(sent))
    for consumer in consumers:
        await consumer.stop()
    assert sorted(shared.payloads) == sorted(sent)  # each exactly once
    assert all(len(names) == 1 for names in owners.values())


async def test_auto_ack_false_leaves_acking_to_the_handler(broker, client):
    box = await client.mailbox_create()
    await client.send(box, b"one")
    await client.send(box, b"two")
    acked = asyncio.Event()

    async def handler(message: Message) -> None:
        if message.payload == b"two":
            await client.ack(box, "g", message.msg_id)
            acked.set()

    consumer = await client.consume(
        box, handler, group_name="g", deliver="earliest", auto_ack=False, max_wait_ms=POLL_MS
    )
    await asyncio.wait_for(acked.wait(), WAIT)
    await consumer.stop()
    assert consumer.processed_count == 2
    # the handler's ack of "two" moved the group past "one" as well; the consumer acked nothing
    assert await client.fetch(box, group_name="g", max_wait_ms=0) == []


async def test_sync_handler_is_supported(client):
    box = await client.mailbox_create()
    got = asyncio.Event()
    seen: list[bytes] = []

    def handler(message: Message) -> None:
        seen.append(message.payload)
        got.set()

    consumer = await client.consume(box, handler, group_name="g", max_wait_ms=POLL_MS)
    await client.send(box, b"sync")
    await asyncio.wait_for(got.wait(), WAIT)
    await consumer.stop()
    assert seen == [b"sync"]


async def test_consume_refusals(client):
    with pytest.raises(Mq9Error, match="invalid mail_address"):
        await client.consume("Bad", lambda m: None)
    with pytest.raises(ValueError):
        await client.consume("some.box", "not callable")
    with pytest.raises(Mq9Error, match="invalid deliver"):
        await client.consume("some.box", lambda m: None, deliver="soon")
    with pytest.raises(Mq9Error, match="needs from_id"):
        await client.consume("some.box", lambda m: None, deliver="from_id")
    with pytest.raises(ValueError, match="group_name"):
        await client.consume("some.box", lambda m: None, worker="w")
    with pytest.raises(MailboxNotFound) as missing:
        await client.consume("some.box", lambda m: None, group_name="g")
    assert missing.value.detail == p.err_topic_missing("some.box")


async def test_competing_consumers_share_the_work_and_each_message_is_handled_once(client):
    box = await client.mailbox_create()
    for i in range(20):
        await client.send(box, f"m{i}", priority=("normal", "urgent", "critical")[i % 3])
    handlers = [Recorder(), Recorder()]
    consumers = [
        await client.consume(
            box,
            handler,
            group_name="g",
            deliver="earliest",
            max_wait_ms=POLL_MS,
            worker=f"w{i}",
            lease_ttl=30,
        )
        for i, handler in enumerate(handlers)
    ]
    # Whichever handler is called with the 20th message wakes the test.
    waits = [
        asyncio.create_task(h.wait_until(lambda: sum(len(h.seen) for h in handlers) >= 20))
        for h in handlers
    ]
    finished, waiting = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for wait in waiting:
        wait.cancel()
    await finished.pop()
    for consumer in consumers:
        await consumer.stop()
    payloads = [p for h in handlers for p in h.payloads]
    assert sorted(payloads) == sorted(f"m{i}".encode() for i in range(20))  # each once
    assert await client.fetch(box, group_name="g", max_wait_ms=0) == []
