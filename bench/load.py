"""A load generator process for the throughput benchmark: concurrent Mq9Client workers.

Each worker has its own client (its own NATS connection) and mailbox, and loops SEND one
message, FETCH it with a consumer group, ACK it. Commands come one per line on stdin:

    setup        create the workers' mailboxes (an existing one is fine)
    run SECONDS  run the loop that long; prints {"cycles": N, "seconds": S}
    (end of input: close the clients and leave)

    python -m bench.load --url nats://127.0.0.1:PORT --workers 16 --tag 0
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from langchain_mq9 import Mq9Client, Mq9Error

PAYLOAD = b"t" * 200
GROUP = "bench"


async def cycle_until(client: Mq9Client, address: str, deadline: float) -> int:
    cycles = 0
    clock = time.perf_counter
    while clock() < deadline:
        await client.send(address, PAYLOAD)
        messages = await client.fetch(
            address, group_name=GROUP, deliver="earliest", num_msgs=1, max_wait_ms=0
        )
        if messages:
            await client.ack(address, GROUP, messages[-1].msg_id)
        cycles += 1
    return cycles


async def serve(url: str, workers: int, tag: str) -> None:
    clients = [await Mq9Client(url).connect() for _ in range(workers)]
    addresses = [f"bench.load.{tag}.{i}" for i in range(workers)]
    loop = asyncio.get_running_loop()
    print("ready", flush=True)
    try:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return
            command, _, argument = line.strip().partition(" ")
            if command == "setup":
                for address in addresses:
                    try:
                        await clients[0].mailbox_create(name=address)
                    except Mq9Error as exc:
                        if "already exists" not in exc.message:
                            raise
                print(json.dumps({"ok": True}), flush=True)
            elif command == "run":
                seconds = float(argument)
                started = time.perf_counter()
                counts = await asyncio.gather(
                    *(
                        cycle_until(c, a, started + seconds)
                        for c, a in zip(clients, addresses, strict=True)
                    )
                )
                elapsed = time.perf_counter() - started
                print(json.dumps({"cycles": sum(counts), "seconds": elapsed}), flush=True)
    finally:
        for client in clients:
            await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--tag", default="0")
    args = parser.parse_args()
    asyncio.run(serve(args.url, args.workers, args.tag))


if __name__ == "__main__":
    main()
