"""Capability discovery and routing through the agent registry.

Four agents register at startup with a card describing what they can do, and report their
load. An orchestrator that knows none of their addresses finds them: by keywords (text) and by
describing the need in plain words (semantic), then routes each job to the agent that fits, or
to the least busy of several that fit. The chosen agents find the jobs in their mailboxes. An
agent that shuts down unregisters and is no longer found.

    python examples/capability_routing.py [--server nats://127.0.0.1:4222]

The bundled broker approximates semantic search with word stems weighted by rarity; RobustMQ
ranks by embeddings. Either way the orchestrator's code is the same.
"""

from __future__ import annotations

import asyncio

from support import Names, banner, parser

from langchain_mq9 import Mq9Client

AGENTS = {
    "agent.translator.fast": (
        "Quick machine translation of short texts between English, Chinese and Japanese.",
        0.9,
    ),
    "agent.translator.legal": (
        "Translates legal contracts and terms of service between English, French and "
        "Japanese, with certified legal terminology.",
        0.2,
    ),
    "agent.summarizer": ("Summarizes long reports, articles and meeting notes.", 0.4),
    "agent.riskscore": ("Scores payment transactions for fraud risk.", 0.1),
}


def names_of(agents: list[dict]) -> str:
    return ", ".join(a["name"] for a in agents) or "(none)"


async def main(server: str) -> None:
    names = Names(server)
    registered = [names(base) for base in AGENTS]

    async with Mq9Client(server) as client:
        try:
            banner("agents start, register a card and report their load")
            for base, (capabilities, load) in AGENTS.items():
                name = names(base)
                await client.mailbox_create(name=name, ttl=600)
                await client.agent_register({"name": name, "mailbox": name,
                                             "payload": capabilities})
                await client.agent_report({"mailbox": name, "status": "ready", "load": load})
                print(f"[{name}] registered: {capabilities}")

            banner("the orchestrator discovers by keywords")
            found = names.mine(await client.agent_discover(text="japanese"))
            print(f"[orchestrator] text 'japanese' → {names_of(found)}")
            least_busy = min(found, key=lambda a: a["report"]["load"])
            loads = ", ".join(f"{a['name']} {a['report']['load']}" for a in found)
            print(f"[orchestrator] loads: {loads} → route to the least busy: {least_busy['name']}")

            banner("and by describing the need in plain words")
            routes = {}
            for need in ("translate this supplier contract into Japanese",
                         "summarize the notes of yesterday's meeting"):
                ranked = names.mine(await client.agent_discover(semantic=need, limit=3))
                print(f"[orchestrator] semantic '{need}' → {names_of(ranked)}")
                routes[need] = ranked[0]
                await client.send(ranked[0]["mailbox"], {"job": need})
                print(f"[orchestrator]   sent the job to {ranked[0]['mailbox']}")

            banner("the chosen agents find the jobs in their mailboxes")
            for agent in routes.values():
                jobs = await client.fetch(agent["mailbox"], group_name="worker",
                                          deliver="earliest", max_wait_ms=0)
                print(f"[{agent['name']}] got: {[j.json()['job'] for j in jobs]}")
                await client.ack(agent["mailbox"], "worker", jobs[-1].msg_id)

            banner("an agent shuts down and unregisters")
            fast = names("agent.translator.fast")
            await client.agent_unregister(fast)
            registered.remove(fast)
            print(f"[{fast}] unregistered")
            found = names.mine(await client.agent_discover(text="japanese"))
            print(f"[orchestrator] text 'japanese' → {names_of(found)}")
            everyone = names.mine(await client.agent_discover())
            print(f"[orchestrator] all agents ({len(everyone)}): {names_of(everyone)}")

            banner("result")
            legal = names("agent.translator.legal")
            summarizer = names("agent.summarizer")
            picked = [agent["name"] for agent in routes.values()]
            print(f"contract → {picked[0]}; meeting notes → {picked[1]}")
            if picked != [legal, summarizer] or least_busy["name"] != legal:
                raise SystemExit("routing picked the wrong agents")
            print("every job reached an agent found by capability, without a hard-coded address")
        finally:
            for name in registered:  # a shared broker keeps registrations: leave none behind
                await client.agent_unregister(name)


if __name__ == "__main__":
    asyncio.run(main(parser(__doc__).parse_args().server))
