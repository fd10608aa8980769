"""Issue #90 on ``mq9-dev-broker`` as a user runs it: a keyed SEND over a real nats-server is
stored once, and the SQLite store keeps the key through a kill -9 and a restart (the window a
broker's restart must be covered by: ``--idempotency-window``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mq9_platform import Mq9Client
from mq9_wire.protocol.errors import InvalidArgument
from testbed.nats_server import start_nats_server
from testbed.support.devbroker_helpers import DevBroker

pytestmark = pytest.mark.slow  # nats-server and broker processes


async def test_a_key_outlives_a_kill_9_of_the_dev_broker(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    with start_nats_server() as nats_server:
        options = ("--nats", nats_server.url, "--data", data, "--idempotency-window", "3600")
        broker = DevBroker(*options)
        try:
            async with Mq9Client(nats_server.url) as client:
                box = await client.mailbox_create(name="jobs")
                first = await client.send(box, "job", idempotency_key="job-1")
                assert await client.send(box, "job", idempotency_key="job-1") == first
                assert client.keys_recognised_for(box) is True
            broker.kill()
            broker = DevBroker(*options)
            async with Mq9Client(nats_server.url) as client:
                assert await client.send(box, "job", idempotency_key="job-1") == first
                with pytest.raises(InvalidArgument, match="was used for another SEND"):
                    await client.send(box, "another job", idempotency_key="job-1")
                stored = await client.fetch(box, deliver="earliest")
                assert [m.payload for m in stored] == [b"job"]
                assert stored[0].header == {}  # the key is never the message's
        finally:
            broker.stop()
