"""The MCP server over stdio, spawned as ``python -m mq9_mcp`` and driven by the official MCP
client, against a real nats-server with a broker engine served from this test process."""

from __future__ import annotations

import json
import sys

import anyio
import pytest

from langchain_mq9 import Mq9Toolkit
from mq9_platform import Mq9Client
from mq9_platform.operations.catalog import OPERATIONS, ToolPolicy
from mq9_platform.operations.config import MCP_WAIT_CAP_MS
from testbed.nats_server import start_nats_server
from testbed.ports import unclaimed_port
from testbed.support.mcp_support import (
    INITIALIZE,
    ROOT,
    fails,
    ok,
    served_engine,
    server_env,
    stdio_session,
)

pytestmark = pytest.mark.slow

# What mq9-mcp lists without --calls: every operation but the opt-in agent-call tools.
WITHOUT_CALLS = [name for name, op in OPERATIONS.items() if op.allowed(ToolPolicy())]


@pytest.mark.parametrize("agent_mailbox", [None, "agent.me"])
async def test_tools_are_the_catalog_with_the_toolkits_schemas(agent_mailbox):
    mine = {"agent_mailbox": agent_mailbox} if agent_mailbox else {}
    # mq9-mcp waits at most MCP_WAIT_CAP_MS per call by default (#107), which its wait
    # arguments' descriptions name: the toolkit with that cap reads the same
    mine["wait_cap_ms"] = MCP_WAIT_CAP_MS
    toolkit = Mq9Toolkit(server="memory://", tools=list(OPERATIONS), **mine)
    lc_tools = {tool.name: tool for tool in toolkit.get_tools()}
    flags = ("--agent-mailbox", agent_mailbox) if agent_mailbox else ()
    async with stdio_session("--server", "memory://", "--calls", *flags) as session:
        listed = {tool.name: tool for tool in (await session.list_tools()).tools}

    assert list(listed) == list(OPERATIONS) == list(lc_tools)
    for name, tool in listed.items():
        operation = OPERATIONS[name]
        # What the model reads is the same, byte for byte, through either surface.
        assert tool.input_schema == operation.input_schema(toolkit.policy)
        assert tool.input_schema == lc_tools[name].args_schema
        assert tool.description == operation.describe(toolkit.policy)
        assert tool.description == lc_tools[name].description
        assert tool.output_schema == operation.output_schema
        assert "title" not in json.dumps(tool.input_schema)  # no pydantic title noise
        assert tool.title == operation.title and tool.annotations.title is None
        # Only hints that differ from MCP's defaults are given (absent: readOnlyHint false,
        # destructiveHint true, idempotentHint false, openWorldHint true); a reader's other
        # hints mean nothing in MCP.
        if operation.read_only:
            expected = {"readOnlyHint": True}
        else:
            expected = {"destructiveHint": operation.destructive}
            expected.update({"idempotentHint": True} if operation.idempotent else {})
        assert tool.annotations.model_dump(by_alias=True, exclude_none=True) == expected
    if agent_mailbox:
        assert "reply_to: 'agent.me'" in listed["send_message"].description
    readers = {n for n, t in listed.items() if t.annotations.read_only_hint}
    assert readers == {"agent_discover", "query_messages", "check_call", "list_calls"}
    destroyers = {n for n, t in listed.items() if t.annotations.destructive_hint}
    assert destroyers == {"delete_message", "agent_unregister", "cancel_call"}


