"""The transport interface (issue #23): ``Mq9Client(transport=...)`` takes a NATS transport
built with its own options, a broker engine, a handler function, or a class of one's own."""

from __future__ import annotations

import json

import nats
import pytest

from mq9_broker import BrokerEngine, BrokerLimits, serve_on_nats
from mq9_platform import Mq9Client, Mq9Error
from mq9_platform.client.transport import HandlerTransport, NatsTransport
from mq9_wire import protocol as p
from mq9_wire.protocol.errors import InvalidArgument, MailboxNotFound, NotConnected


async def test_an_engine_passed_in_is_the_broker_and_bounds_the_payload():
    engine = BrokerEngine(limits=BrokerLimits(max_payload=2000))
    async with Mq9Client(transport=engine) as client:
        box = await client.mailbox_create(name="in.process")
        await client.send(box, "hello")
        assert client._transport.max_payload == 2000
        with pytest.raises(Mq9Error, match="payload too large"):
            await client.send(box, "x" * 3000)
    assert [m.payload for m in engine.mailboxes[box].messages.values()] == [b"hello"]
    async with Mq9Client(transport=BrokerEngine()) as other:  # another engine: nothing shared
        with pytest.raises(MailboxNotFound):
            await other.query(box)


async def test_a_handler_function_answers_like_a_broker():
    seen = []

    async def handler(subject, headers, body):
        seen.append((subject, headers, json.loads(body)))
        return p.encode({"error": "", "msg_id": 7})

    async with Mq9Client(transport=handler) as client:
        assert await client.send("a.box", {"n": 1}, priority="urgent") == 7
    assert seen == [(p.send_subject("a.box"), {p.HEADER_PRIORITY: "urgent"}, {"n": 1})]
    with pytest.raises(NotConnected):  # closed
        await client.send("a.box", "x")


async def test_a_transport_of_ones_own_is_used_as_it_is():
    subjects: list[str] = []

    class Recording(HandlerTransport):
        async def request(self, subject, body, headers, timeout):
            subjects.append(subject)
            return await super().request(subject, body, headers, timeout)

    mine = Recording(BrokerEngine())
    async with Mq9Client(transport=mine) as client:
        assert client._transport is mine
        await client.mailbox_create(name="mine")
    assert subjects == [p.MAILBOX_CREATE]


@pytest.mark.slow
async def test_a_nats_transport_owns_the_nats_options(nats_server):
    engine = BrokerEngine()
    connection = await nats.connect(nats_server.url)
    service = await serve_on_nats(engine, connection)
    try:
        transport = NatsTransport(nats_server.url, name="mine", reconnect_attempts=1)
        async with Mq9Client(transport=transport) as client:
            assert await client.mailbox_create(name="over.nats") == "over.nats"
        assert "over.nats" in engine.mailboxes
    finally:
        await service.stop()
        await connection.close()


def test_server_or_transport_and_nats_options_only_with_a_url():
    with pytest.raises(ValueError, match="one of server"):
        Mq9Client()
    with pytest.raises(ValueError, match="one of server"):
        Mq9Client("memory://", transport=BrokerEngine())
    with pytest.raises(TypeError, match="user"):
        Mq9Client(transport=BrokerEngine(), user="alice")
    with pytest.raises(TypeError, match="pasword"):
        Mq9Client("memory://", pasword="typo")
    with pytest.raises(InvalidArgument, match="take no credentials"):
        Mq9Client("memory://", token="secret")
    with pytest.raises(InvalidArgument, match="unsupported server URL"):
        NatsTransport("http://host:1")
    Mq9Client("memory://", reconnect_attempts=1, name="x")  # taken (and unused) as before


@pytest.mark.slow  # over a second on a quiet machine (#89)
async def test_a_dial_that_fails_as_its_caller_is_stopped_leaves_no_unretrieved_error(
    monkeypatch,
):
    """#35: `mq9-mcp --server nats://127.0.0.1:1` stopped while it dialled printed "Task
    exception was never retrieved … NoServersError": the dial ended in its own error at the
    moment its caller was cancelled, and nobody read that error. nats-py's dial is made to end
    that way here (the race itself is one event-loop turn wide)."""
    import asyncio
    import gc

    from nats.errors import NoServersError

    from mq9_wire.nats_floor.guard import GuardedClient

    async def dial(self, **options):
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            raise NoServersError from None

    monkeypatch.setattr(GuardedClient, "connect", dial)
    unretrieved = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: unretrieved.append(context["message"]))
    try:
        connecting = asyncio.create_task(NatsTransport("nats://127.0.0.1:1").connect())
        await asyncio.sleep(0.01)
        connecting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await connecting
        await asyncio.sleep(0)
        gc.collect()
    finally:
        loop.set_exception_handler(None)
    assert unretrieved == []
