"""Sub-agents deliver results to an orchestrator that is offline.

The orchestrator creates a private reply mailbox, hands out three tasks that carry it as
reply_to, and goes offline. The sub-agents finish while it is away: their results wait in the
mailbox. When the orchestrator is back it reads them, and one result that is still being
worked on arrives while it waits (a fetch loop that polls). A read-only query is the safety net
that nothing was missed. No webhook, no orchestrator that must stay up.

    python examples/sub_agent_results.py [--server nats://127.0.0.1:4222]
"""

from __future__ import annotations

import asyncio

from support import Names, banner, parser, wait_for_messages

from langchain_mq9 import GroupReader, Mq9Client

TASKS = {
    "t-1": ("agent.research", "find three papers on agent messaging"),
    "t-2": ("agent.analyst", "compute the anomaly rate of yesterday's payments"),
    "t-3": ("agent.writer", "draft the weekly status email"),
}
RESULTS = {
    "t-1": "3 papers found: A2A, FIPA-ACL, mq9",
    "t-2": "anomaly rate 2.3% (up from 0.4%)",
    "t-3": "draft ready: 212 words",
}


async def sub_agent(server: str, mailbox: str, *, late: asyncio.Event | None = None) -> None:
    """A sub-agent run: take its task, do it, send the result to reply_to, mark it done.

    ``late``: still working until the orchestrator is back and waiting for results."""
    async with Mq9Client(server) as client:
        reader = GroupReader(client, mailbox, "worker")
        [task] = await reader.fetch(num_msgs=1)
        work = task.json()
        if late is not None:
            await late.wait()
            await asyncio.sleep(0.3)
        when = "while the orchestrator waits" if late else "while the orchestrator is offline"
        print(f"[{mailbox}] finished {work['task_id']}, sends the result {when}")
        await client.send(
            work["reply_to"], {"task_id": work["task_id"], "result": RESULTS[work["task_id"]]}
        )
        await reader.done(task.msg_id)


async def main(server: str) -> None:
    names = Names(server)
    mailboxes = {task_id: names(box) for task_id, (box, _) in TASKS.items()}

    banner("the orchestrator hands out work, then goes offline")
    async with Mq9Client(server) as orchestrator:
        reply_box = await orchestrator.mailbox_create(ttl=3600)  # private: unguessable address
        print(f"[orchestrator] private reply mailbox: {reply_box}")
        for task_id, (_, what) in TASKS.items():
            box = mailboxes[task_id]
            await orchestrator.mailbox_create(name=box, ttl=600)
            await orchestrator.send(box, {"task_id": task_id, "task": what, "reply_to": reply_box})
            print(f"[orchestrator] sent {task_id} to {box}: {what}")
    print("[orchestrator] offline (connection closed)")

    banner("two sub-agents finish while the orchestrator is away")
    await sub_agent(server, mailboxes["t-1"])
    await sub_agent(server, mailboxes["t-2"])

    banner("the orchestrator comes back")
    async with Mq9Client(server) as orchestrator:
        waiting = asyncio.Event()
        late = asyncio.create_task(sub_agent(server, mailboxes["t-3"], late=waiting))
        replies = GroupReader(orchestrator, reply_box, "orchestrator")
        received: dict[str, str] = {}
        while len(received) < len(TASKS):
            # Up to 5 s, answering within a poll of a result's arrival.
            batch = await wait_for_messages(replies, 5)
            if not batch:
                break
            for message in batch:
                result = message.json()
                received[result["task_id"]] = result["result"]
                print(f"[orchestrator] result of {result['task_id']}: {result['result']}")
            await replies.done([m.msg_id for m in batch])
            waiting.set()
        await late

        # Safety net: a read-only look at everything the mailbox holds.
        stored = {m.json()["task_id"] for m in await orchestrator.query(reply_box)}
        missing = sorted(set(TASKS) - stored)
        print(
            f"[orchestrator] safety net: the reply mailbox holds results for "
            f"{', '.join(sorted(stored))}; missing: {', '.join(missing) or 'none'}"
        )
    if sorted(received) != sorted(TASKS):
        raise SystemExit(f"results missing: {sorted(set(TASKS) - set(received))}")
    print("all 3 results delivered, 2 of them while the orchestrator was offline")


if __name__ == "__main__":
    asyncio.run(main(parser(__doc__).parse_args().server))
