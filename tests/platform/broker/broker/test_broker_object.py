"""``Broker`` and ``BrokerConfig`` (#64 item 1): the bundled broker started and stopped from
Python, as docs/broker.md shows, on real nats-servers: alone in memory, on a nats-server of
its own or one given, on SQLite across a restart, and on JetStream with credentials; a client
talks to each, and each stops leaving nothing running. A config that cannot work is refused in
one line before anything starts.
"""

from __future__ import annotations

import os
import re
import signal

import pytest

from mq9_broker import Broker, BrokerConfig, BrokerLimits, StartupError
from mq9_broker.cli.dev_broker import build_parser, config_of
from mq9_broker.identities.callout import SETUP_FILE, Issuer
from mq9_broker.identities.store import CredentialError
from mq9_broker.serving.meter import RequestMeter
from mq9_platform import Mq9Client
from mq9_wire.protocol.errors import NotAllowed
from testbed.nats_server import start_nats_server
from testbed.ports import silent_port, unclaimed_port
from testbed.support.devbroker_helpers import port_open, process_alive, wait_until
from testbed.support.jetstream_servers import JetStreamCluster

pytestmark = pytest.mark.slow  # nats-servers, and a broker serving on them in this process


def _pid(said: list[str]) -> int:
    found = re.search(r"nats-server \(pid (\d+)\)", "\n".join(said))
    assert found, said
    return int(found.group(1))


async def _round_trip(client: Mq9Client, box: str, text: str) -> list[str]:
    """A mailbox ``box`` holding ``text``: what a group reads from it."""
    await client.mailbox_create(name=box)
    await client.send(box, text)
    return [m.payload.decode() for m in await client.fetch(box, group_name="g", deliver="earliest")]


async def test_a_broker_on_its_own_nats_server_serves_a_client_and_stops_with_it():
    said: list[str] = []
    port = unclaimed_port()
    config = BrokerConfig(port=port, limits=BrokerLimits(max_mailboxes=3))
    async with Broker(config, say=said.append) as broker:
        assert broker.url == f"nats://127.0.0.1:{port}" and broker.serving
        assert said[-1] == f"mq9 dev broker ready on {broker.url}"
        banner = "\n".join(said)
        assert "storage: in memory only" in banner and "mailboxes 3," in banner
        async with Mq9Client(broker.url) as client:
            assert await _round_trip(client, "team.inbox", "hello") == ["hello"]
        nats_pid = _pid(said)
    assert not broker.serving
    wait_until(lambda: not process_alive(nats_pid), 10, "its nats-server is gone")
    assert not port_open(port)


async def test_a_broker_on_a_running_nats_server_leaves_the_server_running():
    with start_nats_server() as own:
        async with Broker(BrokerConfig(nats=own.url, search=False), say=lambda _: None) as broker:
            async with Mq9Client(own.url) as client:
                assert await _round_trip(client, "box", "one") == ["one"]
            # a second broker on the same server would split the state: refused in one line
            with pytest.raises(StartupError, match="an mq9 broker already serves") as second:
                await Broker(BrokerConfig(nats=own.url), say=lambda _: None).start()
            assert "\n" not in str(second.value)
            assert broker.serving
        assert port_open(own.port)


async def test_the_sqlite_state_outlives_a_restart(tmp_path):
    config = BrokerConfig(port=0, data=tmp_path / "state.sqlite3")
    assert config.store == "sqlite"  # implied by data
    async with Broker(config, say=lambda _: None) as broker, Mq9Client(broker.url) as client:
        await client.mailbox_create(name="kept")
        await client.send("kept", "still here")
    said: list[str] = []
    async with Broker(config, say=said.append) as broker:
        assert "restored 1 mailboxes, 1 messages" in "\n".join(said)
        async with Mq9Client(broker.url) as client:
            batch = await client.fetch("kept", group_name="g", deliver="earliest")
            assert [m.payload.decode() for m in batch] == ["still here"]


async def test_the_broker_stops_and_says_why_when_its_nats_server_dies():
    said: list[str] = []
    async with Broker(BrokerConfig(port=0), say=said.append) as broker:
        os.kill(_pid(said), signal.SIGKILL)
        with pytest.raises(StartupError, match=r"nats-server exited \(status -9\)"):
            await broker.serve()
        assert not broker.serving


async def test_a_credentialed_jetstream_broker_started_from_python(tmp_path):
    pytest.importorskip("nkeys")
    issuer = Issuer()  # what 'mq9-dev-broker credentials setup DIR' writes
    issuer.save(tmp_path / SETUP_FILE)
    with JetStreamCluster(1, extra_config=issuer.server_config(jetstream=True)) as cluster:
        url = cluster.urls[0]
        config = BrokerConfig(nats=url, store="jetstream", credentials=tmp_path, search=False)
        said: list[str] = []
        async with Broker(config, say=said.append) as broker:
            assert broker.serving and said[-1].endswith("(serving)"), said
            credential = await broker.issue("alice")
            async with Mq9Client(url, credential=credential) as alice:
                assert await _round_trip(alice, "alice.inbox", "mine") == ["mine"]
            with pytest.raises(NotAllowed):  # no credential, no login
                await Mq9Client(url, credential="mallory:wrong").connect()
        assert not broker.serving


