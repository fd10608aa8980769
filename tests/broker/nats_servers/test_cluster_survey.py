"""#61 item 5: the replica count follows the servers the cluster tells of, each counted once,
never how many times the URLs name them (cluster.py); a server's INFO is read without a login;
an unreachable or misspelt URL is one line."""

from __future__ import annotations

import asyncio
import re

import pytest

from mq9_broker.nats_servers.survey import (
    ClusterError,
    Waiting,
    check_urls,
    distinct,
    read_info,
    replicas_for,
    servers_told,
    survey,
)
from testbed.ports import silent_port, unclaimed_port
from testbed.support.jetstream_servers import JetStreamCluster
from testbed.support.waiting import until


def test_a_url_named_three_times_is_one_server():
    urls = check_urls("nats://127.0.0.1:4222, nats://127.0.0.1:4222,nats://127.0.0.1")
    assert len(urls) == 3
    assert distinct(urls) == 1  # no port is nats' 4222
    assert distinct(["nats://a:4222", "nats://b:4222", "tls://c:4222"]) == 3


@pytest.mark.parametrize(
    ("info", "told", "replicas"),
    [
        ({}, 1, 1),  # a lone server: 1 whatever the URLs
        ({"connect_urls": ["h:1", "h:2", "h:3"]}, 1, 1),  # no cluster block: not clustered
        ({"cluster": "c"}, 1, 1),  # clustered, no route up yet
        ({"cluster": "c", "connect_urls": ["h:1", "h:2"]}, 2, 1),
        ({"cluster": "c", "connect_urls": ["h:1", "h:1", "h:1"]}, 1, 1),
        ({"cluster": "c", "connect_urls": ["h:1", "h:2", "h:3"]}, 3, 3),
        ({"cluster": "c", "connect_urls": [f"h:{n}" for n in range(5)]}, 5, 3),
    ],
)
def test_the_replicas_follow_the_servers_the_cluster_tells_of(info, told, replicas):
    assert servers_told(info) == told
    assert replicas_for(info) == replicas


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("nats//127.0.0.1:4222", "unsupported server URL 'nats//127.0.0.1:4222': use nats://"),
        ("http://127.0.0.1:4222", "unsupported server URL"),
        ("nats://127.0.0.1:42x", "its port is not a number"),
        ("nats://:4222", "it names no host"),
        ("", "unsupported server URL"),
        ("nats://user:secret@127.0.0.1:x", "'nats://user:***@127.0.0.1:x'"),
    ],
)
def test_a_misspelt_url_is_refused_in_the_clients_words(url, words):
    with pytest.raises(ClusterError, match=re.escape(words)) as err:
        check_urls(url)
    assert "\n" not in str(err.value) and "secret" not in str(err.value)


def test_unreachable_servers_are_one_line_at_once():
    dead = [f"nats://127.0.0.1:{silent_port()}" for _ in range(3)]
    with pytest.raises(ClusterError) as err:
        asyncio.run(survey(dead, "the servers"))
    assert str(err.value).startswith("cannot connect to nats-server at the servers: Connection")
    assert "\n" not in str(err.value)


def test_something_else_than_a_nats_server_is_said_so():
    async def run() -> None:
        async def talk(reader, writer) -> None:
            writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            await writer.drain()
            writer.close()

        port = unclaimed_port()
        server = await asyncio.start_server(talk, "127.0.0.1", port)
        async with server:
            with pytest.raises(ClusterError, match=r"not a nats-server: it said 'HTTP/1\.1 400"):
                await survey([f"nats://127.0.0.1:{port}"], "it")

    asyncio.run(run())


@pytest.mark.slow  # nats-server processes
def test_a_clustered_servers_info_tells_of_every_server_once_it_has_formed():
    with JetStreamCluster(3) as cluster:
        infos = asyncio.run(survey([*cluster.urls, cluster.urls[0]], "the cluster"))
        assert len(infos) == 3
        # the routes connect within a second or two; a hang guard
        told = until(lambda: _told(cluster.urls[0], 3), timeout=30, what="3 servers", every=0.1)
        assert asyncio.run(told)
    with JetStreamCluster(1) as lone:
        info = asyncio.run(read_info(lone.urls[0]))
        assert info["jetstream"] and not info.get("cluster")
        assert replicas_for(info) == 1


async def _told(url: str, servers: int) -> bool:
    """Whether the INFO of the server at ``url`` tells of ``servers`` servers."""
    return servers_told(await read_info(url)) >= servers


def test_a_wait_says_what_it_waits_for_once_and_gives_up_at_its_bound():
    now = [0.0]
    said: list[str] = []
    wait = Waiting(10, said.append, clock=lambda: now[0])
    wait.until("the leader")
    now[0] = 4
    wait.until("the leader")
    wait.until("3 servers")
    assert said == [
        "waiting for the leader (up to 10 s more)",
        "waiting for 3 servers (up to 6 s more)",
    ]
    now[0] = 10
    with pytest.raises(ClusterError, match="gave up after 10 s waiting for 3 servers"):
        wait.until("3 servers")


def test_a_short_commands_nats_complaints_are_one_line_each_and_go_no_further(capsys, monkeypatch):
    import logging

    from mq9_wire.command_line import nats_errors_in_one_line

    # a handler an earlier in-process command left on the root logger may hold a stream that
    # is closed by now (its test's capture): what goes further is logging's own last resort
    monkeypatch.setattr(logging.root, "handlers", [])
    try:
        raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 1)")
    except ConnectionRefusedError as exc:
        error = exc
    with nats_errors_in_one_line():
        logging.getLogger("nats.aio.client").error("nats: encountered error", exc_info=error)
    logging.getLogger("nats.aio.client").error("after: not ours to show")
    err = capsys.readouterr().err
    assert err.splitlines()[0] == (
        "ERROR nats.aio.client: nats: encountered error: ConnectionRefusedError: "
        "[Errno 111] Connect call failed ('127.0.0.1', 1)"
    )
    assert "Traceback" not in err
    assert logging.getLogger("nats").propagate and not logging.getLogger("nats").handlers
