"""#113: a /readyz whose probe has not answered in time answers with the last probe only while
that one is recent (``PROBE_FRESH``). It answered with the last one however old: a server
probed before its cluster lost its quorum, and not asked since, said ``200 ready`` while no
write was taken. The waker's, gateway's, MCP server's and console's ``Probe`` (the broker's
own, on the JetStream store: tests/platform/metrics/test_readiness_quorum.py)."""

from __future__ import annotations

import asyncio

from mq9_wire.metrics import probe

GUARD = 60  # seconds: a hang guard, never a timing assertion


async def test_an_old_answer_does_not_speak_for_a_probe_still_under_way(monkeypatch):
    monkeypatch.setattr(probe, "ANSWER_WITHIN", 0.05)
    now = [1000.0]
    hung = asyncio.Event()
    answers: list[str | None] = [None]  # ready, then a probe that hangs

    async def ask() -> str | None:
        if answers:
            return answers.pop()
        await hung.wait()
        return "the broker acknowledged no write"

    ready = probe.Probe(ask, clock=lambda: now[0])
    assert await asyncio.wait_for(ready(), GUARD) is None
    now[0] += probe.PROBE_KEPT  # the next /readyz probes again; that probe hangs
    assert await asyncio.wait_for(ready(), GUARD) is None  # the last answer is recent
    now[0] += probe.PROBE_FRESH  # ... and now it is not
    why = await asyncio.wait_for(ready(), GUARD)
    assert why is not None and why.startswith("not known:"), why
    hung.set()
    for _ in range(3):
        await asyncio.sleep(0)
    assert await asyncio.wait_for(ready(), GUARD) == "the broker acknowledged no write"