async def test_full_exchange_over_stdio(nats_server):
    async with (
        served_engine(nats_server.url) as engine,
        Mq9Client(nats_server.url) as observer,
        stdio_session("--server", nats_server.url) as mcp,
    ):
        assert (await ok(mcp, "create_mailbox", name="team.inbox"))["mail_address"] == "team.inbox"
        private = (await ok(mcp, "create_mailbox", ttl=600))["mail_address"]
        assert private != "team.inbox"
        assert await observer.query(private) == []  # it exists on the broker (else an error)

        inbox = "team.inbox"
        sent = [
            await ok(mcp, "send_message", mail_address=inbox, payload="routine"),
            await ok(
                mcp, "send_message", mail_address=inbox, payload={"alert": "disk"},
                priority="critical",
            ),
            await ok(
                mcp, "send_message", mail_address=inbox, payload="soon", priority="urgent",
                tags=["ops"],
            ),
        ]  # fmt: skip
        assert all(s["sent"] for s in sent) and len({s["msg_id"] for s in sent}) == 3
        assert {m.msg_id for m in await observer.query(inbox)} == {s["msg_id"] for s in sent}

        fetched = await ok(mcp, "fetch_messages", mail_address=inbox, max_wait_ms=0)
        assert [m["payload"] for m in fetched["messages"]] == [{"alert": "disk"}, "soon", "routine"]
        assert [m["priority"] for m in fetched["messages"]] == ["critical", "urgent", "normal"]
        assert fetched["messages"][0]["payload_encoding"] == "json"
        assert "ack_messages(mail_address='team.inbox', msg_id=" in fetched["next_step"]
        # Handed out once: fetching again before any ack gives nothing new.
        assert (await ok(mcp, "fetch_messages", mail_address=inbox, max_wait_ms=0))["count"] == 0

        last = fetched["messages"][-1]["msg_id"]
        acked = await ok(mcp, "ack_messages", mail_address=inbox, msg_id=last)
        assert acked["confirmed"] == [m["msg_id"] for m in fetched["messages"]]
        # Acked on the broker: the group has nothing left, even for another client.
        assert await observer.fetch(inbox, group_name="default", max_wait_ms=0) == []

        tagged = await ok(mcp, "query_messages", mail_address=inbox, tags=["ops"])
        assert [m["payload"] for m in tagged["messages"]] == ["soon"]
        deleted = await ok(mcp, "delete_message", mail_address=inbox, msg_id=sent[0]["msg_id"])
        assert deleted["deleted"]
        remaining = {m.msg_id for m in await observer.query(inbox)}
        assert remaining == {sent[1]["msg_id"], sent[2]["msg_id"]}

        registered = await ok(
            mcp, "agent_register", name="agent.translator",
            capabilities="translates contracts from English to French",
        )  # fmt: skip
        assert registered["mailbox_created"] is True
        assert await observer.query("agent.translator") == []  # its mailbox exists
        cards = await observer.agent_discover(text="french")
        assert [c["mailbox"] for c in cards] == ["agent.translator"]
        found = await ok(mcp, "agent_discover", query="translate a contract into French")
        assert [a["mailbox"] for a in found["agents"]] == ["agent.translator"]

        # Registering the name again keeps the first card, and says so.
        again = await ok(
            mcp, "agent_register", name="agent.translator", capabilities="translates poems",
        )  # fmt: skip
        assert again["registered"] is False and "NOT changed" in again["note"]

        reported = await ok(
            mcp, "agent_report", name="agent.translator", status="busy", details='{"queue": 3}',
        )  # fmt: skip
        assert reported["reported"]
        # RobustMQ keeps reports out of DISCOVER; the dev broker shows them to its operator.
        assert json.loads(engine.reports["agent.translator"][0]) == {"queue": 3, "status": "busy"}

        await ok(mcp, "agent_unregister", name="agent.translator")
        assert await observer.agent_discover(text="french") == []
        assert (await ok(mcp, "agent_discover", query="french"))["count"] == 0


