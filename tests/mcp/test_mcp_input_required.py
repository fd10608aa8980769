"""mq9-mcp's asking machinery (``mq9_mcp.questions.ask_user``) for any tool that asks the user
a form, played through the conformance suite's own fixtures (``conformance_fixtures.py``): a
missing input is asked for again, at 2026-07-28 (SEP-2322: a wrong key, an accepted form without
the answer, a response of another kind) and at 2025-11-25 (``elicitation/create`` in the call);
a declined question ends the call; a client without elicitation gets the tool's own answer.
The ``requestState`` is sealed: one altered, or sent back by another client or with another
call, is a JSON-RPC invalid-params error. A prompt asks the same way (``prompts/get``). The
SDK's own ``Client`` in both eras, and raw JSON-RPC where the client plays the attacker."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import pytest
from conformance_fixtures import (
    ELICITATION,
    MULTI_ROUND,
    PROMPT,
    REQUEST_STATE,
    TAMPERED_STATE,
    fixture_server,
)
from mcp import Client, types

from mq9_mcp.cli import build_parser, state_keys
from testbed.support.mcp_support import ACCEPT, MODERN

ERAS = {"legacy": "legacy", "modern": "2026-07-28"}


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with fixture_server("--server", "memory://") as served:
        yield served


def call(url: str, name: str, capabilities: dict[str, Any] | None = None,
         method: str = "tools/call", worker: str | None = None, **params: Any) -> dict:  # fmt: skip
    """One stateless 2026-07-28 tools/call (or ``method``, a prompts/get), as the client named
    by ``worker`` (its Mq9-Worker header) when given; the JSON-RPC answer."""
    meta = {"io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": (
                {"elicitation": {}} if capabilities is None else capabilities)}  # fmt: skip
    arguments = {"arguments": {}} if method == "tools/call" else {}
    body = {"jsonrpc": "2.0", "id": 1, "method": method,
            "params": {"name": name, **arguments, "_meta": meta, **params}}  # fmt: skip
    headers = {**ACCEPT, "mcp-protocol-version": MODERN, "mcp-method": method,
               "mcp-name": name, **({"mq9-worker": worker} if worker else {})}  # fmt: skip
    answer = httpx.post(url, json=body, headers=headers, timeout=20).json()
    assert "result" in answer or "error" in answer, answer
    return answer


def accept(**content: Any) -> dict[str, Any]:
    return {"action": "accept", "content": content}


def asks_name(answer: dict) -> bool:
    return asks(answer, "user_name")


def asks(answer: dict, key: str) -> bool:
    """Whether ``answer`` asks the question ``key``, with a sealed requestState (opaque: not
    the key it stands for)."""
    result = answer["result"]
    state = result.get("requestState")
    return (result["resultType"], list(result["inputRequests"])) == ("input_required", [key]) and (
        isinstance(state, str) and len(state) > 40 and key not in state
    )


def refused_state(answer: dict) -> bool:
    """Whether ``answer`` is the JSON-RPC error for a requestState this server did not seal
    for this call and client."""
    error = answer.get("error") or {}
    return error.get("code") == types.INVALID_PARAMS and error.get("data") == {
        "reason": "invalid_request_state"
    }


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
    state = call(url, ELICITATION)["result"]["requestState"]
    given = call(url, ELICITATION, inputResponses={"user_name": response}, requestState=state)
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
    first = call(url, MULTI_ROUND)
    assert asks(first, "step1")
    second = call(url, MULTI_ROUND, inputResponses={"step2": accept(color="red")},
                  requestState=first["result"]["requestState"])  # fmt: skip
    assert asks(second, "step1")  # an answer to a question not asked yet: step 1 asked again
    second = call(url, MULTI_ROUND, inputResponses={"step1": accept(name="Alice")},
                  requestState=first["result"]["requestState"])  # fmt: skip
    assert asks(second, "step2"), second
    state = second["result"]["requestState"]
    assert state != first["result"]["requestState"]
    missing = call(url, MULTI_ROUND, inputResponses={"other": accept(name="Alice")},
                   requestState=state)  # fmt: skip
    assert asks(missing, "step2")  # step 2's input, asked again
    done = call(url, MULTI_ROUND, inputResponses={"step2": accept(color="blue")},
                requestState=state)  # fmt: skip
    assert text(done) == "Your favorite color is blue."


def test_a_confirmation_takes_a_boolean_and_only_the_state_sealed_for_it(url):
    """The suite's request-state fixture: a boolean form; the echoed state completes it."""
    first = call(url, REQUEST_STATE)
    assert asks(first, "confirm"), first
    asked = first["result"]["inputRequests"]["confirm"]["params"]["requestedSchema"]
    assert asked["properties"] == {"ok": {"type": "boolean"}}
    state = first["result"]["requestState"]
    for wrong in (accept(ok="yes"), accept(ok=None), accept()):  # not a boolean: asked again
        again = call(url, REQUEST_STATE, inputResponses={"confirm": wrong}, requestState=state)
        assert asks(again, "confirm"), again
    done = call(url, REQUEST_STATE, inputResponses={"confirm": accept(ok=False)},
                requestState=state)  # fmt: skip
    assert text(done).startswith("state-ok") and text(done).endswith("confirmed: false")


