"""The conformance suites of mailboxes, FETCH and the registry (test_conformance_mailbox.py,
test_conformance_fetch.py, test_conformance_registry.py) run unchanged on the JetStream store
(issue #55 item 3): their ``broker`` fixture is replaced by the bundled broker whose engine
keeps its state in a stream of the test's own on a JetStream nats-server, reached in process
(``memory://``), so each request is answered only after JetStream acknowledged its changes."""

from __future__ import annotations

import uuid

import pytest
import test_jetstream_store
from conftest import Broker
from test_conformance_fetch import *  # noqa: F403  (the tests, and their own fixtures)
from test_conformance_mailbox import *  # noqa: F403
from test_conformance_registry import *  # noqa: F403

from langchain_mq9.broker import (
    BrokerEngine,
    ManualClock,
    drop_memory_broker,
    install_memory_broker,
)
from langchain_mq9.broker.storage import JetStreamStorage

pytestmark = pytest.mark.slow  # a nats-server process

lone_jetstream = test_jetstream_store.lone_jetstream  # the fixture: one server per module


@pytest.fixture
def broker(lone_jetstream):
    storage = JetStreamStorage(lone_jetstream.urls, stream=f"C{uuid.uuid4().hex[:12]}")
    clock = ManualClock()
    engine = BrokerEngine(clock=clock, storage=storage)
    name = f"test{uuid.uuid4().hex}"
    install_memory_broker(name, engine)
    try:
        yield Broker(f"memory://{name}", engine, clock, "memory")
    finally:
        drop_memory_broker(name)
        storage.close()
