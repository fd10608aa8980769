"""#61 items 5 and 8, as an operator meets them: ``mq9-dev-broker --store jetstream`` on one
server named three times serves; more replicas than a lone server holds is one line; brokers
started before their cluster has formed wait for it, say what for, and serve once it has;
every error on an unreachable or misspelt URL is one line and a non-zero exit; the
``credentials`` command refuses a missing directory and says which extra it needs."""

from __future__ import annotations

import asyncio
import contextlib
import io
import stat
import sys
import time
from collections.abc import Iterator

import pytest

import mq9_broker.cli.credentials as credentials_cli
from mq9_broker.cli.dev_broker import main
from mq9_broker.storage.jetstream import DEFAULT_NAME, Layout
from mq9_wire import protocol as p
from testbed.ports import silent_port
from testbed.support.devbroker_helpers import DevBroker, request_ok
from testbed.support.jetstream_servers import JetStreamCluster, wait_serving
from testbed.support.waiting import until_sync

pytestmark = pytest.mark.slow  # nats-servers and brokers: processes

QUICK = 20.0  # seconds: a hang guard for what fails at once (a cold interpreter's imports)


def _one_line_error(broker: DevBroker, *words: str) -> str:
    """The broker exited 1 by itself, its stderr one ``error:`` line holding ``words``."""
    assert broker.wait_exit(QUICK) == 1, broker.output()
    # (what comes before the error may be said too: the start of a new state (INFO), and on a
    # lone test server, which has no accounts, that a later --credentials would not see it)
    lines = [
        x
        for x in broker.stderr
        if x.strip() and " INFO " not in x and "default account ($G)" not in x
    ]
    assert len(lines) == 1, broker.output()
    assert lines[0].startswith("mq9-dev-broker: error: "), broker.output()
    assert all(word in lines[0] for word in words), broker.output()
    return lines[0]


def test_one_server_named_three_times_serves_with_one_replica():
    with JetStreamCluster(1) as lone:
        url = lone.urls[0]
        with DevBroker("--nats", f"{url},{url},{url}", "--store", "jetstream", "--no-search",
                       wait=False) as broker:  # fmt: skip
            wait_serving(broker)
            assert any("; 1 replicas;" in line for line in broker.stdout), broker.output()
            asyncio.run(_send_and_fetch(url))
            assert broker.stop() == 0
            assert not [line for line in broker.stderr if " ERROR " in line], broker.output()
            # no accounts in the server's config: a later --credentials would not see the state
            assert any("default account ($G)" in line for line in broker.stderr)


async def _send_and_fetch(url: str) -> None:
    import nats

    client = await nats.connect(url)
    try:
        await request_ok(client, p.MAILBOX_CREATE, {"name": "ops.box", "ttl": 0})
        await request_ok(client, p.send_subject("ops.box"), b"hello")
        fetched = await request_ok(client, p.fetch_subject("ops.box"), {"deliver": "earliest"})
        assert [m["payload"] for m in fetched["messages"]] == ["hello"]
    finally:
        await client.close()


def test_more_replicas_than_a_lone_server_holds_is_one_line():
    with JetStreamCluster(1) as lone:
        broker = DevBroker(
            "--nats", lone.urls[0], "--store", "jetstream", "--replicas", "3", wait=False
        )
        _one_line_error(broker, "is not clustered", "cannot hold 3 replicas", "--replicas 1")


@pytest.mark.parametrize(
    ("nats", "words"),
    [
        ("nats://127.0.0.1:{dead}", ("cannot connect to nats-server at", "ConnectionRefused")),
        ("nats//127.0.0.1:4222", ("--nats: unsupported server URL 'nats//127.0.0.1:4222'",)),
        ("nats://127.0.0.1:42x", ("its port is not a number",)),
    ],
)
@pytest.mark.parametrize("store", [(), ("--store", "jetstream")])
def test_an_unreachable_or_misspelt_url_is_one_line_and_an_exit(nats, words, store):
    broker = DevBroker("--nats", nats.format(dead=silent_port()), *store, wait=False)
    _one_line_error(broker, *words)


