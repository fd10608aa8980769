"""What a flood of idempotency keys costs a dev broker: its resident memory as
one client sends keyed SENDs, each with a new key, to one mailbox that holds one message (an
``mq9-key`` compacts it, so only the keys grow). Unbounded, the keys would hold
the broker's memory for good: ``--max-keys`` caps them; a key new past the cap
is refused in one line, and the memory stops growing there.

    python -m bench.keys_held --sends 60000 --max-keys 20000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import nats

from mq9_wire import protocol as p
from testbed.devbroker import DevBroker


def rss_mib(pid: int) -> float:
    """The process's resident memory (Linux /proc), MiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS: Linux only")


async def flood(url: str, pid: int, sends: int, every: int, in_flight: int) -> dict:
    connection = await nats.connect(url)
    box = "flood.box"
    await connection.request(p.MAILBOX_CREATE, p.encode({"name": box, "ttl": 0}), timeout=30)
    subject = p.send_subject(box)
    counts = {"stored": 0, "refused": 0, "other": 0}
    samples = [(0, rss_mib(pid))]
    queue = iter(range(sends))
    done = 0

    async def worker() -> None:
        nonlocal done
        for n in queue:
            headers = {p.HEADER_IDEMPOTENCY_KEY: f"flood-{n:08d}", p.HEADER_KEY: "one"}
            answer = json.loads(
                (await connection.request(subject, b"x", timeout=30, headers=headers)).data
            )
            if not answer["error"]:
                counts["stored"] += 1
            elif "no room for another idempotency key" in answer["error"]:
                counts["refused"] += 1
            else:
                counts["other"] += 1
            done += 1
            if done % every == 0:
                samples.append((done, rss_mib(pid)))

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    await connection.close()
    return {**counts, "rss_mib": [(n, round(mib, 1)) for n, mib in samples]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sends", type=int, default=60_000)
    parser.add_argument("--max-keys", type=int, default=20_000)
    parser.add_argument("--every", type=int, default=10_000, help="RSS sampled each N SENDs")
    parser.add_argument("--in-flight", type=int, default=16)
    args = parser.parse_args()
    broker = DevBroker("--port", "0", "--no-search", "--max-keys", str(args.max_keys))
    try:
        assert broker.url is not None  # (the constructor waited for its ready line)
        url = broker.url
        found = asyncio.run(flood(url, broker.process.pid, args.sends, args.every, args.in_flight))
    finally:
        broker.stop()
    conditions = {"sends": args.sends, "max_keys": args.max_keys,
                  "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}  # fmt: skip
    print(json.dumps({**found, "conditions": conditions}, indent=2))


if __name__ == "__main__":
    main()
