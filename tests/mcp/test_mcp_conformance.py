"""The official MCP conformance suite (``@modelcontextprotocol/conformance``, #51 item 6) against
mq9-mcp over HTTP on loopback, and what it checks, checked here too: ``logging/setLevel`` where
the revision has it, completions from what the caller may see, SSE priming with ``retry``.

The suite runs under Node 22 (npm's ``node@22`` package, through ``npx``); where npx or the npm
registry cannot be had the suite's test skips, saying why. Scenarios that need the suite's own
fixtures (tools, resources and prompts named ``test_*``) do not apply to a server with mq9's own:
``NOT_APPLICABLE``, listed with the reason in docs/mcp.md."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import httpx2 as httpx
import pytest
from mcp_support import ACCEPT, LEGACY, MODERN, Peer, http_server

SUITE = "@modelcontextprotocol/conformance@0.1.16"
NODE = "node@22"

# Each needs a fixture of the suite's own: a tool, resource or prompt of that name.
NOT_APPLICABLE = {
    "tools-call-simple-text": "tool test_simple_text",
    "tools-call-image": "tool test_image_content",
    "tools-call-audio": "tool test_audio_content",
    "tools-call-embedded-resource": "tool test_embedded_resource",
    "tools-call-mixed-content": "tool test_multiple_content_types",
    "tools-call-with-logging": "tool test_tool_with_logging",
    "tools-call-error": "tool test_error_handling",
    "tools-call-with-progress": "tool test_tool_with_progress",
    "tools-call-sampling": "tool test_sampling",
    "tools-call-elicitation": "tool test_elicitation",
    "json-schema-2020-12": "tool json_schema_2020_12_tool",
    "elicitation-sep1034-defaults": "tool test_elicitation_sep1034_defaults",
    "elicitation-sep1330-enums": "tool test_elicitation_sep1330_enums",
    "server-sse-polling": "tool test_reconnection",
    "resources-read-text": "resource test://static-text",
    "resources-read-binary": "resource test://static-binary",
    "resources-templates-read": "resource template test://template/{id}/data",
    "resources-subscribe": "resource test://watched-resource",
    "resources-unsubscribe": "resource test://watched-resource",
    "prompts-get-simple": "prompt test_simple_prompt",
    "prompts-get-with-args": "prompt test_prompt_with_arguments",
    "prompts-get-embedded-resource": "prompt test_prompt_with_embedded_resource",
    "prompts-get-with-image": "prompt test_prompt_with_image",
}


def npx(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    command = ["npx", "-y", "-p", NODE, "-p", SUITE, "conformance", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def scenarios() -> list[str]:
    """The suite's server scenarios, or a skip saying why they cannot be had."""
    if shutil.which("npx") is None:
        pytest.skip("npx (Node.js) is not installed: the MCP conformance suite runs under it")
    try:
        listed = npx("list", "--server", timeout=600)
    except subprocess.TimeoutExpired:
        pytest.skip("npx could not fetch the conformance suite within 10 minutes")
    if listed.returncode != 0:
        pytest.skip(f"npx could not run {SUITE} under {NODE}: {listed.stderr.strip()[-300:]}")
    lines = listed.stdout.splitlines()
    return [line.strip()[2:].split(" [")[0] for line in lines if line.strip().startswith("- ")]


@pytest.mark.slow
def test_every_applicable_scenario_of_the_conformance_suite_passes(tmp_path: Path):
    applicable = [name for name in scenarios() if name not in NOT_APPLICABLE]
    assert {"logging-set-level", "completion-complete", "server-initialize"} <= set(applicable)
    with http_server("--server", "memory://") as url:
        for scenario in applicable:
            out = tmp_path / scenario
            run = npx("server", "--url", url, "--scenario", scenario, "-o", str(out), timeout=300)
            checks = [json.loads(p.read_text()) for p in out.rglob("checks.json")]
            failed = [c for group in checks for c in group if c["status"] in ("FAILURE", "WARNING")]
            assert run.returncode == 0 and checks and not failed, (scenario, run.stdout[-2000:])


async def test_logging_set_level_is_accepted_where_the_revision_has_it():
    with http_server("--server", "memory://") as url:
        async with httpx.AsyncClient(timeout=20) as http:
            legacy = await Peer(http, url, LEGACY, "alice").open()
            assert (await legacy.rpc("logging/setLevel", level="info"))["result"] == {}
            modern = Peer(http, url, MODERN, "alice")
            answer = await modern.rpc("logging/setLevel", level="info")
            assert answer["error"]["code"] == -32601, answer  # 2026-07-28 has no logging/*


async def test_completions_offer_only_what_the_caller_may_use():
    args = ("--server", "memory://", "--allowed-mailboxes", "team", "--agent-mailbox", "team.me")
    with http_server(*args) as url:
        async with httpx.AsyncClient(timeout=20) as http:
            for era in (LEGACY, MODERN):
                alice = await Peer(http, url, era, f"alice-{era}").open()
                mallory = await Peer(http, url, era, f"mallory-{era}").open()
                private = (await alice.data("create_mailbox"))["mail_address"]
                await alice.data("agent_register", capabilities="translates invoices")

                async def complete(peer: Peer, ref: dict, name: str, value: str) -> list[str]:
                    argument = {"name": name, "value": value}
                    answer = await peer.rpc("completion/complete", ref=ref, argument=argument)
                    return answer["result"]["completion"]["values"]

                mailbox = {"type": "ref/resource", "uri": "mq9://mailbox/{mail_address}"}
                prompt = {"type": "ref/prompt", "name": "handle_inbox"}
                for ref in (mailbox, prompt):
                    assert await complete(alice, ref, "mail_address", "") == sorted(
                        ["team", "team.me", private]
                    )
                    assert await complete(mallory, ref, "mail_address", "") == ["team", "team.me"]
                    assert await complete(alice, ref, "mail_address", "team.") == ["team.me"]
                agent = {"type": "ref/resource", "uri": "mq9://agent/{name}"}
                assert await complete(mallory, agent, "name", "team.") == ["team.me"]
                unknown = {"type": "ref/prompt", "name": "test_prompt_with_arguments"}
                assert await complete(alice, unknown, "arg1", "x") == []


async def test_a_2025_11_25_event_stream_starts_with_a_priming_event_and_retry():
    with http_server("--server", "memory://") as url:
        async with httpx.AsyncClient(timeout=20) as http:
            peer = await Peer(http, url, LEGACY, "alice").open()
            headers = {**ACCEPT, "mcp-session-id": peer.session, "mcp-protocol-version": LEGACY}
            ping = {"jsonrpc": "2.0", "id": 7, "method": "ping"}
            response = await http.post(url, json=ping, headers=headers)
            assert response.headers["content-type"].startswith("text/event-stream")
            first = response.text.replace("\r\n", "\n").split("\n\n")[0].splitlines()
            fields = dict(line.split(":", 1) for line in first if ":" in line)
            assert fields.get("id", "").strip() and fields.get("data", "x").strip() == ""
            assert fields.get("retry", "").strip() == "1000", first
