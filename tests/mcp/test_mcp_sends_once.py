"""mq9-mcp's send_message takes ``idempotency_key`` (issue #90): a model retrying a call it
thinks failed passes the same key, and the broker stores the message once. Driven by the
official MCP client over stdio, against mq9-mcp's own memory:// broker."""

from __future__ import annotations

import pytest

from testbed.support.mcp_support import fails, ok, stdio_session

pytestmark = pytest.mark.slow


async def test_send_message_twice_with_one_key_stores_one_message():
    async with stdio_session("--server", "memory://") as mcp:
        await ok(mcp, "create_mailbox", name="desk")
        args = {"mail_address": "desk", "payload": "the report", "idempotency_key": "report-7"}
        first = await ok(mcp, "send_message", **args)
        again = await ok(mcp, "send_message", **args)  # the retry: the first one's answer
        assert again["msg_id"] == first["msg_id"]
        other = await ok(mcp, "send_message", **{**args, "idempotency_key": "report-8"})
        assert other["msg_id"] != first["msg_id"]
        unkeyed = await ok(mcp, "send_message", mail_address="desk", payload="the report")
        assert unkeyed["msg_id"] not in (first["msg_id"], other["msg_id"])
        listed = await ok(mcp, "query_messages", mail_address="desk")
        assert [m["msg_id"] for m in listed["messages"]] == sorted(
            [first["msg_id"], other["msg_id"], unkeyed["msg_id"]]
        )
        # The key again with something else: refused in one line, never the first's answer
        text = await fails(mcp, "send_message", **{**args, "payload": "another report"})
        assert "report-7" in text and "new key" in text and "\n" not in text.strip()
