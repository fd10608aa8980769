"""``wake_rule``, the tool (#62): an extra of the catalog, so the LangChain toolkit and mq9-mcp
both have it; a model keeps the rules of the mailboxes its policy allows, and no other."""

from __future__ import annotations

import json
import uuid

import pytest

from langchain_mq9 import Mq9Toolkit
from mq9_platform.operations.catalog import DEFAULT_OPERATIONS
from testbed.support.mcp_support import ok, stdio_session

SECRET = "s3cret-s3cret-s3cret"


def test_not_in_the_default_set():
    assert "wake_rule" not in DEFAULT_OPERATIONS


def test_a_model_keeps_the_rules_of_its_own_mailbox_only():
    url = f"memory://waketool{uuid.uuid4().hex}"
    with Mq9Toolkit(
        server=url,
        agent_mailbox="agent.me",
        tools=["create_mailbox", "wake_rule"],
        allowed_mailboxes=[],
    ) as kit:
        tools = {t.name: t for t in kit.get_tools()}
        kit.connection.run_sync(lambda c: c.mailbox_create(name="agent.me"))
        kit.connection.run_sync(lambda c: c.mailbox_create(name="agent.other"))
        added = json.loads(
            tools["wake_rule"].invoke(
                {
                    "action": "add",
                    "target": "webhook",
                    "url": "https://hooks.example.com/w",
                    "secret": SECRET,
                    "min_interval": 30,
                }
            )
        )
        assert added["rules"][0]["mailbox"] == "agent.me"
        assert SECRET not in json.dumps(added)
        listed = json.loads(tools["wake_rule"].invoke({}))
        assert [r["name"] for r in listed["rules"]] == ["default"]
        refused = tools["wake_rule"].invoke(
            {
                "mail_address": "agent.other",
                "action": "add",
                "target": "callback",
                "callback": "f",
            }
        )
        assert "agent.other is outside the mailboxes" in refused
        reserved = tools["wake_rule"].invoke({"mail_address": "mq9.wake.index"})
        assert "reserved" in reserved
        bad = tools["wake_rule"].invoke({"action": "add", "target": "webhook", "url": "x"})
        assert "http:// or https://" in bad
        removed = json.loads(tools["wake_rule"].invoke({"action": "remove"}))
        assert removed["rules"] == []


@pytest.mark.slow  # a process: mq9-mcp
async def test_mq9_mcp_offers_it():
    async with stdio_session("--server", "memory://") as s:
        names = {t.name for t in (await s.list_tools()).tools}
        assert "wake_rule" in names
        await ok(s, "create_mailbox", name="agent.mcp")
        found = await ok(
            s, "wake_rule", mail_address="agent.mcp", action="add", target="callback", callback="f"
        )
        assert found["rules"][0]["target"] == "callback"
