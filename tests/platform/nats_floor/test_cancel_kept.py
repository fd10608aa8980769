"""A cancel is kept when the reply comes in the same turn of the loop.

nats-py waits for a reply in ``asyncio.wait_for``, which on Python 3.11 returns a reply that
arrived together with a cancel of the waiting task and drops the cancel: a loop of requests
stopped that way went on for ever (a test's worker loop, once in a suite run on a busy machine,
held the suite for good). Here a responder on a real nats-server publishes a "poke" and then
the reply back to back: the requester's connection reads both at once, and the poke's callback
cancels the request just before the reply wakes it, so the two meet in one turn."""

from __future__ import annotations

import asyncio
import sys

import nats
import pytest

from mq9_platform import Mq9Client
from mq9_wire.nats_floor.requests import request

pytestmark = pytest.mark.slow
ROUNDS = 20
WAIT = 30  # seconds: a hang guard, never a timing assertion


async def poking_responder(url: str, subject: str, answer: bytes) -> nats.NATS:
    responder = await nats.connect(url)

    async def reply(msg: nats.aio.msg.Msg) -> None:
        await responder.publish("test.poke", b"")
        await responder.publish(msg.reply, answer)
        await responder.flush()

    await responder.subscribe(subject, cb=reply)
    await responder.flush()
    return responder


async def cancelled_by_poke(connection: nats.NATS, asking) -> bool:
    """Whether the request ``asking()`` makes ends cancelled, cancelled by the poke."""
    task = asyncio.ensure_future(asking())

    async def poked(_msg: nats.aio.msg.Msg) -> None:
        task.cancel()

    poke = await connection.subscribe("test.poke", cb=poked)
    await connection.flush()
    try:
        await asyncio.wait_for(asyncio.wait({task}), WAIT)
        return task.cancelled()
    finally:
        await poke.unsubscribe()


async def test_a_request_cancelled_as_its_reply_arrives_ends_cancelled(nats_server):
    responder = await poking_responder(nats_server.url, "test.ask", b"reply")
    connection = await nats.connect(nats_server.url)
    try:
        for _ in range(ROUNDS):
            asking = lambda: request(connection, "test.ask", b"", timeout=WAIT)  # noqa: E731
            assert await cancelled_by_poke(connection, asking)
    finally:
        await connection.close()
        await responder.close()


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="wait_for keeps the cancel from 3.12")
async def test_nats_pys_own_request_drops_such_a_cancel_on_this_python(nats_server):
    """The race is really met here (else the test above would prove nothing)."""
    responder = await poking_responder(nats_server.url, "test.ask", b"reply")
    connection = await nats.connect(nats_server.url)
    try:
        kept = [
            await cancelled_by_poke(
                connection, lambda: connection.request("test.ask", b"", timeout=WAIT)
            )
            for _ in range(ROUNDS)
        ]
        assert not all(kept)
    finally:
        await connection.close()
        await responder.close()


async def test_the_clients_request_keeps_it_too(nats_server):
    """The same through ``Mq9Client``, the poke heard on its own connection (the
    announcements' subscription every NATS transport offers)."""
    send = "$mq9.AI.MSG.SEND.cancel.box"
    responder = await poking_responder(nats_server.url, send, b'{"error":"","msg_id":1}')
    async with Mq9Client(nats_server.url, request_timeout=WAIT) as client:
        try:
            for _ in range(ROUNDS):
                task = asyncio.ensure_future(client.send("cancel.box", "x"))
                stop = await client.transport.subscribe_announcements(
                    ["test.poke"], lambda _subject, task=task: task.cancel(), WAIT
                )
                assert stop is not None
                try:
                    await asyncio.wait_for(asyncio.wait({task}), WAIT)
                    assert task.cancelled()
                finally:
                    await stop()
        finally:
            await responder.close()
