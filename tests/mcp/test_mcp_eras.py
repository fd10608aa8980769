"""Both MCP protocol eras (#37, item 2): a 2026-07-28 client (``server/discover``, ``_meta`` on
every request, no ``initialize`` and no session) and a 2025-11-25 client that initializes, each
listing and calling the tools, over HTTP and over stdio, with the SDK's own ``Client``.

Nothing the tools promise depends on a session: a client that opens a new connection (a new
session, or none) per call fetches in one and acks in another, and still cannot ack what
nobody handed it."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from mcp import Client, StdioServerParameters

from mq9_platform.operations.catalog import OPERATIONS, ToolPolicy
from testbed.support.mcp_support import ROOT, http_server, result_data, server_env

pytestmark = pytest.mark.slow

MODERN = "2026-07-28"
ERAS = {"modern": MODERN, "legacy": "legacy"}


async def call(target: Any, mode: str, tool: str, /, **arguments: Any) -> Any:
    """One tool call on a connection of its own, as a stateless client makes it."""
    async with Client(target, mode=mode, read_timeout_seconds=20) as client:
        return await client.call_tool(tool, arguments)


@pytest.mark.parametrize("era", ERAS)
async def test_over_http_fetch_in_one_request_and_ack_in_another(era):
    mode = ERAS[era]
    with http_server("--server", "memory://") as url:
        async with Client(url, mode=mode, read_timeout_seconds=20) as client:
            expected = MODERN if era == "modern" else client.protocol_version
            assert client.protocol_version == expected
            assert expected == MODERN or expected < MODERN  # the legacy era initialized
            listed = [t.name for t in (await client.list_tools()).tools]
            assert listed == [n for n, op in OPERATIONS.items() if op.allowed(ToolPolicy())]

        box = result_data(await call(url, mode, "create_mailbox"))["mail_address"]
        for payload in ("one", "two"):
            await call(url, mode, "send_message", mail_address=box, payload=payload)
        fetched = result_data(await call(url, mode, "fetch_messages", mail_address=box))
        first, second = (m["msg_id"] for m in fetched["messages"])

        # a msg_id nobody was handed is still refused, in a request of its own
        nobody = await call(url, mode, "ack_messages", mail_address=box, msg_id=second + 5)
        assert nobody.is_error and "not waiting for an ack" in nobody.content[0].text
        acked = await call(url, mode, "ack_messages", mail_address=box, msg_id=first)
        assert not acked.is_error, acked.content
        # each message is handed to a client once: nothing new, and the other one is still its
        again = result_data(await call(url, mode, "fetch_messages", mail_address=box))
        assert again["messages"] == []
        acked = await call(url, mode, "ack_messages", mail_address=box, msg_id=second)
        assert not acked.is_error, acked.content


@pytest.mark.parametrize("era", ERAS)
async def test_over_stdio_both_eras_list_and_call_the_tools(era):
    server = StdioServerParameters(
        command=sys.executable,
        args=["-m", "mq9_mcp", "--server", "memory://"],
        env=server_env(),
        cwd=str(ROOT),
    )
    async with Client(server, mode=ERAS[era], read_timeout_seconds=20) as client:
        assert (client.protocol_version == MODERN) is (era == "modern")
        listed = [t.name for t in (await client.list_tools()).tools]
        assert "fetch_messages" in listed and "ack_messages" in listed
        box = result_data(await client.call_tool("create_mailbox", {}))["mail_address"]
        await client.call_tool("send_message", {"mail_address": box, "payload": "hi"})
        got = result_data(await client.call_tool("fetch_messages", {"mail_address": box}))
        assert [m["payload"] for m in got["messages"]] == ["hi"]
