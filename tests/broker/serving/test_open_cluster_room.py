"""#88 item 5: on the open cluster (docs/deploy.md's accounts, login-less clients), a client
flooding costly requests from many connections of one address takes no more of a broker's
waiting room than its address's share: another client's costly QUERYs wait their turn and are
answered, even one behind the same address (it holds fewer than the flooder's connections).

Before the fix each connection had ``WAITING`` (64) of the room's 256: six flooding
connections filled it, and the other's 5 QUERYs were all refused at once ("256 requests that
search, register or query wait already for their turn").

A real nats-server with deploy.md's accounts, the broker's serving (serve.py) on the
brokers' login, the real engine holding QUERYs until the test lets them go (so that the room
is full when the other asks: no timing)."""

from __future__ import annotations

import json

import nats
import pytest

from mq9_broker.serving.serve import (
    WAITING,
    WAITING_IN_ALL,
    WAITING_PER_ADDRESS,
    NatsService,
)
from mq9_wire import protocol as p
from testbed.support.jetstream_servers import JetStreamCluster
from testbed.support.waiting import until
from tests.broker.serving.open_accounts import BROKER_USER, open_accounts
from tests.broker.serving.test_costly_turns import BOX, QUERY, HeldEngine, Requester

pytestmark = pytest.mark.slow  # a nats-server

CONNECTIONS, EACH = 6, WAITING + 6  # the flooder: six connections, each beyond its room
WAIT = 60.0  # seconds: a hang guard on a busy machine, never a timing assertion


@pytest.fixture(scope="module")
def open_server():
    config, password = open_accounts()
    with JetStreamCluster(1, extra_config=config) as cluster:
        yield cluster.urls[0], password


async def test_many_connections_of_one_address_leave_room_for_another_client(open_server):
    url, password = open_server
    engine = HeldEngine()
    broker_side = await nats.connect(url, user=BROKER_USER, password=password)
    service = await NatsService(engine, broker_side).start()
    connections = [await nats.connect(url) for _ in range(CONNECTIONS + 1)]  # anonymous
    try:
        await connections[0].request(p.MAILBOX_CREATE, p.encode({"name": BOX}), timeout=WAIT)
        flooders = [await Requester(c).start() for c in connections[:CONNECTIONS]]
        other = await Requester(connections[CONNECTIONS]).start()
        for flooder in flooders:
            await flooder.publish(p.query_subject(BOX), QUERY, times=EACH)

        def accounted() -> int:  # every request read: running, waiting, or answered refused
            answered = sum(r.answers.qsize() for r in (*flooders, other))
            return engine.running[p.MSG_QUERY] + len(service.room) + answered

        await until(lambda: accounted() == CONNECTIONS * EACH, timeout=WAIT, what="the flood read")
        assert len(service.room) <= WAITING_PER_ADDRESS < WAITING_IN_ALL  # before: all 256
        await other.publish(p.query_subject(BOX), QUERY, times=5)
        await until(lambda: accounted() == CONNECTIONS * EACH + 5, timeout=WAIT, what="read")
        assert other.answers.empty(), other.answers.get_nowait().data  # before: 5 refusals
        engine.go.set()
        answers = [json.loads((await other.answers.get()).data) for _ in range(5)]
        assert [a["error"] for a in answers] == [""] * 5, answers
        assert all("messages" in a for a in answers), answers
        # the flooder's requests were each answered once: done, or refused unread
        await until(
            lambda: sum(f.answers.qsize() for f in flooders) == CONNECTIONS * EACH,
            timeout=WAIT, what="every flooder request answered",
        )  # fmt: skip
    finally:
        await service.stop()
        for connection in (*connections, broker_side):
            await connection.close()
