"""The official mq9 SDKs against RobustMQ 8bd49dc, beside the bundled broker (#111).

The JavaScript SDK's drives (tests/js/interop_driver.mjs, one section at a time) and the Python
SDK's calls of tests/robustmq/test_sdk_interop*.py run on a real RobustMQ (the real-broker lane,
``MQ9_ROBUSTMQ_URL``) and on ``mq9-dev-broker`` (the bundled broker on a real nats-server), and
what the SDK got back from each is compared, call by call. The bundled broker is built to answer
as RobustMQ does, so the two must agree; where they do not, the difference is written out in
``DIFFERENCES`` with its reason, so a broker that drifts from RobustMQ (or a RobustMQ that
changed) fails here by name. Skipped, saying so, without a RobustMQ or the SDKs' snapshot.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from typing import Any

import pytest

from tests.support.js_sdk import drive

URL = os.environ.get("MQ9_ROBUSTMQ_URL")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not URL, reason="set MQ9_ROBUSTMQ_URL to a running RobustMQ's NATS URL"),
]

SECTIONS = ["mailbox", "send", "fetch", "shared", "query", "consume", "agents"]
# (section, call): what RobustMQ answers where the bundled broker answers otherwise, and why
DIFFERENCES: dict[tuple[str, str], str] = {}
_GENERATED = re.compile(r'"[0-9a-v]{20}"')  # a mailbox name the broker made up


def _mine(value: Any) -> Any:
    """Only this drive's part of a listing: a shared RobustMQ's registry lists every agent
    the lane registered before."""
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        named = [v for v in value if "name" in v]
        if len(named) == len(value):
            return [v for v in value if "<prefix>" in json.dumps(v)]
    if isinstance(value, dict):
        return {k: _mine(v) for k, v in value.items() if k not in ("createTime", "create_time")}
    if isinstance(value, list):
        return [_mine(v) for v in value]
    return value


def normalized(results: dict, prefix: str) -> dict:
    """The drive's outcomes with its own names and the broker's made-up ones and clock taken
    out: what two brokers answering alike answer identically."""
    text = _GENERATED.sub('"<generated>"', json.dumps(results).replace(prefix, "<prefix>"))
    return _mine(json.loads(text))


@pytest.mark.parametrize("section", SECTIONS)
async def test_the_js_sdk_gets_from_robustmq_what_it_gets_from_the_dev_broker(
    js_sdk, nats_broker, section
):
    assert URL is not None
    ours_prefix, theirs_prefix = (f"js{uuid.uuid4().hex[:10]}" for _ in range(2))
    ours = normalized(await drive(js_sdk, nats_broker.url, section, ours_prefix), ours_prefix)
    theirs = normalized(await drive(js_sdk, URL, section, theirs_prefix), theirs_prefix)
    differing = {
        call: {"dev broker": ours.get(call), "robustmq": theirs.get(call)}
        for call in sorted(set(ours) | set(theirs))
        if ours.get(call) != theirs.get(call)
    }
    known = {call for (where, call) in DIFFERENCES if where == section}
    assert set(differing) == known, json.dumps(differing, indent=1, ensure_ascii=False)
