"""#61 items 1 and 3 on a cluster: three nats-servers clustered with JetStream, configured as
``credentials setup`` says, and two brokers (one serving, one standing by), as in
test_credentials_jetstream.py. A raw nats-py client holding a valid credential of its own:

- names the broker's storage as the reply of its requests (the state stream's subject, keys
  of the identities bucket, the leader lock, JetStream's API): nothing reaches them, another
  agent's SENDs, mailbox, login and ownership are untouched, through a takeover too;
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
from credentials_support import AgentLogins, ask, ok, on_close, raw_login, until_closed
from devbroker_helpers import DevBroker
from jetstream_servers import wait_serving
from test_credentials_jetstream import Deployment, _refused
from test_credentials_jetstream import deployment as deployment  # a cluster of this module's

from langchain_mq9 import protocol as p
from langchain_mq9.broker.callout import ANSWERS_USER, SETUP_FILE, Issuer, broker_urls
from langchain_mq9.broker.identities import MARKER
from langchain_mq9.broker.identities_kv import identities_bucket
from langchain_mq9.broker.standby import lock_bucket
from langchain_mq9.broker.storage.jetstream import DEFAULT_STREAM, SUBJECT_PREFIX

pytestmark = pytest.mark.slow  # three nats-servers and two brokers
pytest.importorskip("nkeys")

CLOSED_WITHIN = 120.0  # seconds: a hang guard for a thousand kicks on a busy machine
ON_ONE_SERVER = 1100  # beyond nats-server's CONNZ page of 1,024
ON_EACH_OTHER = 10
LOGINS_AT_ONCE = 64
IDENTITIES = identities_bucket(DEFAULT_STREAM)
LOCK = lock_bucket(DEFAULT_STREAM)
# The replies an attacker names: the broker's storage, each a subject the broker's own user
# may publish to
STORAGE_REPLIES = [
    f"{SUBJECT_PREFIX}.{DEFAULT_STREAM.lower()}",  # the state stream's subject
    f"$KV.{IDENTITIES}.mailbox.{hashlib.sha256(b'victim.inbox').hexdigest()}",
    f"$KV.{IDENTITIES}.cred.carol",
    f"$KV.{IDENTITIES}.agent.{hashlib.sha256(b'agent.victim').hexdigest()}",
    f"$KV.{LOCK}.leader",
    f"$JS.API.STREAM.DELETE.{DEFAULT_STREAM}",
    f"$JS.API.STREAM.PURGE.{DEFAULT_STREAM}",
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
    state stream's, the buckets', JetStream's API (the broker's own writes among them)."""

    def __init__(self) -> None:
        self.refusals: list[tuple[str, bytes]] = []

    async def start(self, deployment: Deployment) -> None:
        issuer = Issuer.load(deployment.dir / SETUP_FILE)
        self.connection = await nats.connect(broker_urls(deployment.nats, issuer))
        for subject in (f"{SUBJECT_PREFIX}.>", "$KV.>", "$JS.API.>"):
            await self.connection.subscribe(subject, cb=self._heard)
        await self.connection.flush()

    async def _heard(self, msg) -> None:
        if MARKER.encode() in msg.data:  # the plain refusal's words
            self.refusals.append((msg.subject, msg.data))


async def test_the_broker_answers_user_is_refused_storage_by_nats_server(deployment):
    """Whatever the broker's code did, the user refusing plain requests could not write the
    storage: nats-server refuses it every subject but inboxes."""
    issuer = Issuer.load(deployment.dir / SETUP_FILE)
    denied: list[str] = []

    async def keep(exc: Exception) -> None:
        denied.append(str(exc).lower())

    answers = await nats.connect(
        deployment.cluster.urls[1],
        user=ANSWERS_USER,
        password=issuer.answers_password,
        error_cb=keep,
        allow_reconnect=False,
    )
    try:
        for subject in STORAGE_REPLIES:
            await answers.publish(subject, b"not from the broker's store")
        await answers.flush()
        deadline = time.monotonic() + 15
        while len(denied) < len(STORAGE_REPLIES):
            assert time.monotonic() < deadline, denied
            await asyncio.sleep(0.02)
        assert all("permissions violation for publish" in d for d in denied), denied
    finally:
        await answers.close()
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(
            deployment.cluster.urls[0],
            user=ANSWERS_USER,
            password="guess",
            allow_reconnect=False,
            max_reconnect_attempts=0,
        )


async def test_replies_naming_the_brokers_storage_reach_nothing_and_change_nothing(deployment):
    """The attacks of #61 (a plain request's refusal published as the broker's user to the
    reply the request named), and the same replies on prefixed requests: each refused; the
    victim's SENDs, mail, ownership and login hold; the broker serves on, and the standby
    taking over finds the state and the identities whole."""
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

        # the leader lock named again and again while another agent SENDs
        async def hammer_the_lock(stop: asyncio.Event) -> int:
            sent = 0
            while not stop.is_set():
                await bob.publish(p.AGENT_DISCOVER, b"{}", reply=f"$KV.{LOCK}.leader")
                await bob.publish(p.MSG_FETCH + "victim.inbox", b"{}", reply=f"$KV.{LOCK}.leader")
                sent += 2
                await asyncio.sleep(0.2)
            return sent

        stop = asyncio.Event()
        hammering = asyncio.ensure_future(hammer_the_lock(stop))
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
    serving, standby = deployment.brokers[:2]
    assert "Traceback" not in serving.output()

    # a takeover reads the stream and the identities as they were
    serving.stop(signal.SIGKILL)
    await asyncio.to_thread(wait_serving, standby)
    deployment.brokers.append(DevBroker(*standby.args))  # stands by in its turn
    alice, bob, carol = [await deployment.agent(name) for name in ("alice", "bob", "carol")]
    try:
        await ok(carol, "carol", p.MSG_SEND + "victim.inbox", b"after the takeover")
        _refused(await ask(bob, "bob", p.MSG_FETCH + "victim.inbox", {}), "another agent")
        _refused(
            await ask(bob, "bob", p.AGENT_UNREGISTER, {"name": "agent.victim"}),
            "registered by another agent",
        )
        fetched = await ok(alice, "alice", p.MSG_QUERY + "victim.inbox", {})
        assert [m["payload"] for m in fetched["messages"]][-1] == "after the takeover"
        assert len(fetched["messages"]) == 13
    finally:
        await asyncio.gather(alice.close(), bob.close(), carol.close())
