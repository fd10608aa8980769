"""The official mq9 SDKs (robustmq/mq9 37dbe40, ``python/`` and ``javascript/``) against
RobustMQ 8bd49dc itself (#111), in the real-broker lane (``MQ9_ROBUSTMQ_URL``).

tests/robustmq/test_sdk_interop*.py drive every SDK operation against ``mq9-dev-broker`` (the
bundled broker on a real nats-server), which answers them all. RobustMQ answers none: both
SDKs connect with their NATS client as it comes (nats-py, nats.js), and RobustMQ's NATS
listener is not one they can talk to (docs/protocol.md §1.1): its INFO is followed at once by
its own PING, whose line nats-py's handshake takes for its PONG (point 4); a CONNECT written
together with its PING waits for more bytes, so nats.js's connect times out (point 4); and a
reply goes out with sid 0, which nats-py drops (point 1). langchain-mq9's client works around
each (``_nats.guard``); the SDKs do not. These tests assert what the SDKs get from RobustMQ, so
that a fixed SDK, or a RobustMQ that changed, shows here (and the interop drives should then
run against it too). Skipped without a RobustMQ or the SDKs' snapshot, saying so.
"""

from __future__ import annotations

import contextlib
import os
import uuid

import pytest

from testbed.support.js_sdk import run_driver

URL = os.environ.get("MQ9_ROBUSTMQ_URL")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not URL, reason="set MQ9_ROBUSTMQ_URL to a running RobustMQ's NATS URL"),
]


async def test_robustmq_answers_none_of_the_js_sdks_calls(js_sdk, nats_broker):
    assert URL is not None
    prefix = f"js{uuid.uuid4().hex[:10]}"
    code, out, _ = await run_driver(js_sdk, nats_broker.url, "mailbox", prefix)
    assert code == 0 and f'"{prefix}.inbox"' in out  # the dev broker answers the same drive
    code, out, err = await run_driver(js_sdk, URL, "mailbox", prefix)
    # nats.js's connect() fails before the first call: its CONNECT and PING are never
    # answered (TIMEOUT), or, on a later attempt, it tries TLS on the plain port
    assert code != 0 and out == "", (code, out, err)
    assert "code: 'TIMEOUT'" in err or "ERR_SSL_WRONG_VERSION_NUMBER" in err, err


async def test_robustmq_answers_none_of_the_python_sdks_calls(sdk, nats_broker):
    import nats.errors

    assert URL is not None
    name = f"sdk.{uuid.uuid4().hex[:12]}"
    async with sdk.Mq9Client(nats_broker.url, request_timeout=5.0) as client:
        assert await client.mailbox_create(name=name, ttl=60) == name  # the dev broker answers
    client = sdk.Mq9Client(URL, request_timeout=2.0, reconnect_attempts=0)
    await client.connect()  # (nats-py's connect returns: RobustMQ's PING read as its PONG)
    try:
        with pytest.raises(nats.errors.TimeoutError):
            await client.mailbox_create(name=name, ttl=60)
    finally:
        with contextlib.suppress(nats.errors.Error):
            await client.close()  # (drain refuses a connection still "reconnecting")
        if client._nc is not None and not client._nc.is_closed:
            await client._nc.close()
