"""Alert fan-out: one alert mailbox, independent handler groups, nobody misses an alert.

A monitoring agent posts alerts to one mailbox; it does not know who listens. Every consumer
group gets every alert, independently: the pager (two instances that share the work, as one
group: each consumer names itself with ``worker=`` and claims an alert before paging, so no
alert pages twice), the autoscaler, and an audit agent that is offline while the alerts fire
and reads them, most severe first, when it starts. A dashboard looks with a read-only query
by tags (an alert matches if it has ANY of them), consuming nothing.

    python examples/alert_fanout.py [--server nats://127.0.0.1:4222]
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from support import Names, banner, parser

from langchain_mq9 import GroupReader, Message, Mq9Client, Priority

ALERTS = [
    ({"alert": "payment timeout rate at 15%"}, Priority.CRITICAL, ["payment", "timeout"]),
    ({"alert": "p99 checkout latency 2.1 s"}, Priority.URGENT, ["payment", "latency"]),
    ({"alert": "retry queue growing"}, Priority.NORMAL, ["payment", "queue"]),
    ({"alert": "card processor unreachable"}, Priority.CRITICAL, ["payment", "processor"]),
]


async def wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit("handlers did not receive every alert in time")
        await asyncio.sleep(0.05)


async def main(server: str) -> None:
    alerts = Names(server)("alerts.payment")
    seen: Counter[str] = Counter()  # alerts handled per handler instance
    by_group: dict[str, Counter[str]] = {g: Counter() for g in ("pager", "autoscaler", "audit")}

    def handler(name: str, group: str, action: str):
        async def handle(message: Message) -> None:
            seen[name] += 1
            by_group[group][message.json()["alert"]] += 1
            print(f"[{name}] {action}: {message.json()['alert']} [{message.priority}]")
            await asyncio.sleep(0.05)  # the handling takes a moment

        return handle

    async with Mq9Client(server) as client:
        await client.mailbox_create(name=alerts, ttl=600)

        banner("online handlers subscribe: each group gets every alert")
        consumers = [
            # Two instances of one group: they split the alerts between them. Short waits:
            # an empty FETCH waits all of max_wait_ms, even if an alert arrives meanwhile.
            await client.consume(
                alerts,
                handler("pager-1", "pager", "page on-call"),
                group_name="pager",
                worker="pager-1",
                num_msgs=1,
                deliver="earliest",
                max_wait_ms=100,
            ),
            await client.consume(
                alerts,
                handler("pager-2", "pager", "page on-call"),
                group_name="pager",
                worker="pager-2",
                num_msgs=1,
                deliver="earliest",
                max_wait_ms=100,
            ),
            await client.consume(
                alerts,
                handler("autoscaler", "autoscaler", "check capacity"),
                group_name="autoscaler",
                deliver="earliest",
                max_wait_ms=100,
            ),
        ]
        print("[handlers] pager (2 instances) and autoscaler online; audit is offline")

        banner("the monitoring agent fires alerts into one mailbox")
        for body, priority, tags in ALERTS:
            await client.send(alerts, body, priority=priority, tags=tags)
            print(f"[monitor] {priority}: {body['alert']}")
        await wait_until(
            lambda: (
                seen["pager-1"] + seen["pager-2"] == len(ALERTS)
                and seen["autoscaler"] == len(ALERTS)
            )
        )
        for consumer in consumers:
            await consumer.stop()

        banner("the audit agent starts later and still gets every alert, most severe first")
        async with Mq9Client(server) as audit:
            reader = GroupReader(audit, alerts, "audit")
            backlog = await reader.fetch(num_msgs=10)
            for message in backlog:
                print(f"[audit] record [{message.priority}] {message.json()['alert']}")
                by_group["audit"][message.json()["alert"]] += 1
            # Not an ack of the last one: it comes in priority order, and an ack moves every
            # priority lane past its msg_id. The reader acks past what is handled.
            await reader.done([m.msg_id for m in backlog])

        banner("a dashboard looks without consuming (query by tags)")
        timeouts = await client.query(alerts, tags=["timeout", "processor"])
        found = [m.json()["alert"] for m in timeouts]
        print(f"[dashboard] alerts tagged timeout or processor: {found}")

    banner("result")
    pager = seen["pager-1"] + seen["pager-2"]
    print(
        f"pager group: {pager} alerts (pager-1 {seen['pager-1']}, pager-2 {seen['pager-2']}); "
        f"autoscaler: {sum(by_group['autoscaler'].values())}; "
        f"audit: {sum(by_group['audit'].values())}"
    )
    once_each = Counter(body["alert"] for body, _, _ in ALERTS)
    wrong = [group for group, handled in by_group.items() if handled != once_each]
    if wrong:
        raise SystemExit(f"not every alert exactly once in: {', '.join(wrong)}")
    print(
        f"every handler group got all {len(ALERTS)} alerts; inside the pager group each alert "
        "was handled once"
    )


if __name__ == "__main__":
    asyncio.run(main(parser(__doc__).parse_args().server))
