"""A task queue with competing workers: every task is done exactly once, even when a worker
crashes holding one.

A producer fills a queue mailbox; three workers fetch from it with the same group_name, one
task at a time. The broker leases each task to the worker that fetched it, so the others never
get it. worker-3 crashes after fetching a task and never acks it: once the lease ends (the
broker's ack-wait) the task is handed out again and a surviving worker completes it. Critical
tasks go first. Workers can join or leave at any time; nothing is configured.

    python examples/task_queue.py [--server nats://127.0.0.1:4222]

On memory:// this script gives its in-process broker a 2 s ack-wait so the crash recovery is
quick to watch. A NATS broker uses its own ack-wait (30 s by default on mq9-dev-broker).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from support import Names, banner, parser

from langchain_mq9 import Mq9Client, Priority
from langchain_mq9.broker import BrokerEngine, BrokerLimits, install_memory_broker

GROUP = "workers"
TASKS = [
    ("t-01", "resize image 1", Priority.NORMAL),
    ("t-02", "resize image 2", Priority.NORMAL),
    ("t-03", "reindex search", Priority.CRITICAL),
    ("t-04", "resize image 3", Priority.NORMAL),
    ("t-05", "send invoices", Priority.URGENT),
    ("t-06", "resize image 4", Priority.NORMAL),
    ("t-07", "resize image 5", Priority.NORMAL),
    ("t-08", "resize image 6", Priority.NORMAL),
]


class Ledger:
    """The demo's own bookkeeping, to show what happened; the broker needs none of it."""

    def __init__(self) -> None:
        self.handed_out: Counter[str] = Counter()
        self.completed: dict[str, str] = {}
        self.order: list[str] = []

    def all_done(self) -> bool:
        return len(self.completed) == len(TASKS)


async def worker(server: str, queue: str, name: str, ledger: Ledger, *, crash: bool,
                 give_up_at: float) -> None:
    async with Mq9Client(server) as client:
        while not ledger.all_done() and time.monotonic() < give_up_at:
            batch = await client.fetch(
                queue, group_name=GROUP, deliver="earliest", num_msgs=1, max_wait_ms=300
            )
            if not batch:
                continue
            [message] = batch
            task = message.json()
            ledger.handed_out[task["id"]] += 1
            if crash:
                print(f"[{name}] took {task['id']} ({task['what']}) and crashed before acking")
                return
            again = " (handed out again)" if ledger.handed_out[task["id"]] > 1 else ""
            print(f"[{name}] {task['id']} [{message.priority}] {task['what']}{again}")
            await asyncio.sleep(0.05)  # the work
            await client.ack(queue, GROUP, message.msg_id)
            ledger.completed.setdefault(task["id"], name)
            ledger.order.append(task["id"])


async def main(server: str) -> None:
    if server.startswith("memory://"):
        # A short lease for the demo: the crashed worker's task comes back after 2 s, not 30.
        install_memory_broker(
            server[len("memory://"):], BrokerEngine(limits=BrokerLimits(ack_wait=2.0))
        )
    queue = Names(server)("tasks.queue")

    banner("the producer fills the queue")
    async with Mq9Client(server) as producer:
        await producer.mailbox_create(name=queue, ttl=600)
        for task_id, what, priority in TASKS:
            await producer.send(queue, {"id": task_id, "what": what}, priority=priority)
        print(f"[producer] {len(TASKS)} tasks in {queue} (one critical, one urgent)")

    banner(f"three workers compete, sharing group_name={GROUP!r}")
    ledger = Ledger()
    give_up_at = time.monotonic() + 60
    crashing = asyncio.create_task(
        worker(server, queue, "worker-3", ledger, crash=True, give_up_at=give_up_at)
    )
    await crashing  # worker-3 grabs the first task (the critical one) and dies with it
    print("[broker] the crashed worker's task stays leased to the group until its ack-wait "
          "ends; nobody else gets it meanwhile")
    await asyncio.gather(
        worker(server, queue, "worker-1", ledger, crash=False, give_up_at=give_up_at),
        worker(server, queue, "worker-2", ledger, crash=False, give_up_at=give_up_at),
    )

    banner("result")
    per_worker = Counter(ledger.completed.values())
    print("completed: " + ", ".join(f"{w}: {n}" for w, n in sorted(per_worker.items())))
    twice = [t for t, n in ledger.handed_out.items() if n > 1]
    print(f"handed out twice (lease expired after a crash): {', '.join(twice) or 'none'}")
    done_twice = [t for t, n in Counter(ledger.order).items() if n > 1]
    if not ledger.all_done() or done_twice:
        raise SystemExit(f"not exactly once: missing or repeated tasks {done_twice}")
    print(f"each of the {len(TASKS)} tasks completed exactly once")


if __name__ == "__main__":
    asyncio.run(main(parser(__doc__).parse_args().server))
