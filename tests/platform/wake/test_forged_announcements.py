"""#88 item 6: a wake announcement comes from the store, never from a client.

The issue's attack: a login-less client of the open cluster may not publish on
``$mq9.WAKE.>``, but 5 ordinary SENDs into its own mailbox naming
``$mq9.WAKE.<digest of alice's mailbox>`` as their reply subject made the brokers' answers
arrive there (nats-server's service import delivers an answer to whatever reply its requester
named), and every announcement listener (``mq9-wake``, the gateway: wake/arrivals.py) heard 5
announcements of alice's mailbox. Now a listener takes only a message with the headers of the
stream's republish as an announcement; the broker answers no request naming a reply under
``$mq9.`` where it sees the reply (the dev broker on a plain nats-server); and the open
cluster's permissions refuse a client's publish there, whatever headers it carries. The real
announcement still wakes, from the cluster store's republish and from ``--announce``."""

from __future__ import annotations

import nats
import pytest

from mq9_broker import Broker, BrokerConfig, BrokerEngine
from mq9_broker.serving.serve import serve_on_nats
from mq9_platform import Mq9Client
from mq9_platform.wake.arrivals import STORED, subscribe_arrivals
from mq9_platform.wake.rules import digest
from mq9_wire import protocol as p
from testbed.support.jetstream_servers import JetStreamCluster
from testbed.support.waiting import until
from tests.broker.serving.open_accounts import BROKER_USER, open_accounts

pytestmark = pytest.mark.slow  # nats-servers, a broker

ALICE, MALLORY = "alice.inbox", "mallory.box"
WAKE = p.ARRIVALS_PREFIX + digest(ALICE)  # the subject alice's waker listens on
WAIT = 60.0  # seconds: a hang guard on a busy machine, never a timing assertion
FORGED = {name: "1" for name in STORED}  # what a forger would add, if it could publish


class Listener:
    """What wake/arrivals.py hears of alice's mailbox, on its own anonymous client."""

    def __init__(self) -> None:
        self.heard: list[str] = []

    async def start(self, url: str) -> Listener:
        self.client = Mq9Client(url, request_timeout=30)
        await self.client.connect()
        stop = await subscribe_arrivals(self.client, self.heard.append, mailboxes=[ALICE])
        assert stop is not None, "the listener could not subscribe"
        return self

    async def close(self) -> None:
        await self.client.close()


async def _forge(url: str, times: int = 5) -> nats.NATS:
    """The attack: SENDs into the attacker's own mailbox, their reply alice's wake subject."""
    mallory = await nats.connect(url)
    await mallory.request(p.MAILBOX_CREATE, p.encode({"name": MALLORY}), timeout=WAIT)
    for i in range(times):
        await mallory.publish(p.MSG_SEND + MALLORY, f"forged {i}".encode(), reply=WAKE)
    await mallory.flush()
    return mallory


@pytest.fixture(scope="module")
def open_cluster():
    """(a client's URL, the brokers' URL) of a JetStream nats-server with deploy.md's
    accounts; the broker of the test runs on it with the cluster store."""
    config, password = open_accounts()
    with JetStreamCluster(1, extra_config=config) as cluster:
        url = cluster.urls[0]
        yield url, url.replace("nats://", f"nats://{BROKER_USER}:{password}@")


async def test_answers_made_to_arrive_on_alices_wake_subject_are_no_announcement(open_cluster):
    url, brokers = open_cluster
    settings = BrokerConfig(nats=brokers, store="jetstream", replicas=1, search=False)
    async with Broker(settings):
        spy = await nats.connect(url)  # hears what arrives on the subject, whatever it is
        arrived = await spy.subscribe(WAKE)
        await spy.flush()
        listener = await Listener().start(url)
        mallory = None
        try:
            async with Mq9Client(url, request_timeout=30) as alice:
                await alice.mailbox_create(name=ALICE)
                mallory = await _forge(url)
                # the five answers do arrive there (the broker cannot see the reply through
                # the import), each without the stream's headers
                forged = [await arrived.next_msg(timeout=WAIT) for _ in range(5)]
                assert all(not (m.headers or {}).get("Nats-Stream") for m in forged), forged
                assert all(b"msg_id" in m.data for m in forged), forged  # SENDs answered
                await alice.send(ALICE, "real mail")
                real = await arrived.next_msg(timeout=WAIT)
                assert real.headers and all(real.headers.get(h) for h in STORED), real.headers
                await until(lambda: listener.heard, timeout=WAIT, what="the real announcement")
            assert listener.heard == [digest(ALICE)]  # before #88: 5 forged and the real one
        finally:
            await listener.close()
            if mallory is not None:
                await mallory.close()
            await spy.close()


