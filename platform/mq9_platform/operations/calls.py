"""The agent-call operations: delegate a task to another agent in one tool call.

They are opt-in: not in the default eight, allowed only when the policy says ``calls``
(``Mq9Toolkit(calls=True)``, or naming them in ``tools=[...]``; ``mq9-mcp --calls``). The work
is ``AgentCaller``'s (``a2a/caller.py``); what each returns, ``results.py``'s ``_Task``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Annotated, Literal, TypeVar, cast

from pydantic import Field

from mq9_wire.protocol import clipped
from mq9_wire.protocol.names import caller_name

from ..a2a import mail as w
from ..a2a.caller import AgentCaller, CallState
from ..a2a.shapes import CallView, CardJson
from ..client.client import Mq9Client
from .context import CallContext
from .errors import OperationError
from .policy import ToolPolicy
from .registry import discover, search_of
from .results import CallsListed, CallStarted, CallStatus, Outcome
from .schemas import CAP_S, MAX_IDEMPOTENCY_KEY, MAX_TOOL_WAIT_MS, _Input
from .views import DATA_NOTE

MAX_WAIT_SECONDS = MAX_TOOL_WAIT_MS // 1000
CANCEL_WAIT = 2.0  # seconds cancel_call waits for the agent to confirm


_TaskId = Annotated[str, Field(min_length=1, description="The task_id call_agent returned.")]
_Wait = Annotated[
    int,
    Field(
        ge=0,
        le=MAX_WAIT_SECONDS,
        # the toolkit's cap (ToolConfig.wait_cap_ms), filled in by input_schema
        description=f"Wait up to this many seconds (max {CAP_S}) for it to finish; "
        "0 = return at once.",
    ),
]


class CallAgentInput(_Input):
    agent: str = Field(
        min_length=1,
        description="The agent's registered name, or what it must be able to do (the best "
        "match is called).",
    )
    task: str = Field(min_length=1, description="What to do, with all the input it needs.")
    wait_seconds: _Wait = 0
    context_id: str = Field(
        default="", description="An earlier call's context_id, to continue that conversation."
    )
    # the same call again (same key) is the same task, sent once; '' = the LangChain tool
    # call's own key (tools.py)
    idempotency_key: str = Field(default="", max_length=MAX_IDEMPOTENCY_KEY)


class CheckCallInput(_Input):
    task_id: _TaskId
    wait_seconds: _Wait = 0


class AnswerCallInput(_Input):
    task_id: _TaskId
    answer: str = Field(min_length=1, description="Your answer to the agent's question.")
    wait_seconds: _Wait = 0
    idempotency_key: str = Field(default="", max_length=MAX_IDEMPOTENCY_KEY)  # as call_agent's


class CancelCallInput(_Input):
    task_id: _TaskId


class ListCallsInput(_Input):
    state: str = Field(
        default="", description="Only calls in this state, e.g. 'input-required'; '' for all."
    )


DESCRIPTIONS = {
    "call_agent": "Delegate a task to another agent and get its result: one call, even if the "
    "agent is offline (then check_call later).",
    "check_call": "The state of a task you delegated, with its result once done.",
    "answer_call": "Answer the question of a delegated task in state input-required.",
    "cancel_call": "Cancel a task you delegated.",
    "list_calls": "Your delegated tasks and their states.",
}

# -- handlers ------------------------------------------------------------------------------------


def _caller(ctx: CallContext) -> AgentCaller:
    """This toolkit's caller, named by the pinned reply mailbox, else ``{agent_mailbox}.calls``
    (both durable: a restarted agent finds its calls), else a private name for this toolkit.
    Its reply mailbox lives under the reserved root (``AgentCaller``), and only a new call
    creates it: the read-only tools create nothing."""
    policy = ctx.policy
    name = policy.call_state.setdefault(
        "reply",
        policy.reply_mailbox
        or (caller_name(policy.agent_mailbox) if policy.agent_mailbox else None)
        or w.CALLS_ROOT + w.new_id(),  # unguessable, under the reserved root
    )
    # A2A requests travel with headers: this package's client (the SDK's sends none)
    return AgentCaller(cast(Mq9Client, ctx.client), name)


_Shown = TypeVar("_Shown", CallStarted, CallStatus)
# The parts of a call's view that the agent wrote
_AGENT_WORDS: tuple[Literal["result", "question", "reason"], ...] = ("result", "question", "reason")


def _shown(state: CallState, policy: ToolPolicy, result: type[_Shown]) -> _Shown:
    view = state.view()
    note = None
    for key in _AGENT_WORDS:
        if key in view and len(view[key]) > policy.max_payload_chars:
            view[key] = clipped(view[key], policy.max_payload_chars)
            note = f"{key} cut to {policy.max_payload_chars} characters"
    advice = {
        w.SUBMITTED: "The agent has not taken it yet (it may be offline): check_call(task_id="
        f"'{state.task_id}', wait_seconds=60) later; the result waits for you.",
        w.WORKING: f"Still running: check_call(task_id='{state.task_id}', wait_seconds=60).",
        w.INPUT_REQUIRED: f"The agent asks a question: answer_call(task_id='{state.task_id}', "
        "answer=...).",
    }.get(state.state)
    if state.answer_pending:
        advice = f"Your answer waits for the agent: check_call(task_id='{state.task_id}', "
        advice += "wait_seconds=60)."
    if any(key in view for key in _AGENT_WORDS):  # the agent's words
        note = " ".join(filter(None, [note, DATA_NOTE]))
    # (CallStarted has no answer_pending or cancel_pending: a call just started has neither)
    return result(**view, next_step=advice, note=note)  # type: ignore[misc]


def _progress(ctx: CallContext) -> Callable[[CallState], Awaitable[None]] | None:
    """Where a waiting call tells each state it goes through: the call's ``progress`` (set by
    a surface that can show it: mq9-mcp, when the client sent a progressToken)."""
    report = ctx.progress
    if report is None:
        return None

    async def on_state(state: CallState) -> None:
        await report(state.view())

    return on_state


# How many of the best matches for a capability are looked at for one that takes tasks.
MATCHES_LOOKED_AT = 20


def _takes_tasks(card: CardJson) -> bool:
    return w.transport_of(card) != "mailbox"


async def _resolve(ctx: CallContext, agent: str, wait: float = 0) -> CardJson:
    """The agent named ``agent`` (or the HTTP A2A agent whose card is at that URL), else the
    best match for it as a capability among the agents that take tasks: over mq9 (their card
    says so: ``a2a_wire.serves_tasks``) or over HTTP (an HTTP A2A interface); one registered
    only for its mailbox would never answer."""
    if agent.startswith(("http://", "https://")):
        from ..a2a.http.caller import REQUEST_TIMEOUT, AgentUnreachable, fetch_card

        try:  # through the caller's allow-list; within the call's wait, else 30 s
            return await fetch_card(agent, _caller(ctx).hosts, timeout=wait or REQUEST_TIMEOUT)
        except AgentUnreachable as exc:
            raise OperationError(f"no A2A card at {clipped(agent, 120)}: {exc}") from None
    listing = await discover(ctx.client)
    named: list[CardJson] = [a for a in listing if a.get("name") == agent]
    if named:
        if not _takes_tasks(named[0]):
            raise OperationError(
                f"agent {clipped(agent, 80)!r} takes no delegated tasks (its card does not say "
                "it serves A2A tasks): send_message to its mailbox instead"
            )
        return named[0]
    search = search_of(ctx.policy, agent, MATCHES_LOOKED_AT)
    found: list[CardJson] = [
        a for a in await discover(ctx.client, **search) if _takes_tasks(a)
    ]
    if not found:
        raise OperationError(
            f"no agent that takes delegated tasks is named or fits {clipped(agent, 80)!r}: "
            "agent_discover(query=...) lists the agents and what they do"
        )
    return found[0]


async def call_agent(ctx: CallContext, args: CallAgentInput) -> Outcome[CallStarted]:
    if args.context_id and not w.is_valid_id(args.context_id):
        raise OperationError("context_id: use the context_id an earlier call returned")
    loop = asyncio.get_running_loop()
    began = loop.time()
    agent = await _resolve(ctx, args.agent, args.wait_seconds)
    if w.transport_of(agent) == "http":  # where it may go: the caller's host allow-list
        # wait_seconds is the whole call, the card's read included (never 0 once it was asked
        # for: 0 would give the send its own 30 s)
        left = max(args.wait_seconds - (loop.time() - began), 0.001) if args.wait_seconds else 0
        state = await _caller(ctx).call_http(
            agent,
            args.task,
            agent=agent.get("name") or args.agent,
            context_id=args.context_id or None,
            wait=left,
            on_state=_progress(ctx),
        )
        return Outcome(_shown(state, ctx.policy, CallStarted), state)
    ctx.policy.check(agent["mailbox"])
    state = await _caller(ctx).call(
        agent["mailbox"],
        args.task,
        agent=agent["name"],
        context_id=args.context_id or None,
        wait=args.wait_seconds,
        on_state=_progress(ctx),
        once=args.idempotency_key or None,
    )
    return Outcome(_shown(state, ctx.policy, CallStarted), state)


async def check_call(ctx: CallContext, args: CheckCallInput) -> Outcome[CallStatus]:
    caller = _caller(ctx)
    state = await caller.check(args.task_id, wait=args.wait_seconds, on_state=_progress(ctx))
    return Outcome(_shown(state, ctx.policy, CallStatus), state)


async def answer_call(ctx: CallContext, args: AnswerCallInput) -> Outcome[CallStatus]:
    state = await _caller(ctx).answer(
        args.task_id,
        args.answer,
        wait=args.wait_seconds,
        on_state=_progress(ctx),
        allow=ctx.policy.check,  # the agent's mailbox, as call_agent checked it
        once=args.idempotency_key or None,
    )
    return Outcome(_shown(state, ctx.policy, CallStatus), state)


async def cancel_call(ctx: CallContext, args: CancelCallInput) -> Outcome[CallStatus]:
    state = await _caller(ctx).cancel(args.task_id, wait=CANCEL_WAIT, allow=ctx.policy.check)
    return Outcome(_shown(state, ctx.policy, CallStatus), state)


async def list_calls(ctx: CallContext, args: ListCallsInput) -> Outcome[CallsListed]:
    policy = ctx.policy
    states = await _caller(ctx).calls()
    views = [  # each call's state, without the advice for it: its view, cut
        cast(CallView, replace(_shown(s, policy, CallStatus), next_step=None, note=None).content())
        for s in states
        if not args.state or w.short_state(s.state) == args.state.strip().lower()
    ]
    note = DATA_NOTE if any({"result", "question", "reason"} & set(v) for v in views) else None
    return Outcome(CallsListed(count=len(views), calls=views, note=note), states)
