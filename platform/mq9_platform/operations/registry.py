"""The handlers of the agent registry operations: agent_register, agent_discover,
agent_unregister, agent_report (see ``mailbox.py`` for what a handler is)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypedDict, Unpack, cast

from mq9_wire.protocol import agent_card, check_address, normalize_agent
from mq9_wire.protocol.errors import ListingTooLarge, MailboxExists

from ..a2a.mail import http_interface, transport_of
from ..a2a.shapes import CardJson
from ..client.api import Mq9ClientLike
from ..client.client import Agents
from .context import CallContext
from .errors import OperationError
from .mailbox import next_call
from .policy import ToolPolicy
from .results import (
    AgentRegistered,
    AgentReported,
    AgentsFound,
    AgentUnregistered,
    Outcome,
)
from .schemas import (
    AgentDiscoverInput,
    AgentRegisterInput,
    AgentReportInput,
    AgentUnregisterInput,
)
from .views import CARD_NOTE, AgentView, agent_view, shown


class Search(TypedDict, total=False):
    """``agent_discover``'s arguments: a search by words or by meaning, or none (the list)."""

    text: str
    semantic: str
    limit: int
    rerank: bool


def _card(name: str, capabilities: str, extra: CardJson, address: str) -> CardJson:
    card = agent_card(
        name,
        mailbox=address,
        description=capabilities or extra.get("description"),
        skills=extra.get("skills"),
    )
    # The developer's other A2A fields (version, provider, ...) go in; never a name or mailbox.
    for key, value in extra.items():
        if key not in ("name", "description", "skills", "supportedInterfaces", "url"):
            card[key] = value
    return card


async def discover(client: Mq9ClientLike, **query: Unpack[Search]) -> Agents:
    """Agents as our client returns them: the official SDK's hands out the broker's raw
    items, whose card is a JSON string in ``agent_info``."""
    # (rerank: our client's alone, which search_of gives only where configured; not in
    # Mq9ClientLike, whose agent_discover the official SDK's shares)
    ask: Callable[..., Awaitable[list[CardJson]]] = client.agent_discover
    found = await ask(**query)
    agents = Agents(a if "mailbox" in a else normalize_agent(a) for a in found)
    agents.ranked_here = getattr(found, "ranked_here", False)
    agents.ranking = getattr(found, "ranking", None)
    agents.reranked = getattr(found, "reranked", False)
    agents.not_reranked = getattr(found, "not_reranked", None)
    agents.not_indexed_yet = getattr(found, "not_indexed_yet", ())
    return agents


def search_of(policy: ToolPolicy, query: str, limit: int) -> Search:
    """The ``agent_discover`` arguments of a tool's search for ``query`` as the toolkit is
    configured (``discover_by``, ``discover_rerank``); none for an empty query: the listing."""
    if not query.strip():
        return {}
    search = cast(Search, {policy.discover_by: query, "limit": limit})  # text or semantic
    if policy.discover_rerank and policy.discover_by == "semantic":
        search["rerank"] = True  # only then: the official SDK's client has no such option
    return search


