"""No tool call outlives a framework's default client timeout (issue #107): openai-agents' and
google-adk's MCP clients give up on a call after 5 s by default, and ``fetch_messages``'
description suggested ``max_wait_ms`` "e.g. 30000". mq9-mcp now waits at most
``MCP_WAIT_CAP_MS`` per call unless its operator says (``--wait-cap-ms``), answers a longer
wait at the cap saying to call again (nothing is taken meanwhile), and no description
suggests a longer wait. A short cap stands in for the clock: no timing is asserted."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from mcp import Client, types

from langchain_mq9 import Mq9Toolkit
from mq9_mcp.cli import build_parser, tool_config
from mq9_mcp.server import call_wait, create_server, mcp_policy
from mq9_platform.client.connection import Mq9Connection
from mq9_platform.operations.catalog import OPERATIONS, ToolPolicy
from mq9_platform.operations.config import MCP_WAIT_CAP_MS
from mq9_platform.operations.schemas import MAX_TOOL_WAIT_MS
from testbed.support.mcp_support import result_data

CLIENT_TIMEOUT_MS = 5000  # openai-agents' and google-adk's MCP clients, by default
INBOX = "agent.waits"


def texts(tools: list[types.Tool], instructions: str | None) -> list[str]:
    """Every text a model reads of the tools: descriptions, argument descriptions, the
    server's instructions."""
    found = [instructions or ""]
    for tool in tools:
        found.append(tool.description or "")
        found += [spec.get("description", "") for spec in tool.input_schema["properties"].values()]
    return found


def wait_descriptions(tools: list[types.Tool]) -> dict[str, str]:
    return {
        f"{tool.name}.{name}": spec["description"]
        for tool in tools
        for name, spec in tool.input_schema["properties"].items()
        if name in ("max_wait_ms", "wait_seconds")
    }


async def listed(policy: ToolPolicy | None) -> tuple[list[types.Tool], str | None]:
    server = create_server(Mq9Connection("memory://"), policy)
    async with Client(server, read_timeout_seconds=20) as mcp:
        return (await mcp.list_tools()).tools, mcp.instructions


async def test_by_default_no_description_suggests_a_wait_a_default_client_cannot_hold():
    assert mcp_policy(None).wait_cap_ms == MCP_WAIT_CAP_MS < CLIENT_TIMEOUT_MS
    tools, instructions = await listed(ToolPolicy(calls=True))
    waits = wait_descriptions(tools)
    assert set(waits) == {"fetch_messages.max_wait_ms"} | {
        f"{name}.wait_seconds" for name in ("call_agent", "check_call", "answer_call")
    }
    assert waits["fetch_messages.max_wait_ms"].endswith(f"(max {MCP_WAIT_CAP_MS}).")
    for where, text in waits.items():
        if where.endswith("wait_seconds"):
            assert f"(max {MCP_WAIT_CAP_MS // 1000})" in text, text
    for text in texts(tools, instructions):
        # no wait in ms beyond the cap, e.g. the "30000" fetch_messages' description suggested
        assert not [n for n in re.findall(r"\b\d{4,6}\b", text) if int(n) > MCP_WAIT_CAP_MS], text


async def test_a_longer_wait_answers_at_the_cap_saying_to_call_again():
    connection = Mq9Connection(f"memory://waits{uuid.uuid4().hex}")
    server = create_server(connection, ToolPolicy(agent_mailbox=INBOX, wait_cap_ms=50))
    asked = types.CallToolRequestParams(name="fetch_messages", arguments={"max_wait_ms": 30000})
    # what the call's own timeout counts on: the cap, not the 30 s asked; run as an MCP task
    # (its client polls: no request waits on it) it waits what it asks
    assert call_wait(server.policies.policy, asked) == pytest.approx(0.05)
    assert server.wait_of(asked) == 30
    try:
        async with Client(server, read_timeout_seconds=20) as mcp:
            await mcp.call_tool("create_mailbox", {"name": INBOX})
            answer = result_data(await mcp.call_tool("fetch_messages", asked.arguments))
            assert answer["count"] == 0
            assert answer["next_step"] == (
                "No message yet: call again to keep waiting (one call waits at most 50 ms "
                "here; nothing is lost meanwhile)."
            )
            # nothing was taken while it waited: a message sent now is the next fetch's
            await mcp.call_tool("send_message", {"mail_address": INBOX, "payload": "late"})
            again = result_data(await mcp.call_tool("fetch_messages", asked.arguments))
            assert [m["payload"] for m in again["messages"]] == ["late"]
    finally:
        await connection.aclose()