async def test_mistakes_come_back_as_tool_errors_that_say_what_to_do(nats_server):
    async with served_engine(nats_server.url), stdio_session("--server", nats_server.url) as mcp:
        await ok(mcp, "create_mailbox", name="desk")

        text = await fails(mcp, "send_message", mail_address="desk", payload="x", priority="high")
        assert "priority" in text and "'normal', 'urgent' or 'critical'" in text
        assert "'high'" in text and "call the tool again" in text

        text = await fails(mcp, "fetch_messages", mail_address="no.such.box")
        assert "mailbox 'no.such.box' does not exist" in text and "check the address" in text

        text = await fails(mcp, "send_message", payload="x")
        assert "mail_address" in text and "Field required" in text

        text = await fails(mcp, "send_message", mail_address="Desk!", payload="x")
        assert "invalid mail_address" in text and "lowercase letters" in text

        text = await fails(mcp, "ack_messages", mail_address="desk", msg_id=99)
        assert "msg_id 99 is not waiting for an ack" in text
        assert "Call fetch_messages(mail_address='desk') first" in text

        text = await fails(mcp, "send_message", mail_address="billing", payload="overdue")
        assert "TTL ran out) — no agent reads this address" in text
        assert "agent_discover" in text and "do not create it" in text

        text = await fails(mcp, "send_mail")
        assert "unknown tool 'send_mail'" in text and "send_message" in text

        # Still serving, and the broker state is intact.
        assert len((await mcp.list_tools()).tools) == len(WITHOUT_CALLS)
        assert (await ok(mcp, "send_message", mail_address="desk", payload="ok"))["sent"] is True
        assert (await ok(mcp, "query_messages", mail_address="desk"))["count"] == 1


async def test_safety_options_shape_what_the_tools_may_do(nats_server):
    async with served_engine(nats_server.url), Mq9Client(nats_server.url) as observer:
        await observer.mailbox_create(name="team.board")
        await observer.mailbox_create(name="other.box")
        await observer.send("team.board", "x" * 50)
        await observer.send("other.box", "secret")

        async with stdio_session(
            "--server", nats_server.url, "--allowed-mailboxes", "team",
            "--max-payload-chars", "10", "--default-group", "auditors",
        ) as mcp:  # fmt: skip
            text = await fails(mcp, "fetch_messages", mail_address="other.box")
            assert "outside the mailboxes" in text and "team" in text
            fetched = await ok(mcp, "fetch_messages", mail_address="team.board")
            # read with the pinned group: the broker's auditors group is handed the message
            assert await observer.fetch("team.board", group_name="auditors", max_wait_ms=0)
            (message,) = fetched["messages"]
            assert message["payload"] == "x" * 10 and "50 to 10" in message["truncated"]
            # A mailbox this client creates is its own to use.
            mine = (await ok(mcp, "create_mailbox"))["mail_address"]
            await ok(mcp, "send_message", mail_address=mine, payload="hi")

        async with stdio_session("--server", nats_server.url, "--read-only") as mcp:
            names = {tool.name for tool in (await mcp.list_tools()).tools}
            assert names == {"agent_discover", "fetch_messages", "query_messages"}
            text = await fails(mcp, "send_message", mail_address="team.board", payload="x")
            assert "read-only" in text
            peek = await ok(mcp, "fetch_messages", mail_address="other.box")
            assert [m["payload"] for m in peek["messages"]] == ["secret"]

        assert len(await observer.query("other.box")) == 1  # the read-only server sent nothing
        assert len(await observer.query("team.board")) == 1


async def test_memory_broker_inside_the_server_process():
    async with stdio_session("--server", "memory://") as mcp:
        assert (await ok(mcp, "create_mailbox", name="scratch"))["mail_address"] == "scratch"
        await ok(mcp, "send_message", mail_address="scratch", payload="low")
        await ok(mcp, "send_message", mail_address="scratch", payload="high", priority="urgent")
        fetched = await ok(mcp, "fetch_messages", mail_address="scratch")
        assert [m["payload"] for m in fetched["messages"]] == ["high", "low"]
    # A new process has a new, empty in-process broker.
    async with stdio_session("--server", "memory://") as mcp:
        assert "does not exist" in await fails(mcp, "query_messages", mail_address="scratch")


