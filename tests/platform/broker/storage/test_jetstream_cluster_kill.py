"""#77 item 9: a broker's SIGKILL costs only its own requests. What the report suspected, each
played for real:

- an atomic batch a broker left open (its first entries published, never committed: killed
  between them) holds nothing: the next write of that mailbox, by another store, is stored
  and numbered next;
- two broker processes on one layout, SENDs started one after another without waiting for
  the answers while one broker is SIGKILLed: every SEND sent once NATS has dropped the killed
  process's connection is answered by the other, and every SEND answered is stored once.
  (Those NATS handed the dying process before are its own: the kernel closes a killed
  process's sockets only once it has freed its memory, and nats-server reads that close a
  moment later, docs/broker-jetstream.md "Several brokers at once". So "dropped" is what NATS says,
  not the process's exit: a CI run saw a SEND sent just after ``wait()`` returned go to the dead
  broker.)
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator

import nats
import pytest
from nats.aio.client import Client as NatsConnection
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from mq9_broker.state.mailbox import StoredMessage
from mq9_broker.storage.jetstream import token
from mq9_platform import Mq9Client
from mq9_wire.protocol import Priority
from mq9_wire.protocol.errors import RequestTimeout
from testbed.support.jetstream_servers import (
    JetStreamCluster,
    close_store,
    engine_broker,
    open_store,
)

pytestmark = pytest.mark.slow  # a nats-server and broker processes

ANSWER_TIMEOUT = 10.0  # seconds a SEND waits for its answer
PACE = 0.005  # seconds between the SENDs started around the kill
SENDS_AFTER_GONE = 20  # SENDs started once NATS dropped the killed broker's connection
MAX_SENDS = 900  # SENDs started after the kill at most (NATS never dropping it: a failure)
PROBE_TIMEOUT = 0.05  # seconds a probe of the killed broker's own subject waits


@pytest.fixture(scope="module")
def servers() -> Iterator[list[str]]:
    with JetStreamCluster(1) as cluster:
        yield cluster.urls


def _message(text: str) -> StoredMessage:
    return StoredMessage(-1, text.encode(), Priority.NORMAL, 0, None, (), None, 0)


async def test_a_batch_left_open_by_a_dead_broker_holds_no_write(servers):
    store = await open_store(servers, f"K{uuid.uuid4().hex[:10]}")
    raw = await nats.connect(servers[0])
    try:
        now = int(time.time())
        await store.create_mailbox("lane", ttl=0, desc="", now=now)
        assert await store.append("lane", _message("first"), now=now) == 0
        # another broker's batch into that mailbox, its first entry sent, then it died
        layout, box = store.layout, token("lane")
        batch = {"Nats-Batch-Id": uuid.uuid4().hex, "Nats-Batch-Sequence": "1"}
        subject = layout.message_subject(box, Priority.NORMAL, "-", 1)
        await raw.publish(subject, b"never committed", headers=batch)
        await raw.flush()
        await raw.close()
        assert [await store.append("lane", _message(f"m{n}"), now=now) for n in range(3)] == [
            1,
            2,
            3,
        ]
    finally:
        if not raw.is_closed:
            await raw.close()
        await close_store(store)


async def _dropped(probe: NatsConnection, pid: int) -> float:
    """When NATS had dropped the connection of broker ``pid``: its own subject
    (``bench.alive.<pid>``, on the connection that serves) has no responders. nats-server
    removes a closed connection's subscriptions in one step, so its share of the SENDs went
    with it."""
    while True:
        try:
            await probe.request(f"bench.alive.{pid}", b"", timeout=PROBE_TIMEOUT)
        except NoRespondersError:
            return time.monotonic()
        except NatsTimeout:  # killed, its connection not closed yet
            pass


async def _sent(client: Mq9Client, text: str) -> tuple[float, int | None]:
    """When the SEND of ``text`` was started, and its msg_id (None: no answer in time)."""
    started = time.monotonic()
    try:
        return started, await asyncio.wait_for(client.send("jobs", text), ANSWER_TIMEOUT)
    except (TimeoutError, RequestTimeout):  # (one NATS handed the dying broker)
        return started, None


async def test_sends_started_once_a_killed_broker_is_gone_are_all_answered(servers):
    stream = f"K{uuid.uuid4().hex[:10]}"
    brokers = [engine_broker(servers, stream), engine_broker(servers, stream)]
    try:
        async with Mq9Client(servers[0]) as client:
            await client.mailbox_create(name="jobs", ttl=0)
            before = [await client.send("jobs", f"before {n}") for n in range(20)]
            async with await nats.connect(servers[0]) as probe:
                dropped = asyncio.ensure_future(_dropped(probe, brokers[0].pid))
                brokers[0].send_signal(signal.SIGKILL)
                sends: list[asyncio.Future[tuple[float, int | None]]] = []
                started_after = 0
                while started_after < SENDS_AFTER_GONE and len(sends) < MAX_SENDS:
                    started_after += dropped.done()
                    sends.append(asyncio.ensure_future(_sent(client, f"after {len(sends)}")))
                    await asyncio.sleep(PACE)
                gone = dropped.result() if dropped.done() else None
                dropped.cancel()  # (where NATS never dropped it)
            brokers[0].wait(30)
            answered = await asyncio.gather(*sends)
            assert gone is not None, "NATS did not drop the killed broker within the SENDs"
            after_gone = [msg_id for started, msg_id in answered if started >= gone]
            assert after_gone and None not in after_gone, answered
            ids = before + [msg_id for _, msg_id in answered if msg_id is not None]
            stored = await client.fetch("jobs", deliver="earliest", num_msgs=1000)
            # every answered SEND stored, none twice (one the dying broker stored but did not
            # answer may be there too: its own request)
            assert set(ids) <= {m.msg_id for m in stored}
            texts = [m.payload for m in stored]
            assert len(texts) == len(set(texts))
    finally:
        for process in brokers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
