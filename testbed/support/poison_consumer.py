"""A consumer process that dies on its poison message
(tests/platform/groups/test_crash_attribution.py):
``python poison_consumer.py URL MAILBOX LOG``. It reads MAILBOX with the consumer group
``billing``, appends the msg_id of each order it handled to LOG, and exits at once (no
cleanup, like a crash) with code 3 when handed the message "poison"."""

from __future__ import annotations

import asyncio
import os
import sys

from mq9_platform import Message, Mq9Client

POISON_EXIT = 3


async def main(url: str, mailbox: str, log: str) -> None:
    def handle(message: Message) -> None:
        if message.text() == "poison":
            os._exit(POISON_EXIT)
        with open(log, "a") as handled:
            handled.write(f"{message.msg_id}\n")

    async with Mq9Client(url) as client:
        await client.consume(
            mailbox, handle, group_name="billing", deliver="earliest", num_msgs=10, max_wait_ms=100
        )
        await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
