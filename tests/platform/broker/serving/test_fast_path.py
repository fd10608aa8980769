"""nats_floor/fast_path.py: a subscription's messages handled in the read loop, the answers
written at the end of the read (the broker's own subscription, serve.py), and the same effect
through nats-py's public API when the fast path is off (MQ9_BROKER_FAST_PATH=0, or a nats-py
whose internals it was not checked against). On a real nats-server, each test against what
nats-py's own delivery would do instead."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from mq9_broker import BrokerEngine, serve_on_nats
from mq9_platform.client import Mq9Client
from mq9_wire.nats_floor import fast_path
from mq9_wire.nats_floor import guard as nats_guard
from mq9_wire.nats_floor.fast_path import (
    InlineParser,
    deliver_inline,
    engage,
    publish_queued,
    write_now,
)
from mq9_wire.nats_floor.guard import flush_in_order, protect
from testbed.nats_server import start_nats_server
from testbed.support.store_lane import STATE_SERVER
from testbed.support.waiting import until

pytestmark = pytest.mark.asyncio

# How the fast path is had: on; off by the environment; off because nats-py's internals (one
# method the fast path calls, re-declared with other parameters; or its version) differ
WAYS = ["on", "env-off", "internals-differ", "version-differ"]


@pytest.fixture(params=WAYS)
def way(request, monkeypatch) -> str:
    monkeypatch.setattr(nats_guard, "_verdicts", {})  # each check made again
    if request.param == "env-off":
        monkeypatch.setenv(fast_path.ENV, "0")
    elif request.param == "internals-differ":
        original = Client._build_message

        def _build_message(self, *args, **kwargs):  # what nats-py itself calls still works
            return original(self, *args, **kwargs)

        monkeypatch.setattr(Client, "_build_message", _build_message)
    elif request.param == "version-differ":
        monkeypatch.setattr(fast_path, "CHECKED", ((2, 15),))
    return request.param


async def _guarded(url: str) -> tuple[Client, asyncio.Task[None] | None]:
    connection = await nats.connect(url)
    return connection, protect(connection)


async def _close(connection: Client, watchdog: asyncio.Task[None] | None) -> None:
    if watchdog is not None:
        watchdog.cancel()
    await connection.close()


@contextlib.asynccontextmanager
async def _served(
    url: str, subject: str, callback: Callable[[Msg], Awaitable[None]]
) -> AsyncIterator[tuple[Client, Client, Subscription, bool]]:
    """A guarded connection subscribed to ``subject`` with ``callback`` (in its read loop when
    the fast path is on), another connection to send with, the subscription, and whether the
    fast path took it."""
    server, watchdog = await _guarded(url)
    sender = await nats.connect(url)
    try:
        on = engage(server)
        subscription = await server.subscribe(subject, cb=callback)
        assert deliver_inline(server, subscription) is on
        await flush_in_order(server)
        yield server, sender, subscription, on
    finally:
        await sender.close()
        await _close(server, watchdog)


@pytest.mark.slow
async def test_the_fast_path_is_on_only_where_it_was_checked(nats_server, way, caplog):
    connection, watchdog = await _guarded(nats_server.url)
    try:
        with caplog.at_level(logging.INFO, "mq9_broker"):
            assert engage(connection) is (way == "on")
            assert engage(connection) is (way == "on")  # (said once, decided once)
        assert isinstance(connection._ps, InlineParser) is (way == "on")
        said = [r.getMessage() for r in caplog.records if "fast path" in r.getMessage()]
        said += [r.getMessage() for r in caplog.records if fast_path.ENV in r.getMessage()]
        if way == "on":
            assert not said
        elif way == "env-off":
            assert said and all(fast_path.ENV in line for line in said)
        else:  # one warning line naming what differs
            assert len(said) == 1 and "is off" in said[0] and "\n" not in said[0]
            assert ("_build_message" if way == "internals-differ" else "2.15") in said[0]
    finally:
        await _close(connection, watchdog)


@pytest.mark.slow
async def test_an_unguarded_connection_has_no_fast_path(nats_server):
    plain = await nats.connect(nats_server.url)
    asker = await nats.connect(nats_server.url)
    handled_by: list[asyncio.Task[None] | None] = []

    async def answer(msg: Msg) -> None:
        handled_by.append(asyncio.current_task())
        await msg.respond(b"ok")

    try:
        assert not engage(plain)  # protect() was never called on it
        subscription = await plain.subscribe("inline.plain", cb=answer)
        assert not deliver_inline(plain, subscription)
        await flush_in_order(plain)
        assert (await asker.request("inline.plain", b"", timeout=5)).data == b"ok"
        assert handled_by and handled_by[0] is not plain._reading_task
    finally:
        await asker.close()
        await plain.close()


@pytest.mark.slow
async def test_messages_are_handled_by_the_read_loop_and_answered_by_it(nats_server, way):
    handled_by: list[asyncio.Task[None] | None] = []
    writers: list[asyncio.Task[None] | None] = []

    async def answer(msg: Msg) -> None:
        handled_by.append(asyncio.current_task())
        publish_queued(server, msg.reply, b"answer-" + msg.data)
        write_now(server)

    async with _served(nats_server.url, "inline.>", answer) as (server, asker, _, on):
        transport = server._transport
        write = transport.writelines

        def recording_writelines(payload):
            if any(b"answer-" in part for part in payload):
                writers.append(asyncio.current_task())
            return write(payload)

        transport.writelines = recording_writelines
        try:
            for i in range(20):
                reply = await asker.request("inline.x", str(i).encode(), timeout=5)
                assert reply.data == b"answer-%d" % i
        finally:
            transport.writelines = write
        reading = server._reading_task
        if on:
            assert handled_by == [reading] * 20  # not a task of the subscription's
            assert writers and set(writers) == {reading}  # not nats-py's flusher, a turn later
        else:  # nats-py's own: a task of the subscription's, its flusher writing
            assert len(handled_by) == 20 and reading not in handled_by
            assert reading not in writers


@pytest.mark.slow
async def test_order_is_kept_and_a_failing_callback_loses_only_its_own_message(nats_server, way):
    seen: list[int] = []
    done = asyncio.Event()

    async def record(msg: Msg) -> None:
        number = int(msg.data)
        if number == 7:
            raise RuntimeError("this one fails")
        seen.append(number)
        if number == 499:
            done.set()

    async with _served(nats_server.url, "inline.order", record) as (server, sender, _, _on):
        for i in range(500):
            await sender.publish("inline.order", str(i).encode())
        await flush_in_order(sender)
        await asyncio.wait_for(done.wait(), 10)
        assert seen == [i for i in range(500) if i != 7]
        assert server.is_connected  # the failure was the callback's, not the connection's


@pytest.mark.slow
async def test_answers_queued_together_arrive_in_order(nats_server, way):
    async def fan_out(msg: Msg) -> None:
        for i in range(50):
            publish_queued(server, msg.reply, b"%d" % i)
        write_now(server)

    async with _served(nats_server.url, "inline.fan", fan_out) as (server, asker, _, _on):
        inbox = asker.new_inbox()
        got = await asker.subscribe(inbox)
        await flush_in_order(asker)
        await asker.publish("inline.fan", b"", reply=inbox)
        answers = [(await got.next_msg(timeout=5)).data for _ in range(50)]
        assert answers == [b"%d" % i for i in range(50)]


@pytest.mark.slow
async def test_publish_queued_refuses_what_publish_refuses(nats_server, way):
    async def nothing(msg: Msg) -> None:
        return None

    async with _served(nats_server.url, "inline.refuse", nothing) as (server, _, _s, _on):
        for subject in ("", "a b", "a\tb", "a\r\nPUB x 1"):
            with pytest.raises(nats.errors.BadSubjectError):
                publish_queued(server, subject, b"")
        with pytest.raises(nats.errors.MaxPayloadError):
            publish_queued(server, "inline.big", b"x" * (server.max_payload + 1))
        await server.close()
        with pytest.raises(nats.errors.ConnectionClosedError):
            publish_queued(server, "inline.late", b"")


@pytest.mark.slow
async def test_after_unsubscribe_nothing_reaches_the_callback(nats_server, way):
    seen: list[bytes] = []
    got = asyncio.Event()

    async def record(msg: Msg) -> None:
        seen.append(msg.data)
        got.set()

    async with _served(nats_server.url, "inline.gone", record) as (server, sender, sub, _on):
        await sender.publish("inline.gone", b"before")
        await flush_in_order(sender)
        await asyncio.wait_for(got.wait(), 5)
        await sub.unsubscribe()
        await flush_in_order(server)
        await sender.publish("inline.gone", b"after")
        await flush_in_order(sender)
        await flush_in_order(server)  # anything the server still sent came before this answer
        assert seen == [b"before"]


@pytest.mark.slow  # a nats-server process
async def test_inline_delivery_carries_on_after_a_reconnect():
    # nats-py subscribes again with the same sid on the new connection; its read loop is a
    # new task, and the messages go on reaching the callback there
    server = start_nats_server()  # on the system's choice of port: the restart takes it again
    port = server.port
    connection = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.05)
    watchdog = protect(connection)
    asker = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.05)
    handled_by: list[asyncio.Task[None] | None] = []

    async def answer(msg: Msg) -> None:
        handled_by.append(asyncio.current_task())
        await connection.publish(msg.reply, b"ok")

    try:
        assert engage(connection)
        subscription = await connection.subscribe("inline.again", cb=answer)
        assert deliver_inline(connection, subscription)
        await flush_in_order(connection)
        assert (await asker.request("inline.again", b"", timeout=5)).data == b"ok"
        before = connection._reading_task
        await asyncio.to_thread(server.stop)
        server = await asyncio.to_thread(start_nats_server, "127.0.0.1", port)
        for _ in range(200):  # until both have reconnected and subscribed again
            try:
                assert (await asker.request("inline.again", b"", timeout=0.5)).data == b"ok"
                break
            except nats.errors.Error:
                await asyncio.sleep(0.05)
        else:
            pytest.fail("no answer after the restart")
        assert connection._reading_task is not before
        assert handled_by[0] is before and handled_by[-1] is connection._reading_task
    finally:
        await asker.close()
        await _close(connection, watchdog)
        server.stop()


@pytest.mark.slow
@pytest.mark.parametrize("store", ["memory", "jetstream"])
async def test_the_broker_serves_end_to_end_either_way(nats_server, way, store):
    """A broker served on a real nats-server, its state in memory (answers published as they
    come) or in JetStream (an ``Engine`` on a layout of its own, as ``--store jetstream``
    serves: answers published once JetStream acknowledged the write, publish_queued), with the
    fast path on or off."""
    layout = await STATE_SERVER.layout() if store == "jetstream" else None
    engine = BrokerEngine() if layout is None else layout.engine()
    connection = await nats.connect(nats_server.url)
    service = await serve_on_nats(engine, connection, announce=True)
    try:
        assert isinstance(connection._ps, InlineParser) is (way == "on")
        async with Mq9Client(nats_server.url) as client:
            box = await client.mailbox_create(ttl=60)
            sent = await asyncio.gather(*(client.send(box, f"m{i}") for i in range(20)))
            assert len(set(sent)) == 20
            got = await client.fetch(box, group_name="g", deliver="earliest", num_msgs=20)
            assert sorted(m.payload for m in got) == sorted(f"m{i}".encode() for i in range(20))
    finally:
        await service.stop()
        await connection.close()
        if layout is not None:
            await STATE_SERVER.drop(layout)


@pytest.mark.slow
async def test_replies_and_reads_marked_never_waiting_are_delivered_in_the_read_loop(
    nats_server, way
):
    """nats-py's request replies and a callback marked ``never_waits`` are handed over in the
    read loop once the fast path is on (#81: a JetStream answer wakes its requester a turn
    sooner), any other callback left to nats-py; requests answer the same either way."""
    connection, watchdog = await _guarded(nats_server.url)
    responder = await nats.connect(nats_server.url)
    got: list[bytes] = []

    @fast_path.never_waits
    async def marked(msg: Msg) -> None:
        got.append(msg.data)

    async def other(msg: Msg) -> None:
        got.append(b"other:" + msg.data)

    async def echo(msg: Msg) -> None:
        await responder.publish(msg.reply, msg.data)

    try:
        await responder.subscribe("echo", cb=echo)
        await flush_in_order(responder)  # its SUB at the server before the first request
        on = engage(connection)
        assert (await connection.request("echo", b"one", timeout=5)).data == b"one"
        sub_marked = await connection.subscribe("marked", cb=marked)
        sub_other = await connection.subscribe("other", cb=other)
        taken = fast_path.replies_inline(connection)
        assert taken == (2 if on else 0)  # the replies' subscription and the marked one
        if on:
            parser = connection._ps
            assert sub_marked._id in parser.taken and sub_other._id not in parser.taken
        assert (await connection.request("echo", b"two", timeout=5)).data == b"two"
        await responder.publish("marked", b"m")
        await responder.publish("other", b"o")
        await responder.flush()
        await until(lambda: len(got) == 2, timeout=30, what="both published messages")
        assert sorted(got) == [b"m", b"other:o"]
    finally:
        await responder.close()
        await _close(connection, watchdog)
