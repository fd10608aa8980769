"""Acks across mq9-mcp processes (issue #51): a stdio mq9-mcp process started for one call
(as Claude Desktop and Claude Code may start it) fetches, and a new process acks what it was
given; an HTTP client naming its worker is served by two replicas, fetching through one and
acking through the other. On a real nats-server with a broker engine served from this test
process. What a process handed out lives on the broker (docs/groups.md), not in its memory."""

from __future__ import annotations

import pytest
from test_mcp_http import http_session

from mq9_platform import GroupReader, Mq9Client
from testbed.support.mcp_support import fails, http_server, ok, served_engine, stdio_session

pytestmark = pytest.mark.slow


async def test_a_new_process_acks_what_the_last_one_fetched(nats_server):
    inbox = "team.orders"
    async with served_engine(nats_server.url), Mq9Client(nats_server.url) as observer:
        await observer.mailbox_create(name=inbox)
        for text in ("order 1", "order 2", "order 3"):
            await observer.send(inbox, text)
        await observer.send(inbox, "refund", priority="urgent")
        args = ("--server", nats_server.url, "--agent-mailbox", inbox)

        async with stdio_session(*args) as first:
            fetched = await ok(first, "fetch_messages", max_wait_ms=0)
        shown = [m["msg_id"] for m in fetched["messages"]]
        assert [m["payload"] for m in fetched["messages"]] == [
            "refund", "order 1", "order 2", "order 3",
        ]  # fmt: skip

        async with stdio_session(*args) as second:
            acked = await ok(second, "ack_messages", msg_id=shown[1])
            assert acked["confirmed"] == shown[:2]  # what came before it, and it
            # a msg_id no process was given is refused as before
            assert "is not waiting for an ack" in await fails(second, "ack_messages", msg_id=99)
        # what the next reader of the group is handed: the refund is recorded done (the
        # group's position cannot pass it while older orders wait)
        left = await GroupReader(observer, inbox, "default").fetch()
        assert [m.text() for m in left] == ["order 2", "order 3"]

        async with stdio_session(*args) as third:
            acked = await ok(third, "ack_messages", msg_id=shown[-1])
            assert acked["confirmed"] == shown[2:]
        assert await observer.fetch(inbox, group_name="default", max_wait_ms=0) == []


async def test_an_http_client_acks_through_another_replica(nats_server):
    inbox = "team.shared"
    async with served_engine(nats_server.url), Mq9Client(nats_server.url) as observer:
        await observer.mailbox_create(name=inbox)
        for text in ("order 1", "order 2"):
            await observer.send(inbox, text)
        args = ("--server", nats_server.url, "--agent-mailbox", inbox)
        with http_server(*args) as one, http_server(*args) as other:
            async with http_session(one, worker="alice") as alice:
                fetched = await ok(alice, "fetch_messages", max_wait_ms=0)
            shown = [m["msg_id"] for m in fetched["messages"]]
            assert len(shown) == 2
            async with http_session(other, worker="bob") as bob:
                refused = await fails(bob, "ack_messages", msg_id=shown[-1])
                assert "is not waiting for an ack" in refused  # alice holds them
            async with http_session(other, worker="alice") as alice_elsewhere:
                acked = await ok(alice_elsewhere, "ack_messages", msg_id=shown[-1])
                assert acked["confirmed"] == shown
        assert await observer.fetch(inbox, group_name="default", max_wait_ms=0) == []