def _credentials(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = credentials_cli.main(list(argv))
    return status, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("nats://127.0.0.1:{dead}", "--nats: cannot connect to nats-server at nats://127.0.0.1:"),
        ("nats://127.0.0.1:{dead},nats//typo", "--nats: unsupported server URL 'nats//typo'"),
    ],
)
def test_the_credentials_command_on_an_unreachable_or_misspelt_url_is_one_line(
    tmp_path, url, words
):
    pytest.importorskip("nkeys")
    assert _credentials("setup", str(tmp_path / "auth"))[0] == 0
    started = time.monotonic()
    status, out, err = _credentials(
        "list", "--credentials", str(tmp_path / "auth"), "--nats", url.format(dead=silent_port())
    )
    assert status == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("mq9-dev-broker credentials: error: ")
    assert words in err
    assert time.monotonic() - started < QUICK  # a hang guard: it used to retry for ever


def test_issue_to_a_missing_directory_makes_no_identity_store(tmp_path):
    for place in (("--data", str(tmp_path / "nodir-typo")),
                  ("--credentials", str(tmp_path / "nodir-typo"))):  # fmt: skip
        status, out, err = _credentials("issue", "carol", *place)
        assert status == 1 and out == "", err
        assert "no directory" in err and "mkdir -m 700" in err and err.count("\n") == 1
        assert not (tmp_path / "nodir-typo").exists()


def test_the_directories_the_credentials_live_in_are_the_owners_only(tmp_path):
    from argparse import Namespace

    from mq9_broker import BrokerEngine
    from mq9_broker.broker import identities_for

    pytest.importorskip("nkeys")
    assert _credentials("setup", str(tmp_path / "auth"))[0] == 0
    assert stat.S_IMODE((tmp_path / "auth").stat().st_mode) == 0o700
    made = identities_for(
        Namespace(credentials="", nats=None, data=str(tmp_path / "data")), BrokerEngine()
    )
    assert made is not None
    made.store.close()
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700
    assert _credentials("issue", "carol", "--data", str(tmp_path / "data"))[0] == 0


@pytest.mark.parametrize(
    "argv",
    [
        ("credentials", "setup", "{tmp}/auth"),
        ("credentials", "list", "--credentials", "{tmp}", "--nats", "nats://127.0.0.1:1"),
        ("--credentials", "--data", "{tmp}"),
    ],
)
def test_without_the_credentials_extra_one_line_says_what_to_install(
    tmp_path, capsys, monkeypatch, argv
):
    monkeypatch.setitem(sys.modules, "nkeys", None)  # import nkeys fails as when not installed
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in argv]
    if argv[0] == "--credentials":  # the broker: its check comes before the model loads
        monkeypatch.setattr("mq9_wire.semantic.embedder", lambda: None)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "'credentials' extra (nkeys)" in err and "[credentials]" in err


@contextlib.contextmanager
def _first_server_only() -> Iterator[JetStreamCluster]:
    """Three servers configured as a cluster, the first one alone started: a cluster that
    has never formed (no JetStream leader, no routes up)."""
    cluster = JetStreamCluster(3, ports_first=True)  # (the brokers are given all three URLs)
    try:
        cluster.servers[0].start()
        yield cluster
    finally:
        cluster.__exit__()


def _serving(brokers: list[DevBroker]) -> list[DevBroker]:
    return [b for b in brokers if any(x.endswith("(serving)") for x in b.stdout)]


def test_brokers_started_before_their_cluster_has_formed_serve_once_it_has():
    with _first_server_only() as cluster:
        nats = ",".join(cluster.urls)
        brokers = [
            DevBroker("--nats", nats, "--store", "jetstream", "--no-search", wait=False)
            for _ in range(2)
        ]
        try:
            for broker in brokers:
                _logged(broker, "waiting for the JetStream cluster at ")
            assert all(broker.process.poll() is None for broker in brokers)
            for server in cluster.servers[1:]:
                server.start()
            ready = [broker.wait_ready(120) for broker in brokers]
            assert ready == [nats, nats]
            # both serve (every broker of a store does: no standby), each saying so once ready
            assert _serving(brokers) == brokers, [b.output() for b in brokers]
            for broker in brokers:
                assert any("; 3 replicas;" in line for line in broker.stdout), broker.output()
            asyncio.run(_send_and_fetch(cluster.urls[2]))
            for broker in brokers:
                assert not [x for x in broker.stderr if " ERROR " in x], broker.output()
        finally:
            for broker in brokers:
                broker.kill()


