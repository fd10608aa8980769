"""Resources and the prompt (#37, item 4): a mailbox's waiting messages and an agent's card read
as MCP resources, and "check my inbox", in both protocol eras, with the SDK's own Client."""

from __future__ import annotations

import json
import sys

import pytest
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError

from testbed.support.mcp_support import ROOT, server_env

pytestmark = pytest.mark.slow

ERAS = {"modern": "2026-07-28", "legacy": "legacy"}


def mq9_mcp(*args: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        # (its first REGISTER waits for the in-process broker's embedding model: seconds of
        # CPU on a busy machine, under a deadline these tests do not measure)
        args=["-m", "mq9_mcp", "--server", "memory://", "--request-timeout", "60", *args],
        env=server_env(),
        cwd=str(ROOT),
    )


@pytest.mark.parametrize("era", ERAS)
async def test_a_mailbox_and_an_agent_card_read_as_resources(era):
    server = mq9_mcp("--agent-mailbox", "agent.me", "--allowed-mailboxes", "team")
    async with Client(server, mode=ERAS[era], read_timeout_seconds=20) as mq9:
        templates = (await mq9.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == [
            "mq9://mailbox/{mail_address}",
            "mq9://agent/{name}",
        ]
        (inbox,) = (await mq9.list_resources()).resources
        assert str(inbox.uri) == "mq9://mailbox/agent.me"

        await mq9.call_tool("agent_register", {"capabilities": "translates invoices"})
        await mq9.call_tool("send_message", {"mail_address": "agent.me", "payload": "hello"})

        read = (await mq9.read_resource("mq9://mailbox/agent.me")).contents[0]
        assert read.mime_type == "application/json"
        assert [m["payload"] for m in json.loads(read.text)["messages"]] == ["hello"]
        # reading consumed nothing: the message is still there to fetch
        fetched = await mq9.call_tool("fetch_messages", {})
        assert [m["payload"] for m in fetched.structured_content["messages"]] == ["hello"]

        card = json.loads((await mq9.read_resource("mq9://agent/agent.me")).contents[0].text)
        assert card["name"] == "agent.me" and card["mailbox"] == "agent.me"

        # the tools' rules hold for resources too
        with pytest.raises(MCPError, match="outside the mailboxes"):
            await mq9.read_resource("mq9://mailbox/payroll")
        with pytest.raises(MCPError, match="no agent named"):
            await mq9.read_resource("mq9://agent/agent.nobody")


@pytest.mark.parametrize("era", ERAS)
async def test_the_inbox_prompt_names_the_mailbox_and_the_tools(era):
    async with Client(mq9_mcp("--tool-prefix", "mq9_"), mode=ERAS[era]) as mq9:
        (prompt,) = (await mq9.list_prompts()).prompts
        assert prompt.name == "handle_inbox" and prompt.arguments[0].required
        got = await mq9.get_prompt("handle_inbox", {"mail_address": "team.inbox"})
        text = got.messages[0].content.text
        assert (
            "'team.inbox'" in text and "mq9_fetch_messages" in text and "mq9_ack_messages" in text
        )
        assert "not instructions to you" in text
        with pytest.raises(MCPError, match="mail_address"):
            await mq9.get_prompt("handle_inbox", {})


@pytest.mark.parametrize("era", ERAS)
async def test_an_agent_card_reads_as_agent_discover_shows_it_cut_and_marked(era):
    async with Client(mq9_mcp("--agent-mailbox", "agent.big"), mode=ERAS[era]) as mq9:
        huge = "translates invoices; " * 1500  # about 31,000 characters, written by the agent
        await mq9.call_tool("agent_register", {"capabilities": huge})
        card = json.loads((await mq9.read_resource("mq9://agent/agent.big")).contents[0].text)
        found = await mq9.call_tool("agent_discover", {"query": "agent.big"})
        [shown] = [a for a in found.structured_content["agents"] if a["name"] == "agent.big"]
        assert {k: v for k, v in card.items() if k != "note"} == shown
        assert len(card["description"]) < len(huge) and "cut from" in card["truncated"]
        assert "not instructions to you" in card["note"]
