"""#77 item 2: on the open cluster the storage is the brokers' alone, and a cluster configured by
the earlier docs/deploy.md moves to it keeping its state.

The earlier ``accounts.conf`` made every client without a login the user ``agents`` of the
account holding the brokers' stream and buckets, JetStream enabled: an anonymous client read
the stream's config (and could read every mailbox, update the stream to keep 3 messages, ...).
Here three nats-servers run deploy.md's node files with that earlier ``accounts.conf``, a broker
started as then (no login) writes a mailbox, and the hole is shown; then the move deploy.md
describes (brokers stopped, the new ``accounts.conf`` and the brokers' password given to each
server, the servers restarted one at a time, the documented brokers started with their login):
the mailbox is read back, an anonymous client's every request on the storage and subscription
to it is refused by nats-server (storage_probes.py), and its mq9 use beside them works; a
broker started as before, without the login, is told at once that its account has no
JetStream.

A broker given its login in the URLs keeps it through rolling restarts of the servers (nats-py
adds the servers a cluster advertises without it: the broker used to land in CLIENTS).

Also the dev broker's own nats-server (no ``--nats``): JetStream is not enabled there at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import nats
import pytest
from storage_probes import STREAM, reaches_no_storage, still_served, stream_unchanged

from mq9_broker.storage.jetstream import token
from mq9_broker.storage.jetstream.mapping import ARRIVALS_PREFIX
from mq9_platform import Mq9Client, Mq9Error
from mq9_wire.protocol.errors import MailboxExists
from testbed.support.devbroker_helpers import DevBroker, write_mailbox
from testbed.support.waiting import until
from tests.platform.broker.cli.test_documented_cluster import (
    Deployment,
    _documented,
    _serving,
    password_of,
    without_login,
)

pytestmark = pytest.mark.slow  # three nats-servers and three brokers; a dev broker
pytest.importorskip("nkeys")

RECONNECTS = 4  # the 3 servers' URLs, then the first server the cluster advertised
ROUND_TRIP = 180.0  # seconds: a hang guard on a busy machine, never a timing assertion
# docs/deploy.md's accounts.conf before issue #77, as clusters configured by it still run
EARLIER_ACCOUNTS = """\
accounts {
  AGENTS: { jetstream: enabled, users: [{user: agents}] }
  SYS: {}
}
system_account: SYS
no_auth_user: agents
"""


def test_a_cluster_on_the_earlier_accounts_moves_keeping_its_state_and_closing_it(tmp_path):
    files, commands, _, secret = _documented()
    for name, body in files.items():
        (tmp_path / name).write_text(body)
    (tmp_path / "accounts.conf").write_text(EARLIER_ACCOUNTS)
    deployment = Deployment(tmp_path)
    password = password_of(secret, deployment.env)
    servers, brokers = commands[:3], commands[3:]
    login = brokers[0].replace("$MQ9_BROKER_PASSWORD", password)
    earlier = without_login(login)  # the broker as the earlier page started it
    url = earlier.split()[2].split(",")[1]  # the second server: not the first
    try:
        for line in servers:
            deployment.start_server(line)
        _serving([deployment.start_broker(earlier)])
        asyncio.run(write_mailbox(url, "kept.box", 3))
        asyncio.run(_the_hole(url))
        assert deployment.brokers[0].stop() == 0, deployment.brokers[0].output()

        # the move, as deploy.md says
        (tmp_path / "accounts.conf").write_text(files["accounts.conf"])
        deployment.env["MQ9_BROKER_PASSWORD"] = password
        for line in servers:  # one at a time
            deployment.restart_server(line)
        _serving([deployment.start_broker(line) for line in brokers])
        asyncio.run(_moved(url, login.split()[2].split(",")[0]))
        # a broker started as before, without its login: told at once, never serving
        forgot = deployment.start_broker(earlier)
        assert forgot.wait_exit(120) != 0, forgot.output()
        assert any("JetStream not enabled for account" in x for x in forgot.stderr), forgot.output()
        assert any("give it the brokers' login" in x for x in forgot.stderr), forgot.output()
    finally:
        deployment.close()


async def _the_hole(url: str) -> None:
    """What the earlier accounts let an anonymous client do: read the stream's config."""
    connection = await nats.connect(url)
    try:
        answer = await connection.request(f"$JS.API.STREAM.INFO.{STREAM}", b"", timeout=20)
        assert json.loads(answer.data)["config"]["name"] == STREAM
    finally:
        await connection.close()


