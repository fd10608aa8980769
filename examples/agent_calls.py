"""Two agents again, on agent calls: the delegation of two_agents.py in two tool calls.

The summarizer is a LangGraph agent served on its mq9 mailbox with ``serve_agent``: it has no mq9
tools at all (0 tool calls), the server reads its mailbox and reports the task's states. The
orchestrator delegates with ``call_agent`` while the summarizer is still offline, and its
process ends. The summarizer comes online and does the work. A new process of the
orchestrator (same agent_mailbox, so the same reply mailbox) picks the result up with
``check_call``. Under the hood it is A2A over mq9 (docs/a2a.md); two_agents.py shows the same
delegation on the raw mailbox tools (8 tool calls). On a broker other programs use too,
call_agent by capability takes the best match among the agents that serve tasks (an agent
registered only for its mailbox is never picked), which may be another run's summarizer:
give call_agent the agent's name to be sure. The summarizer's registration is removed
whatever happens.

    python examples/agent_calls.py
    python examples/agent_calls.py --server nats://127.0.0.1:4222
    python examples/agent_calls.py --model openai:gpt-4.1-mini
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import Any

from langchain.agents import create_agent
from models import add_model_option, chat_model, describe
from support import Names, banner, build_agent, parser, run_agent, until_searchable
from two_agents import REPORT, extractive_summary

from langchain_mq9 import Mq9Client, Mq9Error, Mq9Toolkit
from langchain_mq9.serving import serve_agent
from langchain_mq9.testing import call, tool_result
from mq9_platform.a2a import mail as w
from mq9_platform.a2a.store import TaskStore, tasks_in

ORCHESTRATOR_PROMPT = """\
You are the orchestrator of a team of AI agents. You do not do specialist work yourself: you \
delegate it with call_agent (agent = what the agent must be able to do, task = the job with \
all its input) and report the result. The other agent may be offline: if the call is not \
done yet, say so and stop. When asked for results, use list_calls and check_call \
(wait_seconds=30) and answer with the result.
"""

# what the orchestrator asks for: call_agent routes by it
CAPABILITY = "summarize an incident report into a short summary"
SUMMARIZER_PROMPT = "You summarize texts in two or three plain sentences that keep the key facts."


def orchestrator_script() -> list[Any]:
    def first_call(m):
        return tool_result(m, "list_calls")["calls"][0]

    return [
        # -- first process: delegate
        call(
            "call_agent",
            agent=CAPABILITY,
            task="Summarize this incident report in two or three sentences:\n\n" + REPORT,
        ),
        delegated,
    ]


def delegated(messages) -> str:
    result = tool_result(messages, "call_agent")
    if not isinstance(result, dict):  # the tool's error, in the words the model reads
        return f"The delegation failed: {result}"
    agent, state = result["agent"], result["state"]
    return f"I delegated the summary to {agent}; it is {state}, I will check back."


def collector_script() -> list[Any]:
    return [
        # -- a new process: pick the result up
        call("list_calls"),
        lambda m: call(
            "check_call",
            task_id=tool_result(m, "list_calls")["calls"][0]["task_id"],
            wait_seconds=30,
        ),
        lambda m: report(tool_result(m, "check_call")),
    ]


def report(checked: dict[str, Any]) -> str:
    """The collector's last words: the summary, or where the call stands and why."""
    if "result" in checked:
        return f"Summary from {checked['agent']}: {checked['result']}"
    why = f" ({checked['reason']})" if checked.get("reason") else ""
    return f"No summary: the call to {checked['agent']} is {checked['state']}{why}."


def summarizer_script() -> list[Any]:
    # The served agent's one LLM step: the summary (a real model writes a real one).
    return [lambda m: extractive_summary(str(m[-1].content).split("\n\n", 1)[-1])]


async def main(server: str, model: str | None) -> int:
    names = Names(server)
    summarizer = names("agent.summarizer")
    boss = names("agent.orchestrator")
    print(f"broker: {server}    model: {describe(model)}")
    card = {
        "description": "Summarizes long texts such as reports, articles and emails into two "
        "or three sentences; English.",
        "skills": ["summarize reports", "summarize articles"],
    }
    # The summarizer is a LangChain agent too (langchain.agents.create_agent), served as it is.
    summarizer_model = chat_model(summarizer_script(), model)
    graph = create_agent(summarizer_model, [], system_prompt=SUMMARIZER_PROMPT)

    async with Mq9Client(server) as client:
        try:
            states = await delegate(client, server, model, graph, card, summarizer, boss)
        finally:  # whatever happened: the next run must not find this run's summarizer
            with contextlib.suppress(Mq9Error):
                await client.agent_unregister(summarizer)
    ok = states == ["completed"]
    print("✓ the task completed on the broker" if ok else "✗ the task did not complete")
    return 0 if ok else 1


async def delegate(client, server, model, graph, card, summarizer: str, boss: str) -> list[str]:
    """Steps 1 to 5; the states of the tasks the summarizer's store holds."""
    banner("1. the summarizer was served once: its card and mailbox are on the broker")
    first = await serve_agent(graph, name=summarizer, card=card, client=client)
    await first.stop()
    # the orchestrator routes by capability: on a broker whose search trails its registry,
    # wait until the search finds the summarizer (at once anywhere else)
    await until_searchable(client, {summarizer: CAPABILITY})
    print(f"[summarizer] registered as {summarizer}, now offline")

    banner("2. the orchestrator delegates while the summarizer is offline, then exits")
    async with Mq9Toolkit(server=server, agent_mailbox=boss, tools=["call_agent"]) as kit:
        agent = build_agent(
            chat_model(orchestrator_script(), model), kit.get_tools(), ORCHESTRATOR_PROMPT
        )
        await run_agent(agent, "orchestrator", "Get this incident report summarized.")

    banner("3. the summarizer comes online and works through its mailbox (0 tool calls)")
    served = await serve_agent(graph, name=summarizer, card=card, client=client)
    try:
        banner("4. a new orchestrator process picks the result up")
        tools = ["list_calls", "check_call"]
        async with Mq9Toolkit(server=server, agent_mailbox=boss, tools=tools) as kit:
            agent = build_agent(
                chat_model(collector_script(), model), kit.get_tools(), ORCHESTRATOR_PROMPT
            )
            await run_agent(agent, "orchestrator", "Has the summary arrived? Give it to me.")
    finally:
        await served.stop()

    banner("5. what the broker holds")
    store = TaskStore(client, summarizer).mailbox  # under the reserved root: no tool reads it
    states = [w.short_state(w.task_state(t)) for t in await tasks_in(client, store)]
    print(f"{summarizer}'s task store: {len(states)} task(s), {', '.join(states) or 'none'}")
    return states


if __name__ == "__main__":
    cli = parser(__doc__)
    add_model_option(cli)
    arguments = cli.parse_args()
    sys.exit(asyncio.run(main(arguments.server, arguments.model)))
