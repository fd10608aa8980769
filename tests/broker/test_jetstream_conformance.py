"""The conformance suites of mailboxes, FETCH and the registry (test_conformance_mailbox.py,
test_conformance_fetch.py, test_conformance_registry.py) run unchanged on the JetStream store
(issue #55 item 3): their ``broker`` fixture is replaced by conftest's ``jetstream_broker``, the
bundled broker whose engine keeps its state in a stream of the test's own on a JetStream
nats-server, reached in process (``memory://``), so each request is answered only after
JetStream acknowledged its changes."""

from __future__ import annotations

import pytest
from test_conformance_fetch import *  # noqa: F403  (the tests, and their own fixtures)
from test_conformance_mailbox import *  # noqa: F403
from test_conformance_registry import *  # noqa: F403

pytestmark = pytest.mark.slow  # a nats-server process


@pytest.fixture
def broker(jetstream_broker):
    return jetstream_broker
