"""Two LangGraph agents working together through mq9 mailboxes.

A worker agent registers its capability. An orchestrator agent gets a job, finds the worker in
the registry, creates a private reply mailbox, delegates the job with reply_to and a
correlation_id, and moves on. The worker comes online later, fetches the task, does the work,
replies and acks. The orchestrator checks back and fetches the result. Neither agent is ever
online at the same time as the other: the mailboxes hold the messages in between.

Both agents are langchain create_agent graphs over the Mq9Toolkit tools. By default scripted
models drive them (offline, no API key, same transcript every time); --model lets a real LLM
drive both with the same system prompts.

    python examples/two_agents.py
    python examples/two_agents.py --server nats://127.0.0.1:4222
    python examples/two_agents.py --model openai:gpt-4.1-mini
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
from typing import Any

from langgraph.checkpoint.memory import InMemorySaver
from models import add_model_option, chat_model, describe
from support import Names, banner, build_agent, parser, run_agent, until_searchable

from langchain_mq9 import Mq9Client, Mq9Error, Mq9Toolkit
from langchain_mq9.testing import call, tool_result

REPORT = (
    "On Tuesday at 14:05 UTC the checkout service began timing out for about 15% of payment "
    "requests. The cause was a connection pool limit of 50 on the new database proxy, which "
    "filled up during the afternoon traffic peak. Engineers raised the limit to 200 at 14:40 "
    "and error rates returned to normal by 14:52. No payments were lost, but 1,900 customers "
    "had to retry. A load test that matches peak traffic will be added before the next proxy "
    "change."
)
CORRELATION_ID = "summary-1"

ORCHESTRATOR_PROMPT = """\
You are the orchestrator of a team of AI agents that talk through mq9 mailboxes (tools \
agent_discover, create_mailbox, send_message, fetch_messages, ack_messages). You do not do \
specialist work yourself: you delegate it and report the result.

To delegate a job:
1. Find a capable agent with agent_discover(query=<the need in plain words>). Use the \
'mailbox' of the best match.
2. Create a private reply mailbox with create_mailbox(ttl=3600).
3. Send the job with send_message to that agent's mailbox. The payload is a JSON object with \
"task" (what to do), "text" (the input, complete), "reply_to" (your reply mailbox) and \
"correlation_id" (use "{correlation_id}").
4. Then stop and say what you delegated to whom. The other agent may be offline; do not wait.

When asked to check for results: call fetch_messages on your reply mailbox with \
max_wait_ms=5000, take the reply whose correlation_id matches, confirm it with ack_messages \
(same mailbox, its msg_id), and answer with the result.
"""

WORKER_PROMPT = """\
You are {name}, an agent that summarizes texts: you condense a report or article into two or \
three plain sentences that keep the key facts and numbers. Other agents send you tasks \
through mq9 mailboxes.

When told to start: register with agent_register(name="{name}", capabilities="Summarizes long \
texts such as reports, articles and emails into two or three sentences; English.").