def test_a_request_state_altered_or_moved_is_refused_before_the_tool_runs(url):
    """SEP-2322: the server checks the integrity of what the client echoes. Altered, forged
    (the plain key), sent with another tool or other arguments, or by another client (another
    worker name): a JSON-RPC invalid-params error, whatever the input with it."""
    state = call(url, TAMPERED_STATE)["result"]["requestState"]
    answer = {"confirm": accept(ok=True)}
    flipped = state[:-2] + ("A" if state[-2] != "A" else "B") + state[-1]
    for wrong in (state + "-TAMPERED", flipped, "confirm", ""):
        assert refused_state(call(url, TAMPERED_STATE, inputResponses=answer, requestState=wrong))
    assert refused_state(call(url, REQUEST_STATE, inputResponses=answer, requestState=state))
    moved = call(url, TAMPERED_STATE, inputResponses=answer, requestState=state,
                 arguments={"extra": 1})  # fmt: skip
    assert refused_state(moved)
    other = call(url, TAMPERED_STATE, inputResponses=answer, requestState=state, worker="other")
    assert refused_state(other)
    whole = call(url, TAMPERED_STATE, inputResponses=answer, requestState=state)
    assert text(whole).startswith("state-ok")  # the state as sealed still completes it


@pytest.mark.slow  # over a second on a quiet machine (#89)
def test_replicas_sharing_state_keys_open_each_others_states():
    """``MQ9_MCP_STATE_KEYS``: a state sealed by one replica completes the call on another with
    the same keys (the second key opens what the first sealed, for a key rolled in); a server
    with a key of its own refuses it."""
    old, new = "o" * 32, "n" * 32
    with (
        fixture_server("--server", "memory://", state_keys=[old]) as first,
        fixture_server("--server", "memory://", state_keys=[new, old]) as rolled,
        fixture_server("--server", "memory://") as alone,
    ):
        state = call(first, REQUEST_STATE)["result"]["requestState"]
        answer = {"confirm": accept(ok=True)}
        assert refused_state(call(alone, REQUEST_STATE, inputResponses=answer, requestState=state))
        done = call(rolled, REQUEST_STATE, inputResponses=answer, requestState=state)
        assert text(done).startswith("state-ok"), done


def test_a_state_key_too_short_to_be_one_stops_the_server(monkeypatch, capsys):
    monkeypatch.setenv("MQ9_MCP_STATE_KEYS", f"{'k' * 32}, short")
    with pytest.raises(SystemExit):
        state_keys(build_parser())
    assert "MQ9_MCP_STATE_KEYS: key 2 has 5 characters, fewer than 32" in capsys.readouterr().err
    monkeypatch.setenv("MQ9_MCP_STATE_KEYS", f" {'k' * 32} ,{'l' * 40}")
    assert state_keys(build_parser()) == ["k" * 32, "l" * 40]


def test_a_prompt_asks_the_user_as_a_tool_does(url):
    """SEP-2322 on a request other than tools/call: prompts/get answers InputRequiredResult,
    then the prompt once the answer comes with its sealed state."""
    first = call(url, PROMPT, method="prompts/get")
    assert asks(first, "user_context"), first
    state = first["result"]["requestState"]
    assert refused_state(call(url, PROMPT, method="prompts/get", requestState=state + "x"))
    done = call(url, PROMPT, method="prompts/get", requestState=state,
                inputResponses={"user_context": accept(context="invoices")})["result"]  # fmt: skip
    assert done["resultType"] == "complete", done
    assert done["messages"][0]["content"]["text"] == "Use this context: invoices"
    unasked = call(url, PROMPT, method="prompts/get", capabilities={})["result"]
    assert unasked["messages"][0]["content"]["text"].startswith("Ask the user first")


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