def test_the_call_tools_wait_at_most_the_cap_too():
    policy = ToolPolicy(wait_cap_ms=2500)
    for name, args in (
        ("call_agent", {"agent": "a.b", "task": "t", "wait_seconds": 60}),
        ("check_call", {"task_id": "t1", "wait_seconds": 60}),
        ("fetch_messages", {"mail_address": "a.b", "max_wait_ms": 30000}),
    ):
        operation = OPERATIONS[name]
        given = operation.input_model.model_validate(args)
        capped = vars(operation.capped(given, policy))
        assert capped.get("wait_seconds", 2) == 2 and capped.get("max_wait_ms", 2500) == 2500
        assert operation.wait_seconds(given, policy) <= 2.5 + operation.extra_wait
    shorter = OPERATIONS["fetch_messages"].input_model.model_validate({"max_wait_ms": 100})
    assert OPERATIONS["fetch_messages"].capped(shorter, policy) is shorter


async def test_an_operator_allows_longer_waits_for_clients_that_hold_them():
    parser = build_parser()
    config = tool_config(parser.parse_args(["--wait-cap-ms", "30000"]), parser)
    assert mcp_policy(ToolPolicy(config)).wait_cap_ms == 30000
    tools, _ = await listed(ToolPolicy(config))
    assert wait_descriptions(tools)["fetch_messages.max_wait_ms"].endswith("(max 30000).")
    with pytest.raises(SystemExit):
        tool_config(parser.parse_args(["--wait-cap-ms", str(MAX_TOOL_WAIT_MS + 1)]), parser)


def test_the_langchain_tools_wait_as_asked_unless_capped():
    """A toolkit's call runs in the agent's own process (no client to give up): it waits what
    it is asked, up to the tools' bound, unless ``wait_cap_ms`` says less."""
    with Mq9Toolkit(server=f"memory://waits{uuid.uuid4().hex}", agent_mailbox=INBOX) as kit:
        fetch = next(t for t in kit.get_tools() if t.name == "fetch_messages")
        description = fetch.args_schema["properties"]["max_wait_ms"]["description"]
        assert description.endswith(f"(max {MAX_TOOL_WAIT_MS}).")
    server = f"memory://waits{uuid.uuid4().hex}"
    with Mq9Toolkit(server=server, agent_mailbox=INBOX, wait_cap_ms=50) as kit:
        tools = {t.name: t for t in kit.get_tools()}
        tools["create_mailbox"].invoke({"name": INBOX})
        call = {"name": "fetch_messages", "args": {"max_wait_ms": 30000}, "id": "c1",
                "type": "tool_call"}  # fmt: skip
        answer = json.loads(tools["fetch_messages"].invoke(call).content)
        assert answer["next_step"].startswith("No message yet: call again to keep waiting")


@pytest.mark.slow
def test_a_call_run_as_a_task_waits_what_it_asks():
    """An MCP task holds no request (its client polls it): a fetch run as one waits what it
    asks, past the cap (its answer says how long it waited), and a plain one the cap."""
    from test_mcp_tasks import opened, request, tool

    raw = opened("--server", "memory://", "--wait-cap-ms", "50")
    try:
        request(raw, 2, "tools/call", **tool("create_mailbox", name="inbox"))
        waiting = tool("fetch_messages", True, mail_address="inbox", max_wait_ms=1000)
        task = request(raw, 3, "tools/call", **waiting)["result"]["task"]
        result = request(raw, 4, "tasks/result", taskId=task["taskId"])["result"]
        said = result["structuredContent"]["next_step"]
        assert said == "No message yet within 1000 ms: call again to keep waiting."
        plain = request(raw, 5, "tools/call", **tool("fetch_messages", mail_address="inbox",
                                                     max_wait_ms=1000))  # fmt: skip
        assert "one call waits at most 50 ms" in plain["result"]["structuredContent"]["next_step"]
    finally:
        raw.close()
