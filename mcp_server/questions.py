"""A called agent's question, asked of the user through MCP elicitation (#37).

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
  is not made again; declined, the model gets the task's state). The key is the result's
  ``requestState`` too: a call sent back with it but without the answer is asked again
  (SEP-2322), not made again. The key gives a client no more than ``answer_call`` does: it
  answers only the calls of that client's own caller.
- 2026-07-28, a call run as a task (the Tasks extension): the task's ``input_required``
  status, the elicitation in its ``inputRequests``, the answer with ``tasks/update``
  (``tasks.py``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from mcp import types
from mcp.shared.exceptions import MCPError
from mcp.types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

from langchain_mq9.protocol import clipped

log = logging.getLogger("mcp_server")

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

Run = Callable[[types.CallToolRequestParams], Awaitable[types.CallToolResult]]
# How a question is put to the user when not by this module: a task's (tasks.py); the answer,
# or None.
Ask = Callable[[types.ElicitRequestFormParams], Awaitable[str | None]]


@dataclass(frozen=True)
class Answer:
    """What a 2026-07-28 client sent with its call again, for a question of ours."""

    task_id: str
    text: str | None  # None: the user declined or dismissed it
    asked: int  # the questions this call has asked so far
    missing: bool = False  # the call came back (its requestState) without the answer


def given_answer(params: types.CallToolRequestParams) -> Answer | None:
    """The answer in a call's ``inputResponses`` to an ``InputRequiredResult`` of ours (its
    key: ``ANSWER_KEY``, the number of the question, ``:``, the task id); a call sent again
    with our ``requestState`` (the same key) but not the answer is ``missing`` it; else None."""
    for key, response in (params.input_responses or {}).items():
        question = _question_key(key)
        if question is not None:
            text = _accepted(response) if isinstance(response, types.ElicitResult) else None
            return Answer(question[1], text, question[0])
    question = _question_key(params.request_state or "")
    return Answer(question[1], None, question[0], missing=True) if question else None


def _question_key(key: str) -> tuple[int, str] | None:
    """The number of the question and the task id an answer key of ours names, or None."""
    asked, _, task_id = key.removeprefix(ANSWER_KEY).partition(":")
    return (
        (int(asked), task_id)
        if key.startswith(ANSWER_KEY) and asked.isdigit() and task_id
        else None
    )


async def checked_input(ctx: Any, call_next: Any) -> Any:
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


async def call_asking(
    ctx: Any,
    params: types.CallToolRequestParams,
    run: Run,
    tool_name: Callable[[str], str],
    ask: Ask | None = None,
) -> types.CallToolResult | types.InputRequiredResult:
    """Run a call of a tool that asks (``Operation.asks``; ``run``), putting the agent's
    questions to the user while the client can show them (``tool_name``: the name of a tool as
    listed; ``ask``: how, for a call run as a task)."""
    wait = (params.arguments or {}).get("wait_seconds", 0)
    # A user who never answers holds the call no longer than it may wait (its wait_seconds):
    # then the model gets the question (a number the model sent wrong: answered by the tool).
    deadline = anyio.current_time() + (wait if isinstance(wait, (int, float)) else 0)

    async def follow_up(tool: str, **arguments: Any) -> types.CallToolResult:
        return await run(types.CallToolRequestParams(name=tool_name(tool), arguments=arguments))

    async def answer_call(task_id: str, answer: str) -> types.CallToolResult:
        return await follow_up("answer_call", task_id=task_id, answer=answer, wait_seconds=wait)

    given = given_answer(params)
    if given is None:
        result, asked = await run(params), 0
    elif given.missing:  # sent again without the answer: asked again while the agent asks
        result, asked = await follow_up("check_call", task_id=given.task_id), given.asked - 1
    elif given.text is None:  # the user would not answer: the model gets the question
        return await follow_up("check_call", task_id=given.task_id)
    else:
        result, asked = await answer_call(given.task_id, given.text), given.asked
    if not _can_ask(ctx):
        return result
    while asked < MAX_QUESTIONS and (question := _question(result)) is not None:
        task_id, form = question
        asked += 1
        if ask is None and ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
            key = f"{ANSWER_KEY}{asked}:{task_id}"
            asking: types.InputRequests = {key: types.ElicitRequest(params=form)}
            # the key again as requestState: a client sending the call back without the
            # answer (SEP-2322 has it echo the state) is asked again, not called anew
            return types.InputRequiredResult(input_requests=asking, request_state=key)
        answer = await (ask(form) if ask else _elicit(ctx, form, deadline))
        if answer is None:
            return result
        result = await answer_call(task_id, answer)
    return result


def _can_ask(ctx: Any) -> bool:
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


async def _elicit(ctx: Any, form: types.ElicitRequestFormParams, deadline: float) -> str | None:
    """The user's answer to ``form`` (elicitation/create) by ``deadline`` (anyio's clock), or
    None: declined, dismissed, empty, unanswered in time, or not asked at all (the client went
    away, or refused the request)."""
    response = None
    try:
        with anyio.move_on_at(deadline):
            response = await ctx.session.elicit_form(
                form.message, form.requested_schema, related_request_id=ctx.request_id
            )
    except Exception as exc:  # the model gets the question instead: nothing is lost
        log.info("could not ask the user an agent's question (%s): the model gets it", exc)
        return None
    if response is None:
        log.info("the user did not answer an agent's question in time: the model gets it")
    return _accepted(response) if isinstance(response, types.ElicitResult) else None


def answer_text(response: Any) -> str | None:
    """The answer in an elicitation's result as the client sent it (JSON), or None."""
    try:
        return _accepted(types.ElicitResult.model_validate(response))
    except ValidationError:
        return None


def _accepted(response: types.ElicitResult) -> str | None:
    answer = (response.content or {}).get("answer") if response.action == "accept" else None
    return answer if isinstance(answer, str) and answer.strip() else None
