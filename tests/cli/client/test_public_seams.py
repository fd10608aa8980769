"""What other parts use of the client, by public names (#74): a transport's arrival
announcements (``StoredArrivals`` in process, ``Announcements`` on NATS), ``Mq9Client.transport``
and ``server_info``, ``warn_once``; and ``Mq9ClientLike`` (client/api.py) naming what
``Mq9Client`` has."""

from __future__ import annotations

import asyncio
import inspect
import logging

import nats
import pytest

from mq9_broker import BrokerEngine
from mq9_platform import Mq9Client
from mq9_platform.client.api import Mq9ClientLike
from mq9_platform.client.transport import (
    Announcements,
    HandlerTransport,
    MemoryTransport,
    NatsTransport,
    StoredArrivals,
)

WAIT = 30.0  # a guard against a hang, never a timing assertion


async def test_an_engine_in_process_tells_each_mailbox_it_stores_in():
    engine = BrokerEngine()
    async with Mq9Client(transport=MemoryTransport(engine)) as client:
        transport = client.transport
        assert isinstance(transport, StoredArrivals)
        assert not isinstance(transport, Announcements)
        assert client.server_info == {}  # no NATS server said anything
        told: list[str] = []
        unsubscribe = transport.subscribe_stored(told.append)
        assert unsubscribe is not None
        await client.mailbox_create(name="box.a")
        await client.send("box.a", "one")
        assert told == ["box.a"]
        await unsubscribe()
        await unsubscribe()  # twice: nothing left to remove, no error
        await client.send("box.a", "two")
        assert told == ["box.a"]
        assert engine.arrivals == []


async def test_a_function_answering_tells_nothing():
    async def answer(subject, headers, body):
        return b"{}"

    transport = HandlerTransport(answer)
    assert transport.subscribe_stored(lambda address: None) is None


async def _heard_after(transport: NatsTransport, publisher, subject: str) -> None:
    """Until a fresh subscription to ``subject`` hears a message published now: the server
    delivers in order, so what an older subscription was to get of it is in by then."""
    fresh: asyncio.Queue[str] = asyncio.Queue()
    unsubscribe = await transport.subscribe_announcements([subject], fresh.put_nowait, WAIT)
    assert unsubscribe is not None
    await publisher.publish(subject, b"")
    await publisher.flush()
    assert await asyncio.wait_for(fresh.get(), WAIT) == subject
    await unsubscribe()


@pytest.mark.slow
async def test_announcements_on_nats_are_heard_and_undone(nats_server):
    transport = NatsTransport(nats_server.url)
    publisher = await nats.connect(nats_server.url)
    try:
        assert await transport.subscribe_announcements(["x.*"], print, WAIT) is None  # no link
        await transport.connect()
        client = Mq9Client(transport=transport)
        assert client.transport is transport and isinstance(transport, Announcements)
        assert "server_id" in client.server_info
        heard: asyncio.Queue[str] = asyncio.Queue()
        unsubscribe = await transport.subscribe_announcements(
            ["seam.a", "seam.b.*"], heard.put_nowait, WAIT
        )
        assert unsubscribe is not None
        await publisher.publish("seam.b.1", b"")
        await publisher.publish("seam.c", b"")  # not subscribed
        await publisher.publish("seam.a", b"")
        await publisher.flush()
        assert await asyncio.wait_for(heard.get(), WAIT) == "seam.b.1"
        assert await asyncio.wait_for(heard.get(), WAIT) == "seam.a"
        await unsubscribe()
        await _heard_after(transport, publisher, "seam.a")
        assert heard.empty()
    finally:
        await publisher.close()
        await transport.close()


@pytest.mark.slow
async def test_a_refused_subscription_raises_and_keeps_none_of_the_others(nats_server):
    transport = NatsTransport(nats_server.url)
    publisher = await nats.connect(nats_server.url)
    await transport.connect()
    try:
        heard: list[str] = []
        refused = None
        try:  # nats-py refuses an empty subject, after the first was subscribed
            await transport.subscribe_announcements(["seam.kept", ""], heard.append, WAIT)
        except Exception as exc:
            refused = exc
        assert refused is not None
        await _heard_after(transport, publisher, "seam.kept")
        assert heard == []
    finally:
        await publisher.close()
        await transport.close()


async def test_warn_once_says_a_mailbox_looks_wrong_once(caplog):
    async with Mq9Client(transport=MemoryTransport(BrokerEngine())) as client:
        with caplog.at_level(logging.WARNING, logger="langchain_mq9"):
            client.warn_once("box.a", "the log of box.a went back")
            client.warn_once("box.a", "said again")
        assert client.warnings == {"box.a": "the log of box.a went back"}
        assert [r.getMessage() for r in caplog.records] == ["the log of box.a went back"]


def test_mq9_client_has_every_method_the_sdk_shares():
    """Each method of ``Mq9ClientLike`` is ``Mq9Client``'s, taking at least its arguments
    (mypy checks the types where the catalog hands an ``Mq9Client`` on)."""
    for name, shared in inspect.getmembers(Mq9ClientLike, inspect.isfunction):
        if name.startswith("_"):
            continue
        ours = inspect.signature(getattr(Mq9Client, name)).parameters
        for parameter in inspect.signature(shared).parameters.values():
            if parameter.kind is inspect.Parameter.POSITIONAL_ONLY:
                continue  # named otherwise by the SDK: passed by position
            assert parameter.name in ours, f"Mq9Client.{name} takes no {parameter.name}"
