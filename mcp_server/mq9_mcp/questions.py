"""A called agent's question, asked of the user through MCP elicitation.

When ``call_agent``, ``check_call`` or ``answer_call`` finds the agent asking (state
``input-required``) and the client can show a form (it declared the elicitation capability,
form mode), the server asks the user instead of handing the question to the model, and sends
the answer on to the agent as ``answer_call`` would; the call then answers with the state after
that answer (waiting as long as the call's own ``wait_seconds``). A client without the
capability, a user who declines, and a call run as a 2025-11-25 task get today's answer: the
question, for the model to ``answer_call``.

- 2025-11-25 and before: an ``elicitation/create`` request to the client, inside the call.
- 2026-07-28 (no server-to-client requests): the call answers with ``InputRequiredResult``, the
  elicitation in its ``inputRequests`` under a key naming the task; the client asks the user and
  sends the call again with the answer in ``inputResponses``, which goes to that task (the call
  is not made again; declined, the model gets the task's state). The key, sealed, is the
  result's ``requestState`` too: a call sent back with it but without the answer is asked again
  (SEP-2322), not made again. The key gives a client no more than ``answer_call`` does: it
  answers only the calls of that client's own caller.
- 2026-07-28, a call run as a task (the Tasks extension): the task's ``input_required``
  status, the elicitation in its ``inputRequests``, the answer with ``tasks/update``
  (``tasks.py``).

The machinery (``ask_user``) is any request's that asks the user a form, a tool call's or a
prompt's (``prompts/get``): the request is an ``Asker`` (its steps, each a result or a
``Question``); the agent calls are one (``AgentCall``). A request sent back without the answer
(a wrong key with the ``requestState``, an accepted form without the answer's field) is asked
again, whatever the tool (SEP-2322). The ``requestState`` a 2026-07-28 client echoes is sealed
(``state_boundary``): one it altered, one minted for another client or another call, or one
past its hour, is an invalid-params error before any tool runs.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, cast

import anyio
from mcp import types
from mcp.server.context import CallNext, HandlerResult
from mcp.server.context import ServerRequestContext as Ctx  # one request's
from mcp.server.request_state import RequestStateBoundary, RequestStateSecurity
from mcp.shared.exceptions import MCPError
from mcp.types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

from mq9_wire.protocol import clipped

log = logging.getLogger("mq9_mcp")

INPUT_REQUIRED = "input-required"
# An agent may ask again after an answer; past this many questions in one call the model gets
# the next one (a loop of questions cannot hold a tool call for ever).
MAX_QUESTIONS = 5
# The key of the elicitation in an InputRequiredResult (2026-07-28) starts with this.
ANSWER_KEY = "mq9-answer:"
FORM: types.ElicitRequestedSchema = {
    "type": "object",
    "properties": {"answer": {"type": "string", "title": "Your answer"}},
    "required": ["answer"],
}

# How long a sealed requestState holds: a user may take a while over a form, and an agent's
# task waits for its answer far longer than the SDK's ten minutes (a 2025-11-25 task lives up
# to an hour here too).
STATE_TTL_SECONDS = 3600.0

Run = Callable[[types.CallToolRequestParams], Awaitable[types.CallToolResult]]
# What a request that asks ends in: a tool's result, or a prompt's.
Settled = types.CallToolResult | types.GetPromptResult
# A request that may ask (tools/call, prompts/get): both carry inputResponses and requestState.
Asking = types.CallToolRequestParams | types.GetPromptRequestParams
# How a question is put to the user when not by this module: a task's (tasks.py); the answer,
# or None.
Ask = Callable[[types.ElicitRequestFormParams], Awaitable[str | None]]


@dataclass(frozen=True)
class Question:
    """An input a tool asks the user for, one form: ``key`` names it in an
    ``InputRequiredResult``'s ``inputRequests`` (and is its ``requestState``), ``unasked`` is what
    the call answers when the question cannot be put (no elicitation, a declined form at
    2025-11-25, too many questions)."""

    key: str
    form: types.ElicitRequestFormParams
    unasked: Settled


# A step of a call that asks: its result, or the question it waits on.
Step = Settled | Question


@dataclass(frozen=True)
class Field:
    """The property of a question's form that holds the answer, and its JSON type: a
    ``string`` (not blank) or a ``boolean`` (handed on as ``true`` or ``false``)."""

    name: str
    kind: Literal["string", "boolean"] = "string"


class Asker(Protocol):
    """A tool call that may ask the user (``ask_user``), as its tool sees it: the call's
    steps, each a result or a ``Question``. ``wait_seconds`` bounds a 2025-11-25
    form (``elicitation/create``) a user leaves open."""

    wait_seconds: float

    def owns(self, key: str) -> bool:
        """Whether ``key`` names a question of this tool's (in ``inputResponses``, or as the
        ``requestState`` a 2026-07-28 client sends the call back with)."""
        ...

    def field_of(self, key: str) -> Field:
        """The property of the question ``key``'s form that holds the answer."""
        ...

    async def start(self) -> Step:
        """The call itself, first time."""
        ...

    async def answer(self, key: str, text: str) -> Step:
        """The user's answer to the question ``key``, sent on; the step after it."""
        ...

    async def resume(self, key: str) -> Step:
        """The call sent back without the answer to the question ``key`` (a wrong key, an
        empty form): where it stands, its question asked again while it waits on one."""
        ...

    async def declined(self, key: str) -> Settled:
        """The user would not answer the question ``key``: the call's answer for the model."""
        ...