async def test_broker_down_then_back():
    port = unclaimed_port()
    url = f"nats://127.0.0.1:{port}"
    async with stdio_session("--server", url, "--request-timeout", "2") as mcp:
        # Nothing listens: a prompt tool error, not a hang or a dead server.
        with anyio.fail_after(10):
            text = await fails(mcp, "create_mailbox", name="later")
        assert "cannot connect to the mq9 broker" in text and "try again shortly" in text
        assert len((await mcp.list_tools()).tools) == len(WITHOUT_CALLS)

        with start_nats_server(port=port) as bare:
            # NATS is up but no mq9 broker serves it.
            with anyio.fail_after(10):
                text = await fails(mcp, "create_mailbox", name="later")
            assert "no mq9 broker is serving" in text

            # The broker arrives: the same server process now works, without a restart.
            async with served_engine(bare.url), Mq9Client(bare.url) as observer:
                assert (await ok(mcp, "create_mailbox", name="later"))["mail_address"] == "later"
                assert await observer.query("later") == []


async def test_nats_credentials_from_the_environment_and_kept_out_of_errors():
    with start_nats_server(extra_args=["--user", "mq9", "--pass", "s3cret"]) as guarded:
        url = guarded.url
        async with served_engine(url.replace("nats://", "nats://mq9:s3cret@")):
            env = {"MQ9_USER": "mq9", "MQ9_PASSWORD": "s3cret"}
            async with stdio_session("--server", url, **env) as mcp:
                assert (await ok(mcp, "create_mailbox", name="vault"))["mail_address"] == "vault"

            wrong = url.replace("nats://", "nats://mq9:wrong@")
            async with stdio_session("--server", wrong) as mcp:
                with anyio.fail_after(10):
                    text = await fails(mcp, "query_messages", mail_address="vault")
                assert "refused the credentials" in text
                assert "mq9:***@" in text and "wrong" not in text


async def test_stdout_carries_only_protocol_messages():
    requests = [
        INITIALIZE,
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "fetch_messages", "arguments": {"mail_address": "nowhere"}},
        },
        {"jsonrpc": "2.0", "id": 3, "method": "tools/list"},
    ]
    command = [sys.executable, "-m", "mq9_mcp", "--server", "memory://"]
    async with await anyio.open_process(command, cwd=ROOT, env=server_env()) as process:
        await process.stdin.send(b"".join(json.dumps(r).encode() + b"\n" for r in requests))
        lines: list[bytes] = []
        buffer = b""
        with anyio.fail_after(20):
            while len(lines) < 3:
                buffer += await process.stdout.receive()
                *complete, buffer = buffer.split(b"\n")
                lines += complete
        await process.stdin.aclose()  # the client is done: the server ends by itself
        with anyio.fail_after(10):
            assert await process.wait() == 0
        rest = b"".join([chunk async for chunk in process.stdout])
        stderr = b"".join([chunk async for chunk in process.stderr]).decode()

    replies = [json.loads(line) for line in [*lines, *(buffer + rest).splitlines()] if line]
    replies.sort(key=lambda reply: reply["id"])  # answered concurrently, in any order
    assert [r["id"] for r in replies] == [1, 2, 3]
    assert all(r["jsonrpc"] == "2.0" for r in replies)
    assert replies[1]["result"]["isError"] is True
    assert "check the address" in replies[1]["result"]["content"][0]["text"]
    # The logs went to stderr.
    assert "mq9 MCP server" in stderr and "tool fetch_messages mailbox=" in stderr


def test_pinned_tool_settings_are_server_options():
    from mq9_mcp.cli import build_parser, tool_config

    parser = build_parser()
    args = parser.parse_args(
        ["--agent-mailbox", "agent.me", "--agent-card", '{"version": "2.0"}', "--deliver",
         "latest", "--num-msgs", "3", "--discover-by", "text", "--discover-limit", "5"]
    )  # fmt: skip
    policy = tool_config(args, parser)
    assert (policy.agent_mailbox, policy.agent_card) == ("agent.me", {"version": "2.0"})
    assert (policy.deliver, policy.num_msgs) == ("latest", 3)
    assert (policy.discover_by, policy.discover_limit) == ("text", 5)
    for bad in (["--agent-mailbox", "Agent Me"], ["--num-msgs", "0"], ["--agent-card", "[1]"],
                ["--deliver", "from_id"]):  # fmt: skip
        with pytest.raises(SystemExit):
            tool_config(parser.parse_args(bad), parser)
