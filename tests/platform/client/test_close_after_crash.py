"""#113: a client closed just after its broker crashed stops cleanly. With the SQLite dev broker
SIGKILLed in the middle of traffic, ``Mq9Client.close()`` raised ``asyncio.CancelledError`` in a
task nothing had cancelled, past every ``except Exception`` around it. nats-py's close cancels
its reconnecting task while that waits for the dead socket to close, which cancels the socket's
close waiter the two share, and the close then awaits that same waiter. The window is the turn
of the loop between nats-py seeing the link drop and its reconnecting task's first step: a close
called there (a request just refused "down and reconnecting", then the application shutting
down) met it every time. The tests look at the link every turn (``every=0``) and close in it.

A cancel of the closing task itself (a shutdown, a caller's timeout) is still a cancel."""

from __future__ import annotations

import asyncio

import pytest

from mq9_platform.client import Mq9Client
from mq9_platform.client.transport import NatsTransport
from mq9_wire.protocol.errors import ConnectionLost
from testbed.devbroker import DevBroker
from testbed.support.waiting import until

pytestmark = pytest.mark.slow  # the dev broker, a process

BOX = "crash.box"
TRAFFIC = 20  # messages sent before the crash


async def crashed(tmp_path, name: str) -> tuple[Mq9Client, list[asyncio.Task]]:
    """A client of a SQLite dev broker that was SIGKILLed in the middle of its traffic, in the
    turn of the loop in which nats-py has seen the link drop (the link looked at every turn),
    and its sends (answered, or cut by the crash: read them after the close)."""
    with DevBroker("--port", "0", "--store", "sqlite", "--data", str(tmp_path / name)) as broker:
        assert broker.url is not None
        client = await Mq9Client(broker.url, request_timeout=30).connect()
        await client.mailbox_create(name=BOX)
        sending = [asyncio.create_task(client.send(BOX, f"m{n}")) for n in range(TRAFFIC)]
        await asyncio.gather(*sending[: TRAFFIC // 2])  # half answered, half under way
    # (the broker and its nats-server are SIGKILLed as the with block ends)
    transport = client.transport
    assert isinstance(transport, NatsTransport)
    await until(lambda: transport.reconnecting, timeout=30, every=0, what="the link to drop")
    with pytest.raises(ConnectionLost):  # what the application saw just before it closed
        await client.send(BOX, "one more")
    return client, sending


async def test_a_client_closed_just_after_its_broker_crashed_raises_nothing(tmp_path):
    client, sending = await crashed(tmp_path, "plain.db")
    await client.close()  # raised CancelledError, nothing having cancelled this task
    assert not client.is_connected
    await client.close()  # and again: nothing to close
    await asyncio.gather(*sending, return_exceptions=True)  # (answered or cut: either)


async def test_a_close_its_caller_cancels_is_still_cancelled(tmp_path):
    client, sending = await crashed(tmp_path, "cancelled.db")
    closing = asyncio.create_task(client.close())
    await asyncio.sleep(0)  # the close under way, waiting for nats-py's
    assert not closing.done()
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    assert not client.is_connected
    await asyncio.gather(*sending, return_exceptions=True)
