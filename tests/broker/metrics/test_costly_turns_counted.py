"""The broker's costly requests counted as serve.py takes them in turns (#73): the ones that
run and the one that waited its turn answered ``ok`` (its time counted from when it was read,
its wait included), the ones refused at once as ``too_many_waiting``."""

from __future__ import annotations

import asyncio
import json

import nats
import pytest

from mq9_broker import BrokerEngine
from mq9_broker.cli.metrics import broker_meter
from mq9_broker.serving.serve import NatsService
from mq9_wire import protocol as p

BOX = "turns.counted"
QUERY = p.encode({"tags": [f"tag{i}" for i in range(1_000)]})  # above LARGE_BODY: costly


class HeldEngine(BrokerEngine):
    """Holds QUERYs until ``go`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.go = asyncio.Event()
        self.running = 0

    async def handle(self, subject, headers, body):
        if not subject.startswith(p.MSG_QUERY):
            return await super().handle(subject, headers, body)
        self.running += 1
        try:
            await self.go.wait()
            return await super().handle(subject, headers, body)
        finally:
            self.running -= 1


@pytest.mark.slow
async def test_turns_and_refusals_are_counted(nats_server):
    engine, meter = HeldEngine(), broker_meter()
    main = await nats.connect(nats_server.url)
    service = NatsService(engine, main, meter=meter)
    service.at_once, service.waiting, service.waiting_in_all = 1, 1, 100
    await service.start()
    asker = await nats.connect(nats_server.url)
    try:
        await asker.request(p.MAILBOX_CREATE, p.encode({"name": BOX}), timeout=30)
        inbox, answers = asker.new_inbox(), asyncio.Queue()
        await asker.subscribe(f"{inbox}.*", cb=answers.put)
        for i in range(4):  # one runs, one waits its turn, two are refused at once
            await asker.publish(p.query_subject(BOX), QUERY, reply=f"{inbox}.{i}")
        await asker.flush()
        refused = [json.loads((await asyncio.wait_for(answers.get(), 30)).data) for _ in range(2)]
        assert all("wait already for their turn" in r["error"] for r in refused), refused
        for _ in range(500):
            if engine.running == 1:
                break
            await asyncio.sleep(0.01)
        engine.go.set()
        done = [json.loads((await asyncio.wait_for(answers.get(), 30)).data) for _ in range(2)]
        assert [d["error"] for d in done] == ["", ""]
    finally:
        await service.stop()
        await asker.close()
        await main.close()
    counts = meter.counts()
    assert counts[("QUERY", "ok")] == 2
    assert counts[("QUERY", "refused")] == 2
    assert counts[("CREATE", "ok")] == 1
