"""#53 on the JetStream store: three nats-servers clustered with JetStream, configured with the
block ``mq9-dev-broker credentials setup DIR`` prints, and two brokers started as
``--nats A,B,C --store jetstream --credentials DIR``, both serving (one queue group: each
request goes to either). The credentials and who owns what live on the cluster
(broker/identities/kv_store.py), so what one broker recorded holds on the other: the attacks of
test_hostile_requests_credentialed.py are refused there too, mailboxes created through one are
their owner's through the other, and after one broker is killed the other serves on with the
same ownership and revocations. Agents log in on a server other than the brokers' first.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import signal
import stat
from pathlib import Path

import nats
import pytest

import mq9_broker.cli.credentials as credentials_cli
from mq9_broker.identities.callout import SETUP_FILE
from mq9_wire import protocol as p
from testbed.support.credentials_support import AgentLogins, ask, ok, on_close
from testbed.support.devbroker_helpers import DevBroker
from testbed.support.jetstream_servers import JetStreamCluster, wait_serving
from testbed.support.waiting import until_sync
from tests.platform.broker.identities.test_hostile_requests_credentialed import (
    test_a_plain_request_is_told_to_use_a_credential as plain_request,
)
from tests.platform.broker.identities.test_hostile_requests_credentialed import (
    test_a_reply_aimed_at_another_inbox_is_dropped_unanswered as reply_aimed_elsewhere,
)
from tests.platform.broker.identities.test_hostile_requests_credentialed import (
    test_a_second_agent_cannot_pass_for_another_as_the_sender as sender_forged,
)
from tests.platform.broker.identities.test_hostile_requests_credentialed import (
    test_a_wrong_or_missing_credential_is_refused_at_login as refused_login,
)
from tests.platform.broker.identities.test_hostile_requests_credentialed import (
    test_another_agents_card_cannot_be_unregistered_or_replaced as card_attack,
)
from tests.platform.broker.identities.test_hostile_requests_credentialed import (
    test_another_agents_mailbox_is_refused_and_unchanged as mailbox_attack,
)
from tests.platform.broker.identities.test_hostile_requests_credentialed import (
    test_forging_into_a_reply_mailbox_or_task_store_is_refused as forging_attack,
)
from tests.platform.broker.identities.test_hostile_requests_credentialed import (
    test_names_derived_from_another_agent_cannot_be_made_first as derived_names_attack,
)
from tests.platform.broker.identities.test_hostile_requests_credentialed import (
    test_publishing_as_another_agent_is_denied_by_nats_server as publish_as_another,
)

pytestmark = pytest.mark.slow  # three nats-servers and two brokers
pytest.importorskip("nkeys")

AGENTS = ("alice", "bob", "carol", "dave")
KICKED_WITHIN = 15.0  # seconds


def credentials(*argv: str) -> str:
    """``mq9-dev-broker credentials ARGV`` (in this process): what it printed; it succeeded."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert credentials_cli.main(list(argv)) == 0
    return out.getvalue()


class Deployment(AgentLogins):
    """The cluster, configured as ``credentials setup`` says, and its two brokers."""

    def __init__(self, place: Path) -> None:
        self.dir = place / "mq9-auth"
        self.config = credentials("setup", str(self.dir))
        self.cluster = JetStreamCluster(3, extra_config=self.config).__enter__()
        self.brokers: list[DevBroker] = []
        self.revoked: list[str] = []  # (in the order revoked, by whichever test)
        try:
            self.nats = ",".join(self.cluster.urls)
            issued = {name: self.issue(name) for name in AGENTS}
            super().__init__(self.cluster.urls[2], issued)
            args = ("--nats", self.nats, "--store", "jetstream", "--credentials", str(self.dir))
            self.brokers.append(DevBroker(*args, "--no-search"))
            wait_serving(self.brokers[0])
            self.brokers.append(DevBroker(*args, "--no-search"))  # serves too
        except BaseException:
            self.close()
            raise

    def on_cluster(self, *argv: str) -> str:
        return credentials(*argv, "--credentials", str(self.dir), "--nats", self.nats)

    def issue(self, name: str) -> str:
        return self.on_cluster("issue", name).splitlines()[0]

    def revoke(self, name: str) -> None:
        self.on_cluster("revoke", name)
        self.revoked.append(name)

    def close(self) -> None:
        for broker in self.brokers:
            broker.kill()
        self.cluster.__exit__()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    made = Deployment(tmp_path_factory.mktemp("cluster"))
    yield made
    made.close()


def _refused(reply: dict, *words: str) -> None:
    assert reply["error"], reply
    assert all(word in reply["error"] for word in words), reply


def test_setup_keeps_its_secrets_to_its_owner_and_prints_the_servers_config(deployment):
    kept = deployment.dir / SETUP_FILE
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert stat.S_IMODE(deployment.dir.stat().st_mode) == 0o700
    config = deployment.config
    assert "jetstream: enabled" in config and "auth_callout" in config
    assert "system_account: SYS" in config
    # run again: the same keys (servers already configured keep working)
    assert credentials("setup", str(deployment.dir)) == config
    listing = deployment.on_cluster("list")
    assert all(name in listing for name in AGENTS)
    assert all(c.split(":")[1] not in listing for c in deployment.credentials.values())


@pytest.mark.parametrize("login", ["", "bob:wrong-secret@", "nobody:x@", "mq9-broker:guess@"])
async def test_a_wrong_or_missing_credential_is_refused_at_login(deployment, login):
    await refused_login(deployment, login)


@pytest.mark.parametrize(
    "attack",
    [
        mailbox_attack,
        forging_attack,
        card_attack,
        sender_forged,
        derived_names_attack,
        publish_as_another,
        reply_aimed_elsewhere,
        plain_request,
    ],
)
async def test_the_attacks_of_another_agent_are_refused_on_the_cluster(deployment, attack):
    await attack(deployment)


