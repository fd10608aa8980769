"""A broker on ``--store jetstream`` exports what the cluster holds (#78 item 1), read from
JetStream, the same figures the memory broker exports for the same traffic; and its ``/readyz``
is the store's (#77 item 6): a 3-node cluster that loses 2 servers makes it 503 on the first
probe after the kill, and 200 again once the servers are back. The waker's, gateway's, MCP
server's and console's readiness asks a broker (``broker_answers``): a nats-server with no
broker behind it is not ready."""

from __future__ import annotations

import asyncio
import uuid

import nats
import pytest

from mq9_broker import Broker
from mq9_broker.cli.metrics import broker_endpoint
from mq9_broker.config import BrokerConfig
from mq9_broker.storage.jetstream import survey_state
from mq9_platform import Mq9Client
from mq9_platform.a2a.gateway.metrics import gateway_metrics
from mq9_platform.groups.dead_letters import dead_letter_address
from mq9_wire.metrics.probe import broker_answers
from testbed.support.jetstream_servers import FORMING, JetStreamCluster
from testbed.support.waiting import until

pytestmark = pytest.mark.slow  # nats-servers

FIGURES = (
    "mailboxes", "messages", "dead_letters", "agents", "groups", "group_pending_messages",
    "group_pending_max", "held_exact",
)  # fmt: skip


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
    raise AssertionError(f"{series} not in the scrape:\n{text}")


async def _traffic(url: str) -> None:
    """Mailboxes, messages, a dead letter, an expired mailbox, a group part read, an agent."""
    async with Mq9Client(url) as client:
        await client.mailbox_create(name="agent.a")
        await client.mailbox_create(name="agent.b")
        await client.mailbox_create(name=dead_letter_address("agent.a"))
        for i in range(10):
            await client.send("agent.a", "x" * (i + 1))
        for _ in range(4):
            await client.send("agent.b", "y")
        await client.send(dead_letter_address("agent.a"), "dead")
        await client.send(dead_letter_address("agent.a"), "dead again")
        for mailbox, group, take in (("agent.a", "g", 3), ("agent.b", "g", 1), ("agent.a", "h", 9)):
            taken = await client.fetch(
                mailbox, group_name=group, deliver="earliest", num_msgs=take, max_wait_ms=0
            )
            await client.ack(mailbox, group, taken[-1].msg_id)
        await client.agent_register({"name": "agent.a", "description": "c", "mailbox": "agent.a"})
        await client.agent_register({"name": "agent.b", "description": "c", "mailbox": "agent.b"})
        await client.agent_unregister("agent.b")


async def _figures(config: BrokerConfig) -> dict[str, float]:
    broker = Broker(config, say=lambda _: None)
    endpoint = broker_endpoint(broker, "127.0.0.1", 0)
    async with endpoint, broker:
        assert broker.url is not None
        await _traffic(broker.url)
        status, text = await _get(endpoint.port, "/metrics")
        assert status == 200
        assert "agent.a" not in text and "agent.b" not in text  # no series names a mailbox
        assert _value(text, "mq9_broker_ready") == 1
        return {name: _value(text, f"mq9_broker_{name}") for name in FIGURES}


async def test_the_cluster_store_exports_what_the_memory_broker_does_for_the_same_traffic():
    memory = await _figures(BrokerConfig(port=0, search=False))
    with JetStreamCluster(1) as servers:
        stream = f"MM{uuid.uuid4().hex[:10]}"
        config = BrokerConfig(nats=servers.urls[0], store="jetstream", stream=stream, search=False)
        cluster = await _figures(config)
    assert memory == {
        "mailboxes": 3, "messages": 16, "dead_letters": 2, "agents": 1, "groups": 2,
        # g: 7 of agent.a and 3 of agent.b; h: 1 of agent.a
        "group_pending_messages": 11, "group_pending_max": 10, "held_exact": 1,
    }  # fmt: skip
    assert cluster == memory


async def test_a_survey_is_kept_then_read_again_and_the_scrape_says_how_old():
    now = [100.0]
    with JetStreamCluster(1) as servers:
        config = BrokerConfig(
            nats=servers.urls[0], store="jetstream", stream=f"MK{uuid.uuid4().hex[:10]}",
            search=False,
        )  # fmt: skip
        async with Broker(config, say=lambda _: None) as broker:
            assert broker.url is not None
            endpoint = broker_endpoint(broker, "127.0.0.1", 0)
            survey = endpoint.refresh.__self__.collector.cluster_survey()  # (the broker's)
            survey.clock = lambda: now[0]
            async with endpoint, Mq9Client(broker.url) as client:
                await client.mailbox_create(name="agent.k")
                _, text = await _get(endpoint.port, "/metrics")
                assert _value(text, "mq9_broker_mailboxes") == 1
                assert _value(text, "mq9_broker_held_age_seconds") == 0
                await client.mailbox_create(name="agent.l")
                now[0] += survey_state.KEPT_FOR - 1  # kept: the figures as read
                _, text = await _get(endpoint.port, "/metrics")
                assert _value(text, "mq9_broker_mailboxes") == 1
                assert _value(text, "mq9_broker_held_age_seconds") == survey_state.KEPT_FOR - 1
                now[0] += 1  # older than kept: read again
                _, text = await _get(endpoint.port, "/metrics")
                assert _value(text, "mq9_broker_mailboxes") == 2
                assert _value(text, "mq9_broker_store_answered") == 1