@dataclass(frozen=True)
class Answer:
    """What a 2026-07-28 client sent with its call again, for a question of the tool's."""

    key: str
    text: str | None  # None: the user declined or dismissed it
    missing: bool = False  # sent back without the answer: no response, a wrong one, no field


def given_answer(params: Asking, asker: Asker) -> Answer | None:
    """The answer in a call's ``inputResponses`` to a question of ``asker``'s: with the
    ``requestState`` (sealed, so it names the question this server asked), the answer to that
    question only; without it, the first key the asker owns. A call sent again with its
    ``requestState`` but no usable answer is ``missing`` it, as is an accepted form without the
    answer's field or a response of another kind (SEP-2322: the missing input is asked for
    again); else None (keys it does not own are ignored, as SEP-2322 says)."""
    responses = params.input_responses or {}
    state = params.request_state or ""
    if asker.owns(state):
        if state not in responses:
            return Answer(state, None, missing=True)
        return Answer(state, *_answered(responses[state], asker.field_of(state)))
    for key, response in responses.items():
        if asker.owns(key):
            return Answer(key, *_answered(response, asker.field_of(key)))
    return None


async def checked_input(ctx: Ctx, call_next: CallNext) -> HandlerResult:
    """Server middleware: a request whose ``inputResponses`` is there but not an object (null,
    a number) is a protocol error, answered as invalid params (SEP-2322), not run as though the
    client had sent none."""
    if isinstance(ctx.params, dict) and "inputResponses" in ctx.params:
        given = ctx.params["inputResponses"]
        if not isinstance(given, dict):
            raise MCPError(
                types.INVALID_PARAMS,
                "inputResponses must be an object holding the answer to each key of the "
                f"InputRequiredResult's inputRequests, not {json.dumps(given)[:40]}",
            )
    return await call_next(ctx)


def state_boundary(
    principal: Callable[[Ctx], str], audience: str, keys: Sequence[str] = ()
) -> RequestStateBoundary:
    """The SDK's seal on the ``requestState`` of an ``InputRequiredResult`` (SEP-2322: a server
    treats what the client echoes as untrusted): encrypted and authenticated (AES-GCM), bound to
    the request's method, name and arguments, to its client (``principal``: ``owner_of``) and
    to this server (``audience``), good for ``STATE_TTL_SECONDS``. ``keys`` (at least 32
    characters each; the first seals, all open) let replicas behind one address open each
    other's states; without them a key made at start seals, so a state outlives neither a
    restart nor its process."""
    ring: list[str | bytes] = [*keys] or [os.urandom(32)]
    security = RequestStateSecurity(keys=ring, ttl=STATE_TTL_SECONDS, bind_principal=principal)
    return RequestStateBoundary(security, default_audience=audience)