When told to check your mailbox: call fetch_messages(mail_address="{name}"). For each task, \
write the summary yourself, then send it with send_message to the task's reply_to, payload a \
JSON object {{"correlation_id": <the task's correlation_id>, "result": <your summary>, "from": \
"{name}"}}. After replying, confirm the task with ack_messages(mail_address="{name}", \
msg_id=<its msg_id>).
"""


def extractive_summary(text: str) -> str:
    """The scripted worker's stand-in for an LLM's summary: the first sentence and the
    sentence with the most figures in it. A real model (``--model``) writes a real one."""
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]
    rest = sentences[1:]
    key = max(rest, key=lambda s: len(re.findall(r"\d+", s)), default="")
    return " ".join(s for s in (sentences[0], key) if s)


# -- the scripts the offline models play (a real model gets only the prompts above) ----------


def orchestrator_script(names: Names) -> list[Any]:
    def reply_box(m):
        return tool_result(m, "create_mailbox")["mail_address"]

    def chosen(m):
        agents = names.mine(tool_result(m, "agent_discover")["agents"])
        return agents[0]["mailbox"]

    def reply(m):
        found = tool_result(m, "fetch_messages")["messages"]
        return next(x for x in found if x["payload"].get("correlation_id") == CORRELATION_ID)

    return [
        # -- first request: delegate the job
        call("agent_discover", query="summarize an incident report into a short summary"),
        call("create_mailbox", ttl=3600),
        lambda m: call(
            "send_message",
            mail_address=chosen(m),
            payload={
                "task": "Summarize this incident report in two or three sentences.",
                "text": REPORT,
                "reply_to": reply_box(m),
                "correlation_id": CORRELATION_ID,
            },
        ),
        lambda m: (
            f"I delegated the summary to {chosen(m)} (correlation_id {CORRELATION_ID}); "
            f"its reply will arrive in my mailbox {reply_box(m)}."
        ),
        # -- second request: collect the result
        lambda m: call("fetch_messages", mail_address=reply_box(m), max_wait_ms=5000),
        lambda m: call("ack_messages", mail_address=reply_box(m), msg_id=reply(m)["msg_id"]),
        lambda m: f"Summary from {reply(m)['payload']['from']}: {reply(m)['payload']['result']}",
    ]


def worker_script(name: str) -> list[Any]:
    def task(m):
        return tool_result(m, "fetch_messages")["messages"][0]

    return [
        # -- first request: start up
        call(
            "agent_register",
            name=name,
            capabilities="Summarizes long texts such as reports, articles and emails into two "
            "or three sentences; English.",
        ),
        f"Registered as {name}; tasks will wait in my mailbox until I check it.",
        # -- second request: work through the mailbox
        call("fetch_messages", mail_address=name),
        lambda m: call(
            "send_message",
            mail_address=task(m)["payload"]["reply_to"],
            payload={
                "correlation_id": task(m)["payload"]["correlation_id"],
                "result": extractive_summary(task(m)["payload"]["text"]),
                "from": name,
            },
        ),
        lambda m: call("ack_messages", mail_address=name, msg_id=task(m)["msg_id"]),
        lambda m: (
            f"Summarized task {task(m)['payload']['correlation_id']} and sent the result "
            "to its reply_to."
        ),
    ]


# -- checking the outcome on the broker, independently of what the agents said ---------------


def _json(message) -> Any:
    try:
        return message.json()
    except ValueError:
        return message.text()


async def verify(client: Mq9Client, worker: str) -> bool:
    """The task reached the worker's mailbox and a reply with its correlation_id reached the
    reply_to mailbox named in the task."""
    try:
        return await _verify(client, worker)
    except (Mq9Error, ValueError) as exc:  # e.g. a real model never created the mailbox
        print(f"✗ {exc}")
        return False


async def _verify(client: Mq9Client, worker: str) -> bool:
    tasks = [t for t in map(_json, await client.query(worker)) if isinstance(t, dict)]
    if not tasks or "reply_to" not in tasks[-1]:
        print(f"✗ no task with a reply_to in {worker}'s mailbox")
        return False
    task = tasks[-1]
    replies = [_json(r) for r in await client.query(task["reply_to"])]
    matching = [
        r
        for r in replies
        if isinstance(r, dict) and r.get("correlation_id") == task.get("correlation_id")
    ]
    if not matching:
        print(
            f"✗ no reply with correlation_id {task.get('correlation_id')!r} in {task['reply_to']}"
        )
        return False
    print(
        f"✓ checked on the broker: the task went to {worker}, and its reply (correlation_id "
        f"{task.get('correlation_id')}) is in the orchestrator's mailbox {task['reply_to']}"
    )
    return True


async def main(server: str, model: str | None) -> int:
    names = Names(server)
    worker_name = names("agent.summarizer")
    print(f"broker: {server}    model: {describe(model)}")

    orchestrator_tools = Mq9Toolkit(server=server, default_group="orchestrator")
    worker_tools = Mq9Toolkit(server=server, default_group="summarizer")
    orchestrator = build_agent(
        chat_model(orchestrator_script(names), model),
        orchestrator_tools.get_tools(),
        ORCHESTRATOR_PROMPT.format(correlation_id=CORRELATION_ID),
        checkpointer=InMemorySaver(),
    )
    worker = build_agent(
        chat_model(worker_script(worker_name), model),
        worker_tools.get_tools(),
        WORKER_PROMPT.format(name=worker_name),
        checkpointer=InMemorySaver(),
    )

    async with Mq9Client(server) as client:
        # Other agents already in the registry, so discovery has something to choose from.
        others = [
            (
                names("agent.translator"),
                "Translates documents between English, Chinese, Japanese and French.",
            ),
            (
                names("agent.billing"),
                "Answers billing questions: invoices, refunds, payment methods.",
            ),
        ]
        for other, capabilities in others:
            await client.agent_register(
                {"name": other, "mailbox": other, "description": capabilities}
            )
        try:
            banner("1. the worker agent starts and registers its capability, then goes offline")
            await run_agent(worker, "worker", "Start up: register yourself.", thread="worker")
            # It registered just now (in a real deployment, long before): on a broker whose
            # search trails the registry, the orchestrator looks once it can be found
            await until_searchable(client, {worker_name: "summarizes incident reports"})

            banner("2. the orchestrator agent gets a job and delegates it")
            await run_agent(
                orchestrator,
                "orchestrator",
                "Please get this incident report summarized by a specialist agent:\n\n" + REPORT,
                thread="orchestrator",
            )

            banner("3. the worker agent comes back online and works through its mailbox")
            await run_agent(
                worker, "worker", "Check your mailbox and handle any tasks.", thread="worker"
            )

            banner("4. the orchestrator agent checks back for the result")
            await run_agent(
                orchestrator,
                "orchestrator",
                "Check whether the result of the job you delegated has arrived, and give me the "
                "summary.",
                thread="orchestrator",
            )

            banner("5. what the broker saw")
            ok = await verify(client, worker_name)
        finally:
            for agent in [worker_name, *(name for name, _ in others)]:
                with contextlib.suppress(Mq9Error):  # a real model may not have registered
                    await client.agent_unregister(agent)
            await orchestrator_tools.aclose()
            await worker_tools.aclose()
    return 0 if ok else 1


if __name__ == "__main__":
    cli = parser(__doc__)
    add_model_option(cli)
    arguments = cli.parse_args()
    sys.exit(asyncio.run(main(arguments.server, arguments.model)))
