"""Capability discovery and routing through the agent registry.

Four agents register at startup with an A2A agent card (what they can do, and their mailbox)
and post their load to a status board. An orchestrator that knows none of their addresses
finds them: by keywords (text: a card matches if it holds ANY of the words) and by describing
the need in plain words (semantic: every agent ranked by meaning, best first), then routes each
job to the agent that fits, or to the least busy of several that fit. The chosen agents find
the jobs in their mailboxes. An agent that shuts down unregisters and is no longer found.

    python examples/capability_routing.py [--server nats://127.0.0.1:4222]

Load goes to a status board (keyed messages, the newest per agent), not into the registry:
RobustMQ keeps an agent's first card unchanged, and AGENT.REPORT goes to an internal topic
that agent_discover does not show. The bundled broker approximates semantic search with word
stems weighted by rarity; RobustMQ ranks by embeddings. Either way the code is the same.
"""

from __future__ import annotations

import asyncio

from support import Names, banner, parser, until_searchable

from langchain_mq9 import GroupReader, Mq9Client

AGENTS = {
    "agent.translator.fast": (
        "Quick machine translation of short chat messages between English, Chinese and Japanese.",
        0.9,
    ),
    "agent.translator.legal": (
        "Translates legal contracts, supplier agreements and terms of service between English, "
        "French and Japanese, with certified legal terminology.",
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
    board = names("agents.load")

    async with Mq9Client(server) as client:
        await client.mailbox_create(name=board, ttl=600)
        try:
            banner("agents start, register a card and post their load")
            for base, (description, load) in AGENTS.items():
                name = names(base)
                await client.mailbox_create(name=name, ttl=600)
                # Becomes an A2A card with supportedInterfaces [mq9://<mailbox>]: searchable,
                # and discover hands the mailbox back.
                await client.agent_register(
                    {"name": name, "mailbox": name, "description": description}
                )
                await client.send(board, {"agent": name, "load": load}, key=name, tags=["load"])
                print(f"[{name}] registered: {description}")
            # Search may trail the registry (RobustMQ indexes a card a moment after REGISTER):
            # routing by search starts once the search finds every agent just registered
            await until_searchable(
                client, {names(base): description for base, (description, _) in AGENTS.items()}
            )

            banner("the orchestrator discovers by keywords")
            found = names.mine(await client.agent_discover(text="japanese"))
            print(f"[orchestrator] text 'japanese' → {names_of(found)}")
            loads = {m.json()["agent"]: m.json()["load"] for m in await client.query(
                board, tags=["load"])}  # fmt: skip
            least_busy = min(found, key=lambda a: loads[a["name"]])
            shown = ", ".join(f"{a['name']} {loads[a['name']]}" for a in found)
            print(f"[orchestrator] loads: {shown} → route to the least busy: {least_busy['name']}")

            banner("and by describing the need in plain words")
            routes = {}
            for need in (
                "translate this supplier contract into Japanese",
                "summarize the notes of yesterday's meeting",
            ):
                # Semantic search ranks every agent, fitting or not: the first is the best.
                ranked = names.mine(await client.agent_discover(semantic=need, limit=20))
                print(f"[orchestrator] semantic '{need}' → {names_of(ranked[:3])}")
                routes[need] = ranked[0]
                await client.send(ranked[0]["mailbox"], {"job": need})
                print(f"[orchestrator]   sent the job to {ranked[0]['mailbox']}")

            banner("the chosen agents find the jobs in their mailboxes")
            for agent in routes.values():
                inbox = GroupReader(client, agent["mailbox"], "worker")
                jobs = await inbox.fetch()
                print(f"[{agent['name']}] got: {[j.json()['job'] for j in jobs]}")
                await inbox.done([j.msg_id for j in jobs])

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
