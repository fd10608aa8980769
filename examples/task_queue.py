"""A task queue with competing workers: every task is done exactly once, even when a worker
crashes holding one.

A producer fills a queue mailbox; three workers read it with the same group_name, one task at
a time, each through a GroupReader with its own worker name. Workers of a group are all handed
the same messages by the broker (a FETCH reads the group's position, it leases nothing), so
each reader first claims a task, in the side mailbox ``<queue>.claims``, and works only on the
tasks it won: no task goes to two workers. worker-3 crashes after taking a task and restarts
under the same name: the oldest claim wins, so it takes that task back and completes it. Then
the three share the rest, critical tasks first. Workers can join or leave at any time.

    python examples/task_queue.py [--server nats://127.0.0.1:4222]

The catch of claims: a worker that never comes back (or comes back under another name) loses
the tasks it held: the others count them as taken and the group moves past them, so they are
only left in the mailbox (``query`` finds them). Give workers stable names, e.g. the host.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from support import Names, banner, parser

from langchain_mq9 import GroupReader, Mq9Client, Priority

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


async def worker(
    server: str,
    queue: str,
    name: str,
    ledger: Ledger,
    *,
    crash: bool = False,
    give_up_at: float,
    resumed: asyncio.Event | None = None,
) -> None:
    async with Mq9Client(server) as client:
        reader = GroupReader(client, queue, GROUP, worker=name)
        while not ledger.all_done() and time.monotonic() < give_up_at:
            # A short wait: an empty FETCH waits all of it, even if a task arrives meanwhile.
            batch = await reader.fetch(num_msgs=1, max_wait_ms=200)
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
            await reader.done(message.msg_id)
            ledger.completed.setdefault(task["id"], name)
            ledger.order.append(task["id"])
            if resumed is not None:
                resumed.set()


async def main(server: str) -> None:
    queue = Names(server)("tasks.queue")

    banner("the producer fills the queue")
    async with Mq9Client(server) as producer:
        await producer.mailbox_create(name=queue, ttl=600)
        for task_id, what, priority in TASKS:
            await producer.send(queue, {"id": task_id, "what": what}, priority=priority)
        print(f"[producer] {len(TASKS)} tasks in {queue} (one critical, one urgent)")

    ledger = Ledger()
    give_up_at = time.monotonic() + 60
    banner("worker-3 takes the first task (the critical one) and crashes")
    await worker(server, queue, "worker-3", ledger, crash=True, give_up_at=give_up_at)

    banner("worker-3 restarts under its name and takes back its claim")
    resumed = asyncio.Event()
    restarted = asyncio.create_task(
        worker(server, queue, "worker-3", ledger, give_up_at=give_up_at, resumed=resumed)
    )
    await resumed.wait()  # before the others join: they would count its claim as taken

    banner(f"three workers compete, sharing group_name={GROUP!r}")
    await asyncio.gather(
        restarted,
        worker(server, queue, "worker-1", ledger, give_up_at=give_up_at),
        worker(server, queue, "worker-2", ledger, give_up_at=give_up_at),
    )

    banner("result")
    per_worker = Counter(ledger.completed.values())
    print("completed: " + ", ".join(f"{w}: {n}" for w, n in sorted(per_worker.items())))
    twice = [t for t, n in ledger.handed_out.items() if n > 1]
    print(f"handed out again (to the restarted worker-3): {', '.join(twice) or 'none'}")
    done_twice = [t for t, n in Counter(ledger.order).items() if n > 1]
    if not ledger.all_done() or done_twice:
        raise SystemExit(f"not exactly once: missing or repeated tasks {done_twice}")
    print(f"each of the {len(TASKS)} tasks completed exactly once")


if __name__ == "__main__":
    asyncio.run(main(parser(__doc__).parse_args().server))