async def test_two_jetstream_brokers_both_serve_and_one_stopped_costs_no_takeover():
    """``--store jetstream``: every broker of a stream serves at once, in one queue group (no
    standby). Both answer: of 40 SENDs nats-server spreads over the group, each broker
    answered some (each counts its own; all to one has odds of 2^-39). One stopped, the other,
    serving all along, answers the next request from the state kept in the cluster."""
    with JetStreamCluster(1) as cluster:
        config = BrokerConfig(nats=cluster.urls[0], store="jetstream", search=False)
        meters = [RequestMeter({}), RequestMeter({})]  # every command counted as one
        said: list[list[str]] = [[], []]
        brokers = [Broker(config, say=said[i].append, meter=meters[i]) for i in range(2)]
        try:
            for broker in brokers:
                await broker.start()
            assert all(broker.serving for broker in brokers)
            assert all(lines[-1].endswith("(serving)") for lines in said), said
            async with Mq9Client(cluster.urls[0]) as client:
                await client.mailbox_create(name="kept")
                for i in range(40):
                    await client.send("kept", f"m{i}")
            answered = [sum(n for (_, how), n in m.counts().items() if how == "ok") for m in meters]
            assert sum(answered) == 41 and all(answered), answered
            await brokers[0].stop()
            assert not brokers[0].serving and brokers[1].serving
            async with Mq9Client(cluster.urls[0]) as client:
                batch = await client.fetch("kept", group_name="g", deliver="earliest", num_msgs=40)
                assert [m.text() for m in batch] == [f"m{i}" for i in range(40)]
        finally:
            for broker in brokers:
                await broker.stop()


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"store": "jetstream"}, "--store jetstream keeps the state on the NATS cluster"),
        ({"store": "sqlite"}, "--store sqlite needs --data PATH"),
        ({"replicas": 3}, "--replicas is for --store jetstream"),
        ({"data": "x.sqlite3", "store": "memory"}, "--data names a SQLite file"),
        ({"nats": "http://example.com"}, "--nats: "),
        ({"port": 65536}, "BrokerConfig: port must be a port number"),
        ({"store": "disk"}, "BrokerConfig: store must be one of memory, sqlite, jetstream"),
        ({"answer_rate": -1}, "BrokerConfig: answer_rate"),
        ({"limits": {"max_mailboxes": 3}}, "BrokerConfig: limits must be a BrokerLimits"),
    ],
)
def test_a_config_that_cannot_work_is_refused_in_one_line(options, words):
    with pytest.raises(StartupError) as refused:
        BrokerConfig(**options)
    assert words in str(refused.value) and "\n" not in str(refused.value)


def test_credentials_on_a_cluster_need_the_setup_dir():
    pytest.importorskip("nkeys")
    with pytest.raises(CredentialError, match="needs DIR"):
        BrokerConfig(nats="nats://127.0.0.1:4222", store="jetstream", credentials=True)


async def test_nothing_to_serve_on_is_one_line_and_leaves_nothing_running():
    broker = Broker(BrokerConfig(nats=f"nats://127.0.0.1:{silent_port()}"), say=lambda _: None)
    with pytest.raises(StartupError, match="cannot connect to nats-server") as refused:
        await broker.start()
    assert "\n" not in str(refused.value) and not broker.serving
    with pytest.raises(RuntimeError, match="started already"):
        await broker.start()
    await broker.stop()  # again: nothing to do


def test_the_command_line_becomes_the_config_it_describes(tmp_path):
    argv = ["--port", "4333", "--data", str(tmp_path), "--max-mailboxes", "7", "--max-groups", "0"]
    argv += ["--answer-rate", "0", "--no-search", "--announce", "--cluster-wait", "5"]
    config = config_of(build_parser().parse_args(argv))
    limits = BrokerLimits(max_mailboxes=7, max_groups=None)
    assert config == BrokerConfig(
        port=4333, data=str(tmp_path), limits=limits, answer_rate=0, search=False,
        announce=True, cluster_wait=5.0,
    )  # fmt: skip
    assert config.store == "sqlite" and config.credentials is False
    assert config_of(build_parser().parse_args([])) == BrokerConfig()
    with_dir = build_parser().parse_args(["--credentials", "ids", "--data", str(tmp_path)])
    beside = build_parser().parse_args(["--credentials", "--data", str(tmp_path)])
    pytest.importorskip("nkeys")
    assert config_of(with_dir).credentials == "ids"
    assert config_of(beside).credentials is True
