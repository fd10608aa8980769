"""Worker status with keyed, expiring heartbeats: the latest state of every worker, and
silence as the offline signal.

Workers post heartbeats to a status board mailbox with key=<worker> (the board keeps only the
newest message per worker) and a 3 s message TTL (a heartbeat nobody renews disappears). The
orchestrator reads the board with a read-only query: one entry per live worker, no polling of
the workers themselves, no deregistration. A worker that crashes simply drops off the board,
and its session mailbox (mailbox TTL) is gone soon after, with nothing to clean up.

TTLs are seconds here so the demo is quick; the script waits for them in real time. RobustMQ
removes expired mailboxes in a sweep that runs every 60 s, so there the last step can take
up to a minute longer.

    python examples/worker_status.py [--server nats://127.0.0.1:4222]
"""

from __future__ import annotations

import asyncio
import time

from support import Names, banner, parser

from langchain_mq9 import Mq9Client, Mq9Error

HEARTBEAT_TTL = 3  # seconds a heartbeat stays on the board unless renewed
SESSION_TTL = 2  # seconds worker.b's session mailbox lives (minutes or hours in real life)


async def heartbeat(client: Mq9Client, board: str, worker: str, status: str, load: float) -> None:
    await client.send(
        board,
        {"worker": worker, "status": status, "load": load},
        key=worker,
        ttl=HEARTBEAT_TTL,
        tags=["heartbeat"],
    )


async def show_board(client: Mq9Client, board: str, started: float) -> set[str]:
    """The orchestrator's view: one line with every worker that has a live heartbeat."""
    entries = [m.json() for m in await client.query(board, tags=["heartbeat"])]
    view = ", ".join(f"{e['worker']}={e['status']}({e['load']:.1f})" for e in entries)
    print(f"[orchestrator] t+{time.monotonic() - started:.1f}s board: {view or '(empty)'}")
    return {e["worker"] for e in entries}


async def main(server: str) -> None:
    names = Names(server)
    board = names("fleet.status")
    worker_a, worker_b = names("worker.a"), names("worker.b")
    started = time.monotonic()

    async with Mq9Client(server) as orchestrator, Mq9Client(server) as a, Mq9Client(server) as b:
        await orchestrator.mailbox_create(name=board, ttl=600)
        await a.mailbox_create(name=f"{worker_a}.inbox", ttl=3600)
        await b.mailbox_create(name=f"{worker_b}.inbox", ttl=SESSION_TTL)
        print(
            f"[orchestrator] status board {board}; workers post heartbeats keyed by name, "
            f"TTL {HEARTBEAT_TTL} s"
        )

        banner("both workers report; the board keeps only each worker's latest state")
        await heartbeat(a, board, worker_a, "starting", 0.0)
        await heartbeat(b, board, worker_b, "idle", 0.0)
        await heartbeat(a, board, worker_a, "busy", 0.6)  # replaces worker.a's "starting"
        print("[workers] 3 heartbeats sent (worker.a twice)")
        live = await show_board(orchestrator, board, started)
        assert live == {worker_a, worker_b}

        banner(f"{worker_b} crashes; {worker_a} keeps sending a heartbeat every 0.5 s")
        await b.close()
        print(f"[{worker_b}] (crashed: no more heartbeats)")
        deadline = time.monotonic() + HEARTBEAT_TTL + 3
        while worker_b in live and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            await heartbeat(a, board, worker_a, "busy", 0.7)
            live = await show_board(orchestrator, board, started)
        if worker_b in live:
            raise SystemExit(f"{worker_b}'s heartbeat did not expire")
        print(
            f"[orchestrator] {worker_b} has no heartbeat within its {HEARTBEAT_TTL} s TTL → "
            "offline; stop sending it work"
        )
        assert worker_a in live, f"{worker_a} should still be on the board"
        print(f"[orchestrator] {worker_a} is still live")

        banner("and the crashed worker's session mailbox expired on its own")
        deadline = time.monotonic() + SESSION_TTL + 70  # RobustMQ's sweep: every 60 s
        while True:
            try:
                # A SEND, not a QUERY: RobustMQ may still answer a QUERY from its cache for a
                # while after the sweep, while SEND sees the mailbox gone at once. The ping
                # expires by itself (ttl) if the mailbox is still there.
                await orchestrator.send(f"{worker_b}.inbox", {"ping": True}, ttl=1)
            except Mq9Error as exc:
                print(f"[orchestrator] look at {worker_b}.inbox: {exc}")
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"{worker_b}.inbox should have expired")
            await asyncio.sleep(0.25)  # not yet: its TTL runs from when it was created
        await orchestrator.send(f"{worker_a}.inbox", {"task": "reindex"})
        print(f"[orchestrator] send to {worker_a}.inbox: ok")


if __name__ == "__main__":
    asyncio.run(main(parser(__doc__).parse_args().server))
