"""``mq9-a2a-gateway --credential-file FILE`` (#78): on a broker that enforces per-agent
credentials (``mq9-dev-broker --credentials``) the gateway logs in with the credential the file
holds (none in its environment) and a call through it completes; a file that holds no
credential, or none at all, stops it at start with one line naming the option."""

from __future__ import annotations

import os
import secrets

import httpx
import pytest
from a2a.types.a2a_pb2 import Message, Part, Role, SendMessageRequest

from mq9_platform import Mq9Client
from mq9_platform._http.tokens_file import digest_line
from mq9_platform.a2a.server import AgentServer
from testbed.ports import silent_port, unclaimed_port
from testbed.support.a2a_support import text_graph, text_io
from testbed.support.credentials_support import EnforcingBroker
from tests.integration.a2a.test_gateway_cli import _served_client, start
from tests.langchain.a2a.test_gateway import until_stopped

pytestmark = pytest.mark.slow  # a dev broker process and the gateway's

NO_CREDENTIAL_ENV = ("MQ9_CREDENTIAL", "MQ9_CREDENTIAL_FILE")


def _env() -> dict[str, str]:
    """This environment without a credential: the gateway's is the file's alone."""
    return {k: v for k, v in os.environ.items() if k not in NO_CREDENTIAL_ENV}


async def test_the_gateway_logs_in_with_its_credential_file(tmp_path):
    broker = EnforcingBroker(tmp_path / "data", "echo", "gw")
    (tmp_path / "gw.credential").write_text(broker.credentials["gw"] + "\n")
    token = secrets.token_hex(16)
    (tmp_path / "tokens.json").write_text(digest_line("app", token) + "\n")
    port = unclaimed_port()
    try:
        async with Mq9Client(broker.url, credential=broker.credentials["echo"]) as client:
            agent = AgentServer(text_graph(str.upper), name="agent.echo", client=client,
                                **text_io())  # fmt: skip
            async with agent:
                process = start([
                    "--server", broker.url, "--credential-file", str(tmp_path / "gw.credential"),
                    "--agent", "agent.echo", "--listen", f"127.0.0.1:{port}",
                    "--tokens-file", str(tmp_path / "tokens.json"),
                ], _env())  # fmt: skip
                try:
                    url = f"http://127.0.0.1:{port}/a2a/agent.echo"
                    auth = {"Authorization": f"Bearer {token}"}
                    async with httpx.AsyncClient(headers=auth, timeout=30) as http:
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


def test_a_bad_credential_file_is_one_line_at_start(tmp_path):
    """Checked before anything connects: the broker named here does not exist."""
    (tmp_path / "tokens.json").write_text(digest_line("app", secrets.token_hex(16)) + "\n")
    (tmp_path / "two-words").write_text("gw secret\n")
    (tmp_path / "two-lines").write_text("gw:one\ngw:two\n")
    for bad in ("two-words", "two-lines", "missing"):
        process = start([
            "--server", f"nats://127.0.0.1:{silent_port()}", "--agent", "agent.echo",
            "--tokens-file", str(tmp_path / "tokens.json"),
            "--credential-file", str(tmp_path / bad),
        ], _env())  # fmt: skip
        _out, err = process.communicate(timeout=60)
        text = err.decode().strip()
        assert process.returncode != 0, (bad, text)
        assert len(text.splitlines()) == 1 and "Traceback" not in text, text
        assert text.startswith("mq9-a2a-gateway: --credential-file: "), text
        assert str(tmp_path / bad) in text, text
