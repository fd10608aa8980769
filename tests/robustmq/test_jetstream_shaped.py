"""Our client on RobustMQ's listener behaviours (test_robustmq_shaped.py), unchanged, with the
engine behind the RobustMQ-shaped listener keeping its state in JetStream (issue #55 item 3): a
``Engine`` on a layout of its own (a stream and buckets) on the session's JetStream
nats-server, as ``--store jetstream`` serves. With ``MQ9_TEST_STORE=jetstream`` only (MCP
server processes: some 20 s on a busy machine; the store behind the listener is not what these
tests are about)."""

from __future__ import annotations

import pytest
from test_robustmq_shaped import *  # noqa: F403  (the tests)

from testbed.support.robustmq_shaped import RobustMQShapedListener
from testbed.support.store_lane import STATE_SERVER, TEST_STORE

pytestmark = [
    pytest.mark.slow,  # a nats-server process
    pytest.mark.skipif(TEST_STORE != "jetstream", reason="runs with MQ9_TEST_STORE=jetstream"),
]


@pytest.fixture
async def listener_url():
    layout = await STATE_SERVER.layout()
    try:
        async with RobustMQShapedListener(layout.engine()) as listener:  # handle() alone is used
            yield listener.url
    finally:
        await STATE_SERVER.drop(layout)
