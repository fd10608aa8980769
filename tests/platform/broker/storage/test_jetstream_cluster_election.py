"""A cluster store opened while its stream elects a leader (issue #72): the server that led
the layout's stream is killed (-9) and started again, and a store opened at once on another
server opens. The cluster drops the JetStream requests it gets during the election, so the
opening reads (and creates of the same config) are sent again after a short try: counted
here, not timed (the per-try wait short, the one deadline long).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import nats
import pytest

from mq9_broker import Broker, BrokerConfig
from mq9_broker.storage import StorageError
from mq9_broker.storage.jetstream import ClusterStore
from mq9_platform import Mq9Client
from mq9_wire.protocol.errors import Mq9Error
from testbed.support.jetstream_servers import FORMING, JetStreamCluster, open_replicated_store

pytestmark = pytest.mark.slow  # three nats-server processes


@pytest.fixture(scope="module")
def cluster() -> Iterator[JetStreamCluster]:
    with JetStreamCluster(3) as servers:
        yield servers


async def _made_with_leader(cluster: JetStreamCluster, layout: str) -> tuple[Any, Any]:
    """An R3 ``layout`` made, and the server leading its messages stream and another one."""
    made = await open_replicated_store(cluster.urls[0], layout)
    info = await made.requests.api(f"STREAM.INFO.{made.layout.messages}", None)
    await made.close()
    await made.requests.connection.close()
    leader = cluster.by_name(info["cluster"]["leader"])
    return leader, next(server for server in cluster.servers if server is not leader)


async def test_a_store_opens_during_the_election_by_sending_again(
    cluster: JetStreamCluster,
) -> None:
    layout = f"E{uuid.uuid4().hex[:10]}"
    leader, other = await _made_with_leader(cluster, layout)
    leader.kill()
    leader.start()
    connection = await nats.connect(other.url)
    # a try of 0.3 s within one deadline far longer than an election
    store = ClusterStore(connection, name=layout, replicas=3, timeout=FORMING, try_again=0.3)
    try:
        await store.open()
        assert store.requests.sent_again > 0  # an unanswered request sent again, then answered
        assert await store.mailbox_count() == 0
    finally:
        await store.close()
        await connection.close()


async def test_a_request_never_answered_fails_at_the_one_deadline(
    cluster: JetStreamCluster,
) -> None:
    connection = await nats.connect(cluster.urls[0])
    store = ClusterStore(connection, name="Eunused", timeout=0.5, try_again=0.1)
    try:
        # nobody answers this subject: sent again until the one deadline, then one error
        with pytest.raises(
            StorageError, match=r"did not answer STREAM\.INFO\.NONE\.nobody \(deadline 0\.5 s\)"
        ):
            await store.requests.api("STREAM.INFO.NONE.nobody", None, again=0.1)
        assert store.requests.sent_again > 0
    finally:
        await connection.close()


async def test_keyed_sends_through_the_stream_leaders_kill_are_answered_and_stored_once(
    cluster: JetStreamCluster,
) -> None:
    """#98 item 5: the server leading the messages stream is SIGKILLed (and started again)
    under a keyed SEND every 20 ms. Before #98 some reached the caller as a final error
    ("JetStream did not acknowledge a write: no responders"); now each answer meaning "not
    stored, try again" is retryable, the client sends the SEND again with its key within its
    request_timeout, and every payload is stored once."""
    layout = f"K{uuid.uuid4().hex[:10]}"
    # the broker and the client on a server that is not killed: the election is the subject
    leader, other = await _made_with_leader(cluster, layout)
    config = BrokerConfig(
        nats=other.url, store="jetstream", stream=layout, replicas=3, search=False,
        cluster_wait=FORMING,
    )  # fmt: skip
    sends = 60
    async with (
        Broker(config, say=lambda _: None),
        Mq9Client(other.url, request_timeout=FORMING) as client,
    ):
        await client.mailbox_create(name="jobs", ttl=0)
        await client.send("jobs", "hello", idempotency_key="hello")

        async def sent(n: int) -> int | str:
            try:
                return await client.send("jobs", f"job {n}", idempotency_key=f"job-{n}")
            except Mq9Error as exc:
                return f"{type(exc).__name__}(retryable={exc.retryable}): {exc}"

        tasks = []
        for n in range(sends):
            if n == sends // 3:
                leader.kill()
            if n == 2 * sends // 3:
                leader.start()
            tasks.append(asyncio.ensure_future(sent(n)))
            await asyncio.sleep(0.02)
        answered = await asyncio.gather(*tasks)
        failed = [(n, out) for n, out in enumerate(answered) if isinstance(out, str)]
        assert failed == [], failed
        stored = await client.query("jobs", limit=100)
        texts = [m.payload.decode() for m in stored if m.payload != b"hello"]
        assert sorted(texts) == sorted(f"job {n}" for n in range(sends))
