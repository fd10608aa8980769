"""Human-in-the-loop approval: a LangGraph graph pauses until the human's answer arrives in
its mailbox.

An operations agent (a LangGraph graph with a checkpointer) wants to do two risky things. For
each it sends an approval request (urgent, with reply_to and a correlation_id) to the human
approver's mailbox and pauses with ``langgraph.types.interrupt``; the graph's state is saved
and nothing runs while it waits. The human's app uses the same mq9 client: it fetches the
requests, and the human approves one and rejects the other, answering in the opposite order.
A mailbox watcher on the agent's side fetches the replies and resumes each paused thread with
the reply whose correlation_id matches. No approval service, no webhooks, no polling inside the
graph.

    python examples/human_approval.py [--server nats://127.0.0.1:4222]

With a persistent checkpointer (e.g. SqliteSaver) instead of InMemorySaver, the agent's
process could even exit while it waits and resume in a new one.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypedDict

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt
from support import Names, banner, parser, wait_for_messages

from langchain_mq9 import GroupReader, Mq9Client, Priority

REQUESTS = [
    {"correlation_id": "approval-1", "action": "refund order #1042", "cost_usd": 50},
    {"correlation_id": "approval-2", "action": "delete dataset analytics_2023", "cost_usd": 0},
]
# What the (simulated) human decides.
DECISIONS = {
    "approval-1": (True, "ok, customer was double-charged"),
    "approval-2": (False, "finance still needs it until March"),
}


class Approval(TypedDict, total=False):
    correlation_id: str
    action: str
    cost_usd: int
    decision: dict[str, Any]
    outcome: str


def build_agent(client: Mq9Client, approver: str, reply_box: str) -> Any:
    """The agent's graph: ask → wait for the human (interrupt) → act on the decision."""

    async def ask_for_approval(state: Approval) -> dict:
        await client.send(
            approver,
            {
                "type": "approval_request",
                "action": state["action"],
                "cost_usd": state["cost_usd"],
                "reply_to": reply_box,
                "correlation_id": state["correlation_id"],
            },
            priority=Priority.URGENT,
        )
        print(f"[agent] asked {approver} to approve: {state['action']} ({state['correlation_id']})")
        return {}

    def wait_for_human(state: Approval) -> dict:
        # Pauses the graph here; resumes with the value given to Command(resume=...).
        decision = interrupt({"waiting_for": state["correlation_id"], "mailbox": reply_box})
        if decision.get("correlation_id") != state["correlation_id"]:
            raise ValueError(f"reply for {decision.get('correlation_id')} reached the wrong thread")
        return {"decision": decision}

    def act(state: Approval) -> dict:
        decision = state["decision"]
        if decision["approved"]:
            return {"outcome": f"done: {state['action']}"}
        return {"outcome": f"not done: {state['action']} (rejected: {decision['comment']})"}

    graph = StateGraph(Approval)
    graph.add_node("ask_for_approval", ask_for_approval)
    graph.add_node("wait_for_human", wait_for_human)
    graph.add_node("act", act)
    graph.add_edge(START, "ask_for_approval")
    graph.add_edge("ask_for_approval", "wait_for_human")
    graph.add_edge("wait_for_human", "act")
    graph.add_edge("act", END)
    return graph.compile(checkpointer=InMemorySaver())


def thread(correlation_id: str) -> dict:
    return {"configurable": {"thread_id": correlation_id}}


async def human(server: str, approver: str) -> None:
    """The approver's app: same protocol, same client, a person deciding."""
    async with Mq9Client(server) as app:
        inbox = GroupReader(app, approver, "alice")
        requests = await inbox.fetch()
        for message in requests:
            request = message.json()
            print(
                f"[alice] inbox [{message.priority}]: {request['action']} "
                f"(${request['cost_usd']}, {request['correlation_id']})"
            )
        for message in reversed(requests):  # answers the newest first
            request = message.json()
            approved, comment = DECISIONS[request["correlation_id"]]
            await app.send(
                request["reply_to"],
                {
                    "correlation_id": request["correlation_id"],
                    "approved": approved,
                    "comment": comment,
                    "reviewer": "alice",
                },
            )
            print(
                f"[alice] {'approves' if approved else 'rejects'} {request['correlation_id']}: "
                f"{comment}"
            )
        await inbox.done([m.msg_id for m in requests])


async def main(server: str) -> None:
    approver = Names(server)("approver.alice")
    async with Mq9Client(server) as setup:
        await setup.mailbox_create(name=approver, ttl=3600)  # the human's well-known mailbox

    async with Mq9Client(server) as client:
        reply_box = await client.mailbox_create(ttl=3600)  # the agent's private mailbox
        agent = build_agent(client, approver, reply_box)

        banner("the agent starts two risky actions; each pauses for approval")
        for request in REQUESTS:
            result = await agent.ainvoke(request, thread(request["correlation_id"]))
            paused = result["__interrupt__"][0].value
            print(
                f"[agent] thread {request['correlation_id']} paused, waiting for "
                f"{paused['waiting_for']} in {paused['mailbox']}"
            )
        early = await client.query(reply_box)  # a look, consuming nothing
        waiting = [
            r["correlation_id"]
            for r in REQUESTS
            if (await agent.aget_state(thread(r["correlation_id"]))).next
        ]
        print(f"[agent] replies so far: {len(early)}; threads waiting: {', '.join(waiting)}")

        banner("the human answers from her own app, in her own time")
        await human(server, approver)

        banner("the agent's mailbox watcher resumes each thread with its reply")
        outcomes: dict[str, str] = {}
        watcher = GroupReader(client, reply_box, "agent")
        while len(outcomes) < len(REQUESTS):
            replies = await wait_for_messages(watcher, 5)
            if not replies:
                raise SystemExit("no reply from the approver")
            for message in replies:
                reply = message.json()
                config = thread(reply["correlation_id"])
                if (await agent.aget_state(config)).next:  # else a duplicate: nobody waits
                    final = await agent.ainvoke(Command(resume=reply), config)
                    outcomes[reply["correlation_id"]] = final["outcome"]
                    print(f"[agent] {reply['correlation_id']} resumed → {final['outcome']}")
                await watcher.done(message.msg_id)

    banner("result")
    for request in REQUESTS:
        print(f"{request['correlation_id']}: {outcomes[request['correlation_id']]}")
    approved = [cid for cid, o in outcomes.items() if o.startswith("done")]
    if approved != ["approval-1"]:
        raise SystemExit(f"expected only approval-1 to go ahead, got {approved}")
    print("each paused thread got its own human decision via its correlation_id")


if __name__ == "__main__":
    asyncio.run(main(parser(__doc__).parse_args().server))
