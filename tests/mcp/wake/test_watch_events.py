"""mq9-mcp's mailbox watches follow the broker's arrival announcements (#62): with polling set
to an hour, new mail is still told at once on the bundled broker (memory://, and nats-server
with --announce); on the RobustMQ-shaped listener, which announces nothing, the poll tells."""

from __future__ import annotations

import asyncio

import pytest

from mq9_platform.client.connection import Mq9Connection

watch = pytest.importorskip("mq9_mcp.watch")

HANG_GUARD = 30.0


async def test_a_watch_is_told_of_new_mail_without_polling(lane):
    poll = 3600.0 if lane.announces else 0.05
    async with lane.client() as client:
        await client.mailbox_create(name="agent.watched")
        connection = Mq9Connection(client=client)
        watches = watch.Watches(connection, timeout=5, poll_seconds=poll)
        told = asyncio.Event()

        async def notify() -> None:
            told.set()

        await watches.start("subscriber", "agent.watched", notify)
        try:
            await asyncio.sleep(0.1)  # the watch is listening
            assert not told.is_set()
            await client.send("agent.watched", "new mail")
            await asyncio.wait_for(told.wait(), HANG_GUARD)
            assert watches.announced is lane.announces
        finally:
            watches.stop("subscriber")
