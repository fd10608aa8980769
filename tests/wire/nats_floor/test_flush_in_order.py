"""nats_guard.flush_in_order: once it returns, everything written before it has reached the
server, the SUB of a subscription just made included (nats-py's own flush writes its PING ahead
of commands still waiting for its flusher). Measured on the wire order of a real connection's
writes to a real nats-server."""

from __future__ import annotations

import nats
import pytest

from mq9_wire.nats_floor.guard import flush_in_order

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]


@pytest.mark.parametrize("in_order", [False, True])
async def test_a_flush_in_order_follows_the_subscription_onto_the_wire(nats_server, in_order):
    connection = await nats.connect(nats_server.url)
    transport = connection._transport
    write, writelines = transport.write, transport.writelines
    wire: list[bytes] = []
    transport.write = lambda data: (wire.append(bytes(data)), write(data))[1]
    transport.writelines = lambda parts: (wire.extend(map(bytes, parts)), writelines(parts))[1]
    try:
        await connection.subscribe("flush.order.check")
        await (flush_in_order(connection) if in_order else connection.flush())
        sent = b"".join(wire)
        sub, last_ping = sent.find(b"SUB flush.order.check"), sent.rfind(b"PING")
        assert sub >= 0 and last_ping >= 0
        # its PONG answered last: with nats-py's flush alone, that PING went ahead of the SUB
        assert (sub < last_ping) is in_order
    finally:
        transport.write, transport.writelines = write, writelines
        await connection.close()


async def test_a_subscription_flushed_in_order_answers_the_next_request(nats_server):
    responder = await nats.connect(nats_server.url)
    asker = await nats.connect(nats_server.url)
    try:
        for i in range(20):  # each subscription new, asked at once from another connection

            async def answer(msg, i=i):
                await msg.respond(b"%d" % i)

            subscription = await responder.subscribe(f"flush.order.{i}", cb=answer)
            await flush_in_order(responder)
            assert (await asker.request(f"flush.order.{i}", b"", timeout=5)).data == b"%d" % i
            await subscription.unsubscribe()
    finally:
        await asker.close()
        await responder.close()
