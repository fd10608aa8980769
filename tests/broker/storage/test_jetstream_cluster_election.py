"""A cluster store opened while its stream elects a leader (issue #72): the server that led
the layout's stream is killed (-9) and started again, and a store opened at once on another
server opens. The cluster drops the JetStream requests it gets during the election, so the
opening reads (and creates of the same config) are sent again after a short try: counted
here, not timed (the per-try wait short, the one deadline long).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import nats
import pytest

from mq9_broker.storage import StorageError
from mq9_broker.storage.jetstream import ClusterStore
from tests.support.jetstream_servers import FORMING, JetStreamCluster, open_replicated_store

pytestmark = pytest.mark.slow  # three nats-server processes


@pytest.fixture(scope="module")
def cluster() -> Iterator[JetStreamCluster]:
    with JetStreamCluster(3) as servers:
        yield servers


async def test_a_store_opens_during_the_election_by_sending_again(
    cluster: JetStreamCluster,
) -> None:
    layout = f"E{uuid.uuid4().hex[:10]}"
    first = await open_replicated_store(cluster.urls[0], layout)
    info = await first.requests.api(f"STREAM.INFO.{first.layout.messages}", None)
    await first.close()
    await first.requests.connection.close()
    leader = cluster.by_name(info["cluster"]["leader"])
    leader.kill()
    leader.start()
    other = next(server for server in cluster.servers if server is not leader)
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
