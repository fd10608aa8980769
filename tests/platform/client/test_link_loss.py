"""A request waiting for its reply when the link drops fails at once with ``ConnectionLost``:
``NatsTransport`` cancels it where it waits (what nats-py's disconnect callback does,
``_cut_in_flight``, is done here by hand on a live link). The caller's own cancel stays a
cancel, and a request already answered is never cancelled afterwards. (A real restart of
nats-server under a request: tests/broker/cli/test_devbroker_faults.py.)

A request made while the link is down is not sent: it fails at once (nats-py would hold it
until it reconnects and wait out the request's whole timeout meanwhile), and one safe to repeat
is tried again until the link is back, within ``request_timeout`` (a real nats-server stopped
and started again)."""

from __future__ import annotations

import asyncio
import sys

import pytest

from mq9_platform import Mq9Client
from mq9_wire import protocol as p
from mq9_wire.protocol.errors import ConnectionLost
from testbed.nats_server import start_nats_server
from testbed.support.waiting import until

pytestmark = pytest.mark.slow

BOX = "links.box"
# A FETCH that parks on the bundled broker (nothing in the mailbox): a request in flight
PARKED = p.encode({"config": {"max_wait_ms": 20_000}})


@pytest.fixture
async def client(nats_broker):
    async with nats_broker.client() as connected:
        await connected.mailbox_create(name=BOX)
        yield connected


async def in_flight(client) -> asyncio.Task:
    transport = client._transport
    request = transport.request(p.fetch_subject(BOX), PARKED, None, 25)
    task = asyncio.create_task(request)
    while task not in transport._in_flight:  # sent, and waiting for its reply
        await asyncio.sleep(0)
    return task


async def test_a_request_the_link_drops_under_fails_at_once_as_connection_lost(client):
    task = await in_flight(client)
    client._transport._cut_in_flight()
    with pytest.raises(ConnectionLost, match="may or may not have been carried out"):
        await asyncio.wait_for(task, 5)
    assert not client._transport._cut  # the cancel was taken back
    assert await client.query(BOX) == []  # the client carries on


async def test_the_callers_own_cancel_stays_a_cancel(client):
    task = await in_flight(client)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not client._transport._in_flight


@pytest.mark.skipif(sys.version_info < (3, 11), reason="Python 3.10 counts no cancels")
async def test_a_cancel_by_the_caller_as_the_link_drops_stays_a_cancel(client):
    task = await in_flight(client)
    task.cancel()
    client._transport._cut_in_flight()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_request_answered_is_not_cancelled_when_the_link_drops_after(client):
    await client.query(BOX)
    client._transport._cut_in_flight()
    for _ in range(3):  # a cancel scheduled now would land in one of these
        await asyncio.sleep(0)
    assert not asyncio.current_task().cancelling()
    assert await client.query(BOX) == []


async def test_a_request_made_while_the_link_is_down_fails_at_once(restartable_nats):
    # A timeout far above the test's waits: a SEND that waited it out would be a RequestTimeout
    options = {"request_timeout": 30, "reconnect_attempts": 1000, "reconnect_delay": 0.1}
    async with Mq9Client(restartable_nats["url"], **options) as client:
        box = await client.mailbox_create(name="outage.box")
        await asyncio.to_thread(restartable_nats["server"].stop)
        link = client._transport._connection
        await until(
            lambda: link.is_reconnecting, timeout=15, what="the client to see the link drop"
        )

        with pytest.raises(ConnectionLost, match="down and reconnecting; the request was not sent"):
            await client.send(box, "during the outage")
        with pytest.raises(ConnectionLost) as caught:
            await client.send(box, "again")
        assert caught.value.retryable

        # A FETCH is safe to repeat: it is tried again until the link is back
        fetching = asyncio.create_task(client.fetch(box, deliver="earliest", max_wait_ms=0))
        await asyncio.sleep(0.3)
        assert not fetching.done()
        restartable_nats["server"] = await asyncio.to_thread(
            start_nats_server, "127.0.0.1", restartable_nats["port"]
        )
        assert await asyncio.wait_for(fetching, 25) == []  # nothing was sent in the outage
        assert await client.send(box, "after the outage") == 0
