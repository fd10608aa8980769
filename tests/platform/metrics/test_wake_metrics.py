"""``mq9-wake``'s figures (#73), on memory:// with one clock for the broker and the waker: a
wake delivered and one set aside counted by target and outcome, and the lag from the oldest
waiting message's arrival to the wake, exactly (the clock moved by the test)."""

from __future__ import annotations

import uuid

from prometheus_client import generate_latest

from mq9_broker import (
    BrokerEngine,
    ManualClock,
    drop_memory_broker,
    install_memory_broker,
)
from mq9_platform import Mq9Client
from mq9_platform.wake import Deliverer, Limits, RuleBook, Waker, WakeRule
from mq9_platform.wake.metrics import WakeMetrics

START = 1_700_000_000


def _sample(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{series} not in {text}")


async def test_wakes_by_target_and_outcome_and_their_lag_from_arrival():
    clock = ManualClock(START)
    engine = BrokerEngine(clock=clock)
    name = f"wake-metrics-{uuid.uuid4().hex[:8]}"
    install_memory_broker(name, engine)

    def failing(_wake: object) -> None:
        raise RuntimeError("the agent is down")

    try:
        async with Mq9Client(f"memory://{name}") as client:
            for mailbox, callback in (("agent.up", "ok"), ("agent.down", "fails")):
                await client.mailbox_create(name=mailbox)
                await RuleBook(client).add(
                    WakeRule(mailbox=mailbox, target="callback", callback=callback)
                )
            seen: list = []
            deliverer = Deliverer(
                callbacks={"ok": seen.append, "fails": failing}, attempts=1, backoff=0,
                limits=Limits(min_interval=0),
            )  # fmt: skip
            waker = Waker(client, deliverer, clock=clock, events=False, poll_interval=3600)
            metrics = WakeMetrics(waker)
            await waker.start()
            try:
                await client.send("agent.up", "first")  # arrives at START
                await client.send("agent.down", "lost")
                clock.advance(42)
                await client.send("agent.up", "second")  # the oldest waiting is the first
                await waker.check("agent.up")
                await waker.check("agent.down")
            finally:
                await waker.stop()
        assert len(seen) == 1
        text = generate_latest(metrics.registry).decode()
        assert _sample(text, 'mq9_wake_wakes_total{outcome="delivered",target="callback"}') == 1
        assert _sample(text, 'mq9_wake_wakes_total{outcome="set_aside",target="callback"}') == 1
        assert _sample(text, 'mq9_wake_lag_seconds_count{target="callback"}') == 2
        assert _sample(text, 'mq9_wake_lag_seconds_sum{target="callback"}') == 84  # 42 each
        assert _sample(text, 'mq9_wake_lag_seconds_bucket{le="30.0",target="callback"}') == 0
        assert _sample(text, 'mq9_wake_lag_seconds_bucket{le="60.0",target="callback"}') == 2
        assert "agent.up" not in text and "agent.down" not in text  # no label names a mailbox
    finally:
        drop_memory_broker(name)
