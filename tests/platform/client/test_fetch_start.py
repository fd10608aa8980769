"""``Mq9Client.fetch`` starts where its arguments say (#65): ``from_id`` (or ``from_time``)
given without ``deliver`` reads from there, where it read the newest message each time and a
paging loop written the obvious way never ended; a start the ``deliver`` given would not read
is refused, in one line, before any round trip."""

from __future__ import annotations

import asyncio

import pytest

from mq9_platform import Mq9Client
from mq9_wire.protocol.errors import InvalidArgument


async def test_a_paging_loop_with_from_id_alone_reads_every_message_once_and_ends():
    async with Mq9Client("memory://") as client:
        box = await client.mailbox_create()
        sent = [await client.send(box, f"m{n}") for n in range(7)]
        seen: list[int] = []
        next_id = 0
        async with asyncio.timeout(20):  # the loop used to run for ever
            while page := await client.fetch(box, from_id=next_id, num_msgs=3, max_wait_ms=0):
                page = [m for m in page if m.msg_id >= next_id]  # past the end: the newest
                if not page:
                    break
                seen += [m.msg_id for m in page]
                next_id = page[-1].msg_id + 1
        assert seen == sent


async def test_deliver_is_still_latest_when_no_start_is_named():
    async with Mq9Client("memory://") as client:
        box = await client.mailbox_create()
        sent = [await client.send(box, f"m{n}") for n in range(3)]
        assert [m.msg_id for m in await client.fetch(box, max_wait_ms=0)] == sent[-1:]


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"deliver": "latest", "from_id": 3}, "from_id is read only with deliver='from_id'"),
        ({"deliver": "earliest", "from_time": 3}, "from_time is read only with deliver="),
        ({"from_id": 3, "from_time": 3}, "give from_id or from_time, not both"),
    ],
)
async def test_a_start_the_deliver_given_would_not_read_is_refused(options, words):
    async with Mq9Client("memory://") as client:
        with pytest.raises(InvalidArgument, match=words):
            await client.fetch("any.box", **options)
