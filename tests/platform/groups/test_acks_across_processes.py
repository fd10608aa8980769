"""Acks across processes and replicas (issue #51): what one reader handed out under an
identity (the group's one reader, or a worker name) is acked by the next reader of that
identity, from what the broker keeps (the group's position, hand-out records, claims), never
from a process's memory. Over ``memory://`` and the dev broker on a real nats-server, with
two connections; and with real processes on the dev broker."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mq9_platform import GroupReader

HERE = Path(__file__).resolve().parents[3] / "testbed" / "support"  # helpers run as scripts
WAIT = 60
_boxes = itertools.count()


async def box_with(client, *priorities: str) -> str:
    box = await client.mailbox_create(name=f"across.box{next(_boxes)}")
    for i, priority in enumerate(priorities):
        await client.send(box, f"m{i}", priority=priority)
    return box


async def test_the_next_reader_acks_what_the_last_one_handed_out(broker, client):
    box = await box_with(client, "normal", "normal", "critical", "normal")
    async with broker.client() as other_connection:
        first = GroupReader(client, box, "billing")
        shown = [m.msg_id for m in await first.fetch(num_msgs=3)]
        assert shown == [2, 0, 1]
        await first.begin(shown)
        await client.send(box, "late", priority="critical")  # msg 4: never handed out
        # the first reader is gone; the next one (another connection) acks up to msg 1
        second = GroupReader(other_connection, box, "billing")
        adopted = await second.adopt(1)
        assert adopted == [2, 0, 1]  # 2 came first, with a hand-out record; 4 did not
        await second.done(adopted)
        left = await client.fetch(box, group_name="billing", max_wait_ms=0, num_msgs=10)
        assert sorted(m.msg_id for m in left) == [3, 4]


async def test_what_was_not_handed_out_or_is_finished_is_not_adopted(broker, client):
    box = await box_with(client, "normal", "normal")
    async with broker.client() as other_connection:
        # never handed to a handler or a model: a made-up msg_id acks nothing
        assert await GroupReader(other_connection, box, "billing").adopt(0) == []
        first = GroupReader(client, box, "billing")
        await first.fetch(num_msgs=1)
        await first.begin([0])
        await first.done([0])
        second = GroupReader(other_connection, box, "billing")
        assert await second.adopt(0) == []  # finished and acked already
        assert await second.adopt(7) == []  # no such message
        # a reader's own memory wins: what it read and never handed out is not adopted
        third = GroupReader(other_connection, box, "billing")
        assert [m.msg_id for m in await third.fetch(num_msgs=1)] == [1]
        await third.release([1])
        assert await third.adopt(1) == []


async def test_a_worker_adopts_only_what_its_name_holds(broker, client):
    box = await box_with(client, "normal", "normal", "normal")
    async with broker.client() as other_connection:
        alice = GroupReader(client, box, "billing", worker="alice", lease_ttl=60)
        assert [m.msg_id for m in await alice.fetch(num_msgs=2)] == [0, 1]
        bob = GroupReader(other_connection, box, "billing", worker="bob", lease_ttl=60)
        assert await bob.adopt(1) == []  # alice holds it
        alice_again = GroupReader(other_connection, box, "billing", worker="alice", lease_ttl=60)
        assert await alice_again.adopt(1) == [0, 1]
        await alice_again.done([0, 1])
        assert [m.msg_id for m in await bob.fetch()] == [2]


def step(url: str, box: str, *args: str) -> list[int]:
    done = subprocess.run(
        [sys.executable, str(HERE / "group_reader_cli.py"), url, box, *args],
        capture_output=True,
        timeout=WAIT,
        check=True,
    )
    return json.loads(done.stdout)


@pytest.mark.slow
async def test_one_process_fetches_and_the_next_acks(nats_broker):
    async with nats_broker.client() as client:
        for worker in ((), ("w1",)):  # the group's one reader, then a worker
            box = await box_with(client, "normal", "urgent", "normal")
            shown = await asyncio.to_thread(step, nats_broker.url, box, "fetch", "-", *worker)
            assert shown == [1, 0, 2]
            acked = await asyncio.to_thread(step, nats_broker.url, box, "ack", "0", *worker)
            assert acked == [1, 0]  # what came before 0 in the group's order, and 0
            left = await client.fetch(box, group_name="billing", max_wait_ms=0, num_msgs=10)
            assert [m.msg_id for m in left] == [2]
            # the rest, by the next process again
            acked = await asyncio.to_thread(step, nats_broker.url, box, "ack", "2", *worker)
            assert acked == [2]
            assert await client.fetch(box, group_name="billing", max_wait_ms=0) == []
