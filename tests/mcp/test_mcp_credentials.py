"""mq9-mcp with an agent's mq9 credential (issue #53), on a broker that enforces them
(``mq9-dev-broker --credentials``): given by the environment or a file named by a flag, never
on the command line; its tools work for the agent, another agent's mailbox is refused by the
broker in words the MCP client reads, and a wrong credential says what to do without showing
the secret. Over stdio and HTTP, with the official MCP client."""

from __future__ import annotations

import os
import subprocess
import sys

import anyio
import httpx2 as httpx
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from testbed.support.credentials_support import EnforcingBroker
from testbed.support.mcp_support import (
    REQUEST_TIMEOUT,
    ROOT,
    fails,
    http_server,
    ok,
    server_env,
    stdio_session,
)

pytestmark = pytest.mark.slow  # a dev broker and an MCP server process per test


@pytest.fixture
def enforcing(tmp_path):
    broker = EnforcingBroker(tmp_path / "data", "alice", "bob")
    yield broker
    broker.stop()


def credential_file(tmp_path, credential: str) -> str:
    path = tmp_path / f"{credential.partition(':')[0]}.cred"
    path.write_text(credential + "\n")
    os.chmod(path, 0o600)
    return str(path)


async def test_stdio_with_a_credential_from_the_environment_or_a_file(enforcing, tmp_path):
    alice = enforcing.credentials["alice"]
    async with stdio_session("--server", enforcing.url, MQ9_CREDENTIAL=alice) as mcp:
        assert (await ok(mcp, "create_mailbox", name="alice.mcp"))["mail_address"] == "alice.mcp"
        await ok(mcp, "send_message", mail_address="alice.mcp", payload="for alice")
        fetched = await ok(mcp, "fetch_messages", mail_address="alice.mcp")
        assert [m["payload"] for m in fetched["messages"]] == ["for alice"]
    bob = credential_file(tmp_path, enforcing.credentials["bob"])
    async with stdio_session("--server", enforcing.url, "--credential-file", bob) as mcp:
        with anyio.fail_after(30):
            text = await fails(mcp, "fetch_messages", mail_address="alice.mcp")
        assert "FETCH refused: mailbox 'alice.mcp' belongs to another agent" in text
        await ok(mcp, "send_message", mail_address="alice.mcp", payload="from bob")  # SEND: anyone


async def test_a_wrong_credential_says_what_to_do_and_not_the_secret(enforcing):
    wrong = "alice:" + "W" * 43
    async with stdio_session("--server", enforcing.url, MQ9_CREDENTIAL=wrong) as mcp:
        with anyio.fail_after(30):
            text = await fails(mcp, "create_mailbox", name="alice.nope")
    assert "refused the credentials" in text and "'alice' (from MQ9_CREDENTIAL)" in text
    assert "MQ9_CREDENTIAL_FILE" in text and "W" * 43 not in text


def test_a_credential_file_that_is_no_credential_stops_the_server_naming_the_flag(tmp_path):
    path = tmp_path / "bad.cred"
    path.write_text("alice " + "S" * 43 + "\n")  # a space, not a colon
    command = [sys.executable, "-m", "mq9_mcp", "--server", "nats://127.0.0.1:4222",
               "--credential-file", str(path)]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=server_env(), capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip
    assert done.returncode == 2
    assert "--credential-file" in done.stderr and "<id>:<secret>" in done.stderr
    assert "S" * 43 not in done.stderr and "Traceback" not in done.stderr


async def test_http_with_a_credential_from_the_environment(enforcing):
    alice = enforcing.credentials["alice"]
    with http_server("--server", enforcing.url, MQ9_CREDENTIAL=alice) as url:
        async with (
            httpx.AsyncClient(timeout=httpx.Timeout(20, read=60)) as http,
            streamable_http_client(url, http_client=http) as (read, write),
            ClientSession(read, write, read_timeout_seconds=REQUEST_TIMEOUT) as mcp,
        ):
            await mcp.initialize()
            await ok(mcp, "create_mailbox", name="alice.http")
            await ok(mcp, "send_message", mail_address="alice.http", payload="over http")
            queried = await ok(mcp, "query_messages", mail_address="alice.http")
    assert [m["payload"] for m in queried["messages"]] == ["over http"]


async def test_events_of_another_agents_mailbox_are_refused_by_the_broker(enforcing):
    """MCP Events (#71) read as the server's agent: a mailbox the broker refuses it is the
    extension's ``forbidden``, for a poll as for a stream, in the broker's words."""
    from testbed.support.mcp_support import MODERN, Peer

    with http_server("--server", enforcing.url, MQ9_CREDENTIAL=enforcing.credentials["alice"]) as a:
        async with httpx.AsyncClient(timeout=httpx.Timeout(20, read=60)) as http:
            alice = Peer(http, a, MODERN, "alice")
            await alice.data("create_mailbox", name="alice.events")
            sub = {"name": "mailbox.message_arrived", "arguments": {"mail_address": "alice.events"}}
            assert (await alice.rpc("events/poll", **sub))["result"]["cursor"] == "0"
    with http_server("--server", enforcing.url, MQ9_CREDENTIAL=enforcing.credentials["bob"]) as b:
        async with httpx.AsyncClient(timeout=httpx.Timeout(20, read=60)) as http:
            bob = Peer(http, b, MODERN, "bob")
            for method, more in (("events/poll", {"cursor": "0"}), ("events/stream", {})):
                refused = (await bob.rpc(method, **sub, **more))["error"]
                assert refused["data"] == {"reason": "forbidden"}, refused
                assert "belongs to another agent" in refused["message"], refused