def test_a_cluster_that_does_not_form_in_time_is_given_up_saying_what_was_missing():
    with _first_server_only() as cluster:
        broker = DevBroker(
            "--nats", ",".join(cluster.urls), "--store", "jetstream", "--cluster-wait", "3",
            wait=False,
        )  # fmt: skip
        assert broker.wait_exit(60) == 1
        last = [line for line in broker.stderr if line.strip()][-1]
        assert last.startswith("mq9-dev-broker: error: gave up after 3 s waiting for the "), last
        assert "to elect its leader" in last
        assert "Traceback" not in broker.output()


def _logged(broker: DevBroker, words: str, timeout: float = 60) -> None:
    def said() -> bool:
        if any(words in line for line in broker.stderr):
            return True
        assert broker.process.poll() is None, broker.output()
        return False

    until_sync(said, timeout=timeout, what=repr(words), every=0.1, show=broker.output)


def test_a_stream_jetstream_refuses_for_good_is_one_line_and_an_exit():
    """Another stream already takes the messages stream's subjects: JetStream refuses
    MQ9_STATE_MSGS for good (err 10065), which the broker says once and exits on, instead of
    waiting for ever."""
    with JetStreamCluster(1) as lone:
        asyncio.run(_squat_the_state_subject(lone.urls[0]))
        broker = DevBroker("--nats", lone.urls[0], "--store", "jetstream", wait=False)
        line = _one_line_error(broker, "JetStream refuses the broker's stream")
        assert "subjects overlap" in line, line


async def _squat_the_state_subject(url: str) -> None:
    import nats

    client = await nats.connect(url)
    try:
        subjects = Layout(DEFAULT_NAME).message_subjects  # the messages stream's
        await client.jetstream().add_stream(name="SQUATTER", subjects=subjects)
    finally:
        await client.close()


def test_a_setup_dir_the_servers_do_not_have_is_one_line(tmp_path):
    """--credentials DIR of another setup than the servers': the broker's login is refused,
    said once, by the broker and by the credentials command alike."""
    pytest.importorskip("nkeys")
    status, config, _ = _credentials("setup", str(tmp_path / "theirs"))
    assert status == 0 and _credentials("setup", str(tmp_path / "other"))[0] == 0
    words = ("cannot log in to nats-server at", "Authorization Violation", "--credentials DIR")
    with JetStreamCluster(1, extra_config=config) as server:
        url = server.urls[0]
        status, out, err = _credentials(
            "list", "--credentials", str(tmp_path / "other"), "--nats", url
        )
        assert status == 1 and err.count("\n") == 1 and all(w in err for w in words), err
        broker = DevBroker(
            "--nats", url, "--store", "jetstream", "--credentials", str(tmp_path / "other"),
            wait=False,
        )  # fmt: skip
        _one_line_error(broker, *words)
        status, out, _ = _credentials(
            "list", "--credentials", str(tmp_path / "theirs"), "--nats", url
        )
        assert status == 0 and out.split()[0] == "NAME"


def test_a_broker_started_while_one_server_is_down_serves_the_stream_already_made():
    """The stream exists (R3): a broker (re)started while one of the three servers is away
    serves on the two left, as JetStream does, rather than waiting for the third."""
    with JetStreamCluster(3) as cluster:
        nats = ",".join(cluster.urls)
        first = DevBroker("--nats", nats, "--store", "jetstream", "--no-search", wait=False)
        wait_serving(first)
        asyncio.run(_send_and_fetch(cluster.urls[1]))
        assert first.stop() == 0
        cluster.servers[2].stop()
        with DevBroker("--nats", nats, "--store", "jetstream", "--no-search",
                       wait=False) as again:  # fmt: skip
            wait_serving(again)
            assert not [x for x in again.stderr if "servers (it has" in x], again.output()
            asyncio.run(_kept(cluster.urls[0]))  # what the first one stored, served


async def _kept(url: str) -> None:
    import nats

    client = await nats.connect(url)
    try:
        listed = await request_ok(client, p.query_subject("ops.box"), {})
        assert [m["payload"] for m in listed["messages"]] == ["hello"]
    finally:
        await client.close()
