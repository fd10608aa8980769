"""A third-party MCP Events consumer receives, verifies and acks mq9-mcp's webhooks (issue #117).

The consumer is the Vercel AI SDK's (npm ``@ai-sdk/mcp``, run by node beside this file:
``events_ai_sdk.mjs``), not written from our code: its ``createMCPEventWebhook``
answers the callback verification, checks each delivery's Standard Webhooks signature and that
``webhook-id`` equals the body's ``eventId`` (400 otherwise: a per-message id fails here), and
acks 204. The first test subscribes with the consumer's URL and secret and hands it the
subscription's id, as the SDK's own client stores it; the second has that client, unchanged,
list and subscribe itself (the same script's ``client`` way in), which it does only on a server
declaring a top-level ``events`` capability (the design sketch's): mq9-mcp declares the
extension as SEP-3415 Final has it, and the top-level one too under ``--events-capability``
(docs/mcp-events.md says so). ``@tanstack/ai-mcp``, the client
first meant here, ships no events module in its published versions. The package is installed
once into ``~/.cache/langchain-mq9/`` (``$XDG_CACHE_HOME`` if set), as the OAuth tests cache
oidc-provider; the test is skipped in one line where node or npm is missing."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from mq9_mcp.events import ARRIVED
from testbed.ports import unclaimed_port
from testbed.support.mcp_support import MODERN, Peer, http_server

pytestmark = pytest.mark.slow  # starts mq9-mcp and node

VERSION = "2.0.99"
SCRIPT = Path(__file__).with_name("events_ai_sdk.mjs")
INSTALL_TIMEOUT = 180
WAIT = 20.0


def installed() -> Path:
    """The folder whose ``node_modules`` holds ``@ai-sdk/mcp``, installed there once."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed: the AI SDK's Events consumer runs on node")
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    home = Path(base) / "langchain-mq9" / f"ai-sdk-mcp-{VERSION}"
    if (home / "node_modules" / "@ai-sdk" / "mcp" / "package.json").exists():
        return home
    home.mkdir(parents=True, exist_ok=True)
    (home / "package.json").write_text('{"name": "mq9-events-tests", "private": true}')
    subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", f"@ai-sdk/mcp@{VERSION}"],
        cwd=home, check=True, timeout=INSTALL_TIMEOUT, capture_output=True,
    )  # fmt: skip
    return home


async def step(process: asyncio.subprocess.Process) -> dict[str, Any]:
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), WAIT)
    if not line:
        assert process.stderr is not None
        raise AssertionError(f"the consumer ended: {(await process.stderr.read()).decode()}")
    return json.loads(line)


async def test_the_ai_sdks_webhook_consumer_verifies_and_acks_mq9_mcps_events():
    home = installed()
    token = "a" * 40
    args = ("--server", "memory://", "--auth-token", token, "--webhook-hosts", "127.0.0.1")
    with http_server(*args) as url:
        auth = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(timeout=WAIT, headers=auth) as http:
            alice = Peer(http, url, MODERN, "alice")
            await alice.data("create_mailbox", name="inbox.v")
            # run beside its node_modules: an ES module finds packages from where it lies
            script = home / SCRIPT.name
            shutil.copyfile(SCRIPT, script)
            process = await asyncio.create_subprocess_exec(
                "node", str(script), "handed", str(unclaimed_port()), ARRIVED, "inbox.v", cwd=home,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            try:
                ready = await step(process)
                delivery = {"mode": "webhook", "url": ready["url"], "secret": ready["secret"]}
                sub = {"name": ARRIVED, "arguments": {"mail_address": "inbox.v"}}
                made = (await alice.rpc("events/subscribe", **sub, delivery=delivery))["result"]
                # the verification envelope came before the answer, its challenge echoed
                verified = await step(process)
                assert verified["status"] == 200, verified
                assert verified["webhookId"].startswith("msg_verification_")
                assert process.stdin is not None
                process.stdin.write(json.dumps(made).encode() + b"\n")
                assert await step(process) == {"step": "subscribed", "id": made["id"]}
                sent = await alice.data("send_message", mail_address="inbox.v", payload="p")
                taken = await step(process)
                while taken["step"] == "answered" and taken["status"] == 503:
                    taken = await step(process)  # a try before the id was stored: retried
                assert taken["step"] == "event", taken
                assert taken["subscription"] == made["id"]
                event = taken["event"]
                assert event["name"] == ARRIVED and event["data"]["msg_id"] == sent["msg_id"]
                # 204 only after its signature verified and webhook-id == eventId
                acked = await step(process)
                assert acked == {"step": "answered", "status": 204, "webhookId": event["eventId"]}
            finally:
                if process.returncode is None:
                    process.terminate()
                await process.wait()


@pytest.mark.parametrize("declared", [False, True], ids=["spec-only", "--events-capability"])
async def test_the_ai_sdks_own_client_subscribes_where_the_server_declares_events(declared):
    """The AI SDK's client, unchanged, lists and subscribes with its events API and its
    receiver takes the event: only on a server started with ``--events-capability`` (its
    client looks for a top-level ``capabilities.events``); without it, it refuses before
    sending anything, in its own words."""
    home = installed()
    token = "b" * 40
    args = ["--server", "memory://", "--auth-token", token, "--webhook-hosts", "127.0.0.1"]
    with http_server(*args, *(["--events-capability"] if declared else [])) as url:
        auth = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(timeout=WAIT, headers=auth) as http:
            alice = Peer(http, url, MODERN, "alice")
            await alice.data("create_mailbox", name="inbox.w")
            script = home / SCRIPT.name
            shutil.copyfile(SCRIPT, script)
            process = await asyncio.create_subprocess_exec(
                "node", str(script), "client", url, token, str(unclaimed_port()), ARRIVED,
                "inbox.w", cwd=home, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            try:
                first = await step(process)
                if not declared:
                    assert first["step"] == "refused", first
                    assert "does not support events" in first["message"]
                    return
                assert first == {"step": "listed", "names": first["names"]}, first
                assert ARRIVED in first["names"]
                steps = [await step(process)]
                while steps[-1]["step"] != "subscribed":
                    steps.append(await step(process))
                assert steps[-1]["id"], steps  # the verification answered on the way
                assert {"step": "answered", "status": 200} in [
                    {k: v for k, v in s.items() if k != "webhookId"} for s in steps[:-1]
                ], steps
                sent = await alice.data("send_message", mail_address="inbox.w", payload="p")
                taken = await step(process)
                while taken["step"] == "answered" and taken["status"] == 503:
                    taken = await step(process)
                assert taken["step"] == "event", taken
                assert taken["event"]["data"]["msg_id"] == sent["msg_id"]
                acked = await step(process)
                assert acked["status"] == 204 and acked["webhookId"] == taken["event"]["eventId"]
            finally:
                if process.returncode is None:
                    process.terminate()
                await process.wait()
