"""Mailboxes in one minute: create, send with priorities, read in priority order, ack, query.

python examples/quickstart.py                     # in-process broker, no server needed
python examples/quickstart.py --server nats://127.0.0.1:4222   # mq9-dev-broker or RobustMQ
"""

from __future__ import annotations

import argparse
import asyncio

from langchain_mq9 import GroupReader, Mq9Client, Priority


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

        # The recipient comes online and reads in priority order, as consumer group "edge".
        # A GroupReader, not raw fetch + ack: a group's FETCH hands the same messages out
        # again until they are acked, and an ACK moves every priority lane at once, so the
        # reader hands each message out once and acks only past what is handled.
        reader = GroupReader(client, inbox, "edge")
        messages = await reader.fetch(num_msgs=10)
        for message in messages:
            print(f"  fetched msg {message.msg_id} [{message.priority}] {message.json()}")
        await reader.done([m.msg_id for m in messages])
        # The reader acks as far as the answers prove safe; one more (empty) fetch proves the
        # rest, since RobustMQ reads the priority lanes one after another.
        assert await reader.fetch() == []
        print(f"handled them all; the group's position is committed up to msg {reader.committed}")

        again = await GroupReader(client, inbox, "edge").fetch()  # e.g. after a restart
        print(f"fetching again hands out {len(again)} messages: the group's position is kept")

        latest = await client.query(inbox, key="status")
        print(f"query by key 'status' (read-only): {latest[0].json()}")
        print("done")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="memory://", help="broker URL (default memory://)")
    asyncio.run(main(parser.parse_args().server))
