"""``mq9-a2a-gateway`` as a process: an a2a-sdk client calls an offline mq9 agent through it and
gets the result once the agent starts; bad configuration is one line, never a traceback."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest
from a2a.client import ClientConfig, ClientFactory
from a2a.client.card_resolver import A2ACardResolver
from a2a.types.a2a_pb2 import Message, Part, Role, SendMessageRequest, TaskState

from mq9_platform._http.tokens_file import digest_line
from mq9_platform.a2a.server import AgentServer
from testbed.ports import unclaimed_port
from testbed.support.a2a_support import text_graph, text_io
from testbed.support.waiting import until
from tests.langchain.a2a.test_gateway import until_stopped

pytestmark = pytest.mark.slow  # the gateway's process per test

GATEWAY = [sys.executable, "-m", "mq9_platform.a2a.gateway.cli"]


def start(args: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [*GATEWAY, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


@pytest.mark.slow
async def test_the_gateway_process_serves_an_offline_agent(nats_broker, tmp_path):
    """Its tokens file holds a line a tenant in mq9-mcp's format (issue #117: it read only
    JSON of raw tokens)."""
    token = secrets.token_hex(16)
    tokens = tmp_path / "tokens"
    tokens.write_text(digest_line("app", token) + "\n")
    port = unclaimed_port()
    process = start(
        [
            "--server", nats_broker.url, "--agent", "agent.echo",
            "--listen", f"127.0.0.1:{port}", "--tokens-file", str(tokens),
        ]
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/a2a/agent.echo"
    try:
        async with httpx.AsyncClient(
            headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as http:
            deadline = time.monotonic() + 60  # a hang guard: the process imports a2a-sdk
            while True:
                try:
                    card = await A2ACardResolver(http, url).get_agent_card()
                    break
                except Exception:
                    assert process.poll() is None, process.communicate()[1].decode()
                    assert time.monotonic() < deadline, "the gateway never served its card"
                    await asyncio.sleep(0.2)
            config = ClientConfig(httpx_client=http, streaming=False, polling=True)
            a2a = ClientFactory(config).create(card)
            msg = Message(message_id="m1", role=Role.ROLE_USER, parts=[Part(text="offline")])
            events = [e async for e in a2a.send_message(SendMessageRequest(message=msg))]
            task = events[-1].task
            assert task.status.state == TaskState.TASK_STATE_SUBMITTED
            async with nats_broker.client() as client:
                agent = AgentServer(
                    text_graph(str.upper), name="agent.echo", client=client, **text_io()
                )
                async with agent:
                    done = await until_stopped(a2a, task.id)
            assert done.artifacts[0].parts[0].text == "OFFLINE"
    finally:
        process.terminate()
        process.wait(15)


def test_bad_configuration_is_one_line(tmp_path):
    weak = tmp_path / "weak.json"
    weak.write_text(json.dumps({"app": "short"}))
    garbled = tmp_path / "tokens"
    garbled.write_text("app: not-a-digest\n")
    for args in (
        ["--server", "nats://127.0.0.1:9", "--agent", "a", "--tokens-file", str(weak)],
        ["--server", "nats://127.0.0.1:9", "--agent", "a", "--tokens-file", str(garbled)],
        ["--server", "nats://127.0.0.1:9", "--agent", "a", "--tokens-file", "/nonexistent"],
    ):
        process = start(args)
        _out, err = process.communicate(timeout=60)
        assert process.returncode != 0
        text = err.decode().strip()
        assert "Traceback" not in text and text.startswith("mq9-a2a-gateway:"), text
        assert len(text.splitlines()) == 1


@pytest.mark.slow  # a dev broker process and the gateway's
async def test_the_gateway_process_runs_under_its_own_credential(tmp_path):
    """On a --credentials broker, with MQ9_CREDENTIAL of its own (#70): it used to exit with
    "CREATE refused: mailbox 'agent.echo' belongs to another agent" (it made every agent's
    mailbox); now it serves, and a call through it completes."""
    from mq9_platform import Mq9Client
    from testbed.support.credentials_support import EnforcingBroker

    broker = EnforcingBroker(tmp_path / "data", "echo", "gw")
    token = secrets.token_hex(16)
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"app": token}))
    port = unclaimed_port()
    env = {**os.environ, "MQ9_CREDENTIAL": broker.credentials["gw"]}
    env.pop("MQ9_CREDENTIAL_FILE", None)
    try:
        async with Mq9Client(broker.url, credential=broker.credentials["echo"]) as client:
            agent = AgentServer(text_graph(str.upper), name="agent.echo", client=client,
                                **text_io())  # fmt: skip
            async with agent:
                process = start(
                    [
                        "--server", broker.url, "--agent", "agent.echo",
                        "--listen", f"127.0.0.1:{port}", "--tokens-file", str(tokens),
                    ],
                    env,
                )  # fmt: skip
                try:
                    url = f"http://127.0.0.1:{port}/a2a/agent.echo"
                    async with httpx.AsyncClient(
                        headers={"Authorization": f"Bearer {token}"}, timeout=30
                    ) as http:
                        a2a = await _served_client(http, url, process)
                        msg = Message(message_id="m1", role=Role.ROLE_USER, parts=[Part(text="hi")])
                        events = [
                            e async for e in a2a.send_message(SendMessageRequest(message=msg))
                        ]
                        done = await until_stopped(a2a, events[-1].task.id)
                    assert done.artifacts[0].parts[0].text == "HI"
                finally:
                    process.terminate()
                    _out, err = process.communicate(timeout=15)
                assert b"Traceback" not in err, err.decode()
    finally:
        broker.stop()


async def _served_client(http: httpx.AsyncClient, url: str, process: subprocess.Popen):
    """An a2a-sdk client of the gateway process once it serves its card (a hang guard: 60 s,
    the process imports a2a-sdk)."""

    async def served_card() -> Any:
        try:
            return await A2ACardResolver(http, url).get_agent_card()
        except Exception:
            assert process.poll() is None, process.communicate()[1].decode()
            return None

    card = await until(served_card, timeout=60, what="the gateway's card", every=0.2)
    return ClientFactory(ClientConfig(httpx_client=http, streaming=False, polling=True)).create(
        card
    )
