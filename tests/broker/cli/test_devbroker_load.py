"""Bounded load on loopback: several producers and consumers against the dev broker (with
durable storage on), for a fixed number of messages. Afterwards the counts add up: nothing
lost, every msg_id given out once, every producer's messages in the order it sent them.

Consumers follow RobustMQ's rules (nats-broker ``mq9/fetch.rs``): a FETCH leases nothing, so
the workers of one group are handed the same messages until one of them ACKs, and ACK X moves
every priority lane to X + 1. Each FETCH asks for more messages than the mailbox can hold, so
every lane is read to its end and acking the largest msg_id of an answer skips nothing; a
worker drops msg_ids it has seen. Requests go out raw with nats-py.
"""

from __future__ import annotations

import asyncio

import nats
import pytest

from mq9_wire import protocol as p
from testbed.support.devbroker_helpers import DevBroker, request_ok

pytestmark = pytest.mark.slow

PRODUCERS = 4
PER_PRODUCER = 500
WORKERS = 3
TOTAL = PRODUCERS * PER_PRODUCER
BOX = "load.jobs"
WHOLE_MAILBOX = 10 * TOTAL  # num_msgs above the backlog: no lane is cut short


async def test_producers_and_consumers_account_for_every_message(tmp_path):
    with DevBroker("--port", "0", "--data", str(tmp_path)) as broker:
        connections = [await nats.connect(broker.url) for _ in range(PRODUCERS + WORKERS + 2)]
        producers = connections[:PRODUCERS]
        workers = connections[PRODUCERS : PRODUCERS + WORKERS]
        auditor, checker = connections[-2:]
        try:
            await request_ok(checker, p.MAILBOX_CREATE, {"name": BOX, "ttl": 0})
            seen: dict[str, set[str]] = {"workers": set(), "audit": set()}
            handed_ids: dict[str, set[int]] = {"workers": set(), "audit": set()}
            done = {group: asyncio.Event() for group in seen}

            async def consume(connection, group: str) -> int:
                fetches = 0
                request = {
                    "group_name": group,
                    "deliver": "earliest",
                    "config": {"num_msgs": WHOLE_MAILBOX, "max_wait_ms": 20},
                }
                while not done[group].is_set():
                    reply = await request_ok(connection, p.fetch_subject(BOX), request)
                    fetches += 1
                    if not reply["messages"]:
                        continue
                    for message in reply["messages"]:
                        handed_ids[group].add(message["msg_id"])
                        seen[group].add(message["payload"])
                    top = max(m["msg_id"] for m in reply["messages"])
                    await request_ok(
                        connection,
                        p.ack_subject(BOX),
                        {"group_name": group, "mail_address": BOX, "msg_id": top},
                    )
                    if len(seen[group]) >= TOTAL:
                        done[group].set()
                return fetches

            consumers = [asyncio.create_task(consume(c, "workers")) for c in workers]
            consumers.append(asyncio.create_task(consume(auditor, "audit")))

            async def produce(index: int, connection) -> list[int]:
                ids = []
                for n in range(PER_PRODUCER):
                    priority = ("normal", "urgent", "critical")[n % 3]
                    headers = {"mq9-priority": priority}
                    body = f"p{index}-{n}".encode()
                    reply = await request_ok(connection, p.send_subject(BOX), body, headers)
                    ids.append(reply["msg_id"])
                return ids

            sent_ids = await asyncio.wait_for(
                asyncio.gather(*(produce(i, c) for i, c in enumerate(producers))), 60
            )
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in done.values())), 60)
            fetch_counts = await asyncio.wait_for(asyncio.gather(*consumers), 10)
            assert all(count >= 1 for count in fetch_counts)

            expected = {f"p{i}-{n}" for i in range(PRODUCERS) for n in range(PER_PRODUCER)}
            for group in seen:
                assert seen[group] == expected, f"{group} lost messages"
                assert handed_ids[group] == set(range(TOTAL))
            # each producer's msg_ids grow in the order it sent; every id given out once
            for ids in sent_ids:
                assert ids == sorted(ids) and len(set(ids)) == PER_PRODUCER
            assert sorted(i for ids in sent_ids for i in ids) == list(range(TOTAL))
            # the broker still holds every message, and the workers' last ACK covers them all
            everything = await request_ok(
                checker,
                p.fetch_subject(BOX),
                {"deliver": "earliest", "config": {"num_msgs": WHOLE_MAILBOX, "max_wait_ms": 0}},
            )
            assert len(everything["messages"]) == TOTAL
            await request_ok(
                checker,
                p.ack_subject(BOX),
                {"group_name": "workers", "mail_address": BOX, "msg_id": TOTAL - 1},
            )
            for group in ("workers", "audit"):
                left = await request_ok(
                    checker,
                    p.fetch_subject(BOX),
                    {"group_name": group, "config": {"max_wait_ms": 0}},
                )
                assert left["messages"] == [], group
        finally:
            for connection in connections:
                await connection.close()
        assert broker.stop() == 0
