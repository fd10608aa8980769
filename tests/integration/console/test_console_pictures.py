"""The console's pictures: a mailbox's depth over time (on an injected clock), and a call's
timeline across the caller's and the agent's mailboxes, from the W3C trace context its
messages carry."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from langchain_mq9 import serve_agent
from mq9_cli import overview
from mq9_cli.console.charts import DepthHistory, depth_chart, sparkline, timeline_chart
from mq9_platform import AgentCaller, Mq9Client
from testbed.support.a2a_support import asking, text_graph, text_io


def test_depth_over_time_on_the_clock_it_is_given():
    now = [1_000.0]
    history = DepthHistory(clock=lambda: now[0])
    for depth in (0, 3, 7, 100):
        history.add("team.box", depth)
        now[0] += 5
    assert history.samples("team.box") == [(1000, 0), (1005, 3), (1010, 7), (1015, 100)]
    assert history.samples("team.other") == []
    drawn = depth_chart("team.box", history.samples("team.box"), capped=100)
    assert drawn.count("<polyline") == 1 and ">100+</text>" in drawn  # a QUERY's most
    assert ">now 100+</text>" in drawn  # the last look's, a QUERY's most too
    history.add("team.box", 40)  # fewer now than the most seen: the top stays, "now" follows
    drawn = depth_chart("team.box", history.samples("team.box"))
    assert ">100</text>" in drawn and ">now 40</text>" in drawn
    assert ">00:16:40</text>" in drawn and ">00:17:00</text>" in drawn  # first and last look
    assert "no samples yet" in depth_chart("team.empty", [], capped=100)
    assert "<polyline" in sparkline("team.box", history.samples("team.box"))
    assert "<polyline" not in sparkline("team.box", history.samples("team.box")[:1])


async def test_a_calls_timeline_follows_its_trace_across_the_agents():
    async with Mq9Client("memory://pictures") as client:
        agent = await serve_agent(
            text_graph(asking), name="agent.asker", client=client, **text_io()
        )
        try:
            caller = AgentCaller(client, "human.calls")
            traced = SpanContext(0xABC, 0x1, is_remote=False, trace_flags=TraceFlags(1))
            with trace.use_span(NonRecordingSpan(traced)):  # the caller's trace, no SDK needed
                asked = await caller.call("agent.asker", "greet", wait=30)
            await caller.answer(asked.task_id, "French", wait=30)
            events = await overview.call_timeline(client, "human.calls", asked.task_id)
        finally:
            await agent.stop()
    steps = [(e.lane, e.what) for e in events]
    assert ("agent", "task sent") in steps and ("agent", "answer sent") in steps
    assert ("caller", "state: completed") in steps and ("caller", "call recorded") in steps
    trace_id = f"{0xABC:032x}"
    [task] = [e for e in events if e.what == "task sent"]
    assert task.trace_id == trace_id  # the request carried the caller's trace
    drawn = timeline_chart(asked.task_id, events)
    assert f"trace {trace_id}" in drawn and ">task sent</text>" in drawn
    assert ">caller</text>" in drawn and ">agent</text>" in drawn
