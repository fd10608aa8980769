"""One trace across agents: what carrying a trace costs the client's SEND and FETCH.

Three variants of the same calls on the dev broker (the engine in its own process on a
nats-server), rounds interleaved, and for the figures on ``memory://`` too (no network: the
largest share any tracing cost can take): *off*, as in a process that never imported
OpenTelemetry or LangSmith (what ``mq9_platform.tracing`` and the LangSmith runs
``langchain_mq9`` registers with it look for is hidden from ``sys.modules`` for these rounds);
*installed, no trace*, OpenTelemetry's SDK set up but no span active; *active trace*, each
call under a recording span (SDK, a batch processor and an exporter that drops what it gets:
the cost here, not the exporter's). 13a/13b: installed, no trace ≤ 1.03× off; 13c/13d: active
≤ 1.25× off.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from .config import Config
from .infra import Network
from .measure import Stats, fmt_seconds, interleave_async_blocks
from .results import Check, Section

TITLE = "One trace across agents: tracing's cost to send and fetch (target 13)"
MAILBOX = "bench.traced"
PAYLOAD = "x" * 200
# What mq9_platform.tracing (OpenTelemetry) and langchain_mq9.langsmith_runs (LangSmith) look
# for to know a trace may be active.
WATCHED = ("opentelemetry.trace", "langsmith.run_helpers")


@contextlib.contextmanager
def _never_imported() -> Iterator[None]:
    hidden = {name: sys.modules.pop(name) for name in WATCHED if name in sys.modules}
    try:
        yield
    finally:
        sys.modules.update(hidden)


def _tracer() -> Any:
    """A tracer of OpenTelemetry's SDK, exporting to nowhere (None: the SDK is not here)."""
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
        from opentelemetry.sdk.trace.export import SpanExportResult as Result
    except ImportError:
        return None

    class Dropping(SpanExporter):
        def export(self, spans: Any) -> Result:
            return Result.SUCCESS

    if not hasattr(trace.get_tracer_provider(), "add_span_processor"):
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Dropping()))
        trace.set_tracer_provider(provider)
    return trace.get_tracer("bench")


def _runners(
    call: Callable[[], Awaitable[object]], tracer: Any
) -> dict[str, Callable[[int], Awaitable[list[float]]]]:
    async def timed(n: int) -> list[float]:
        clock, out = time.perf_counter, []
        for _ in range(n):
            started = clock()
            await call()
            out.append(clock() - started)
        return out

    async def off(n: int) -> list[float]:
        with _never_imported():
            return await timed(n)

    async def active(n: int) -> list[float]:
        with tracer.start_as_current_span("bench task"):
            return await timed(n)

    runners = {"off": off, "installed, no trace": timed}
    if tracer is not None:
        runners["active trace"] = active
    return runners


def _check(key: str, what: str, results: dict[str, Stats], ours: str, limit: float) -> Check:
    measured = ours in results
    a, b = (results[ours].median if measured else None), results["off"].median
    return Check(
        key=key,
        title=what,
        ours_label=ours,
        ours=fmt_seconds(a) if a is not None else "n/a",
        baseline_label="off",
        baseline=fmt_seconds(b),
        ratio=a / b if a is not None else None,
        op="<=",
        limit=limit,
        note="" if measured else "opentelemetry-sdk is not installed (the bench extra has it)",
    )


async def _measure(url: str, rounds: tuple[int, int], tracer: Any) -> dict[str, dict[str, Stats]]:
    """Each variant of a SEND and of a FETCH (10 messages, each sent under a trace) at ``url``."""
    from langchain_mq9 import Mq9Client

    async with Mq9Client(url) as client:
        await client.mailbox_create(name=MAILBOX)
        with tracer.start_as_current_span("senders") if tracer else contextlib.nullcontext():
            for _ in range(10):  # what every FETCH hands out: each with a sender's context
                await client.send(MAILBOX, PAYLOAD)

        async def send() -> None:
            await client.send(MAILBOX, PAYLOAD)

        async def fetch() -> None:
            await client.fetch(MAILBOX, deliver="earliest", num_msgs=10, max_wait_ms=0)

        measured = {}
        for op, call in (("send", send), ("fetch", fetch)):
            measured[op] = await interleave_async_blocks(
                _runners(call, tracer), rounds=rounds[0], block=rounds[1]
            )
        return measured


def _on_dev_broker(net: Network, rounds: tuple[int, int], tracer: Any) -> dict[str, Any]:
    async def measure() -> dict[str, Any]:
        import nats

        control = await nats.connect(net.url)
        try:
            await net.serve(control, "engine")
            return await _measure(net.url, rounds, tracer)
        finally:
            await control.close()

    return asyncio.run(measure())


def run(cfg: Config, net: Network) -> Section:
    section = Section("tracing", TITLE)
    tracer = _tracer()
    on_nats = _on_dev_broker(net, cfg.client_rounds, tracer)
    in_process = asyncio.run(_measure("memory://bench-tracing", cfg.client_rounds, tracer))
    for op, keys in (("send", "ac"), ("fetch", "bd")):
        results = on_nats[op]
        quiet = f"{op} on the dev broker, tracing installed, no trace"
        section.checks.append(_check(f"13{keys[0]}", quiet, results, "installed, no trace", 1.03))
        traced = f"{op} on the dev broker under an active trace"
        section.checks.append(_check(f"13{keys[1]}", traced, results, "active trace", 1.25))
        for where, found in (("dev broker", on_nats), ("memory://", in_process)):
            section.figures += [
                (f"{op}, {where}: {name}", f"median {fmt_seconds(s.median)}, n={s.n}")
                for name, s in found[op].items()
            ]
    section.checks.sort(key=lambda check: check.key)
    section.notes.append(
        "The targets are on the dev broker (the engine in its own process on a nats-server on "
        "loopback), 200-byte payloads; a FETCH hands out 10 messages, each carrying a trace "
        "context (links on the receive span in the active rounds). memory:// (no network: "
        "the largest share tracing can take) is shown in the figures, without a target."
    )
    return section
