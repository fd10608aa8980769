"""``python -m mq9_broker`` run as users run it: a subprocess that starts nats-server,
prints how to connect, serves the protocol, and stops cleanly (with its nats-server) on a signal.

Requests go out raw with nats-py, so these tests check the broker on the wire, not a client.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import nats
import pytest

from mq9_broker.cli.dev_broker import build_parser, main
from mq9_broker.storage import DEFAULT_FILE_NAME, data_file
from mq9_wire import protocol as p
from mq9_wire.protocol.errors import from_reply
from testbed.nats_server import start_nats_server
from testbed.ports import silent_port, unclaimed_port
from testbed.support.devbroker_helpers import DevBroker, port_open, process_alive, wait_until

pytestmark = pytest.mark.slow


class Wire:
    """Raw mq9 requests over one nats-py connection."""

    def __init__(self, connection) -> None:
        self.connection = connection

    @classmethod
    async def connect(cls, url: str) -> Wire:
        return cls(await nats.connect(url))

    async def close(self) -> None:
        await self.connection.close()

    async def __aenter__(self) -> Wire:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    async def call(self, subject: str, body: bytes | dict = b"", headers=None) -> dict:
        if isinstance(body, dict):
            body = p.encode(body)
        reply = await self.connection.request(subject, body, timeout=5, headers=headers)
        return json.loads(reply.data)

    async def ok(self, subject: str, body: bytes | dict = b"", headers=None) -> dict:
        reply = await self.call(subject, body, headers)
        assert reply["error"] == "", reply
        return reply

    async def send(self, box: str, payload: str, headers: dict | None = None) -> int:
        return (await self.ok(p.send_subject(box), payload.encode(), headers))["msg_id"]

    async def fetch(self, box: str, **body) -> list[dict]:
        body.setdefault("config", {"max_wait_ms": 0})
        return (await self.ok(p.fetch_subject(box), body))["messages"]

    async def ack(self, box: str, group: str, msg_id: int) -> None:
        await self.ok(
            p.ack_subject(box), {"group_name": group, "mail_address": box, "msg_id": msg_id}
        )


def texts(messages: list[dict]) -> list[str]:
    return [m["payload"] for m in messages]


CARD = {
    "name": "translator",
    "description": "translates documents",
    "version": "1.0.0",
    "defaultInputModes": ["text/plain"],
    "defaultOutputModes": ["text/plain"],
    "skills": [
        {"id": "t", "name": "translate", "description": "translation", "tags": ["language"]}
    ],
}


async def exercise_the_protocol(url: str) -> None:
    """A representative tour: every command, priorities, a group and its ACKs, the registry."""
    async with await Wire.connect(url) as wire:
        inbox = (await wire.ok(p.MAILBOX_CREATE, {"name": "team.inbox"}))["mail_address"]
        private = (await wire.ok(p.MAILBOX_CREATE, {"ttl": 3600}))["mail_address"]
        assert len(private) == 20 and private != inbox
        assert await wire.call(p.MAILBOX_CREATE, {"name": "team.inbox"}) == {
            "error": "mailbox team.inbox already exists"
        }

        for text, priority in [
            ("n1", "normal"),
            ("c1", "critical"),
            ("u1", "urgent"),
            ("n2", "normal"),
        ]:
            await wire.send(inbox, text, {"mq9-priority": priority})
        await wire.send(inbox, '{"state": 1}', {"mq9-key": "status", "mq9-tags": "ops"})
        status_id = await wire.send(inbox, '{"state": 2}', {"mq9-key": "status"})

        batch = await wire.fetch(
            inbox,
            group_name="workers",
            deliver="earliest",
            config={"num_msgs": 1, "max_wait_ms": 0},
        )
        assert texts(batch) == ["c1"]  # num_msgs per lane: the critical lane fills it
        await wire.ack(inbox, "workers", 0)  # n1, the lowest msg_id: every lane moves to 1
        rest = await wire.fetch(inbox, group_name="workers")
        assert texts(rest) == ["c1", "u1", "n2", '{"state": 2}']
        await wire.ack(inbox, "workers", status_id)
        assert await wire.fetch(inbox, group_name="workers") == []
        # another group starts over, independently
        assert len(await wire.fetch(inbox, group_name="audit", deliver="earliest")) == 5

        [status] = (await wire.ok(p.query_subject(inbox), {"key": "status"}))["messages"]
        assert (status["msg_id"], status["payload"]) == (status_id, '{"state": 2}')
        assert await wire.ok(p.delete_subject(inbox, status_id)) == {"error": "", "deleted": True}
        assert (await wire.ok(p.query_subject(inbox), {"key": "status"}))["messages"] == []
        assert await wire.ok(p.delete_subject(inbox, status_id)) == {"error": "", "deleted": True}

        await wire.ok(p.AGENT_REGISTER, CARD)
        await wire.ok(p.AGENT_REGISTER, {"name": "planner", "payload": f"mq9://{private}"})
        await wire.ok(p.AGENT_REPORT, {"name": "translator", "report_info": "idle"})
        [found] = (await wire.ok(p.AGENT_DISCOVER, {"text": "translates"}))["agents"]
        assert found["name"] == "translator" and json.loads(found["agent_info"]) == CARD
        await wire.ok(p.AGENT_UNREGISTER, {"name": "planner"})
        agents = (await wire.ok(p.AGENT_DISCOVER))["agents"]
        assert [a["name"] for a in agents] == ["translator"]


async def test_in_memory_broker_serves_the_protocol_and_sigterm_stops_it_and_nats(tmp_path):
    with DevBroker("--port", "0") as broker:  # (0: the port nats-server was given, read back)
        port = broker.port
        url = f"nats://127.0.0.1:{port}"
        assert port != 0 and port_open(port)
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
    port = unclaimed_port()
    data = tmp_path / "state.sqlite3"
    with DevBroker("--port", str(port), "--data", str(data)) as broker:
        assert f"storage: {data}" in "\n".join(broker.stdout)
        await exercise_the_protocol(broker.url)
        async with await Wire.connect(broker.url) as wire:
            await wire.send("team.inbox", "late", {"mq9-priority": "urgent"})

        # a second broker on the same data file, or on the same nats-server, would split the
        # state: both are refused before they serve anything
        with DevBroker("--port", "0", "--data", str(data), wait=False) as second:
            assert second.wait_exit() == 1
            assert "in use by another mq9 dev broker" in "\n".join(second.stderr)
        with DevBroker("--nats", broker.url, wait=False) as third:
            assert third.wait_exit() == 1
            assert "an mq9 broker already serves" in "\n".join(third.stderr)

        assert broker.stop(signal.SIGINT) == 0, broker.output()  # Ctrl-C
        wait_until(lambda: not port_open(port), 5, "the port is closed")

    with DevBroker("--port", str(port), "--data", str(data)) as broker:
        banner = "\n".join(broker.stdout)
        assert "restored 2 mailboxes, 5 messages, 0 delayed messages" in banner
        assert "3 group offsets, 1 agents" in banner  # workers: three lanes; audit never acked
        async with await Wire.connect(broker.url) as wire:
            # the group resumes where it was: only what came after its last ACK
            assert texts(await wire.fetch("team.inbox", group_name="workers")) == ["late"]
            reply = await wire.call(p.MAILBOX_CREATE, {"name": "team.inbox"})
            assert reply == {"error": "mailbox team.inbox already exists"}
            agents = (await wire.ok(p.AGENT_DISCOVER))["agents"]
            assert [a["name"] for a in agents] == ["translator"]
            [found] = (await wire.ok(p.AGENT_DISCOVER, {"semantic": "translation"}))["agents"]
            assert found["name"] == "translator"  # the search index came back too
        assert broker.stop() == 0


async def test_limits_from_the_command_line():
    args = ["--max-mailboxes", "2", "--max-messages", "3", "--max-payload", "4096"]
    args += ["--max-agents", "1", "--max-card-bytes", "200", "--max-groups", "0"]
    args += ["--max-agents-per-sender", "2"]  # (#106) an agent's share, with --credentials
    with DevBroker("--port", "0", *args) as broker:
        assert (
            "limits: max payload 4096 bytes, mailboxes 2, messages per mailbox 3, agents 1 "
            "(2 an agent with --credentials; cards up to 200 bytes), groups no limit"
        ) in "\n".join(broker.stdout)
        async with await Wire.connect(broker.url) as wire:
            await wire.ok(p.MAILBOX_CREATE, {"name": "one"})
            await wire.ok(p.MAILBOX_CREATE, {"name": "two"})
            reply = await wire.call(p.MAILBOX_CREATE, {"name": "three"})
            assert "at most 2 mailboxes" in reply["error"]
            reply = await wire.call(p.send_subject("one"), b"x" * 4000)
            assert reply["error"].startswith("message too large"), reply
            for i in range(3):
                await wire.send("one", f"m{i}")
            reply = await wire.call(p.send_subject("one"), b"m3")
            assert "is full: it holds at most 3 messages" in reply["error"]
            card = {"name": "a", "payload": "x" * 300}
            reply = await wire.call(p.AGENT_REGISTER, card)
            assert "above the 200 bytes this broker keeps per agent" in reply["error"], reply
            await wire.ok(p.AGENT_REGISTER, {"name": "a", "payload": "small"})
            reply = await wire.call(p.AGENT_REGISTER, {"name": "b", "payload": "small"})
            assert "at most 1 agents" in reply["error"], reply
            # no leases: an unacked message is handed out again at once
            await wire.send("two", "only")
            for _ in range(2):
                assert texts(await wire.fetch("two", group_name="g", deliver="earliest")) == [
                    "only"
                ]
        assert broker.stop() == 0


async def test_answers_use_the_nats_servers_max_payload():
    """The started nats-server carries 64 MiB, so answers may hold many big messages while one
    message stays within --max-payload (1 MiB); on a nats-server of one's own (--nats), answers
    are as large as that server allows, and at most half the 64 MiB it queues for a
    connection (#88: one answer of 64 MiB would have the client's connection closed)."""
    big = "b" * 700_000
    with DevBroker("--port", "0") as broker:
        assert "answers: up to 33554432 bytes (the nats-server's max_payload, at most half" in (
            "\n".join(broker.stdout)
        )
        assert not any("Maximum payloads" in line for line in broker.stderr), broker.output()
        async with await Wire.connect(broker.url) as wire:
            assert wire.connection.max_payload == 64 * 1024 * 1024
            await wire.ok(p.MAILBOX_CREATE, {"name": "big"})
            for _ in range(3):
                await wire.send("big", big)
            reply = await wire.call(p.send_subject("big"), b"x" * (p.DEFAULT_MAX_PAYLOAD + 1))
            assert reply["error"].startswith("message too large"), reply
            batch = await wire.fetch("big", group_name="g", deliver="earliest")
            assert [len(m["payload"]) for m in batch] == [700_000] * 3  # a 2.1 MB answer
        assert broker.stop() == 0
    with start_nats_server() as own, DevBroker("--nats", own.url) as broker:
        assert "answers: up to 1048576 bytes" in "\n".join(broker.stdout)
        async with await Wire.connect(broker.url) as wire:
            await wire.ok(p.MAILBOX_CREATE, {"name": "big"})
            for _ in range(3):
                await wire.send("big", big)
            body = {"group_name": "g", "deliver": "earliest", "config": {"max_wait_ms": 0}}
            reply = await wire.call(p.fetch_subject("big"), body)
            assert from_reply(reply["error"]).fits == 1, reply
        assert broker.stop() == 0


def test_help_names_only_options_that_exist(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for option in (
        "--host",
        "--port",
        "--nats",
        "--data",
        "--sync",
        "--max-mailboxes",
        "--max-messages",
        "--max-payload",
        "--max-card-bytes",
        "--max-agents",
        "--max-groups",
        "--answer-rate",
        "--log-level",
    ):
        assert option in text
    assert "max_payload" in text and "64 MiB" in text  # what bounds an answer
    for gone in ("ack-wait", "lease", "base64"):
        assert gone not in text
    options = {o for action in build_parser()._actions for o in action.option_strings}
    assert "--ack-wait" not in options


def test_data_path_rule(tmp_path):
    # a new path without a suffix is a directory (issue #15: ./mq9-data became a file)
    assert data_file(tmp_path / "mq9-data") == tmp_path / "mq9-data" / DEFAULT_FILE_NAME
    assert data_file(f"{tmp_path}/new/") == tmp_path / "new" / DEFAULT_FILE_NAME
    assert data_file(tmp_path) == tmp_path / DEFAULT_FILE_NAME  # an existing directory
    # a suffix .sqlite3/.db, or an existing file, is the file itself
    for name in ("state.sqlite3", "state.db"):
        assert data_file(tmp_path / name) == tmp_path / name
    existing = tmp_path / "plainfile"
    existing.write_bytes(b"")
    assert data_file(existing) == existing


def test_help_states_the_data_path_rule(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "does not exist and has no suffix" in text and DEFAULT_FILE_NAME in text
    assert "existing file or has a suffix" in text


async def test_data_without_a_suffix_becomes_a_directory(tmp_path):
    data = tmp_path / "mq9-data"
    with DevBroker("--port", "0", "--data", str(data)) as broker:
        assert data.is_dir()
        assert (data / DEFAULT_FILE_NAME).is_file()
        assert f"storage: {data / DEFAULT_FILE_NAME}" in "\n".join(broker.stdout)
        assert broker.stop(signal.SIGTERM) == 0, broker.output()


def test_version_is_printed_as_pyproject_declares_it(capsys):
    # langchain_mq9/_version.py writes it a second time: the two must agree
    pyproject = (Path(__file__).resolve().parents[4] / "pyproject.toml").read_text("utf-8")
    declared = re.search(r'^version = "([^"]+)"', pyproject, re.M).group(1)
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"mq9-dev-broker {declared}"


def test_the_broker_stops_loudly_when_its_nats_server_dies():
    with DevBroker("--port", "0") as broker:
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
    with DevBroker("--nats", f"nats://127.0.0.1:{silent_port()}", wait=False) as broker:
        assert broker.wait_exit() == 1
        assert "cannot connect to nats-server" in "\n".join(broker.stderr)


@pytest.mark.parametrize(
    "argv",
    [
        ["--port", "-1"],
        ["--port", "70000"],
        ["--ack-wait", "30"],  # leases are gone, and the option with them
        ["--max-payload", "0"],
        ["--max-messages", "-1"],
        ["--sync", "sometimes"],
        ["--answer-rate", "-1"],
        ["--answer-rate", "fast"],
    ],
)
def test_bad_arguments_are_refused_before_anything_starts(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert "mq9-dev-broker: error: argument" in error or "unrecognized arguments" in error
