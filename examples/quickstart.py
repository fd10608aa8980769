"""Mailboxes in one minute: create, send with priorities, fetch in priority order, ack, query.

python examples/quickstart.py                     # in-process broker, no server needed
python examples/quickstart.py --server nats://127.0.0.1:4222   # mq9-dev-broker or RobustMQ
"""

from __future__ import annotations

import argparse
import asyncio

from langchain_mq9 import Mq9Client, Priority


async def main(server: str) -> None:
    async with Mq9Client(server) as client:
        print(f"connected to {server}")
        inbox = await client.mailbox_create(ttl=3600)
        print(f"created a private mailbox: {inbox}")

        # The recipient is offline: messages wait in the mailbox.
        await client.send(inbox, {"cmd": "run_diagnostic"})
        await client.send(inbox, {"cmd": "reconfigure"}, priority=Priority.URGENT)
        await client.send(inbox, {"cmd": "emergency_stop"}, priority=Priority.CRITICAL)
        await client.send(inbox, {"status": "busy"}, key="status")
        await client.send(inbox, {"status": "idle"}, key="status")  # replaces "busy"
        print("sent 5 messages (normal, urgent, critical, and two keyed status updates)")

        # The recipient comes online and reads in priority order.
        messages = await client.fetch(inbox, group_name="edge", deliver="earliest")
        for message in messages:
            print(f"  fetched msg {message.msg_id} [{message.priority}] {message.json()}")
        await client.ack(inbox, "edge", messages[-1].msg_id)
        print(f"acked the batch up to msg {messages[-1].msg_id}")

        again = await client.fetch(inbox, group_name="edge", max_wait_ms=0)
        print(f"fetching again hands out {len(again)} messages: the group's position is kept")

        latest = await client.query(inbox, key="status")
        print(f"query by key 'status' (read-only): {latest[0].json()}")
        print("done")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="memory://", help="broker URL (default memory://)")
    asyncio.run(main(parser.parse_args().server))
