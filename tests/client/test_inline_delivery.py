"""nats_guard.deliver_inline: a subscription's messages handled in the read loop, the answers
written at the end of the read (the broker's own subscription, serve.py). On a real
nats-server, each test against what nats-py's own delivery would do instead."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from langchain_mq9.broker.cluster.servers import free_port, start_nats_server
from langchain_mq9.client.nats_guard import deliver_inline, flush_in_order, protect

pytestmark = pytest.mark.asyncio


async def _guarded(url: str) -> tuple[Client, asyncio.Task[None] | None]:
    connection = await nats.connect(url)
    return connection, protect(connection)


async def _close(connection: Client, watchdog: asyncio.Task[None] | None) -> None:
    if watchdog is not None:
        watchdog.cancel()
    await connection.close()


@contextlib.asynccontextmanager
async def _inline(
    url: str, subject: str, callback: Callable[[Msg], Awaitable[None]]
) -> AsyncIterator[tuple[Client, Client, Subscription]]:
    """A guarded connection subscribed to ``subject`` with ``callback`` delivered in its read
    loop, another connection to send with, and the subscription."""
    server, watchdog = await _guarded(url)
    sender = await nats.connect(url)
    try:
        subscription = await server.subscribe(subject, cb=callback)
        assert deliver_inline(server, subscription)
        await flush_in_order(server)
        yield server, sender, subscription
    finally:
        await sender.close()
        await _close(server, watchdog)


async def test_messages_are_handled_by_the_read_loop_and_answered_by_it(nats_server):
    handled_by: list[asyncio.Task[None] | None] = []
    writers: list[asyncio.Task[None] | None] = []

    async def answer(msg: Msg) -> None:
        handled_by.append(asyncio.current_task())
        await server.publish(msg.reply, b"answer-" + msg.data)

    async with _inline(nats_server.url, "inline.>", answer) as (server, asker, _):
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
        assert handled_by == [reading] * 20  # not a task of the subscription's
        assert writers and set(writers) == {reading}  # not nats-py's flusher, a turn later


async def test_order_is_kept_and_a_failing_callback_loses_only_its_own_message(nats_server):
    seen: list[int] = []
    done = asyncio.Event()

    async def record(msg: Msg) -> None:
        number = int(msg.data)
        if number == 7:
            raise RuntimeError("this one fails")
        seen.append(number)
        if number == 499:
            done.set()

    async with _inline(nats_server.url, "inline.order", record) as (server, sender, _):
        for i in range(500):
            await sender.publish("inline.order", str(i).encode())
        await flush_in_order(sender)
        await asyncio.wait_for(done.wait(), 10)
        assert seen == [i for i in range(500) if i != 7]
        assert server.is_connected  # the failure was the callback's, not the connection's


async def test_after_unsubscribe_nothing_reaches_the_callback(nats_server):
    seen: list[bytes] = []
    got = asyncio.Event()

    async def record(msg: Msg) -> None:
        seen.append(msg.data)
        got.set()

    async with _inline(nats_server.url, "inline.gone", record) as (server, sender, subscription):
        await sender.publish("inline.gone", b"before")
        await flush_in_order(sender)
        await asyncio.wait_for(got.wait(), 5)
        await subscription.unsubscribe()
        await flush_in_order(server)
        await sender.publish("inline.gone", b"after")
        await flush_in_order(sender)
        await flush_in_order(server)  # anything the server still sent came before this answer
        assert seen == [b"before"]


async def test_an_unguarded_connection_keeps_nats_pys_delivery(nats_server):
    plain = await nats.connect(nats_server.url)
    asker = await nats.connect(nats_server.url)
    handled_by: list[asyncio.Task[None] | None] = []

    async def answer(msg: Msg) -> None:
        handled_by.append(asyncio.current_task())
        await msg.respond(b"ok")

    try:
        subscription = await plain.subscribe("inline.plain", cb=answer)
        assert not deliver_inline(plain, subscription)
        await flush_in_order(plain)
        assert (await asker.request("inline.plain", b"", timeout=5)).data == b"ok"
        assert handled_by and handled_by[0] is not plain._reading_task
    finally:
        await asker.close()
        await plain.close()


async def test_inline_delivery_carries_on_after_a_reconnect():
    # nats-py subscribes again with the same sid on the new connection; its read loop is a
    # new task, and the messages go on reaching the callback there
    port = free_port()
    server = start_nats_server(port=port)
    connection = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.05)
    watchdog = protect(connection)
    asker = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.05)
    handled_by: list[asyncio.Task[None] | None] = []

    async def answer(msg: Msg) -> None:
        handled_by.append(asyncio.current_task())
        await connection.publish(msg.reply, b"ok")

    try:
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


@pytest.mark.parametrize("in_order", [False, True])
async def test_a_flush_in_order_follows_the_subscription_onto_the_wire(nats_server, in_order):
    """nats-py's flush writes its PING at once, ahead of a SUB still waiting for the flusher
    (so its PONG may come back before the server has the SUB); ``flush_in_order`` writes the
    SUB first. Measured on the wire order of the connection's writes."""
    connection = await nats.connect(nats_server.url)
    transport = connection._transport
    write, writelines = transport.write, transport.writelines
    wire: list[bytes] = []
    transport.write = lambda data: (wire.append(bytes(data)), write(data))[1]
    transport.writelines = lambda parts: (wire.extend(map(bytes, parts)), writelines(parts))[1]
    try:
        await connection.subscribe("inline.order.check")
        await (flush_in_order(connection) if in_order else connection.flush())
        sent = b"".join(wire)
        sub, ping = sent.find(b"SUB inline.order.check"), sent.find(b"PING")
        assert sub >= 0 and ping >= 0
        assert (sub < ping) is in_order  # nats-py's own order is the other way round
    finally:
        transport.write, transport.writelines = write, writelines
        await connection.close()
