"""A slice of the broker and group suites, run unchanged on the JetStream store in every session
(issue #55 item 3; the whole suites run there with ``MQ9_TEST_STORE=jetstream``, see
CONTRIBUTING.md): RobustMQ's own mq9 tests, ported (priorities, message and mailbox TTLs, delay,
dedup key, tags, QUERY, FETCH deliver policies, registry and search), the consumer-group
scenarios of docs/groups.md (groups, claims and their leases, late acks) and poison messages
(retry budgets, dead letters and sending them back). Their ``broker`` is conftest's
``jetstream_broker``: an ``Engine`` in process, the state in a layout of its own on a
JetStream nats-server; tests that move the hand-moved clock skip (the servers keep the time).

Then the store lane itself: with ``MQ9_TEST_STORE=jetstream`` a broker served on a nats-server
keeps its state in a layout of its own, gone when the broker stops.
"""

from __future__ import annotations

import nats
import pytest

from mq9_broker.storage import MemoryStorage
from mq9_platform import Mq9Client
from testbed.brokers import start_broker, stop_broker
from testbed.support import store_lane
from testbed.support.waiting import until
from tests.langchain.groups.test_dead_letters import *  # noqa: F403
from tests.platform.broker.engine.test_robustmq_ported import *  # noqa: F403
from tests.platform.groups.test_consume import *  # noqa: F403  (the tests)
from tests.platform.groups.test_group_reader import *  # noqa: F403
from tests.platform.groups.test_group_scenarios import *  # noqa: F403

pytestmark = pytest.mark.slow  # a nats-server process


@pytest.fixture
def broker(jetstream_broker):
    return jetstream_broker


async def stream_messages(servers: list[str], stream: str) -> int | None:
    """How many messages ``stream`` holds; None when there is no such stream."""
    connection = await nats.connect(servers)
    try:
        return (await connection.jetstream().stream_info(stream)).state.messages
    except nats.js.errors.NotFoundError:
        return None
    finally:
        await connection.close()


async def test_the_store_lane_keeps_a_served_brokers_state_in_a_layout_of_its_own(
    nats_server, monkeypatch
):
    monkeypatch.setattr(store_lane, "TEST_STORE", "jetstream")
    served, handle = await start_broker("nats", nats_server.url)
    other, other_handle = await start_broker("nats", nats_server.url)
    assert served.layout is not None and other.layout is not None
    layout = served.layout.store.layout
    servers = store_lane.STATE_SERVER.urls
    try:
        assert other.layout.store.layout.name != layout.name
        records, messages = f"KV_{layout.mailboxes}", layout.messages
        # both brokers answer every request (each its layout's queue group) and the client
        # takes the first answer: the served broker's own CREATE and SEND are waited for
        async with Mq9Client(served.url) as client:
            await client.mailbox_create(name="lane.box")
            await until(
                lambda: stream_messages(servers, records), timeout=20, what="the CREATE kept"
            )
            await client.send("lane.box", b"kept")
        # the SEND's message and its mailbox's head (h.<mailbox>, the next msg_id)
        await until(lambda: _at_least(servers, messages, 2), timeout=20, what="the SEND kept")
        assert await stream_messages(servers, messages) == 2
        assert await stream_messages(servers, records) == 1  # the CREATE
    finally:
        await stop_broker(served, handle)
        await stop_broker(other, other_handle)
    assert await stream_messages(servers, layout.messages) is None  # the next test: nothing


async def _at_least(servers: list[str], stream: str, count: int) -> bool:
    return (await stream_messages(servers, stream) or 0) >= count


async def test_without_the_lane_a_served_broker_keeps_its_state_in_memory(nats_server, monkeypatch):
    monkeypatch.setattr(store_lane, "TEST_STORE", "memory")
    served, handle = await start_broker("nats", nats_server.url)
    try:
        assert isinstance(served.engine.storage, MemoryStorage)
    finally:
        await stop_broker(served, handle)
