"""#61 items 1 and 3 on a cluster: three nats-servers clustered with JetStream, configured as
``credentials setup`` says, and two brokers (both serving), as in test_credentials_jetstream.py.
A raw nats-py client holding a valid credential of its own:

- names the broker's storage as the reply of its requests (the messages stream's subjects,
  keys of the identities bucket and of the store's buckets, JetStream's API): nothing reaches
  them, another agent's SENDs, mailbox, login and ownership are untouched, through a broker
  killed too (the other serves on: nothing to take over);
- a credential with 1,100 connections on one server (beyond one CONNZ page) and more on the
  others is revoked: every one is closed;
- a credential revoked and issued again at once: its old connections never act as the new
  one, and are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import signal
import time

import nats
import pytest

from mq9_broker import Broker, BrokerConfig
from mq9_broker.identities.callout import (
    ANSWERS_USER,
    SERVE_USER,
    SETUP_FILE,
    SYS_USER,
    Issuer,
    broker_urls,
)
from mq9_broker.identities.gate import MARKER, PRINCIPAL_WILDCARD
from mq9_broker.identities.kv_store import identities_bucket
from mq9_broker.storage.jetstream import DEFAULT_NAME, Layout, token
from mq9_wire import protocol as p
from mq9_wire.protocol import names
from testbed.support.credentials_support import (
    AgentLogins,
    ask,
    ok,
    on_close,
    raw_login,
    until_closed,
)
from testbed.support.devbroker_helpers import DevBroker
from testbed.support.jetstream_servers import JetStreamCluster, wait_serving
from tests.platform.broker.identities.test_credentials_jetstream import (
    Deployment,
    _refused,
    credentials,
)
from tests.platform.broker.identities.test_credentials_jetstream import (
    deployment as deployment,  # a cluster of this module's
)

pytestmark = pytest.mark.slow  # three nats-servers and two brokers
pytest.importorskip("nkeys")

CLOSED_WITHIN = 120.0  # seconds: a hang guard for a thousand kicks on a busy machine
ON_ONE_SERVER = 1100  # beyond nats-server's CONNZ page of 1,024
ON_EACH_OTHER = 10
LOGINS_AT_ONCE = 64
LAYOUT = Layout(DEFAULT_NAME)  # the store's stream and buckets (the default --stream)
IDENTITIES = identities_bucket(DEFAULT_NAME)
VICTIM_BOX = token("victim.inbox")
# the victim's mailbox record, in the store's bucket of mailboxes
VICTIM_RECORD = LAYOUT.kv_subject(LAYOUT.mailboxes, VICTIM_BOX)
# The replies an attacker names: the broker's storage, each a subject the broker's own user
# may publish to
STORAGE_REPLIES = [
    # a message of the victim's mailbox, numbered past its last
    LAYOUT.message_subject(VICTIM_BOX, p.Priority.NORMAL, token("k"), 99),
    VICTIM_RECORD,
    LAYOUT.kv_subject(LAYOUT.agents, token("agent.victim")),
    f"$KV.{IDENTITIES}.mailbox.{hashlib.sha256(b'victim.inbox').hexdigest()}",
    f"$KV.{IDENTITIES}.cred.carol",
    f"$KV.{IDENTITIES}.agent.{hashlib.sha256(b'agent.victim').hexdigest()}",
    f"$JS.API.STREAM.DELETE.{LAYOUT.messages}",
    f"$JS.API.STREAM.PURGE.{LAYOUT.messages}",
    f"$JS.API.STREAM.DELETE.KV_{LAYOUT.mailboxes}",
    f"$JS.API.STREAM.DELETE.KV_{IDENTITIES}",
]


# -- 3: revocation closes every connection --------------------------------------------------------


async def test_revoking_a_credential_closes_all_of_its_connections_on_every_server(deployment):
    credential = await asyncio.to_thread(deployment.issue, "many")
    urls = deployment.cluster.urls
    places = [urls[0]] * ON_ONE_SERVER + [url for url in urls[1:] for _ in range(ON_EACH_OTHER)]
    gate = asyncio.Semaphore(LOGINS_AT_ONCE)

    async def login(url: str):
        async with gate:
            return await raw_login(url, credential)

    opened = await asyncio.gather(*(login(url) for url in places))
    try:
        assert len(opened) == ON_ONE_SERVER + 2 * ON_EACH_OTHER
        await asyncio.to_thread(deployment.revoke, "many")
        closing = [asyncio.ensure_future(until_closed(reader)) for reader, _ in opened]
        _, left = await asyncio.wait(closing, timeout=CLOSED_WITHIN)
        for task in left:
            task.cancel()
        assert len(left) == 0, f"{len(left)} of {len(opened)} connections still open"
        # and nobody logs in with it again
        with pytest.raises(ConnectionError, match="Authorization Violation"):
            await raw_login(urls[1], credential)
    finally:
        for _, writer in opened:
            writer.close()


async def test_a_rotation_never_lets_an_old_connection_act_as_the_new_credential(deployment):
    """Revoked, then issued again at once (the documented rotation): the old secret's
    connections on every server are refused every request until they are closed; the new
    secret reads the mail sent after the rotation."""
    deployment.credentials["erin"] = await asyncio.to_thread(deployment.issue, "erin")
    olds, closed = [], []
    for url in deployment.cluster.urls:
        event, on_closed = on_close()
        closed.append(event)
        on_server = AgentLogins(url, deployment.credentials)
        olds.append(await on_server.agent("erin", closed_cb=on_closed))
    alice = await deployment.agent("alice")
    try:
        await ok(olds[0], "erin", p.MAILBOX_CREATE, {"name": "erin.inbox"})
        await asyncio.to_thread(deployment.revoke, "erin")
        deployment.credentials["erin"] = await asyncio.to_thread(deployment.issue, "erin")
        await ok(alice, "alice", p.MSG_SEND + "erin.inbox", b"for the new erin")

        fetch = (p.MSG_FETCH + "erin.inbox", {"group_name": "g"})

        async def old_tries(connection) -> list[dict]:
            answers = []
            while connection.is_connected:
                with contextlib.suppress(nats.errors.Error):  # closed, or timed out closing
                    answers.append(await ask(connection, "erin", *fetch))
                await asyncio.sleep(0.05)
            return answers

        tried = await asyncio.wait_for(
            asyncio.gather(*(old_tries(old) for old in olds)), CLOSED_WITHIN
        )
        for answer in (a for answers in tried for a in answers):
            _refused(answer)  # revoked, or renewed and waiting: never served
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in closed)), CLOSED_WITHIN)

        new = await deployment.agent("erin")
        try:
            deadline = time.monotonic() + CLOSED_WITHIN
            while (fetched := await ask(new, "erin", *fetch))["error"]:
                assert "issued anew" in fetched["error"], fetched  # only while the old close
                assert time.monotonic() < deadline, fetched
                await asyncio.sleep(0.1)
            assert [m["payload"] for m in fetched["messages"]] == ["for the new erin"]
        finally:
            await new.close()
    finally:
        await asyncio.gather(alice.close(), *(old.close() for old in olds))


# -- 1: nothing an agent names as a reply reaches the broker's storage --------------------------


class Overheard:
    """Every message on the broker's storage subjects, heard as the broker's own user: the
    messages stream's, the buckets', JetStream's API (the broker's own writes among them)."""

    def __init__(self) -> None:
        self.refusals: list[tuple[str, bytes]] = []

    async def start(self, deployment: Deployment) -> None:
        issuer = Issuer.load(deployment.dir / SETUP_FILE)
        self.connection = await nats.connect(broker_urls(deployment.nats, issuer))
        for subject in (f"{LAYOUT.prefix}.>", "$KV.>", "$JS.API.>"):
            await self.connection.subscribe(subject, cb=self._heard)
        await self.connection.flush()

    async def _heard(self, msg) -> None:
        if MARKER.encode() in msg.data:  # the plain refusal's words
            self.refusals.append((msg.subject, msg.data))


async def test_the_broker_answers_user_is_refused_storage_by_nats_server(deployment):
    """Whatever the broker's code did, the user refusing plain requests could not write the
    storage: nats-server refuses it every subject but inboxes."""
    issuer = Issuer.load(deployment.dir / SETUP_FILE)
    await _refused_storage(deployment, ANSWERS_USER, issuer.answers_password)
    await _refused_login(deployment, ANSWERS_USER, "guess")


async def _refused_storage(
    deployment: Deployment, user: str, password: str, allowed: tuple[str, ...] = ()
) -> None:
    """A connection logged in as one of the broker's answering users: nats-server refuses
    it each storage subject (the messages stream's, the buckets', JetStream's API), and takes
    ``allowed`` (published first) without a word."""
    denied: list[str] = []

    async def keep(exc: Exception) -> None:
        denied.append(str(exc).lower())  # (nats-py lowers the subject it names)

    connection = await nats.connect(
        deployment.cluster.urls[1],
        user=user,
        password=password,
        error_cb=keep,
        allow_reconnect=False,
    )
    storage = [*STORAGE_REPLIES, f"{LAYOUT.prefix}.x", "$KV.any.key", "$JS.API.INFO"]
    try:
        for subject in allowed:
            await connection.publish(subject, b"")
        for subject in storage:
            await connection.publish(subject, b"not from the broker's store")
        await connection.flush()
        deadline = time.monotonic() + 15
        while len(denied) < len(storage):
            assert time.monotonic() < deadline, denied
            await asyncio.sleep(0.02)
        await connection.flush()  # a violation for an allowed one would have come by now
    finally:
        await connection.close()
    assert len(denied) == len(storage), denied
    for subject, told in zip(storage, denied, strict=True):
        assert "permissions violation for publish" in told, told
        assert subject.lower() in told, (subject, told)


async def _refused_login(deployment: Deployment, user: str, password: str) -> None:
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(
            deployment.cluster.urls[0],
            user=user,
            password=password,
            allow_reconnect=False,
            max_reconnect_attempts=0,
        )


async def _connections(deployment: Deployment) -> list[dict]:
    """Every client connection of the cluster with its login and subscriptions, as the
    servers list them to the system account (CONNZ, answered by each server)."""
    issuer = Issuer.load(deployment.dir / SETUP_FILE)
    system = await nats.connect(
        deployment.cluster.urls[0], user=SYS_USER, password=issuer.sys_password
    )
    listed: list[dict] = []
    try:
        answers = await system.subscribe(inbox := system.new_inbox())
        ask = {"subscriptions": True, "auth": True, "limit": 4096}
        await system.publish("$SYS.REQ.SERVER.PING.CONNZ", json.dumps(ask).encode(), inbox)
        for _ in deployment.cluster.urls:
            answer = json.loads((await answers.next_msg(timeout=10)).data)
            listed += answer["data"]["connections"]
    finally:
        await system.close()
    return listed


async def test_the_serving_connection_logs_in_as_a_user_refused_storage(deployment):
    """The connection hearing the agents' requests and publishing their answers (and wake
    announcements) is, as nats-server sees it, the broker's serving user, never the user
    keeping the state; and nats-server refuses that user the messages stream, the buckets and
    JetStream's API: whatever reply the broker's code were made to answer to."""
    listed = await _connections(deployment)
    hearing = [c for c in listed if PRINCIPAL_WILDCARD in c.get("subscriptions_list", [])]
    assert hearing, listed  # the serving brokers'
    assert {c.get("authorized_user") for c in hearing} == {SERVE_USER}, hearing
    issuer = Issuer.load(deployment.dir / SETUP_FILE)
    # what it publishes for the broker (an answer, an announcement): taken
    allowed = ("_INBOX.alice.x", "$mq9.WAKE." + "0" * 32)
    await _refused_storage(deployment, SERVE_USER, issuer.serve_password, allowed)
    # another of the broker's users' password
    await _refused_login(deployment, SERVE_USER, issuer.answers_password)


async def test_a_credentialed_broker_announces_arrivals_as_its_serving_user(tmp_path, caplog):
    """``--announce`` with credentials: the wake announcements go out on the serving
    connection, whose user may publish them (and inboxes) only. (The broker runs in this
    process, as ``--nats URL --store jetstream --credentials DIR --announce`` configures it.)"""
    setup = tmp_path / "mq9-auth"
    config = credentials("setup", str(setup))
    issuer = Issuer.load(setup / SETUP_FILE)
    with JetStreamCluster(1, extra_config=config) as cluster:
        (url,) = cluster.urls
        settings = BrokerConfig(
            nats=url, store="jetstream", replicas=1, credentials=setup, search=False,
            announce=True,
        )  # fmt: skip
        async with Broker(settings) as broker:
            secret = await broker.issue("alice")
            listener = await nats.connect(broker_urls(url, issuer))  # the broker's own user
            heard = await listener.subscribe("$mq9.WAKE.>")
            await listener.flush()
            alice = await AgentLogins(url, {"alice": secret}).agent("alice")
            try:
                await ok(alice, "alice", p.MAILBOX_CREATE, {"name": "alice.inbox"})
                await ok(alice, "alice", p.MSG_SEND + "alice.inbox", b"wake up")
                announced = await heard.next_msg(timeout=30)
            finally:
                await asyncio.gather(alice.close(), listener.close())
        assert announced.subject == names.arrival_subject("alice.inbox")
        assert not [record for record in caplog.records if record.exc_info]  # no traceback


async def test_replies_naming_the_brokers_storage_reach_nothing_and_change_nothing(deployment):
    """The attacks of #61 (a plain request's refusal published as the broker's user to the
    reply the request named), and the same replies on prefixed requests: each refused; the
    victim's SENDs, mail, ownership and login hold; the brokers serve on, and with one of them
    killed the other (serving all along: nothing to take over) finds the state and the
    identities whole."""
    overheard = Overheard()
    await overheard.start(deployment)
    alice, bob, carol = [await deployment.agent(name) for name in ("alice", "bob", "carol")]
    try:
        await ok(alice, "alice", p.MAILBOX_CREATE, {"name": "victim.inbox"})
        await ok(alice, "alice", p.AGENT_REGISTER, {"name": "agent.victim", "payload": "card"})
        for n in range(3):
            await ok(carol, "carol", p.MSG_SEND + "victim.inbox", f"before {n}".encode())

        for reply in STORAGE_REPLIES:
            for subject in (
                p.AGENT_DISCOVER,  # plain: refused by the broker in words, to inboxes only
                p.MSG_SEND + "victim.inbox",
                "$mq9.U.bob.AI.AGENT.DISCOVER",  # prefixed: dropped by the gate
                "$mq9.U.bob.AI.MSG.SEND.victim.inbox",
            ):
                await bob.publish(subject, b"{}", reply=reply)
        await bob.flush()

        # the victim's mailbox record named again and again while another agent SENDs
        async def hammer_the_record(stop: asyncio.Event) -> int:
            sent = 0
            while not stop.is_set():
                await bob.publish(p.AGENT_DISCOVER, b"{}", reply=VICTIM_RECORD)
                await bob.publish(p.MSG_FETCH + "victim.inbox", b"{}", reply=VICTIM_RECORD)
                sent += 2
                await asyncio.sleep(0.2)
            return sent

        stop = asyncio.Event()
        hammering = asyncio.ensure_future(hammer_the_record(stop))
        try:
            for n in range(9):
                await ok(carol, "carol", p.MSG_SEND + "victim.inbox", f"during {n}".encode())
                await asyncio.sleep(0.3)
        finally:
            stop.set()
            assert await hammering >= 18

        # the broker serves on: a plain request is still told in words, to its inbox
        told = json.loads((await bob.request(p.AGENT_DISCOVER, b"{}", timeout=10)).data)
        assert told["error"].startswith(MARKER), told
        _refused(await ask(bob, "bob", p.MSG_FETCH + "victim.inbox", {}), "another agent")
        fetched = await ok(alice, "alice", p.MSG_QUERY + "victim.inbox", {})
        expected = [f"before {n}" for n in range(3)] + [f"during {n}" for n in range(9)]
        assert [m["payload"] for m in fetched["messages"]] == expected
    finally:
        await asyncio.gather(alice.close(), bob.close(), carol.close())
    await asyncio.sleep(0.5)  # anything published by then has been heard
    await overheard.connection.close()
    assert overheard.refusals == []
    killed, other = deployment.brokers[:2]
    assert "Traceback" not in killed.output() and "Traceback" not in other.output()

    # one broker killed: the other, serving all along, reads the store and the identities as
    # they were (no takeover: nothing waits for it)
    killed.stop(signal.SIGKILL)
    alice, bob, carol = [await deployment.agent(name) for name in ("alice", "bob", "carol")]
    try:
        await ok(carol, "carol", p.MSG_SEND + "victim.inbox", b"after the kill")
        _refused(await ask(bob, "bob", p.MSG_FETCH + "victim.inbox", {}), "another agent")
        _refused(
            await ask(bob, "bob", p.AGENT_UNREGISTER, {"name": "agent.victim"}),
            "registered by another agent",
        )
        fetched = await ok(alice, "alice", p.MSG_QUERY + "victim.inbox", {})
        assert [m["payload"] for m in fetched["messages"]][-1] == "after the kill"
        assert len(fetched["messages"]) == 13
    finally:
        await asyncio.gather(alice.close(), bob.close(), carol.close())
    # a broker started in the killed one's place serves beside it, for the module's others
    deployment.brokers.append(DevBroker(*killed.args))
    await asyncio.to_thread(wait_serving, deployment.brokers[-1])
