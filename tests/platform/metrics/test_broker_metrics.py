"""``mq9-dev-broker``'s figures, exact (#73): what the broker holds (mailboxes, messages and
their bytes, dead letters, agents, a group's pending messages), requests by command and
outcome, and /readyz through a broker's life (starting, serving, stopped). The broker is the
``Broker`` object on a nats-server it starts; the endpoint is the one ``--metrics`` serves."""

from __future__ import annotations

import asyncio

import pytest
from operator_support import names_in

from mq9_broker import Broker
from mq9_broker.cli.metrics import broker_endpoint, is_dead_letters
from mq9_broker.config import BrokerConfig
from mq9_broker.engine.limits import BrokerLimits
from mq9_platform import Mq9Client
from mq9_platform.groups.dead_letters import DEAD_LETTER_SUFFIX, dead_letter_address
from mq9_wire.protocol.errors import LimitReached

pytestmark = pytest.mark.slow  # a nats-server


async def _get(port: int, path: str) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 60)
    writer.close()
    head, _, body = raw.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


def _value(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{series} not in the scrape")


def test_the_dead_letter_names_are_the_groups():
    assert DEAD_LETTER_SUFFIX == ".dlq"
    assert is_dead_letters(dead_letter_address("agent.a"))
    assert is_dead_letters(dead_letter_address("a" * 120 + ".b"))  # the digest form
    assert not is_dead_letters("dlq.agent") and not is_dead_letters("agent.dlqx")


async def test_what_the_broker_holds_and_answers_exactly():
    broker = Broker(BrokerConfig(port=0, search=False), say=lambda _: None)
    endpoint = broker_endpoint(broker, "127.0.0.1", 0)
    async with endpoint:
        status, why = await _get(endpoint.port, "/readyz")
        assert (status, why) == (503, "not serving (starting or stopped)\n")
        assert await _get(endpoint.port, "/healthz") == (200, "ok\n")
        async with broker:
            assert await _get(endpoint.port, "/readyz") == (200, "ready\n")
            async with Mq9Client(broker.url) as client:
                await client.mailbox_create(name="agent.a")
                await client.mailbox_create(name=dead_letter_address("agent.a"))
                for i in range(10):
                    await client.send("agent.a", "x" * (i + 1))  # 55 bytes in all
                await client.send(dead_letter_address("agent.a"), "dead")
                taken = await client.fetch(
                    "agent.a", group_name="g", deliver="earliest", num_msgs=3, max_wait_ms=0
                )
                await client.ack("agent.a", "g", taken[-1].msg_id)
                await client.agent_register(
                    {"name": "agent.a", "description": "counts", "mailbox": "agent.a"}
                )
                await client.agent_register(
                    {"name": "agent.a", "description": "counts", "mailbox": "agent.a"}
                )
            status, text = await _get(endpoint.port, "/metrics")
            assert status == 200
            assert _value(text, "mq9_broker_mailboxes") == 2
            assert _value(text, "mq9_broker_messages") == 11
            assert _value(text, "mq9_broker_message_bytes") == 55 + 4
            assert _value(text, "mq9_broker_dead_letters") == 1
            assert _value(text, "mq9_broker_agents") == 1
            assert _value(text, "mq9_broker_groups") == 1
            assert _value(text, "mq9_broker_group_pending_messages") == 7
            assert _value(text, "mq9_broker_group_pending_max") == 7
            ok = 'mq9_broker_requests_total{command="%s",outcome="ok"}'
            assert _value(text, ok % "SEND") == 11
            assert _value(text, ok % "CREATE") == 2
            assert _value(text, ok % "FETCH") == 1
            assert _value(text, ok % "ACK") == 1
            assert _value(text, ok % "REGISTER") == 2
            assert _value(text, 'mq9_broker_nats_connections{state="connected"}') >= 1
            assert _value(text, "mq9_broker_serving") == 1
            # bounded: no series names a mailbox or an agent
            assert "agent.a" not in text
            assert {"mq9_broker_request_duration_seconds_bucket"} <= names_in(text)
        status, _ = await _get(endpoint.port, "/readyz")
        assert status == 503


async def test_the_keys_held_and_refused_are_counted():
    """#98 item 6: the keys a broker holds are a gauge, those refused past its bound a
    counter."""
    config = BrokerConfig(port=0, search=False, limits=BrokerLimits(max_keys=2))
    broker = Broker(config, say=lambda _: None)
    endpoint = broker_endpoint(broker, "127.0.0.1", 0)
    async with endpoint, broker, Mq9Client(broker.url) as client:
        await client.mailbox_create(name="agent.k")
        for key in ("a", "b", "a"):
            await client.send("agent.k", "x", idempotency_key=key)
        with pytest.raises(LimitReached):
            await client.send("agent.k", "x", idempotency_key="c")
        status, text = await _get(endpoint.port, "/metrics")
    assert status == 200
    assert _value(text, "mq9_broker_idempotency_keys") == 2
    assert _value(text, "mq9_broker_idempotency_keys_refused_total") == 1
