"""``python -m langchain_mq9.broker`` run as users run it: a subprocess that starts nats-server,
prints how to connect, serves the protocol, and stops cleanly (with its nats-server) on a signal.
"""

from __future__ import annotations

import os
import signal

import pytest
from devbroker_helpers import DevBroker, port_open, process_alive, wait_until

from langchain_mq9 import Mq9Client, Mq9Error, Priority
from langchain_mq9.broker.cli import main
from langchain_mq9.broker.nats_process import free_port, start_nats_server


def texts(messages) -> list[str]:
    return [m.text() for m in messages]


async def exercise_the_protocol(url: str) -> None:
    """A representative tour: every command, priorities, a group with batch ACK, the registry."""
    async with Mq9Client(url) as client:
        inbox = await client.mailbox_create(name="team.inbox")
        private = await client.mailbox_create(ttl=3600)
        assert private.startswith("mb.") and private != inbox
        with pytest.raises(Mq9Error, match=r"mailbox team\.inbox already exists"):
            await client.mailbox_create(name="team.inbox")

        for text, priority in [
            ("n1", Priority.NORMAL),
            ("c1", Priority.CRITICAL),
            ("u1", Priority.URGENT),
            ("n2", Priority.NORMAL),
        ]:
            await client.send(inbox, text, priority=priority)
        await client.send(inbox, {"state": 1}, key="status", tags=["ops"])
        status_id = await client.send(inbox, {"state": 2}, key="status", tags=["ops"])

        batch = await client.fetch(
            inbox, group_name="workers", deliver="earliest", num_msgs=3, max_wait_ms=0
        )
        assert texts(batch) == ["c1", "u1", "n1"]
        await client.ack(inbox, "workers", batch[-1].msg_id)  # confirms the whole batch
        rest = await client.fetch(inbox, group_name="workers", max_wait_ms=0)
        assert [m.text() if m.key is None else m.json() for m in rest] == ["n2", {"state": 2}]
        await client.ack(inbox, "workers", rest[-1].msg_id)
        assert await client.fetch(inbox, group_name="workers", max_wait_ms=0) == []
        # another group starts over, independently
        assert len(await client.fetch(inbox, group_name="audit", deliver="earliest")) == 5

        [status] = await client.query(inbox, key="status")
        assert (status.msg_id, status.json(), status.tags) == (status_id, {"state": 2}, ["ops"])
        await client.delete(inbox, status_id)
        assert await client.query(inbox, key="status") == []
        with pytest.raises(Mq9Error, match="message not found"):
            await client.delete(inbox, status_id)

        await client.agent_register(
            {"mailbox": inbox, "name": "translator", "description": "translates documents"}
        )
        await client.agent_register({"mailbox": private, "name": "planner"})
        await client.agent_report({"mailbox": inbox, "status": "idle"})
        [found] = await client.agent_discover(text="translates")
        assert found["name"] == "translator" and found["report"] == {"status": "idle"}
        await client.agent_unregister(private)
        assert [a["name"] for a in await client.agent_discover()] == ["translator"]


async def test_in_memory_broker_serves_the_protocol_and_sigterm_stops_it_and_nats(tmp_path):
    port = free_port()
    with DevBroker("--port", str(port)) as broker:
        url = f"nats://127.0.0.1:{port}"
        assert broker.url == url
        banner = "\n".join(broker.stdout)
        assert "in memory only" in banner
        for hint in (f'Mq9Toolkit(server="{url}")', f"mq9-mcp --server {url}"):
            assert hint in banner
        assert broker.nats_pid is not None and process_alive(broker.nats_pid)

        await exercise_the_protocol(url)

        assert broker.stop(signal.SIGTERM) == 0, broker.output()
        assert "mq9 dev broker stopped" in broker.stderr, broker.output()
        assert not process_alive(broker.nats_pid)
        assert not port_open(port)


