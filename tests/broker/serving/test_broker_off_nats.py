"""A broker whose NATS connection closes for good ends, for its supervisor (issue #77 item 1).

nats-py reconnects for ever (the broker asks it to) but closes a connection for good when the
server answers ``-ERR`` (``Client._process_err``): a broker that lived on then ran without
serving (``NoBroker`` for every client, the process still up). Here the server closes the
broker's connection for real, by an oversized subject written on it, and the broker stops:
``serve`` raises why (the CLI's exit status 1), and ``serving`` says False.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from mq9_broker import Broker
from mq9_broker.config import BrokerConfig, StartupError
from testbed.nats_server import start_nats_server
from testbed.support.jetstream_servers import JetStreamCluster

pytestmark = pytest.mark.slow  # a nats-server process

LONG_SUBJECT = "x." * 3000  # over nats-server's 4,096-byte control line


async def test_a_connection_the_server_closes_ends_the_broker():
    with start_nats_server() as server:
        config = BrokerConfig(nats=server.url, search=False)
        async with Broker(config, say=lambda _: None) as broker:
            assert broker.serving
            serving = asyncio.ensure_future(broker.serve())
            connection = broker._opened[0]  # (the broker's own: nothing else reaches it)
            await connection.publish(LONG_SUBJECT + "y", b"x")  # unfenced: -ERR, closed
            with pytest.raises(
                StartupError, match=r"closed \(.*control line.*\); the broker stops"
            ):
                await asyncio.wait_for(serving, 30)
            assert not broker.serving


async def test_on_the_cluster_store_any_of_its_connections_closed_ends_the_broker():
    with JetStreamCluster(1) as servers:
        stream = f"OFF{uuid.uuid4().hex[:10]}"
        config = BrokerConfig(nats=servers.urls[0], store="jetstream", stream=stream, search=False)
        async with Broker(config, say=lambda _: None) as broker:
            serving = asyncio.ensure_future(broker.serve())
            bulk = broker._opened[-1]  # its answers' connection (the store's own is fenced)
            await bulk.publish(LONG_SUBJECT + "y", b"x")
            with pytest.raises(
                StartupError, match=r"closed \(.*control line.*\); the broker stops"
            ):
                await asyncio.wait_for(serving, 30)
            assert not broker.serving
        # (and it stopped: the store closed on a connection still open, the rest on closed ones)


async def test_a_broker_stopped_by_its_owner_is_not_ended_by_its_closing_connections():
    with start_nats_server() as server:
        config = BrokerConfig(nats=server.url, search=False)
        broker = await Broker(config, say=lambda _: None).start()
        await broker.stop()
        until = asyncio.Event()
        until.set()
        await broker.serve(until)  # no failure recorded: it stopped because it was asked
