"""Agent calls: LLM steps per delegation, and the time from a call to its result.

10a counts the tool calls (each one an LLM step) the delegation of ``examples/two_agents.py``
takes: on the raw mailbox tools, as that example runs (both agents), against the call tools
(``call_agent`` while the callee is offline, ``check_call`` once it is back; the callee is a
graph served with ``serve_agent`` and calls no tool). Both sides are the scripted models of the
examples, counted as they emit tool calls.

10b times one delegation with the callee online, from the caller's send to the result in hand,
on the dev broker (the engine on a real nats-server): ``AgentCaller.call`` to a served graph,
against the raw request/reply a developer writes on the client (send with ``reply_to``, a
responder reading its mailbox as a consumer group and replying, the caller reading its reply
mailbox). Same broker, same trivial work, rounds interleaved.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from .config import Config
from .results import Check, Section

TITLE = "Agent calls: LLM steps per delegation and call-to-result time (target 12)"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SETUP_TIMEOUT = 30.0  # seconds a request of the timed calls' clients may take (a bound)


class _Counter:
    tool_calls = 0


def _counting_model(script: Any, counter: type[_Counter] | _Counter) -> Any:
    from langchain_mq9.testing import ScriptedChatModel

    class Counting(ScriptedChatModel):
        def _generate(self, messages, stop=None, run_manager=None, **kwargs):
            result = super()._generate(messages, stop, run_manager, **kwargs)
            counter.tool_calls += len(result.generations[0].message.tool_calls)
            return result

    return Counting(steps=list(script))


async def _raw_delegation() -> int:
    """examples/two_agents.py as it runs, every model counted."""
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    import two_agents

    counter = _Counter()
    original = two_agents.chat_model
    two_agents.chat_model = lambda script, model=None: _counting_model(script, counter)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            status = await two_agents.main("memory://bench-raw-delegation", None)
    finally:
        two_agents.chat_model = original
    if status != 0:
        raise RuntimeError("examples/two_agents.py did not complete its delegation")
    return counter.tool_calls


async def _called_delegation() -> tuple[int, int]:
    """The same delegation on the call tools: (the caller's tool calls, the callee's)."""
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    from langchain.agents import create_agent
    from langgraph.checkpoint.memory import InMemorySaver
    from two_agents import REPORT, extractive_summary

    from langchain_mq9 import Mq9Client, Mq9Toolkit
    from langchain_mq9.serving import serve_agent
    from langchain_mq9.testing import call, tool_result

    caller_count, callee_count = _Counter(), _Counter()
    summarize = [lambda m: extractive_summary(str(m[-1].content).split("\n\n", 1)[-1])]
    callee = create_agent(_counting_model(summarize, callee_count), [])
    script = [
        call("call_agent", agent="summarize an incident report", task="Summarize:\n\n" + REPORT),
        "Delegated; the summarizer is offline, I will check back.",
        lambda m: call(
            "check_call", task_id=tool_result(m, "call_agent")["task_id"], wait_seconds=30
        ),
        lambda m: tool_result(m, "check_call")["result"],
    ]
    url = "memory://bench-called-delegation"
    card = {"description": "Summarizes long texts such as reports into two or three sentences"}
    async with Mq9Client(url) as client:
        first = await serve_agent(callee, name="agent.summarizer", card=card, client=client)
        await first.stop()  # registered, offline
        kit = Mq9Toolkit(server=url, agent_mailbox="agent.orchestrator", calls=True)
        model = _counting_model(script, caller_count)
        orchestrator = create_agent(model, kit.get_tools(), checkpointer=InMemorySaver())
        config = {"configurable": {"thread_id": "orchestrator"}}
        await orchestrator.ainvoke({"messages": [("user", "Summarize: " + REPORT)]}, config)
        served = await serve_agent(callee, name="agent.summarizer", card=card, client=client)
        try:
            state = await orchestrator.ainvoke(
                {"messages": [("user", "Has the summary arrived?")]}, config
            )
        finally:
            await served.stop()
            await kit.aclose()
    if "Engineers raised the limit to 200" not in str(state["messages"][-1].content):
        raise RuntimeError("the called delegation did not bring the summary back")
    return caller_count.tool_calls, callee_count.tool_calls


async def _timings(url: str, rounds: int) -> tuple[list[float], list[float]]:
    """Seconds from send to result: (agent calls, raw request/reply), interleaved."""
    from langchain_core.runnables import RunnableLambda

    from langchain_mq9 import GroupReader, Mq9Client
    from langchain_mq9.serving import AgentServer
    from mq9_platform.a2a.caller import AgentCaller

    tag = str(time.time_ns())
    raw_box, reply_box = f"bench.raw.{tag}", f"bench.raw.{tag}.replies"
    # a bound, not a figure (the figures are the calls' medians): a clean-clone run at load
    # left an agent's registration unanswered past the client's 5 s
    async with (
        Mq9Client(url, request_timeout=SETUP_TIMEOUT) as callee,
        Mq9Client(url, request_timeout=SETUP_TIMEOUT) as caller_client,
    ):
        await callee.mailbox_create(name=raw_box, ttl=600)
        await caller_client.mailbox_create(name=reply_box, ttl=600)

        async def respond() -> None:  # the raw responder: a consumer group, reply, done
            reader = GroupReader(callee, raw_box, "responder")
            while True:
                for msg in await reader.fetch(num_msgs=10, max_wait_ms=500):
                    request = msg.json()
                    answer = {"correlation_id": request["correlation_id"]}
                    answer["result"] = request["text"].upper()
                    await callee.send(request["reply_to"], answer)
                    await reader.done(msg.msg_id)

        replies = GroupReader(caller_client, reply_box, "caller")

        async def raw_round(i: int) -> float:
            began = time.perf_counter()
            request = {"text": f"r{i}", "reply_to": reply_box, "correlation_id": f"c{i}"}
            await caller_client.send(raw_box, request)
            while True:
                found = await replies.fetch(num_msgs=10, max_wait_ms=10_000)
                await replies.done([m.msg_id for m in found])
                if any(m.json().get("correlation_id") == f"c{i}" for m in found):
                    return time.perf_counter() - began

        graph = RunnableLambda(lambda text: text.upper())
        agent = AgentServer(graph, name=f"bench.agent.{tag}", client=callee, worker="w1")
        responder = asyncio.create_task(respond())
        async with agent:
            caller = await AgentCaller(caller_client, f"bench.agent.{tag}.calls").open()

            async def call_round(i: int) -> float:
                began = time.perf_counter()
                state = await caller.call(agent.mailbox, f"c{i}", wait=10)
                if state.view().get("result") != f"C{i}":
                    raise RuntimeError(f"call {i} ended {state.view()}")
                return time.perf_counter() - began

            await call_round(-1)  # warm both paths up
            await raw_round(-1)
            called, raw = [], []
            for i in range(rounds):
                called.append(await call_round(i))
                raw.append(await raw_round(i))
        responder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await responder
    return called, raw


def run(cfg: Config, net: Any) -> Section:
    section = Section("calls", TITLE)
    raw_steps = asyncio.run(_raw_delegation())
    caller_steps, callee_steps = asyncio.run(_called_delegation())
    section.checks.append(
        Check(
            key="12a",
            title="tool calls (LLM steps) per delegation, examples/two_agents.py's scenario: "
            "call tools (caller + served callee) vs raw mailbox tools (both agents)",
            ours_label="call tools",
            ours=f"{caller_steps + callee_steps} (caller {caller_steps}, callee {callee_steps})",
            baseline_label="raw tools",
            baseline=str(raw_steps),
            ratio=(caller_steps + callee_steps) / raw_steps,
            op="<=",
            limit=2 / 8,
        )
    )

    async def timed() -> tuple[list[float], list[float]]:
        import nats

        connection = await nats.connect(net.url)
        try:
            await net.serve(connection, "engine")
        finally:
            await connection.close()
        return await _timings(net.url, 5 if cfg.quick else 40)

    called, raw = asyncio.run(timed())
    ours, base = statistics.median(called), statistics.median(raw)
    section.checks.append(
        Check(
            key="12b",
            title="send to result, callee online, dev broker on nats-server: an agent call "
            "(AgentCaller.call → serve_agent) vs raw request/reply (send with reply_to, "
            "GroupReader responder, reply mailbox read)",
            ours_label="agent call",
            ours=f"{ours * 1000:.0f} ms",
            baseline_label="raw request/reply",
            baseline=f"{base * 1000:.0f} ms",
            ratio=ours / base,
            op="<=",
            limit=1.3,
        )
    )
    section.figures += [
        ("agent call, p90", f"{statistics.quantiles(called, n=10)[-1] * 1000:.0f} ms"),
        ("raw request/reply, p90", f"{statistics.quantiles(raw, n=10)[-1] * 1000:.0f} ms"),
        ("rounds", str(len(called))),
    ]
    section.notes.append(
        "Both sides poll (every 0.1 s: RobustMQ's FETCH does not wake on arrival), so the "
        "times are mostly polling; an agent call also writes each task state twice (the "
        "agent's task store and the caller's reply mailbox) and claims its request for one "
        "replica."
    )
    return section