async def _status_until(port: int, want: int, deadline: float) -> tuple[int, str]:
    """/readyz asked every 0.2 s until it answers ``want`` (a guard: ``deadline`` seconds)."""
    seen: list[tuple[int, str]] = []

    async def answered() -> tuple[int, str] | None:
        seen[:] = [await _get(port, "/readyz")]
        return seen[0] if seen[0][0] == want else None

    what = f"/readyz answering {want}"
    return await until(answered, timeout=deadline, what=what, every=0.2, show=lambda: seen)


async def test_readiness_is_the_stores_quorum_lost_then_back():
    with JetStreamCluster(3) as servers:
        config = BrokerConfig(
            nats=servers.urls[0], store="jetstream", stream=f"MR{uuid.uuid4().hex[:10]}",
            replicas=3, search=False, cluster_wait=FORMING,
        )  # fmt: skip
        broker = Broker(config, say=lambda _: None)
        endpoint = broker_endpoint(broker, "127.0.0.1", 0)
        async with endpoint, broker:
            await _status_until(endpoint.port, 200, FORMING)  # (the cluster's leaders elected)
            servers.servers[1].kill()
            servers.servers[2].kill()
            # the first probe after the kill (the one before is kept PROBE_KEPT s) says 503
            # once the survivor did not acknowledge its write (PROBE_DEADLINE); each /readyz
            # meanwhile answers at once (#99: within ANSWER_WITHIN) what the last probe said
            _, why = await _status_until(endpoint.port, 503, FORMING)
            assert "JetStream store" in why or "NATS connections" in why, why
            _, text = await _get(endpoint.port, "/metrics")
            assert _value(text, "mq9_broker_ready") == 0
            servers.servers[1].start()
            servers.servers[2].start()
            await _status_until(endpoint.port, 200, FORMING)


async def test_a_server_whose_broker_is_gone_is_not_ready():
    """The gateway's endpoint (the waker's, MCP's and the console's ask the same way): its
    client is connected to the nats-server throughout, ready only while a broker answers."""
    with JetStreamCluster(1) as servers:
        url = servers.urls[0]
        broker = Broker(BrokerConfig(nats=url, search=False), say=lambda _: None)
        await broker.start()
        async with Mq9Client(url) as client:
            assert await broker_answers(client) is None
            _, endpoint = gateway_metrics(client, "127.0.0.1", 0, serving=lambda: True)
            async with endpoint:
                assert await _get(endpoint.port, "/readyz") == (200, "ready\n")
                await broker.stop()
                assert client.is_connected  # the nats-server is there: no broker is
                _, why = await _status_until(endpoint.port, 503, 30)
                assert "no broker answered" in why, why
                _, text = await _get(endpoint.port, "/metrics")
                assert _value(text, "mq9_gateway_ready") == 0
                assert _value(text, "mq9_gateway_broker_connected") == 1
                again = Broker(BrokerConfig(nats=url, search=False), say=lambda _: None)
                async with again:
                    await _status_until(endpoint.port, 200, 30)


async def test_a_raw_nats_round_trip_is_not_enough():
    """(why a QUERY) a nats-server answers a client's ping with no broker anywhere."""
    with JetStreamCluster(1) as servers:
        connection = await nats.connect(servers.urls[0])
        try:
            await connection.flush(timeout=5)  # the server answered
            async with Mq9Client(servers.urls[0]) as client:
                why = await broker_answers(client, deadline=2.0)
                assert why is not None and "no broker answered" in why
        finally:
            await connection.close()


async def test_beyond_the_bound_counts_rotate_until_each_was_read(monkeypatch):
    """5 dead-letter mailboxes, 2 counted a survey: each survey counts those counted longest
    ago, the others as last counted; the third has read them all (``exact`` stays 0: not all
    read in one survey)."""
    monkeypatch.setattr(survey_state, "COUNTS_MOST", 2)
    with JetStreamCluster(1) as servers:
        config = BrokerConfig(
            nats=servers.urls[0], store="jetstream", stream=f"MB{uuid.uuid4().hex[:10]}",
            search=False,
        )  # fmt: skip
        async with Broker(config, say=lambda _: None) as broker:
            assert broker.url is not None
            async with Mq9Client(broker.url) as client:
                for i in range(1, 6):
                    dead = dead_letter_address(f"agent.r{i}")
                    await client.mailbox_create(name=dead)
                    for _ in range(i):
                        await client.send(dead, "dead")
            survey = survey_state.StoreSurvey(broker.engine.store, kept_for=0)
            seen = []
            for _ in range(3):
                held = await survey.held()
                assert held is not None and survey.failure is None, survey.failure
                seen.append((held.dead_letters, held.exact))
            assert seen[0][0] < 15 and seen[1][0] < 15  # lower bounds while some are unread
            assert seen[2] == (15, False)
            held = await survey.held()  # and again: every count as last read, still 15
            assert held is not None and held.dead_letters == 15


async def test_the_readiness_record_leaves_no_state_behind():
    """A layout a broker only served and was probed on is empty again once the probes stop
    (``state import`` takes a new or empty layout only)."""
    with JetStreamCluster(1) as servers:
        stream = f"MP{uuid.uuid4().hex[:10]}"
        config = BrokerConfig(nats=servers.urls[0], store="jetstream", stream=stream, search=False)
        async with Broker(config, say=lambda _: None) as broker:
            survey = survey_state.StoreSurvey(broker.engine.store)
            assert await survey.answers() is None
            connection = broker.engine.store.requests.connection
            reports = f"KV_{stream}_REPORTS"
            info = await connection.jetstream().stream_info(reports)
            assert info.state.messages == 1  # the probe's record, with its TTL

            async def expired() -> bool:
                return not (await connection.jetstream().stream_info(reports)).state.messages

            # (a guard: the TTL is PROBE_TTL seconds)
            await until(expired, timeout=60, what="the probe's record expired", every=0.5)
