"""The dev broker on a busy machine (issue #54): once it says ready, a REGISTER is answered
as promptly as any request, with two CPU-bound processes running beside it.

Its embedding model used to load after the ready line, on the engine's worker thread (nice 10):
beside busy processes that thread got a sliver of a core, the load's 0.3 s of CPU took 6-9 s,
and a REGISTER sent right after "ready" outlived a client's 5 s timeout."""

from __future__ import annotations

import json
import subprocess
import sys

import nats
import pytest

from mq9_wire import protocol as p
from testbed.support.devbroker_helpers import DevBroker

pytestmark = pytest.mark.slow

BUSY = [sys.executable, "-c", "while True: pass"]
CLIENT_TIMEOUT = 5.0  # nats-py's request timeout as the tests and the client use it


@pytest.fixture
def two_busy_processes():
    busy = [subprocess.Popen(BUSY) for _ in range(2)]
    try:
        yield
    finally:
        for process in busy:
            process.kill()
            process.wait(10)


async def test_a_register_right_after_ready_is_answered_beside_busy_processes(
    two_busy_processes,
):
    for _ in range(2):  # the model's load took 6-9 s every time; twice rules out luck
        with DevBroker() as broker:
            connection = await nats.connect(broker.url)
            try:
                reply = await connection.request(
                    p.AGENT_REGISTER,
                    p.encode({"name": "translator", "description": "translates documents"}),
                    timeout=CLIENT_TIMEOUT,
                )
            finally:
                await connection.close()
            assert json.loads(reply.data) == {"error": ""}
            assert broker.stop() == 0, broker.output()
