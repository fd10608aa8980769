"""#106, item 3: where the servers count (the cluster store: its COUNT asks them to count a
lane's subjects, a cost that grows with the mailbox), one requester's COUNTs take turns as the
costly requests do (serve.py ``COSTLY_ON_SERVERS``): ``at_once`` of them at a time, the next
``waiting`` unread, the rest refused at once; another client's SEND is answered meanwhile.
Before, each COUNT on such a store ran on a task of its own, as many at once as were sent.
(The stores in this process keep their counts as they write: COUNT is answered at once there,
tests/broker/storage/test_counts_kept.py.)

The engine is the real one, made to answer as the cluster store does (on tasks, not in the read
loop), holding each COUNT until the test lets them go, so that what runs at once is counted."""

from __future__ import annotations

import asyncio
import json

import nats
import pytest

from mq9_broker import BrokerEngine
from mq9_broker.serving.serve import COSTLY_ON_SERVERS, NatsService
from mq9_wire import protocol as p
from mq9_wire.protocol.subjects import MSG_COUNT, count_subject

pytestmark = pytest.mark.slow  # a nats-server

BOX = "counted.box"


class ServersCounting(BrokerEngine):
    """A broker engine answered as the cluster store's is (``answers_in_read_loop`` False),
    holding its COUNTs until ``go`` is set."""

    def __init__(self) -> None:
        super().__init__(search=False)
        self.answers_in_read_loop = False
        self.go = asyncio.Event()
        self.running = self.most = 0

    async def handle(self, subject, headers, body, requester=None):
        if not subject.startswith(MSG_COUNT):
            return await super().handle(subject, headers, body, requester)
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await self.go.wait()
            return await super().handle(subject, headers, body, requester)
        finally:
            self.running -= 1


async def _until(condition) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the broker never got there")


async def test_one_requesters_counts_take_turns_and_another_clients_send_is_answered(
    nats_server,
):
    assert MSG_COUNT in COSTLY_ON_SERVERS
    engine = ServersCounting()
    main = await nats.connect(nats_server.url)
    service = NatsService(engine, main)
    service.at_once, service.waiting, service.waiting_in_all = 2, 4, 100
    await service.start()
    hog, other = [await nats.connect(nats_server.url) for _ in range(2)]
    try:
        await other.request(p.MAILBOX_CREATE, p.encode({"name": BOX}), timeout=5)
        answers: asyncio.Queue = asyncio.Queue()
        inbox = hog.new_inbox()
        await hog.subscribe(f"{inbox}.*", cb=answers.put)
        for n in range(10):  # published without waiting for any answer
            await hog.publish(count_subject(BOX), b"{}", reply=f"{inbox}.{n}")
        await hog.flush()
        # two run, four wait their turn, four are answered at once
        refused = [json.loads((await asyncio.wait_for(answers.get(), 5)).data) for _ in range(4)]
        assert all("ask again once your earlier ones are answered" in r["error"] for r in refused)
        await _until(lambda: engine.running == 2)
        sent = await other.request(p.send_subject(BOX), b"hello", timeout=5)
        assert json.loads(sent.data)["error"] == ""  # answered while the COUNTs are held
        engine.go.set()
        counted = [json.loads((await asyncio.wait_for(answers.get(), 5)).data) for _ in range(6)]
        assert [c["counts"]["normal"] for c in counted] == [1] * 6
        assert engine.most == 2
    finally:
        await service.stop()
        for connection in (main, hog, other):
            await connection.close()
