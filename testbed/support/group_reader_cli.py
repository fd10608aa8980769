"""One step of a consumer group's reader as a process of its own
(tests/platform/groups/test_acks_across_processes.py): ``python group_reader_cli.py URL MAILBOX
fetch``
fetches and begins handling (prints the msg_ids handed out, one line), then exits without an
ack; ``... ack MSG_ID`` acks what an earlier process handed out up to MSG_ID (prints what it
confirmed). The group is ``billing``, read by its one reader or, with a fourth argument, as
that worker."""

from __future__ import annotations

import asyncio
import json
import sys

from mq9_platform import GroupReader, Mq9Client


async def main(url: str, mailbox: str, step: str, *rest: str) -> None:
    worker = rest[1] if len(rest) > 1 else None
    async with Mq9Client(url) as client:
        reader = GroupReader(client, mailbox, "billing", worker=worker)
        if step == "fetch":
            ids = [m.msg_id for m in await reader.fetch(num_msgs=10)]
            await reader.begin(ids)
            print(json.dumps(ids))
            return
        adopted = await reader.adopt(int(rest[0]))
        if adopted:
            await reader.done(adopted)
        print(json.dumps(adopted))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
