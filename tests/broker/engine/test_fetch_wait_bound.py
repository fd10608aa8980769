"""An empty FETCH's wait has a bound (#77, "every wait has one deadline"): RobustMQ sleeps the
whole ``max_wait_ms``, a u64; a hostile client asking 2**64-1 ms would hold a task of the
broker, and its shutdown, for ever. Ours sleeps at most ``MAX_WAIT_MS`` (ten minutes)."""

from __future__ import annotations

import asyncio
import json
import types

import pytest

from mq9_broker import BrokerEngine
from mq9_broker.engine import answers as answers_module
from mq9_broker.engine.answers import empty_wait
from mq9_wire import protocol as p


@pytest.mark.parametrize(
    ("asked", "slept"),
    [(0, 0.0), (500, 0.5), (p.MAX_WAIT_MS, p.MAX_WAIT_MS / 1000), (p.MAX_WAIT_MS + 1, 600.0),
     (2**64 - 1, 600.0)],
)  # fmt: skip
def test_the_wait_is_the_asked_one_up_to_ten_minutes(asked, slept):
    assert empty_wait(asked) == slept


async def test_an_empty_fetch_asking_for_ever_sleeps_ten_minutes_at_most(monkeypatch):
    slept: list[float] = []

    async def sleep(seconds: float) -> None:  # the engine's sleep, recorded, not waited
        slept.append(seconds)

    fake = types.SimpleNamespace(**{k: getattr(asyncio, k) for k in dir(asyncio) if k[0] != "_"})
    fake.sleep = sleep
    monkeypatch.setattr(answers_module, "asyncio", fake)
    engine = BrokerEngine()
    made = json.loads(await engine.handle(p.MAILBOX_CREATE, None, b'{"name":"quiet"}'))
    assert made["error"] == ""
    body = json.dumps({"config": {"num_msgs": 1, "max_wait_ms": 2**64 - 1}}).encode()
    answer = json.loads(await engine.handle(p.MSG_FETCH + "quiet", None, body))
    assert answer == {"error": "", "messages": []}
    assert slept == [p.MAX_WAIT_MS / 1000]
