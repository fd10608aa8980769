"""#106 item 2: on an open broker one client filling the idempotency keys leaves room to the
others.

Before, a broker vouching for no sender counted every key in one bound (``--max-keys``): one
client's keyed SENDs filled it, and for the whole window every other client's keyed SEND
(every ``send_message`` a model calls, every served agent's state write) was refused. Now an
open broker's serving tells its clients apart as its waiting room does (pacing.client_of): by
the address nats-server vouches for (the open cluster's service import), else by the reply
inbox of the connection; each holds at most ``max_keys_per_address``.

Played on a real nats-server with the broker's serving (serve.py) over the memory store, as
``mq9-dev-broker`` without credentials runs; the same flood with no bound per client (what
the broker did before) refuses the other client, so the test holds the fix. At the engine,
two addresses: one's keys full, the other's SEND answered. And on docs/deploy.md's open
cluster (nats-server vouching for the address) a flooder's second connection from the same
host shares the first's bound.
"""

from __future__ import annotations

import json

import nats
import pytest

from mq9_broker import BrokerEngine, ManualClock
from mq9_broker.engine.limits import BrokerLimits
from mq9_broker.engine.rules import FromClient
from mq9_broker.serving.pacing import REQUEST_INFO, party_of
from mq9_broker.serving.serve import NatsService
from mq9_wire import protocol as p

BOX = "keys.box"
WAIT = 30.0  # seconds: a hang guard on a busy machine, never a timing assertion
FULL = "no room for another idempotency key"


async def _send(connection, key: str) -> dict:
    headers = {p.HEADER_IDEMPOTENCY_KEY: key}
    answer = await connection.request(p.MSG_SEND + BOX, b"x", headers=headers, timeout=WAIT)
    return json.loads(answer.data)


async def _flooded(url: str, limits: BrokerLimits) -> tuple[list[str], dict, BrokerEngine]:
    """mallory's keyed SENDs until the broker's bound in all (6) is reached, then bob's
    keyed SEND, on a broker with ``limits``: (mallory's errors, bob's answer, the engine)."""
    engine = BrokerEngine(limits=limits)
    main = await nats.connect(url)
    service = await NatsService(engine, main).start()
    mallory, bob = await nats.connect(url), await nats.connect(url)
    try:
        await bob.request(p.MAILBOX_CREATE, p.encode({"name": BOX}), timeout=WAIT)
        errors = [(await _send(mallory, f"m{n}"))["error"] for n in range(8)]
        return errors, await _send(bob, "b0"), engine
    finally:
        await service.stop()
        for connection in (mallory, bob, main):
            await connection.close()


@pytest.mark.slow  # a nats-server
async def test_one_client_filling_its_keys_leaves_another_clients_keyed_send_answered(
    nats_server,
):
    limits = BrokerLimits(idempotency_window=600, max_keys=6, max_keys_per_address=3)
    errors, bob, engine = await _flooded(nats_server.url, limits)
    assert errors[:3] == ["", "", ""]
    # her own bound, in words: no count of hers nor of anyone's (#106 item 7)
    assert all(FULL in e and "(you hold as many keys as one sender may," in e for e in errors[3:])
    assert bob["error"] == "" and bob["duplicate"] is False, bob
    assert len(engine.store.sent_keys) == 4 and engine.keys_refused == 5


@pytest.mark.slow  # a nats-server
async def test_without_a_bound_per_client_one_client_fills_the_broker(nats_server):
    """What the broker did before #106 (no bound per client: the bound in all alone): the
    test above fails there, bob refused."""
    limits = BrokerLimits(idempotency_window=600, max_keys=6, max_keys_per_address=None)
    errors, bob, _ = await _flooded(nats_server.url, limits)
    assert errors[:6] == [""] * 6
    assert FULL in bob["error"] and "this broker holds as many keys as it may" in bob["error"]


async def test_an_address_fills_its_own_keys_and_another_address_is_answered():
    clock = ManualClock(1_800_000_000)
    limits = BrokerLimits(idempotency_window=10, max_keys=100, max_keys_per_address=3)
    engine = BrokerEngine(clock=clock, limits=limits)
    await engine.handle(p.MAILBOX_CREATE, None, p.encode({"name": BOX}))

    async def send(client: str, key: str) -> dict:
        headers = FromClient({p.HEADER_IDEMPOTENCY_KEY: key}, client)
        return json.loads(await engine.handle(p.MSG_SEND + BOX, headers, b"x"))

    mallory, bob = "CLIENTS@10.0.0.66", "CLIENTS@10.0.0.7"
    assert [(await send(mallory, f"m{n}"))["error"] for n in range(3)] == ["", "", ""]
    assert FULL in (await send(mallory, "m3"))["error"]
    assert (await send(bob, "b0"))["error"] == ""
    assert (await send(mallory, "m0"))["duplicate"] is True  # a key she holds still answers
    # a key is still one per mailbox, whoever sends it (as RobustMQ keeps it): bob's resend
    # of her key is answered from it, and counts against no one
    assert (await send(bob, "m1"))["duplicate"] is True
    assert engine.store.sent_keys.held_by(bob) == 1
    clock.advance(10)  # her windows end: room again
    assert (await send(mallory, "m3"))["error"] == ""
    assert engine.store.sent_keys.held_by(mallory) == 1


def test_a_client_is_its_vouched_address_else_its_inbox():
    info = {"acc": "CLIENTS", "server": "NDX4SERVER", "id": 17, "host": "10.0.0.5"}
    imported = {REQUEST_INFO: json.dumps(info)}
    other_connection = {REQUEST_INFO: json.dumps({**info, "id": 18})}
    # the connections of one address are one client (a flooder may open many)
    assert party_of("_R_.AbC.x", imported) == party_of("_R_.AbC.y", other_connection)
    assert party_of("_R_.AbC.x", imported) == "CLIENTS@10.0.0.5"
    # nothing vouches for an address: the connection's inbox (one per nats connection)
    assert party_of("_INBOX.conn1.7") == party_of("_INBOX.conn1.8") == "_INBOX.conn1"
    assert party_of("_INBOX.conn1.7") != party_of("_INBOX.conn2.7")
    # a header on a reply that came through no import is the client's own: not believed
    assert party_of("_INBOX.conn1.7", imported) == "_INBOX.conn1"


@pytest.mark.slow  # a nats-server
async def test_on_the_open_cluster_a_client_s_connections_share_its_address_s_keys():
    """docs/deploy.md's accounts: nats-server names each request's address (``share: true``),
    so a flooder's second connection from the same host holds no keys of its own (both
    connections here are one address: loopback)."""
    from tests.broker.serving.open_accounts import BROKER_USER, open_accounts
    from tests.support.jetstream_servers import JetStreamCluster

    config, password = open_accounts()
    limits = BrokerLimits(idempotency_window=600, max_keys=100, max_keys_per_address=3)
    engine = BrokerEngine(limits=limits)
    with JetStreamCluster(1, extra_config=config) as cluster:
        url = cluster.urls[0]
        main = await nats.connect(url, user=BROKER_USER, password=password)
        service = await NatsService(engine, main).start()
        first, second = await nats.connect(url), await nats.connect(url)  # anonymous
        try:
            await first.request(p.MAILBOX_CREATE, p.encode({"name": BOX}), timeout=WAIT)
            assert [(await _send(first, f"m{n}"))["error"] for n in range(3)] == ["", "", ""]
            assert FULL in (await _send(second, "m3"))["error"]
            assert engine.store.sent_keys.held_by("CLIENTS@127.0.0.1") == 3
        finally:
            await service.stop()
            for connection in (first, second, main):
                await connection.close()