async def test_a_revoked_credential_is_refused_and_kicked_on_every_server(deployment):
    closed = []
    daves = []
    try:
        for server in deployment.cluster.servers:
            event, on_closed = on_close()
            closed.append(event)
            on_cluster = AgentLogins(server.url, deployment.credentials)
            daves.append(await on_cluster.agent("dave", closed_cb=on_closed))
        await ok(daves[0], "dave", p.MAILBOX_CREATE, {"name": "d.inbox"})
        await asyncio.to_thread(deployment.revoke, "dave")
        with contextlib.suppress(nats.errors.Error):  # or the kick closed the connection first
            _refused(await ask(daves[1], "dave", p.MSG_SEND + "d.inbox", b"after"), "revoked")
        # one connection on each server: each server's is closed
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in closed)), KICKED_WITHIN)
        await refused_login(deployment, f"{deployment.credentials['dave']}@")
    finally:
        await asyncio.gather(*(dave.close() for dave in daves))


async def test_what_one_broker_recorded_holds_on_the_other(deployment):
    """Each CREATE answered by either broker, each next request by either: with two serving,
    20 such pairs cross from one to the other many times (each with even odds)."""
    alice, bob = await deployment.agent("alice"), await deployment.agent("bob")
    try:
        for i in range(20):
            box = f"crossed.{i}"
            await ok(alice, "alice", p.MAILBOX_CREATE, {"name": box})
            _refused(await ask(bob, "bob", p.MSG_FETCH + box, {}), "FETCH refused")
            await ok(alice, "alice", p.MSG_FETCH + box, {"group_name": "g"})
            _refused(await ask(bob, "bob", p.MAILBOX_CREATE, {"name": box}), "CREATE refused")
    finally:
        await asyncio.gather(alice.close(), bob.close())


async def test_the_other_broker_serves_on_with_the_same_owners_and_revocations(deployment):
    alice, bob = await deployment.agent("alice"), await deployment.agent("bob")
    try:
        await ok(alice, "alice", p.MAILBOX_CREATE, {"name": "kept.inbox"})
        await ok(bob, "bob", p.MSG_SEND + "kept.inbox", b"for alice")
        await ok(alice, "alice", p.AGENT_REGISTER, {"name": "agent.kept", "payload": "card"})
        _refused(await ask(bob, "bob", p.MSG_FETCH + "kept.inbox", {}), "FETCH refused")
    finally:
        await asyncio.gather(alice.close(), bob.close())
    await asyncio.to_thread(deployment.revoke, "carol")

    killed, other = deployment.brokers
    killed.stop(signal.SIGKILL)  # no goodbye: the other serves on, nothing to take over

    alice, bob = await deployment.agent("alice"), await deployment.agent("bob")  # its logins
    try:
        _refused(await ask(bob, "bob", p.MSG_FETCH + "kept.inbox", {}), "FETCH refused")
        _refused(await ask(bob, "bob", p.MSG_QUERY + "kept.inbox", {}), "QUERY refused")
        _refused(
            await ask(bob, "bob", p.AGENT_UNREGISTER, {"name": "agent.kept"}), "UNREGISTER refused"
        )
        _refused(await ask(bob, "bob", p.MAILBOX_CREATE, {"name": "kept.inbox"}), "CREATE refused")
        fetched = await ok(alice, "alice", p.MSG_FETCH + "kept.inbox", {"group_name": "g"})
        assert [m["payload"] for m in fetched["messages"]] == ["for alice"]
        listing = await ok(alice, "alice", p.AGENT_DISCOVER, {})
        assert "agent.kept" in json.dumps(listing)
    finally:
        await asyncio.gather(alice.close(), bob.close())
    # every revocation holds on the broker left: carol's just now, and any an earlier test
    # of this module made through both brokers (dave's), whichever tests ran before
    for name in deployment.revoked:
        await refused_login(deployment, f"{deployment.credentials[name]}@")
    await asyncio.to_thread(
        _logged, other, "login refused: unknown or revoked mq9 credential 'carol'"
    )

    # and once more, stopped politely: a third broker started serves the same ways
    deployment.brokers.append(DevBroker(*other.args))
    assert other.stop() == 0
    await asyncio.to_thread(wait_serving, deployment.brokers[-1])
    alice, bob = await deployment.agent("alice"), await deployment.agent("bob")
    try:
        _refused(await ask(bob, "bob", p.MSG_FETCH + "kept.inbox", {}), "FETCH refused")
        assert (await ok(alice, "alice", p.MSG_QUERY + "kept.inbox", {}))["messages"]
    finally:
        await asyncio.gather(alice.close(), bob.close())


def _logged(broker: DevBroker, words: str) -> None:
    """Until ``broker``'s log holds ``words`` (its reader thread may lag: bounded)."""
    until_sync(
        lambda: words in "\n".join(broker.stderr),
        timeout=10,
        what=f"{words!r} in the broker's log",
        every=0.05,
        show=broker.output,
    )


def test_a_server_that_lets_anyone_in_is_refused_at_start(tmp_path):
    """The setup's config block forgotten on a server: the broker would enforce nothing there,
    so it does not start, and says why."""
    place = tmp_path / "mq9-auth"
    credentials("setup", str(place))
    with JetStreamCluster(1) as bare:  # JetStream, but no accounts and no auth callout
        broker = DevBroker(
            "--nats", bare.urls[0], "--store", "jetstream", "--credentials", str(place), wait=False
        )
        assert broker.wait_exit() == 1
        assert "lets a client in without a credential" in broker.output()
        assert "Traceback" not in broker.output()