async def agent_register(ctx: CallContext, args: AgentRegisterInput) -> Outcome[AgentRegistered]:
    client, policy = ctx.client, ctx.policy
    name = policy.own(args.name, "name")
    policy.check_name(name)
    address = check_address(policy.agent_mailbox or name)
    policy.check(address)
    try:
        card = _card(name, args.capabilities, policy.agent_card or {}, address)
    except ValueError as exc:  # e.g. a pinned skill that is not a string or {name, ...}
        raise OperationError(f"invalid agent_card: {exc}") from None
    try:
        await client.mailbox_create(name=address, ttl=0)
        created = True
    except MailboxExists:
        created = False
    policy.created.add(address)
    result = AgentRegistered(registered=True, mail_address=address, mailbox_created=created)
    # The registry keeps a name's FIRST registration and answers success to any later one, so
    # look first (a DISCOVER without a query lists every agent): the model must not believe it
    # changed a card it did not.
    try:
        existing = next((a for a in await discover(client) if a.get("name") == name), None)
    except ListingTooLarge:
        existing = None
        result.note = (
            "the registry is too large to list, so whether another agent had this name "
            f"already is not known (the registry keeps the first card): agent_discover("
            f"query='{name}') shows the card it holds"
        )
    if existing is None:
        await client.agent_register(card)
    elif agent_view(existing) == agent_view({**card, "mailbox": address}):
        result.note = "already registered with this same card"
    else:
        result.registered = False
        result.registered_card = shown(
            agent_view(existing), policy.max_payload_chars, AgentRegistered.kept_in
        )
        result.note = (
            f"an agent named {name} is already registered, and the registry keeps the "
            "first card: it was NOT changed. To replace it, call agent_unregister(name="
            f"'{name}') and then agent_register again."
        )
        return Outcome(result, existing)
    result.next_step = (
        f"Other agents can now find you with agent_discover and send to '{address}'. Read what "
        f"arrives with {next_call('fetch_messages', address, policy)}."
    )
    return Outcome(result, card)


def _view(agent: CardJson) -> AgentView:
    """``agent_view``, and for an agent that takes delegated tasks how (``transport``: mq9,
    or http with the HTTP A2A agent's URL): call_agent reaches both. An agent without it
    takes messages in its mailbox only."""
    view = agent_view(agent)
    transport = transport_of(agent)
    if transport != "mailbox":
        view["transport"] = transport
    interface = http_interface(agent) if transport == "http" else None
    if interface is not None:
        view["url"] = interface["url"]
    return view


async def agent_discover(ctx: CallContext, args: AgentDiscoverInput) -> Outcome[AgentsFound]:
    client, policy = ctx.client, ctx.policy
    agents = await discover(client, **search_of(policy, args.query, policy.discover_limit))
    # Each card as it is: the answer's budget cuts them (``Outcome.fit``).
    result = AgentsFound(count=len(agents), agents=[_view(a) for a in agents])
    notes = [CARD_NOTE] if agents else []
    if agents.ranked_here:
        how = "meaning (embeddings)" if agents.ranking == "embeddings" else "shared words"
        ranked = f"every registered agent was read and ranked by {how}"
        why = "As configured," if agents.reranked else "This broker has no agent search, so"
        notes.append(f"{why} {ranked}.")
    if agents.not_reranked:
        notes.append(f"Not re-ranked here: {agents.not_reranked}.")
    if agents.not_indexed_yet:  # RobustMQ indexes a card about 0.5 s after its REGISTER
        fresh = ", ".join(agents.not_indexed_yet)
        notes.append(
            f"Registered moments ago, maybe not searchable yet: {fresh}; query='' lists all."
        )
    result.note = " ".join(notes) or None
    if any(a.get("mailbox") for a in agents):
        result.next_step = (
            "Check that the agent's description fits (the best match comes first, but may not "
            "fit), then send_message(mail_address=<its mailbox>)."
        )
    elif not agents:
        result.next_step = "No agent matched: try other words, or query='' to list all."
    return Outcome(result, agents)


async def agent_unregister(
    ctx: CallContext, args: AgentUnregisterInput
) -> Outcome[AgentUnregistered]:
    client, policy = ctx.client, ctx.policy
    name = policy.own(args.name, "name")
    policy.check_name(name)
    await client.agent_unregister(name)
    return Outcome(AgentUnregistered(unregistered=name), name)


async def agent_report(ctx: CallContext, args: AgentReportInput) -> Outcome[AgentReported]:
    client, policy = ctx.client, ctx.policy
    name = policy.own(args.name, "name")
    policy.check_name(name)
    # "" when not given; AgentReportInput makes any text given an object
    details = args.details if isinstance(args.details, dict) else {}
    report = {**details, "name": name, "status": args.status}
    await client.agent_report(report)
    return Outcome(AgentReported(reported=True, name=name), report)