async def test_data_survives_a_clean_restart_and_a_second_broker_is_refused(tmp_path):
    port = free_port()
    data = tmp_path / "state.sqlite3"
    with DevBroker("--port", str(port), "--data", str(data)) as broker:
        assert f"storage: {data}" in "\n".join(broker.stdout)
        await exercise_the_protocol(broker.url)
        async with Mq9Client(broker.url) as client:
            await client.send("team.inbox", "late", priority=Priority.URGENT)

        # a second broker on the same data file, or on the same nats-server, would split the
        # state: both are refused before they serve anything
        with DevBroker("--port", str(free_port()), "--data", str(data), wait=False) as second:
            assert second.wait_exit() == 1
            assert "in use by another mq9 dev broker" in "\n".join(second.stderr)
        with DevBroker("--nats", broker.url, wait=False) as third:
            assert third.wait_exit() == 1
            assert "an mq9 broker already serves" in "\n".join(third.stderr)

        assert broker.stop(signal.SIGINT) == 0, broker.output()  # Ctrl-C
        wait_until(lambda: not port_open(port), 5, "the port is closed")

    with DevBroker("--port", str(port), "--data", str(data)) as broker:
        assert "restored 2 mailboxes, 5 messages" in "\n".join(broker.stdout)
        async with Mq9Client(broker.url) as client:
            # the group resumes where it was: only what came after its last ACK
            assert texts(await client.fetch("team.inbox", group_name="workers")) == ["late"]
            with pytest.raises(Mq9Error, match="already exists"):
                await client.mailbox_create(name="team.inbox")
            assert [a["name"] for a in await client.agent_discover()] == ["translator"]
        assert broker.stop() == 0


async def test_limits_from_the_command_line():
    args = ["--max-mailboxes", "2", "--max-messages", "3", "--max-payload", "4096"]
    with DevBroker("--port", str(free_port()), "--ack-wait", "0.5", *args) as broker:
        assert "ack-wait 0.5s, max payload 4096 bytes, mailboxes 2, messages per mailbox 3" in (
            "\n".join(broker.stdout)
        )
        async with Mq9Client(broker.url) as client:
            await client.mailbox_create(name="one")
            await client.mailbox_create(name="two")
            with pytest.raises(Mq9Error, match="at most 2 mailboxes"):
                await client.mailbox_create(name="three")
            with pytest.raises(Mq9Error, match="accepts at most"):
                await client.send("one", b"x" * 4000)
            for i in range(3):
                await client.send("one", f"m{i}")
            with pytest.raises(Mq9Error, match="is full: it holds at most 3 messages"):
                await client.send("one", "m3")

            await client.send("two", "only")
            [leased] = await client.fetch("two", group_name="g", deliver="earliest")
            # not acked: after the half-second ack-wait the same message is handed out again
            again: list = []

            async def redelivered() -> bool:
                again[:] = await client.fetch("two", group_name="g", max_wait_ms=50)
                return bool(again) and again[0].msg_id == leased.msg_id

            for _ in range(200):  # bounded: at most about 10 s
                if await redelivered():
                    break
                assert again == [], "handed out again while still leased"
            assert again and again[0].msg_id == leased.msg_id
        assert broker.stop() == 0


def test_the_broker_stops_loudly_when_its_nats_server_dies():
    with DevBroker("--port", str(free_port())) as broker:
        os.kill(broker.nats_pid, signal.SIGKILL)
        assert broker.wait_exit() == 1
        assert any("nats-server exited" in line for line in broker.stderr), broker.output()


def test_a_taken_port_is_refused_with_a_hint():
    with start_nats_server() as other:
        with DevBroker("--port", str(other.port), wait=False) as broker:
            assert broker.wait_exit() == 1
            error = "\n".join(broker.stderr)
        assert f"something already listens on 127.0.0.1:{other.port}" in error
        assert f"--nats nats://127.0.0.1:{other.port}" in error
        assert port_open(other.port)  # the other server was left alone


def test_nothing_to_attach_to_is_a_clear_error():
    with DevBroker("--nats", f"nats://127.0.0.1:{free_port()}", wait=False) as broker:
        assert broker.wait_exit() == 1
        assert "cannot connect to nats-server" in "\n".join(broker.stderr)


@pytest.mark.parametrize(
    "argv",
    [
        ["--port", "0"],
        ["--port", "70000"],
        ["--ack-wait", "0"],
        ["--ack-wait", "soon"],
        ["--max-messages", "-1"],
        ["--sync", "sometimes"],
    ],
)
def test_bad_arguments_are_refused_before_anything_starts(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert "mq9-dev-broker: error: argument" in capsys.readouterr().err
