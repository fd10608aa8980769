"""Deliveries counted for what was handed out and failed (issue #52): a reader that dies
handling a message charges that message, never the batch it was fetched with.

One poison order among ten, handled by ``consume`` under a supervisor that restarts it each
time it dies: after 8 deaths the poison is set aside and the 9 good orders are handled, none
dead-lettered. Played with real processes (``os._exit`` in the handler) on the dev broker over
a real nats-server, and with a consumer whose loop dies and is started again, over
``memory://`` and the dev broker.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from mq9_platform import Message
from mq9_platform.groups import DeadLetter
from mq9_platform.groups.dead_letters import DEFAULT_MAX_DELIVERIES
from testbed.support.poison_consumer import POISON_EXIT
from testbed.support.waiting import until

HERE = Path(__file__).resolve().parents[3] / "testbed" / "support"  # helpers run as scripts
WAIT = 60  # a bound for a process that starts, reads and dies in about a second
ORDERS = [f"order {i}" for i in range(4)] + ["poison"] + [f"order {i}" for i in range(4, 9)]


async def orders_box(client, name: str) -> tuple[str, int, set[int]]:
    """A mailbox of ORDERS: its address, the poison's msg_id, the good orders' msg_ids."""
    box = await client.mailbox_create(name=name)
    ids = [await client.send(box, text) for text in ORDERS]
    poison = ids[ORDERS.index("poison")]
    return box, poison, set(ids) - {poison}


async def assert_only_the_poison_set_aside(client, box: str, poison: int) -> None:
    letters = [DeadLetter.read(m) for m in await client.query(f"{box}.dlq")]
    assert {letter.msg_id for letter in letters} == {poison}
    assert letters[0].attempts == DEFAULT_MAX_DELIVERIES
    assert await client.fetch(box, group_name="billing", max_wait_ms=0) == []


class ProcessDied(BaseException):
    """What ends a consumer's loop here the way a crash ends its process: nothing catches it."""


async def test_a_consumer_restarted_around_a_poison_charges_only_the_poison(client):
    box, poison, good = await orders_box(client, "crash.inproc")
    handled: list[int] = []
    deaths = 0
    for _life in range(DEFAULT_MAX_DELIVERIES + 2):
        died = asyncio.Event()

        def handle(message: Message, died: asyncio.Event = died) -> None:
            if message.text() == "poison":
                died.set()
                raise ProcessDied
            handled.append(message.msg_id)

        consumer = await client.consume(
            box, handle, group_name="billing", deliver="earliest", num_msgs=10, max_wait_ms=50
        )
        what = "every good order handled"
        finished = asyncio.create_task(until(lambda: set(handled) == good, timeout=WAIT, what=what))
        await asyncio.wait(
            [finished, asyncio.create_task(died.wait())],
            timeout=WAIT,
            return_when=asyncio.FIRST_COMPLETED,
        )
        await consumer.stop()  # the loop is over already when it died
        finished.cancel()  # (when it died first)
        if not died.is_set():
            break
        deaths += 1
    assert deaths == DEFAULT_MAX_DELIVERIES
    assert set(handled) == good and len(handled) == len(good)  # each good order once
    await assert_only_the_poison_set_aside(client, box, poison)


@pytest.mark.slow
async def test_consumer_processes_killed_by_a_poison_dead_letter_only_it(nats_broker, tmp_path):
    async with nats_broker.client() as client:
        box, poison, good = await orders_box(client, "crash.processes")
        log = tmp_path / "handled"
        log.touch()
        deaths = 0
        for _life in range(DEFAULT_MAX_DELIVERIES + 2):
            process = subprocess.Popen(
                [sys.executable, str(HERE / "poison_consumer.py"), nats_broker.url, box, str(log)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            try:
                await until(
                    lambda p=process: p.poll() is not None or handled(log) >= good,
                    timeout=WAIT,
                    what="the consumer process dead or done with every good order",
                )
                if process.poll() is None:  # it handled them all: its acks may still be on
                    # their way (a store that commits later answers them a record later)
                    await until(
                        lambda: acked_all(client, box), timeout=WAIT, what="every order acked"
                    )
            finally:
                if process.poll() is None:
                    process.kill()
                _, errors = process.communicate(timeout=WAIT)
            if process.returncode != POISON_EXIT:
                assert handled(log) >= good, errors.decode()
                break
            deaths += 1
        assert deaths == DEFAULT_MAX_DELIVERIES
        assert sorted(int(line) for line in log.read_text().split()) == sorted(good)
        await assert_only_the_poison_set_aside(client, box, poison)


async def acked_all(client, box: str) -> bool:
    """Whether the group ``billing`` has nothing left to hand out (a FETCH moves no position)."""
    return not await client.fetch(box, group_name="billing", max_wait_ms=0)


def handled(log: Path) -> set[int]:
    return {int(line) for line in log.read_text().split()}
