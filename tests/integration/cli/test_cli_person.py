"""#91 item 4: ``mq9`` speaks to a person. An outage (a cluster without a quorum, a broker or
store that does not answer, nothing serving) exits 4 in one line saying what is down and that a
retry may work, never 1 "refused" with JetStream's raw words; a hint names the command line's
commands (``mq9 discover``), never the catalog's tools, whose words are a model's; a JSON
payload prints as JSON. On the in-process broker (memory://), the bundled broker served on a
real nats-server, and a real three-server JetStream cluster that loses two servers."""

from __future__ import annotations

import asyncio
import json
import uuid

import nats
import pytest
from click.testing import CliRunner

from mq9_broker import Broker
from mq9_broker.config import BrokerConfig
from mq9_cli.app import cli
from mq9_cli.connect import UNREACHABLE, failure
from mq9_platform import Mq9Client
from mq9_platform.operations.catalog import OPERATIONS
from mq9_wire import protocol as p
from mq9_wire.protocol.error_texts import STORE_OUTAGE
from mq9_wire.protocol.errors import from_reply
from testbed.support.jetstream_servers import FORMING, JetStreamCluster
from tests.integration.cli.test_cli import mq9, served

TOOLS = tuple(OPERATIONS)  # the catalog's tool names: a model's, never in a person's line


def run(*argv: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(argv), input=stdin, prog_name="mq9")
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def speaks_to_a_person(err: str) -> str:
    """``err`` is one ``mq9:`` line naming no tool of the catalog; the line."""
    [line] = err.splitlines()
    assert line.startswith("mq9: "), line
    named = [tool for tool in TOOLS if tool in line]
    assert named == [], line
    return line


def the_memory_lane() -> None:
    server = f"memory://person{uuid.uuid4().hex[:8]}"
    code, _, err = run("--server", server, "register", "agent.greeter", "--capabilities", "greets")
    assert code == 0, err
    code, out, err = run("--server", server, "send", "no.such.box", "hi")
    assert code == 3, err
    line = speaks_to_a_person(err)
    assert "mq9 discover" in line and "mq9 agents" in line, line
    code, _, err = run("--server", server, "query", "no.such.box")
    assert code == 3 and "`mq9 agents` shows each agent's mailbox" in speaks_to_a_person(err)
    sent = '{"text": "good morning"}'
    assert run("--server", server, "send", "agent.greeter", stdin=sent)[0] == 0
    for command in (["query", "agent.greeter"], ["fetch", "agent.greeter"]):
        code, out, err = run("--server", server, *command)
        assert code == 0, err
        assert sent in out and "{'text'" not in out, out


def test_on_the_in_process_broker_hints_name_commands_and_json_prints_as_json():
    the_memory_lane()


@pytest.mark.slow  # a nats-server
async def test_on_a_dev_broker_hints_name_commands_and_json_prints_as_json(nats_server):
    async with served("bundled", nats_server.url) as url, Mq9Client(url) as client:
        await client.mailbox_create(name="agent.greeter")
        code, _, err = await mq9(url, "send", "no.such.box", "hi")
        assert code == 3 and "mq9 discover" in speaks_to_a_person(err)
        sent = '{"text": "good morning", "n": [1, 2]}'
        await client.send("agent.greeter", sent)
        code, out, _ = await mq9(url, "query", "agent.greeter")
        assert code == 0 and sent in out and "{'text'" not in out, out
        code, out, _ = await mq9(url, "query", "agent.greeter", "--json")
        assert json.loads(out)["messages"][0]["payload"] == json.loads(sent)  # JSON for scripts


@pytest.mark.slow  # a nats-server
async def test_nothing_serving_and_no_answer_are_outages_a_retry_may_end(nats_server):
    # no broker on the nats-server: nobody answers mq9's subjects
    code, _, err = await mq9(nats_server.url, "query", "team.box")
    line = speaks_to_a_person(err)
    assert code == UNREACHABLE and "no mq9 broker is serving" in line, line
    assert "a retry may work" in line, line
    # something takes the requests and never answers: the client's deadline passes
    connection = await nats.connect(nats_server.url)
    try:
        async def swallowed(_message) -> None:  # taken, never answered
            return None

        await connection.subscribe("$mq9.AI.>", cb=swallowed)
        await connection.flush()
        argv = ["--server", nats_server.url, "--timeout", "0.5", "send", "team.box", "hi"]
        code, _, err = await asyncio.to_thread(run, *argv)
        line = speaks_to_a_person(err)
        assert code == UNREACHABLE and "did not answer within" in line, line
        assert "a retry may work" in line and "`mq9 query team.box`" in line, line
    finally:
        await connection.close()


def test_each_store_outage_text_reads_as_an_outage_and_a_refusal_stays_one():
    for words in STORE_OUTAGE:
        said = failure(from_reply(f"JetStream refused STREAM.MSG.GET.KV_X: {words}"))
        assert said.code == UNREACHABLE and "a retry may work" in str(said), str(said)
    refused = failure(from_reply("JetStream refused STREAM.MSG.GET.KV_X: insufficient resources"))
    assert refused.code == 1  # a store that will not, rather than cannot for now


@pytest.mark.slow  # three nats-servers, two of them killed
async def test_a_cluster_without_a_quorum_is_an_outage_not_a_refusal():
    with JetStreamCluster(3) as servers:
        config = BrokerConfig(
            nats=servers.urls[0], store="jetstream", stream=f"CLI{uuid.uuid4().hex[:10]}",
            replicas=3, search=False, cluster_wait=FORMING,
        )  # fmt: skip
        async with Broker(config, say=lambda _: None):
            url = servers.urls[0]
            async with Mq9Client(url, request_timeout=60) as client:
                await client.mailbox_create(name="team.box")
                await client.send("team.box", "before")
            servers.servers[1].kill()
            servers.servers[2].kill()
            for command in (["send", "team.box", "after"], ["query", "team.box"]):
                code, out, err = await mq9(url, *command)
                for _ in range(20):
                    if command[0] != "query" or code != 0:
                        break
                    # The surviving server answers reads from its replica until it learns the
                    # leader is gone (direct gets): what was stored, then the outage.
                    assert "before" in out and err == "", (out, err)
                    await asyncio.sleep(0.5)
                    code, out, err = await mq9(url, *command)
                line = speaks_to_a_person(err)
                assert code == UNREACHABLE and out == "", (command, line)
                assert "JetStream store cannot answer for now" in line, line
                assert "a retry may work" in line, line


def test_robustmq_s_lost_mailbox_and_a_send_stored_anyway_each_say_what_to_do():
    """(#100) A mailbox whose first CREATEs crossed, and a SEND RobustMQ stored before it
    failed: one line each, saying the one thing a person should do, never "retry"."""
    send = p.send_subject("team.box")
    lost = str(failure(from_reply("Shard dc5bfpajueqq1c8il6k0-0 does not exist", send)))
    assert "use another name" in lost and "\n" not in lost, lost
    text = "offset state not found for shard x-0, shard may not be initialized"
    stored = str(failure(from_reply(text, send), operation="send_message", mailbox="team.box"))
    assert "do not send it again" in stored and "retry" not in stored, stored