async def ask_user(
    ctx: Ctx,
    params: Asking,
    asker: Asker,
    ask: Ask | None = None,
) -> Settled | types.InputRequiredResult:
    """Run a request that asks (``asker``: a tool call, a prompt), putting its questions to the
    user while the client can show them (``ask``: how, for a call run as a task). At
    2026-07-28 a question is an ``InputRequiredResult``; the request comes back with the
    answer, or without it and is asked again."""
    # A user who never answers holds the call no longer than it may wait: then the model gets
    # the question.
    deadline = anyio.current_time() + asker.wait_seconds
    given = given_answer(params, asker)
    if given is None:
        step = await asker.start()
    elif given.missing:
        step = await asker.resume(given.key)
    elif given.text is None:
        return await asker.declined(given.key)
    else:
        step = await asker.answer(given.key, given.text)
    if not _can_ask(ctx):
        return _settled(step)
    for _ in range(MAX_QUESTIONS):  # the asker counts its own; this bounds one that does not
        if not isinstance(step, Question):
            return step
        if ask is None and ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
            asking: types.InputRequests = {step.key: types.ElicitRequest(params=step.form)}
            # the key again as requestState: a client sending the call back without the
            # answer (SEP-2322 has it echo the state) is asked again, not called anew
            return types.InputRequiredResult(input_requests=asking, request_state=step.key)
        if ask is not None:
            text, missing = await ask(step.form), False
        else:
            response = await _elicit(ctx, step.form, deadline)
            text, missing = _answered(response, asker.field_of(step.key))
        if missing:  # an accepted form without the answer: asked again, as at 2026-07-28
            step = await asker.resume(step.key)
        elif text is None:
            return await asker.declined(step.key)
        else:
            step = await asker.answer(step.key, text)
    return _settled(step)


def _answered(response: Any, field: Field) -> tuple[str | None, bool]:
    """The answer in a response to a form (its ``field``), and whether it is missing: a form
    accepted without it, or a response of another kind (the question is then asked again).
    Declined, dismissed or not answered at all (None): no answer, not missing."""
    if response is None:
        return None, False
    if not isinstance(response, types.ElicitResult):
        return None, True
    text = _accepted(response, field)
    return text, text is None and response.action == "accept"


def _settled(step: Step) -> Settled:
    return step.unasked if isinstance(step, Question) else step


class AgentCall:
    """``call_agent``, ``check_call`` and ``answer_call`` as an ``Asker``: the called agent's
    questions (state ``input-required``), each keyed ``ANSWER_KEY``, its number in the call,
    ``:``, the task id; answered with ``answer_call``, looked at again with ``check_call``."""

    def __init__(
        self, params: types.CallToolRequestParams, run: Run, tool_name: Callable[[str], str]
    ) -> None:
        self.params = params
        self.run = run
        self.tool_name = tool_name
        wait = (params.arguments or {}).get("wait_seconds", 0)
        # a number the model sent wrong: answered by the tool
        self.wait_seconds = wait if isinstance(wait, (int, float)) else 0

    def owns(self, key: str) -> bool:
        return _question_key(key) is not None

    def field_of(self, _key: str) -> Field:
        return Field("answer")  # FORM's

    async def start(self) -> Step:
        return self._step(await self.run(self.params), 1)

    async def answer(self, key: str, text: str) -> Step:
        asked, task_id = self._named(key)
        answer = {"task_id": task_id, "answer": text, "wait_seconds": self.wait_seconds}
        return self._step(await self._follow_up("answer_call", answer), asked + 1)

    async def resume(self, key: str) -> Step:
        asked, task_id = self._named(key)
        return self._step(await self._follow_up("check_call", {"task_id": task_id}), asked)

    async def declined(self, key: str) -> Settled:
        return await self._follow_up("check_call", {"task_id": self._named(key)[1]})

    def _named(self, key: str) -> tuple[int, str]:
        named = _question_key(key)
        if named is None:  # ask_user hands it only keys it owns
            raise ValueError(f"not a question of an agent call: {key!r}")
        return named

    async def _follow_up(self, tool: str, arguments: dict[str, Any]) -> types.CallToolResult:
        named = types.CallToolRequestParams(name=self.tool_name(tool), arguments=arguments)
        return await self.run(named)

    def _step(self, result: types.CallToolResult, number: int) -> Step:
        """``result``, or the ``number``th question of the call when the agent asks one (past
        ``MAX_QUESTIONS``: the result, for the model)."""
        question = _question(result) if number <= MAX_QUESTIONS else None
        if question is None:
            return result
        task_id, form = question
        return Question(f"{ANSWER_KEY}{number}:{task_id}", form, unasked=result)


