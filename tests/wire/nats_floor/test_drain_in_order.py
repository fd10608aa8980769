"""guard.drain_in_order: a subscription ended with nothing the server sent it before the UNSUB
dropped. nats-py's unsubscribe forgets the subscription at once, so what the server routed to
it meanwhile is thrown away (a queue group's request lost: CI saw a partition hand-over lose
them, tests/platform/broker/serving/test_partitions.py); its drain writes its PING ahead of its
UNSUB.

Played on a real nats-server: another connection publishes while the subscriber's event loop
cannot read (a thread, joined), so every message reaches the subscriber's socket before it
ends the subscription and is read only after; whether they reach the callback is decided by
the order of the wire alone, not by a time."""

from __future__ import annotations

import asyncio
import threading

import nats
import pytest
from nats.aio.client import Client as NatsConnection

from mq9_wire.nats_floor.guard import drain_in_order

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]

MESSAGES = 50


def _published_meanwhile(url: str, subject: str) -> None:
    """``MESSAGES`` on ``subject`` from a connection of another thread, flushed (routed by the
    server) before this returns; the caller's event loop is held the while."""

    async def publish() -> None:
        publisher = await nats.connect(url)
        try:
            for n in range(MESSAGES):
                await publisher.publish(subject, b"%d" % n)
            await publisher.flush()
        finally:
            await publisher.close()

    thread = threading.Thread(target=asyncio.run, args=(publish(),))
    thread.start()
    thread.join(30)  # (blocking: the subscriber reads nothing until its end is under way)
    assert not thread.is_alive()


async def _ended(url: str, end: str) -> list[bytes]:
    subscriber = await nats.connect(url)
    got: list[bytes] = []

    async def take(msg):
        got.append(msg.data)

    try:
        subscription = await subscriber.subscribe("drain.order", queue="q", cb=take)
        await subscriber.flush()
        await subscriber.flush()  # (the SUB is at the server: see flush_in_order)
        _published_meanwhile(subscriber.connected_url.geturl(), "drain.order")
        if end == "unsubscribe":
            await subscription.unsubscribe()
            await subscriber.flush()
            await subscriber.flush()
        else:
            await drain_in_order(subscriber, [subscription])
        assert "drain.order" not in {sub.subject for sub in subscriber._subs.values()}
        return got
    finally:
        await subscriber.close()


async def test_a_drain_in_order_hands_over_everything_routed_before_it(nats_server):
    assert len(await _ended(nats_server.url, "drain_in_order")) == MESSAGES


async def test_a_plain_unsubscribe_drops_them_which_is_why(nats_server):
    # (the test above could fail: played with nats-py's unsubscribe, all are lost)
    assert await _ended(nats_server.url, "unsubscribe") == []


async def test_nothing_more_comes_once_it_returned(nats_server):
    subscriber = await nats.connect(nats_server.url)
    publisher = await nats.connect(nats_server.url)
    got: list[bytes] = []

    async def take(msg):
        got.append(msg.data)

    try:
        subscription = await subscriber.subscribe("drain.after", cb=take)
        await drain_in_order(subscriber, [subscription])
        await publisher.publish("drain.after", b"late")
        await publisher.flush()
        await subscriber.flush()
        assert got == []
        await drain_in_order(subscriber, [subscription])  # (again: nothing to do)
    finally:
        await publisher.close()
        await subscriber.close()


async def test_on_a_closed_connection_it_only_forgets_them(nats_server):
    subscriber: NatsConnection = await nats.connect(nats_server.url)

    async def take(msg):
        return None

    subscription = await subscriber.subscribe("drain.closed", cb=take)
    await subscriber.close()
    await drain_in_order(subscriber, [subscription])
    assert not subscriber._subs