async def _moved(url: str, login: str) -> None:
    async with Mq9Client(url) as client:  # a client changes nothing: no login
        kept = await client.fetch("kept.box", deliver="earliest")
        assert [m.payload for m in kept] == [b"message 0", b"message 1", b"message 2"]
    await reaches_no_storage(url, "kept.box")
    await still_served(url, "moved.box")
    await stream_unchanged(login)
    await _announcements_heard(url, login)


async def _announcements_heard(url: str, login: str) -> None:
    """The wake announcements a broker makes (``--announce``, as the brokers' user) reach a
    client without a login (``mq9-wake``'s subscription): the stream import of CLIENTS."""
    heard: asyncio.Queue = asyncio.Queue()
    listener = await nats.connect(url)
    broker = await nats.connect(login)
    try:
        await listener.subscribe(ARRIVALS_PREFIX + ">", cb=heard.put)
        await listener.flush()

        # announced again until heard: the listener's interest reaches the other servers of
        # the cluster a moment after its own server has it (an announcement is idempotent)
        async def announced_and_heard() -> Any:
            await broker.publish(ARRIVALS_PREFIX + token("kept.box"), b"")
            await broker.flush()
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(heard.get(), 0.5)
            return None

        msg = await until(
            announced_and_heard, timeout=ROUND_TRIP, what="an announcement heard", every=0
        )
        assert msg.subject == ARRIVALS_PREFIX + token("kept.box")
    finally:
        await listener.close()
        await broker.close()


def test_a_broker_keeps_its_login_through_rolling_restarts_of_the_servers(tmp_path):
    """The documented cluster, one broker: the servers restarted one at a time until the
    broker has reconnected 4 times. nats-py adds the servers a cluster advertises to the end of
    its list without the login the URLs carry, and reconnects through the list in order: at
    the 4th reconnect (the 3 URLs given come first) a broker given its login in the URLs only
    (before the fix) logged in as nobody, the agents' user of CLIENTS, and served no more. It
    serves after every restart."""
    files, commands, _, secret = _documented()
    for name, body in files.items():
        (tmp_path / name).write_text(body)
    deployment = Deployment(tmp_path)
    password = password_of(secret, deployment.env)
    deployment.env["MQ9_BROKER_PASSWORD"] = password
    servers, brokers = commands[:3], commands[3:]
    urls = without_login(brokers[0]).split()[2]
    try:
        for line in servers:
            deployment.start_server(line)
        broker = deployment.start_broker(brokers[0])
        _serving([broker])
        asyncio.run(_round_trip(urls))
        for _ in range(6):  # rounds: each restarts the server the broker is on at least once
            for line in servers:
                deployment.restart_server(line)
                asyncio.run(_round_trip(urls))
            if _reconnects(broker) >= RECONNECTS:
                break
        assert _reconnects(broker) >= RECONNECTS, broker.output()
        assert broker.process.poll() is None, broker.output()
    finally:
        deployment.close()


def _reconnects(broker: DevBroker) -> int:
    return sum("reconnected to nats-server" in line for line in broker.stderr)


async def _round_trip(urls: str) -> None:
    """Until a SEND and a FETCH through the broker succeed (a hang guard of ROUND_TRIP s:
    the cluster elects its leaders again after each restart)."""

    async def served() -> bool:
        async with Mq9Client(urls, request_timeout=5) as client:
            with contextlib.suppress(MailboxExists):  # made by an earlier round trip
                await client.mailbox_create(name="rolling.box")
            msg_id = await client.send("rolling.box", "still served")
            fetched = await client.fetch("rolling.box", from_id=msg_id, num_msgs=1)
            assert [m.msg_id for m in fetched] == [msg_id]
            return True

    # what the cluster says while it is still electing
    electing = (Mq9Error, OSError, TimeoutError)
    await until(served, timeout=ROUND_TRIP, what="a round trip", every=0.5, ignoring=electing)


async def test_the_dev_brokers_own_nats_server_has_no_jetstream():
    """Without --nats the broker starts its nats-server with no JetStream: a client asking
    JetStream's API is answered by no one; the broker serves beside it."""
    with DevBroker("--port", "0") as broker:
        connection = await nats.connect(broker.url)
        try:
            for subject in ("$JS.API.INFO", "$JS.API.STREAM.LIST", f"$JS.API.STREAM.INFO.{STREAM}"):
                with pytest.raises(nats.errors.NoRespondersError):
                    await connection.request(subject, b"{}", timeout=20)
        finally:
            await connection.close()
        await still_served(broker.url, "single.box")
