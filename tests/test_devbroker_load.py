"""Bounded load on loopback: several producers and competing consumers against the dev broker
(with durable storage on), for a fixed number of messages. Afterwards the counts add up:
nothing lost, nothing handled twice, every producer's messages in the order it sent them.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from devbroker_helpers import DevBroker

from langchain_mq9 import Mq9Client, Priority
from langchain_mq9.broker.nats_process import free_port

PRODUCERS = 4
PER_PRODUCER = 500
CONSUMERS = 3
TOTAL = PRODUCERS * PER_PRODUCER


async def test_producers_and_competing_consumers_account_for_every_message(tmp_path):
    with DevBroker("--port", str(free_port()), "--data", str(tmp_path)) as broker:
        clients = [Mq9Client(broker.url) for _ in range(PRODUCERS + CONSUMERS + 1)]
        for client in clients:
            await client.connect()
        producers, workers, auditor = (
            clients[:PRODUCERS],
            clients[PRODUCERS:-1],
            clients[-1],
        )
        try:
            box = await auditor.mailbox_create(name="load.jobs")
            handled: dict[str, list[bytes]] = {"workers": [], "audit": []}
            per_worker: Counter[int] = Counter()
            done = {name: asyncio.Event() for name in handled}

            def handler_for(group: str, worker: int):
                def handle(message) -> None:
                    handled[group].append(message.payload)
                    per_worker[worker] += group == "workers"
                    if len(handled[group]) >= TOTAL:
                        done[group].set()

                return handle

            consumers = [
                await client.consume(
                    box,
                    handler_for("workers", n),
                    group_name="workers",
                    deliver="earliest",
                    num_msgs=20,
                    max_wait_ms=200,
                )
                for n, client in enumerate(workers)
            ]
            # an independent group sees everything once more
            consumers.append(
                await auditor.consume(
                    box,
                    handler_for("audit", -1),
                    group_name="audit",
                    deliver="earliest",
                    num_msgs=50,
                    max_wait_ms=200,
                )
            )

            async def produce(index: int, client: Mq9Client) -> list[int]:
                ids = []
                for n in range(PER_PRODUCER):
                    priority = (Priority.NORMAL, Priority.URGENT, Priority.CRITICAL)[n % 3]
                    ids.append(await client.send(box, f"p{index}-{n}", priority=priority))
                return ids

            sent_ids = await asyncio.wait_for(
                asyncio.gather(*(produce(i, c) for i, c in enumerate(producers))), 60
            )
            await asyncio.wait_for(done["workers"].wait(), 60)
            await asyncio.wait_for(done["audit"].wait(), 60)
            for consumer in consumers:
                await consumer.stop()

            expected = {f"p{i}-{n}".encode() for i in range(PRODUCERS) for n in range(PER_PRODUCER)}
            for group, payloads in handled.items():
                duplicates = [p for p, count in Counter(payloads).items() if count > 1]
                assert not duplicates, f"{group} handled {len(duplicates)} messages twice"
                assert set(payloads) == expected, f"{group} lost messages"
            assert sum(per_worker.values()) == TOTAL
            # each producer's msg_ids grow in the order it sent; all ids distinct
            for ids in sent_ids:
                assert ids == sorted(ids) and len(set(ids)) == PER_PRODUCER
            assert len({i for ids in sent_ids for i in ids}) == TOTAL
            # the broker still holds every message, and both groups are fully acked
            assert len(await auditor.query(box, limit=TOTAL)) == TOTAL
            for group in ("workers", "audit"):
                assert await auditor.fetch(box, group_name=group, max_wait_ms=0) == []
        finally:
            for client in clients:
                await client.close()
        assert broker.stop() == 0
