"""#106 item 2: on an open broker one client filling the idempotency keys leaves room to the
others.

Before, a broker vouching for no sender counted every key in one bound (``--max-keys``): one
client's keyed SENDs filled it, and for the whole window every other client's keyed SEND
(every ``send_message`` a model calls, every served agent's state write) was refused. Now an
open broker's serving tells its clients apart by the address nats-server vouches for (the open
cluster's service import); each holds at most ``max_keys_per_address``. (#113: no longer by a
reply inbox, which any client may name: there the bound in all is everyone's.)

Played on a real nats-server with the broker's serving (serve.py) over the memory store, as
``mq9-dev-broker`` without credentials runs: with no vouched address the bound in all is all
there is, and its refusal names the remedy. At the engine, two addresses: one's keys full, the
other's SEND answered. And on docs/deploy.md's open
cluster (nats-server vouching for the address) a flooder's second connection from the same
host shares the first's bound.
"""

from __future__ import annotations

import json

import nats
import pytest

from mq9_broker import BrokerEngine, ManualClock
from mq9_broker.engine.limits import BrokerLimits
from mq9_broker.engine.sending import FromClient
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
async def test_an_open_broker_without_vouched_addresses_bounds_keys_in_all_and_names_the_remedy(
    nats_server,
):
    """#113: a reply inbox is no client's own (any client may name another's), so a plain
    nats-server's clients are no parties: one client's keys fill the bound in all, and the
    refusal says so, naming the operator's remedy (--credentials), never a bound of bob's own
    that another filled (tests/broker/serving/test_keys_inbox_named.py plays that attack)."""
    limits = BrokerLimits(idempotency_window=600, max_keys=6, max_keys_per_address=3)
    errors, bob, engine = await _flooded(nats_server.url, limits)
    assert errors[:6] == [""] * 6
    assert FULL in bob["error"] and "this broker holds as many keys as it may" in bob["error"]
    assert "--credentials" in bob["error"] and "one sender" not in bob["error"]
    assert engine.keys_refused_per_address == 0 and engine.store.sent_keys.most_held() == 0


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


def test_a_client_is_its_vouched_address_and_an_inbox_is_no_party():
    info = {"acc": "CLIENTS", "server": "NDX4SERVER", "id": 17, "host": "10.0.0.5"}
    imported = {REQUEST_INFO: json.dumps(info)}
    other_connection = {REQUEST_INFO: json.dumps({**info, "id": 18})}
    # the connections of one address are one client (a flooder may open many)
    assert party_of("_R_.AbC.x", imported) == party_of("_R_.AbC.y", other_connection)
    assert party_of("_R_.AbC.x", imported) == "CLIENTS@10.0.0.5"
    # (#113) nothing vouches for an address: no party (an inbox is any client's to name)
    assert party_of("_INBOX.conn1.7") is None
    # a header on a reply that came through no import is the client's own: not believed
    assert party_of("_INBOX.conn1.7", imported) is None


@pytest.mark.slow  # a nats-server
async def test_on_the_open_cluster_a_client_s_connections_share_its_address_s_keys():
    """docs/deploy.md's accounts: nats-server names each request's address (``share: true``),
    so a flooder's second connection from the same host holds no keys of its own (both
    connections here are one address: loopback)."""
    from testbed.support.jetstream_servers import JetStreamCluster
    from tests.broker.serving.open_accounts import BROKER_USER, open_accounts

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


@pytest.mark.slow  # a nats-server
async def test_on_the_open_cluster_an_address_s_keys_are_counted_by_jetstream_across_brokers():
    """(#113) The same accounts with the cluster store and two brokers of one layout: the
    address's keys are counted by JetStream (storage/jetstream/key_counts.py), so its
    connections reaching either broker share one bound, and a refusal names the address's
    own bound alone."""
    import uuid

    from mq9_broker.engine.engine import Engine
    from mq9_broker.storage.jetstream import ClusterStore
    from testbed.support.jetstream_servers import JetStreamCluster
    from tests.broker.serving.open_accounts import BROKER_USER, open_accounts

    config, password = open_accounts()
    limits = BrokerLimits(idempotency_window=600, max_keys=100, max_keys_per_address=3)
    layout = f"K{uuid.uuid4().hex[:10]}"
    with JetStreamCluster(1, extra_config=config) as cluster:
        url = cluster.urls[0]
        mains, services, stores = [], [], []
        for _ in range(2):  # two brokers, each its own connection, store and service
            main = await nats.connect(url, user=BROKER_USER, password=password)
            store = ClusterStore(main, name=layout, timeout=20.0)
            await store.open()
            engine = Engine(store, limits=limits, search=False)
            service = await NatsService(engine, main, queue="mq9-brokers").start()
            mains.append(main), stores.append(store), services.append(service)
        first, second = await nats.connect(url), await nats.connect(url)  # anonymous
        try:
            await first.request(p.MAILBOX_CREATE, p.encode({"name": BOX}), timeout=WAIT)
            sent = [(await _send(c, f"m{n}"))["error"] for n, c in enumerate((first, second) * 2)]
            # (the queue group hands each to either broker: one count all the same)
            assert sent[:3] == ["", "", ""] and FULL in sent[3], sent
            assert (await _send(second, "m0"))["duplicate"] is True  # a held key still answers
        finally:
            for service in services:
                await service.stop()
            for store in stores:
                await store.close()
            for connection in (first, second, *mains):
                await connection.close()
