"""An agent's question put to the user (#37, item 3): when a call's answer is
``input-required`` and the client declared elicitation, ``mq9-mcp --calls`` asks the user a form
(2025-11-25: ``elicitation/create``; 2026-07-28: an ``InputRequiredResult`` the client answers by
calling again) and sends the answer on to the called agent; the call answers with the agent's
result. A client without the capability, and a user who declines, get today's answer: the
question, for the model to ``answer_call``. The SDK's own ``Client`` with an elicitation
callback, against a served LangGraph agent that asks which language (``interrupt``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from mcp import Client, types
from mcp.shared.exceptions import MCPError

from langchain_mq9.serving import AgentServer
from mq9_platform import Mq9Client
from testbed.support.a2a_support import asking, text_graph, text_io
from testbed.support.mcp_support import result_data, served_engine, stdio_parameters

pytestmark = pytest.mark.slow  # starts mq9-mcp and an agent on nats-server

ERAS = {"legacy": "legacy", "modern": "2026-07-28"}
CALL = {"agent": "agent.asking", "task": "hello", "wait_seconds": 20}


class User:
    """An elicitation callback: the user's answers, in order (None: declines), and what was
    asked."""

    def __init__(self, *answers: str | None) -> None:
        self.answers = list(answers)
        self.asked: list[types.ElicitRequestParams] = []

    async def __call__(self, _ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        self.asked.append(params)
        answer = self.answers.pop(0)
        if answer is None:
            return types.ElicitResult(action="decline")
        return types.ElicitResult(action="accept", content={"answer": answer})


@contextlib.asynccontextmanager
async def mcp_client(nats_url: str, era: str, user: User | None) -> AsyncIterator[Client]:
    """An agent that asks before it answers, and mq9-mcp --calls with a client in ``era``."""
    server = stdio_parameters("--server", nats_url, "--calls", "--agent-mailbox", f"agent.{era}")
    async with (
        served_engine(nats_url),
        Mq9Client(nats_url) as mq9,
        AgentServer(text_graph(asking), name="agent.asking", client=mq9, **text_io()),
        Client(server, mode=ERAS[era], elicitation_callback=user, read_timeout_seconds=30) as c,
    ):
        yield c


@pytest.mark.parametrize("era", ERAS)
async def test_the_agents_question_is_asked_of_the_user_and_answered(nats_server, era):
    user = User("French")
    async with mcp_client(nats_server.url, era, user) as client:
        done = result_data(await client.call_tool("call_agent", CALL))
        assert (done["state"], done["result"]) == ("completed", "hello in French")
        calls = result_data(await client.call_tool("list_calls", {}))["calls"]
        assert [c["task_id"] for c in calls] == [done["task_id"]]  # one call, answered
    [asked] = user.asked
    assert isinstance(asked, types.ElicitRequestFormParams)
    assert asked.message == "agent.asking, working on a task for you, asks: Which language?"
    assert asked.requested_schema["required"] == ["answer"]


@pytest.mark.parametrize("era", ERAS)
async def test_a_client_without_elicitation_gets_the_question(nats_server, era):
    async with mcp_client(nats_server.url, era, None) as client:
        asked = result_data(await client.call_tool("call_agent", CALL))
        assert (asked["state"], asked["question"]) == ("input-required", "Which language?")


@pytest.mark.parametrize("era", ERAS)
async def test_a_user_who_declines_leaves_the_question_to_the_model(nats_server, era):
    user = User(None)
    async with mcp_client(nats_server.url, era, user) as client:
        asked = result_data(await client.call_tool("call_agent", CALL))
        assert (asked["state"], asked["question"]) == ("input-required", "Which language?")
        assert len(user.asked) == 1
        # the model answers instead, as without elicitation
        answer = {"task_id": asked["task_id"], "answer": "Dutch", "wait_seconds": 20}
        done = result_data(await client.call_tool("answer_call", answer))
        assert done["result"] == "hello in Dutch"
        calls = result_data(await client.call_tool("list_calls", {}))["calls"]
        assert len(calls) == 1  # the declined answer made no second call


async def test_an_unanswered_question_ends_the_calls_wait_at_its_wait_seconds(nats_server):
    """2025-11-25: a user who never answers the form holds the call no longer than its
    ``wait_seconds``; the call then answers with the question, for the model."""
    asked = asyncio.Event()

    async def never_answers(_ctx: Any, _params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.set()
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async with mcp_client(nats_server.url, "legacy", never_answers) as client:  # type: ignore[arg-type]
        call = {**CALL, "wait_seconds": 3}
        async with asyncio.timeout(30):  # without the bound: no answer at all
            waiting = result_data(await client.call_tool("call_agent", call))
    assert asked.is_set()
    assert (waiting["state"], waiting["question"]) == ("input-required", "Which language?")


class Answered(types.Result):
    """A tools/call answer as sent (an InputRequiredResult's fields, or a tool result's)."""

    result_type: str | None = None
    input_requests: dict[str, Any] | None = None
    request_state: str | None = None
    structured_content: dict[str, Any] | None = None


async def raw_call(client: Client, **params: Any) -> Answered:
    request = types.Request[Any, Any](method="tools/call", params={"name": "call_agent", **params})
    return await client.session.send_request(request, Answered)


async def test_a_call_sent_again_without_the_answer_is_asked_again_not_made_again(nats_server):
    """2026-07-28 (SEP-2322): the InputRequiredResult carries its key, sealed, as
    ``requestState``; the call sent back with that state but not the answer (a wrong key) gets
    the question again, and the agent is called once. The plain key as the state is refused."""
    async with mcp_client(nats_server.url, "modern", User()) as client:
        first = await raw_call(client, arguments=CALL)
        assert first.result_type == "input_required", first
        [key] = first.input_requests or {}
        assert first.request_state and key not in first.request_state  # sealed: opaque
        wrong = {"wrong_key": {"action": "accept", "content": {"answer": "French"}}}
        again = await raw_call(
            client, arguments=CALL, requestState=first.request_state, inputResponses=wrong
        )
        assert again.result_type == "input_required", again
        assert again.input_requests == first.input_requests  # the same question, re-requested
        answer = {key: {"action": "accept", "content": {"answer": "French"}}}
        with pytest.raises(MCPError) as forged:  # the key is not the state: nothing is sent on
            await raw_call(client, arguments=CALL, requestState=key, inputResponses=answer)
        assert forged.value.error.code == types.INVALID_PARAMS
        done = await raw_call(
            client, arguments=CALL, requestState=first.request_state, inputResponses=answer
        )
        assert done.structured_content is not None, done
        assert done.structured_content["result"] == "hello in French"
        calls = result_data(await client.call_tool("list_calls", {}))["calls"]
        assert len(calls) == 1  # asked again, never called again


async def test_input_responses_that_are_not_an_object_are_a_protocol_error(nats_server):
    async with mcp_client(nats_server.url, "modern", User()) as client:
        for given in (None, 12345, "x"):
            with pytest.raises(MCPError) as refused:
                await raw_call(client, arguments=CALL, inputResponses=given)
            assert refused.value.error.code == types.INVALID_PARAMS
            assert "inputResponses must be an object" in refused.value.error.message
        calls = result_data(await client.call_tool("list_calls", {}))["calls"]
        assert calls == []  # refused before the call was made
