"""Our client on RobustMQ's listener behaviours (test_robustmq_shaped.py), unchanged, with the
engine behind the RobustMQ-shaped listener keeping its state in JetStream (issue #55 item 3): a
stream of its own on the session's JetStream nats-server, each answer given once JetStream
acknowledged the change. With ``MQ9_TEST_STORE=jetstream`` only (MCP server processes: some 20 s
on a busy machine; the store behind the listener is not what these tests are about)."""

from __future__ import annotations

import pytest
from robustmq_shaped import RobustMQShapedListener
from store_lane import STATE_SERVER, TEST_STORE
from test_robustmq_shaped import *  # noqa: F403  (the tests)

from langchain_mq9.broker import BrokerEngine

pytestmark = [
    pytest.mark.slow,  # a nats-server process
    pytest.mark.skipif(TEST_STORE != "jetstream", reason="runs with MQ9_TEST_STORE=jetstream"),
]


@pytest.fixture
async def listener_url():
    storage = STATE_SERVER.storage()
    try:
        async with RobustMQShapedListener(BrokerEngine(storage=storage)) as listener:
            yield listener.url
    finally:
        await STATE_SERVER.drop(storage)
