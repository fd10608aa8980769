"""``ack_messages`` from any process names every message still waiting for an ack (issue #107):
a stdio mq9-mcp process started for one call fetches two messages, and another acks the
first; its answer said only ``{"confirmed": [0]}``, and message 1 came again on the next fetch
unannounced. What the fetching process handed out lives on the broker (its hand-out records,
a worker's claims: docs/groups.md), so the acking process reads it there. Real processes on a
real nats-server with a broker engine served from this test process."""

from __future__ import annotations

import pytest

from mq9_platform import Mq9Client
from testbed.support.mcp_support import ok, served_engine, stdio_session

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("worker", [None, "alice"])
async def test_an_ack_in_another_process_names_what_is_still_unacked(nats_server, worker):
    inbox = f"team.unacked{'.' + worker if worker else ''}"
    async with served_engine(nats_server.url), Mq9Client(nats_server.url) as observer:
        await observer.mailbox_create(name=inbox)
        for text in ("order 1", "order 2", "order 3"):
            await observer.send(inbox, text)
        args = ["--server", nats_server.url, "--agent-mailbox", inbox]
        if worker:
            args += ["--worker", worker]

        async with stdio_session(*args) as fetching:
            fetched = await ok(fetching, "fetch_messages", max_wait_ms=0)
        shown = [m["msg_id"] for m in fetched["messages"]]
        assert len(shown) == 3

        async with stdio_session(*args) as acking:
            acked = await ok(acking, "ack_messages", msg_id=shown[0])
            assert acked["confirmed"] == shown[:1]
            assert acked["still_unacked"] == shown[1:]  # left out before #107
            # the same process goes on from what it learnt: the next ack confirms the rest
            acked = await ok(acking, "ack_messages", msg_id=shown[1])
            assert (acked["confirmed"], acked["still_unacked"]) == (shown[1:2], shown[2:])

        async with stdio_session(*args) as last:
            acked = await ok(last, "ack_messages", msg_id=shown[2])
            assert acked["confirmed"] == shown[2:] and "still_unacked" not in acked
        assert await observer.fetch(inbox, group_name="default", max_wait_ms=0) == []
