"""Cloud-to-edge commands: queued while the edge agent is offline, run in priority order when
it reconnects.

The edge agent creates its mailbox once and drops off the network. The cloud keeps sending:
routine commands, an urgent one, an emergency stop (critical), two config updates under one
key (only the newest is kept) and a snapshot request that is only worth doing within 1 s
(message TTL). When the edge reconnects it fetches in small batches: critical first, then
urgent, then the routine ones in the order sent; the stale snapshot request is gone. It marks
each command done as it runs it (its GroupReader acks the group past what is done) and deletes
it, and a query confirms nothing is left behind.

    python examples/edge_commands.py [--server nats://127.0.0.1:4222]
"""

from __future__ import annotations

import asyncio

from support import Names, banner, parser

from langchain_mq9 import GroupReader, Mq9Client, Priority

COMMANDS = [
    # (command, options for send)
    ({"cmd": "report_status"}, {}),
    ({"cmd": "set_config", "interval_s": 60}, {"key": "config"}),
    (
        {"cmd": "emergency_stop", "reason": "motor temperature 98 °C"},
        {"priority": Priority.CRITICAL},
    ),
    ({"cmd": "rotate_credentials"}, {"priority": Priority.URGENT}),
    ({"cmd": "take_snapshot"}, {"ttl": 1}),  # pointless if not done within a second
    ({"cmd": "set_config", "interval_s": 30}, {"key": "config"}),  # replaces the 60 s config
    ({"cmd": "run_diagnostic"}, {}),
]


def describe(body: dict) -> str:
    return " ".join([body["cmd"], *(f"{k}={v}" for k, v in body.items() if k != "cmd")])


async def main(server: str) -> None:
    edge_box = Names(server)("edge.device.42")

    banner("the edge agent registers its mailbox, then loses its connection")
    async with Mq9Client(server) as edge:
        await edge.mailbox_create(name=edge_box, ttl=3600)
        print(f"[edge] my mailbox is {edge_box}")
    print("[edge] offline")

    banner("the cloud sends commands while the edge is offline")
    async with Mq9Client(server) as cloud:
        for body, options in COMMANDS:
            await cloud.send(edge_box, body, **options)
            extras = ", ".join(f"{k}={v}" for k, v in options.items()) or "normal"
            print(f"[cloud] {describe(body)}  ({extras})")
    # The edge stays offline past the snapshot's 1 s TTL. TTLs count whole seconds and a
    # message stays visible through its last second, so a 1 s TTL ends within 2 s.
    await asyncio.sleep(2.1)
    print("[edge] still offline... (2.1 s)")

    banner("the edge reconnects and works through its mailbox, 3 commands per batch")
    ran: list[str] = []
    async with Mq9Client(server) as edge:
        # Not fetch + ack of the batch's last msg_id: a batch comes in priority order, and an
        # ack moves every priority lane past its msg_id, skipping older routine commands.
        reader = GroupReader(edge, edge_box, "edge")
        while batch := await reader.fetch(num_msgs=3):
            for message in batch:
                ran.append(message.json()["cmd"])
                print(f"[edge] run {len(ran)}. [{message.priority}] {describe(message.json())}")
                await reader.done(message.msg_id)
                await edge.delete(edge_box, message.msg_id)  # a real mailbox, not a log
            print(f"[edge] batch done and deleted: msgs {[m.msg_id for m in batch]}")
        left = await edge.query(edge_box)
        print(f"[edge] safety net: query shows {len(left)} commands left in the mailbox")

    banner("result")
    expected = [
        "emergency_stop",
        "rotate_credentials",
        "report_status",
        "set_config",
        "run_diagnostic",
    ]
    print(f"order run: {' → '.join(ran)}")
    if ran != expected or left:
        raise SystemExit(f"expected {expected} and an empty mailbox")
    print(
        "critical before urgent before normal; one config (the newest); the stale snapshot "
        "request expired unrun"
    )


if __name__ == "__main__":
    asyncio.run(main(parser(__doc__).parse_args().server))
