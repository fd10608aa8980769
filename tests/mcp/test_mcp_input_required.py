"""mq9-mcp's asking machinery (``mcp_server.questions.ask_user``) for any tool that asks the user
a form, played through the conformance suite's own fixtures (``conformance_fixtures.py``): a
missing input is asked for again, at 2026-07-28 (SEP-2322: a wrong key, an accepted form without
the answer, a response of another kind) and at 2025-11-25 (``elicitation/create`` in the call);
a declined question ends the call; a client without elicitation gets the tool's own answer.
The SDK's own ``Client`` in both eras, and raw JSON-RPC where the client plays the attacker."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import pytest
from conformance_fixtures import ELICITATION, MULTI_ROUND, fixture_server
from mcp import Client, types
from mcp_support import ACCEPT, MODERN

ERAS = {"legacy": "legacy", "modern": "2026-07-28"}


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with fixture_server("--server", "memory://") as served:
        yield served


def call(url: str, name: str, capabilities: dict[str, Any] | None = None, **params: Any) -> dict:
    """One stateless 2026-07-28 tools/call; the JSON-RPC answer."""
    meta = {"io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": (
                {"elicitation": {}} if capabilities is None else capabilities)}  # fmt: skip
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": name, "arguments": {}, "_meta": meta, **params}}  # fmt: skip
    headers = {**ACCEPT, "mcp-protocol-version": MODERN, "mcp-method": "tools/call",
               "mcp-name": name}  # fmt: skip
    answer = httpx.post(url, json=body, headers=headers, timeout=20).json()
    assert "result" in answer or "error" in answer, answer
    return answer


def accept(**content: Any) -> dict[str, Any]:
    return {"action": "accept", "content": content}


def asks_name(answer: dict) -> bool:
    result = answer["result"]
    return (result["resultType"], list(result["inputRequests"]), result["requestState"]) == (
        "input_required", ["user_name"], "user_name",
    )  # fmt: skip


def text(answer: dict) -> str:
    result = answer["result"]
    assert result["resultType"] == "complete", result
    return result["content"][0]["text"]


def test_a_wrong_key_without_request_state_is_asked_again(url):
    assert asks_name(call(url, ELICITATION))
    assert asks_name(call(url, ELICITATION, inputResponses={"wrong_key": accept(data="x")}))


@pytest.mark.parametrize(
    "response",
    [accept(), accept(name="  "), accept(nickname="Al"), {"roots": []},
     {"role": "assistant", "content": {"type": "text", "text": "Alice"}, "model": "m"}],
    ids=["no-field", "blank", "other-field", "roots-result", "sampling-result"],
)  # fmt: skip
def test_an_answer_without_the_input_is_asked_again(url, response):
    """Under the right key, with the echoed requestState: an accepted form without the field
    the form asked for, or a response of another kind, is the input missing."""
    given = call(url, ELICITATION, inputResponses={"user_name": response}, requestState="user_name")
    assert asks_name(given), given


def test_the_answer_completes_the_call_and_unknown_keys_are_ignored(url):
    extra = {"user_name": accept(name="Alice"), "unknown": accept(foo="bar")}
    assert text(call(url, ELICITATION, inputResponses=extra)) == "Hello, Alice!"


def test_a_declined_question_ends_the_call_with_a_tool_error(url):
    declined = call(url, ELICITATION, inputResponses={"user_name": {"action": "decline"}})
    assert declined["result"]["isError"] is True
    assert "would not answer 'user_name'" in text(declined)


def test_a_client_without_elicitation_is_not_asked(url):
    answer = call(url, ELICITATION, capabilities={"sampling": {}})
    assert answer["result"]["isError"] is True, answer
    assert "declared no form elicitation" in text(answer)


def test_each_round_has_its_own_request_state(url):
    first = call(url, MULTI_ROUND)["result"]
    assert (list(first["inputRequests"]), first["requestState"]) == (["step1"], "step1")
    second = call(url, MULTI_ROUND, inputResponses={"step1": accept(name="Alice")},
                  requestState="step1")["result"]  # fmt: skip
    assert (list(second["inputRequests"]), second["requestState"]) == (["step2"], "step2")
    missing = call(url, MULTI_ROUND, inputResponses={"step1": accept(name="Alice")},
                   requestState="step2")  # fmt: skip
    assert list(missing["result"]["inputRequests"]) == ["step2"]  # step 2's input, asked again
    done = call(url, MULTI_ROUND, inputResponses={"step2": accept(color="blue")},
                requestState="step2")  # fmt: skip
    assert text(done) == "Your favorite color is blue."


class User:
    """An elicitation callback: its responses in order, and the forms it was shown."""

    def __init__(self, *responses: types.ElicitResult) -> None:
        self.responses = list(responses)
        self.asked: list[str] = []

    async def __call__(self, _ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        self.asked.append(params.message)
        return self.responses.pop(0)


@pytest.mark.parametrize("era", ERAS)
async def test_a_real_client_is_asked_again_until_it_gives_the_input(url, era):
    """2025-11-25: elicitation/create inside the call; 2026-07-28: the SDK's client answering
    each InputRequiredResult. An accepted form without the name is asked again."""
    user = User(
        types.ElicitResult(action="accept", content={}),
        types.ElicitResult(action="accept", content={"name": "Alice"}),
    )
    async with Client(url, mode=ERAS[era], elicitation_callback=user,  # type: ignore[arg-type]
                      read_timeout_seconds=30) as client:  # fmt: skip
        result = await client.call_tool(ELICITATION, {})
    assert [c.text for c in result.content if isinstance(c, types.TextContent)] == ["Hello, Alice!"]
    assert user.asked == ["What is your name?"] * 2


@pytest.mark.parametrize("era", ERAS)
async def test_a_real_client_whose_user_declines_gets_the_tools_error(url, era):
    user = User(types.ElicitResult(action="decline"))
    async with Client(url, mode=ERAS[era], elicitation_callback=user,  # type: ignore[arg-type]
                      read_timeout_seconds=30) as client:  # fmt: skip
        result = await client.call_tool(ELICITATION, {})
    assert result.is_error and user.asked == ["What is your name?"]