def _question_key(key: str) -> tuple[int, str] | None:
    """The number of the question and the task id an answer key of ours names, or None."""
    asked, _, task_id = key.removeprefix(ANSWER_KEY).partition(":")
    return (
        (int(asked), task_id)
        if key.startswith(ANSWER_KEY) and asked.isdigit() and task_id
        else None
    )


async def call_asking(
    ctx: Ctx,
    params: types.CallToolRequestParams,
    run: Run,
    tool_name: Callable[[str], str],
    ask: Ask | None = None,
) -> types.CallToolResult | types.InputRequiredResult:
    """Run a call of a tool that asks (``Operation.asks``; ``run``), putting the agent's
    questions to the user while the client can show them (``tool_name``: the name of a tool as
    listed; ``ask``: how, for a call run as a task)."""
    result = await ask_user(ctx, params, AgentCall(params, run, tool_name), ask)
    # an agent call ends in a tool's result, never a prompt's
    return cast(types.CallToolResult | types.InputRequiredResult, result)


def _can_ask(ctx: Ctx) -> bool:
    """Whether the client declared form elicitation (an empty ``elicitation`` means form)."""
    declared = ctx.session.client_capabilities
    elicitation = declared.elicitation if declared is not None else None
    return elicitation is not None and (elicitation.form is not None or elicitation.url is None)


def _question(result: types.CallToolResult) -> tuple[str, types.ElicitRequestFormParams] | None:
    """The task id and the form asking its agent's question, when ``result`` is one."""
    state = result.structured_content or {}
    if result.is_error or state.get("state") != INPUT_REQUIRED or "task_id" not in state:
        return None
    agent = clipped(str(state.get("agent", "the agent")), 80)
    question = state.get("question") or "It needs more input to go on."
    message = f"{agent}, working on a task for you, asks: {question}"
    form = types.ElicitRequestFormParams(message=message, requested_schema=FORM)
    return str(state["task_id"]), form


async def _elicit(
    ctx: Ctx, form: types.ElicitRequestFormParams, deadline: float
) -> types.ElicitResult | None:
    """The user's response to ``form`` (elicitation/create) by ``deadline`` (anyio's clock),
    or None: unanswered in time, or not asked at all (the client went away, or refused the
    request)."""
    response = None
    try:
        with anyio.move_on_at(deadline):
            response = await ctx.session.elicit_form(
                form.message, form.requested_schema, related_request_id=ctx.request_id
            )
    except Exception as exc:  # the model gets the question instead: nothing is lost
        log.info("could not ask the user a question (%s): the model gets it", exc)
        return None
    if response is None:
        log.info("the user did not answer a question in time: the model gets it")
    return response if isinstance(response, types.ElicitResult) else None


def answer_text(response: Any) -> str | None:
    """The answer in an elicitation's result as the client sent it (JSON), or None."""
    try:
        return _accepted(types.ElicitResult.model_validate(response))
    except ValidationError:
        return None


def _accepted(response: types.ElicitResult, field: Field = Field("answer")) -> str | None:
    """The answer in an accepted form, as text: a string not blank, or a boolean where the
    form asked one (``true``, ``false``); None when it is not there as the form asked."""
    answer = (response.content or {}).get(field.name) if response.action == "accept" else None
    if field.kind == "boolean":
        return json.dumps(answer) if isinstance(answer, bool) else None
    return answer if isinstance(answer, str) and answer.strip() else None
