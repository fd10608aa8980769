"""Bad input over the wire (test_devbroker_wire.py) to ``mq9-dev-broker --store jetstream``: the
same tests, unchanged, on the command line serving a JetStream nats-server and keeping its state
there (issue #55 item 3). Every malformed request gets RobustMQ's answer and nothing reaches the
store's write path broken: the broker keeps serving, logs no internal error and stops cleanly."""

from __future__ import annotations

import pytest
from store_lane import store_broker
from test_devbroker_wire import *  # noqa: F403  (the tests, and their ``wire`` fixture)

pytestmark = pytest.mark.slow  # nats-server and the dev broker: processes


@pytest.fixture(scope="module")
def broker():
    with store_broker() as running:
        yield running
