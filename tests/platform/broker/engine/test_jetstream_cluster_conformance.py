"""The conformance suites of mailboxes, FETCH and the registry over ``Engine`` (issue
#72): the state kept in JetStream, reached in process (``memory://``) on a layout of the test's
own on a loopback JetStream nats-server.

msg_ids are RobustMQ's here (each mailbox numbered from 0, docs/broker.md). Tests that need
the injected clock are skipped before they start (the servers' clock writes create_times, TTLs
and delays here), and so are those that read the in-memory engine, each saying so. The rest
pass, except the one named below, for a difference docs/protocol-differences.md §13 writes down.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import nats
import pytest

from mq9_broker import drop_memory_broker, install_memory_broker
from mq9_broker.engine.engine import Engine
from mq9_broker.storage.jetstream import ClusterStore
from testbed.brokers import Broker, skip_what_cannot_run
from tests.platform.broker.engine.test_conformance_fetch import *  # noqa: F403  (the tests, and their own fixtures)
from tests.platform.broker.engine.test_conformance_mailbox import *  # noqa: F403
from tests.platform.broker.engine.test_conformance_registry import *  # noqa: F403

pytestmark = pytest.mark.slow  # a nats-server process

# The servers write a delayed message when their schedule ticks (about once a second), not
# before the broker's next request as the in-process engine does: a SEND answered meanwhile
# takes the number first (docs/protocol-differences.md §13). Not strict: a tick may come first.
SCHEDULE_TICK = frozenset({"test_a_delay_of_zero_still_goes_through_the_delay_queue"})


@pytest.fixture(autouse=True)
def _known_differences(request: Any) -> None:
    if request.node.originalname in SCHEDULE_TICK:
        reason = "a delayed message is written at the servers' next schedule tick (§13)"
        request.applymarker(pytest.mark.xfail(reason=reason, strict=False))


@pytest.fixture(scope="module")
def cluster_servers(shared_jetstream: list[str]) -> list[str]:
    # the session's JetStream server: nothing here kills, restarts or reconfigures it
    return shared_jetstream


@dataclass
class ClusterBroker(Broker):
    """conftest's ``Broker`` whose ``raw`` requests go straight into the cluster engine."""

    cluster: Engine | None = None

    async def raw(self, subject: str, body: bytes = b"", headers: dict | None = None) -> dict:
        assert self.cluster is not None
        decoded = json.loads(await self.cluster.handle(subject, headers, body))
        assert isinstance(decoded, dict) and isinstance(decoded.get("error"), str), decoded
        return decoded


@pytest.fixture
async def broker(request: Any, cluster_servers: list[str]) -> AsyncIterator[ClusterBroker]:
    connection = await nats.connect(cluster_servers)
    store = ClusterStore(connection, name=f"C{uuid.uuid4().hex[:10]}", timeout=20.0)
    await store.open()
    name = f"test{uuid.uuid4().hex}"
    engine = Engine(store)
    install_memory_broker(name, engine)  # type: ignore[arg-type]
    try:
        started = ClusterBroker(f"memory://{name}", None, None, "memory", cluster=engine)
        skip_what_cannot_run(request, started)
        yield started
    finally:
        drop_memory_broker(name)
        await store.close()
        await connection.close()