async def test_a_client_publishing_on_the_wake_subjects_is_refused_by_permissions(open_cluster):
    url, _ = open_cluster
    errors: list[Exception] = []

    async def on_error(error: Exception) -> None:
        errors.append(error)

    spy = await nats.connect(url)
    arrived = await spy.subscribe(p.ARRIVALS_PREFIX + ">")
    await spy.flush()
    forger = await nats.connect(url, error_cb=on_error)
    try:
        for subject in (WAKE, p.ARRIVALS_PREFIX + "x", p.ARRIVALS_PREFIX + digest(MALLORY)):
            await forger.publish(subject, b"", headers=FORGED)
        await forger.flush()
        await until(lambda: len(errors) >= 3, timeout=WAIT, what="three violations")
        assert all("permissions violation for publish" in str(e).lower() for e in errors), errors
        await spy.flush()
        assert arrived.pending_msgs == 0  # nothing of them reached a subscriber
    finally:
        await forger.close()
        await spy.close()


async def test_the_dev_broker_answers_no_request_naming_a_reply_under_mq9(nats_server):
    """On a plain nats-server the broker sees the reply subject: such a request is neither
    done nor answered, and counted; its own ``--announce`` still wakes the listener."""
    engine = BrokerEngine()
    connection = await nats.connect(nats_server.url)
    service = await serve_on_nats(engine, connection, announce=True)
    spy = await nats.connect(nats_server.url)
    arrived = await spy.subscribe(p.ARRIVALS_PREFIX + ">")
    await spy.flush()
    listener = await Listener().start(nats_server.url)
    mallory = None
    try:
        async with Mq9Client(nats_server.url, request_timeout=30) as alice:
            await alice.mailbox_create(name=ALICE)
            mallory = await _forge(nats_server.url)
            for reply in ("$mq9.MEMBERS.mq9-brokers.x", "$mq9.AI.MSG.SEND." + ALICE):
                await mallory.publish(p.MSG_SEND + MALLORY, b"forged", reply=reply)
            await mallory.flush()
            await until(lambda: service.reserved_replies == 7, timeout=WAIT, what="refused")
            # on this open server anyone may publish there: without the headers, not heard
            await mallory.publish(WAKE, b"")
            await mallory.flush()
            await alice.send(ALICE, "real mail")
            await until(lambda: listener.heard, timeout=WAIT, what="the real announcement")
            assert await alice.query(MALLORY) == []  # the forged SENDs were not done
            assert [m.payload for m in await alice.query(ALICE)] == [b"real mail"]
        assert listener.heard == [digest(ALICE)]  # before #88: 5 forged, then the real one
        await spy.flush()
        announced = [await arrived.next_msg(timeout=WAIT) for _ in range(arrived.pending_msgs)]
        # no answer arrived there (before #88: the five SENDs' answers, each a msg_id); what
        # did: the broker's own announcements (the republish's headers) and mallory's bare
        # publish, which nobody took for one
        assert not [m for m in announced if b"msg_id" in m.data], announced
        ours = [m for m in announced if m.headers and m.headers.get("Nats-Stream")]
        assert {m.subject for m in ours} == {WAKE}, announced
    finally:
        await listener.close()
        if mallory is not None:
            await mallory.close()
        await spy.close()
        await service.stop()
        await connection.close()
