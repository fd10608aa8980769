"""The tests that talk to a dev-broker process, unchanged, on ``mq9-dev-broker --store
jetstream`` serving a JetStream nats-server and keeping its state there (issue #55 item 3):

- bad input over the wire (test_devbroker_wire.py): every malformed request gets RobustMQ's
  answer and nothing reaches the store's write path broken; the broker keeps serving, logs no
  internal error and stops cleanly;
- bounded load (test_devbroker_load.py): 4 producers and 4 consumers in two groups, 2,000
  messages, every one accounted for, every msg_id given out once.
"""

from __future__ import annotations

import pytest

from testbed.support.store_lane import store_broker
from tests.broker.cli import test_devbroker_load
from tests.platform.broker.cli.test_devbroker_wire import *  # noqa: F403  (the tests, and their ``wire`` fixture)

pytestmark = pytest.mark.slow  # nats-server and the dev broker: processes


@pytest.fixture(scope="module")
def broker():
    with store_broker() as running:
        yield running


async def test_producers_and_consumers_account_for_every_message_on_the_store(
    tmp_path, monkeypatch
):
    # the load test starts its broker with DevBroker(options...): this one, on the store
    monkeypatch.setattr(test_devbroker_load, "DevBroker", lambda *_options: store_broker())
    await test_devbroker_load.test_producers_and_consumers_account_for_every_message(tmp_path)
