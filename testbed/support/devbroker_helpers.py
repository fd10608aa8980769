"""Run ``python -m mq9_broker`` as a subprocess, the way a user runs the dev broker.

Used by test_dev_broker.py, test_durability.py and the test_devbroker_*.py files. Every wait is
bounded; every process started here is stopped by the test that started it.
"""

from __future__ import annotations

import json

from testbed.devbroker import (  # (moved: bench/ runs the dev broker too)
    READY,
    START_TIMEOUT,
    DevBroker,
    port_open,
    process_alive,
)
from testbed.support.waiting import until_sync

__all__ = [
    "READY",
    "START_TIMEOUT",
    "DevBroker",
    "port_open",
    "process_alive",
    "request_ok",
    "wait_until",
    "write_mailbox",
]


def wait_until(condition, timeout: float, what: str, interval: float = 0.02) -> None:
    """``support.waiting.until_sync`` under the name the dev-broker tests call it by."""
    until_sync(condition, timeout=timeout, what=what, every=interval)


async def request_ok(connection, subject: str, body=b"", headers=None, timeout: float = 10) -> dict:
    """One mq9 request over a plain nats-py connection; the reply, which must be a success."""
    from mq9_wire import protocol as p

    if isinstance(body, dict):
        body = p.encode(body)
    reply = json.loads((await connection.request(subject, body, timeout, headers=headers)).data)
    assert reply["error"] == "", reply
    return reply


async def write_mailbox(url: str, box: str, count: int) -> None:
    """Create ``box`` and SEND it ``count`` messages over a plain connection to ``url``."""
    import nats

    from mq9_wire import protocol as p

    client = await nats.connect(url)
    try:
        await request_ok(client, p.MAILBOX_CREATE, {"name": box, "ttl": 0})
        for n in range(count):
            await request_ok(client, p.send_subject(box), f"message {n}".encode())
    finally:
        await client.close()
