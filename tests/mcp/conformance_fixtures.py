"""The MCP conformance suite's input-required fixtures (SEP-2322), served by mq9-mcp itself.

The suite's ``input-required-result-*`` scenarios call tools of its own
(``test_input_required_result_elicitation`` and friends, each described in the scenario's text)
and one prompt (``test_input_required_result_prompt``). Here they are tools and a prompt of an
``Mq9McpServer`` subclass beside mq9's own, each an ``Asker`` run by
``mq9_mcp.questions.ask_user``: the machinery ``call_agent`` asks the user through, so the
suite's calls (a wrong key, a missing answer, an echoed or a tampered ``requestState``)
exercise mq9-mcp's own code path, its ``requestState`` seal included; nothing here builds an
``InputRequiredResult``.

Only the fixtures that ask the user a form are here: sampling (the client's model) and roots
(the client's files) are never asked by mq9-mcp, which has no use for either, so the scenarios
that need them are listed in docs/mcp.md as not applying.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import uvicorn
from mcp import types
from mcp.shared.exceptions import MCPError

from mq9_mcp import questions
from mq9_mcp.cli import broker_connection, build_parser, tool_policy
from mq9_mcp.http import create_http_app, uvicorn_config
from mq9_mcp.server import Mq9McpServer, error_result
from testbed.ports import unclaimed_port
from testbed.support.waiting import until_sync

ELICITATION = "test_input_required_result_elicitation"
MULTI_ROUND = "test_input_required_result_multi_round"
REQUEST_STATE = "test_input_required_result_request_state"
TAMPERED_STATE = "test_input_required_result_tampered_state"
PROMPT = "test_input_required_result_prompt"
# A form a user leaves open at 2025-11-25 (elicitation/create in the call) ends here.
FORM_WAIT_SECONDS = 60.0


def form(message: str, field: questions.Field) -> types.ElicitRequestFormParams:
    schema: types.ElicitRequestedSchema = {
        "type": "object",
        "properties": {field.name: {"type": field.kind}},
        "required": [field.name],
    }
    return types.ElicitRequestFormParams(message=message, requested_schema=schema)


def text_result(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)])


class Steps:
    """A tool asking its questions in turn (``steps``: key, message, the answer's field),
    then answering with ``done`` of the last answer. Stateless as a 2026-07-28 server is: the
    key of the question answered says where the call stands."""

    steps: tuple[tuple[str, str, questions.Field], ...] = ()
    wait_seconds = FORM_WAIT_SECONDS

    def done(self, answer: str) -> str:
        raise NotImplementedError

    def finish(self, answer: str) -> questions.Settled:
        return text_result(self.done(answer))

    def owns(self, key: str) -> bool:
        return any(key == step[0] for step in self.steps)

    def field_of(self, key: str) -> questions.Field:
        return next(field for name, _message, field in self.steps if name == key)

    async def start(self) -> questions.Step:
        return self._question(0)

    async def answer(self, key: str, text: str) -> questions.Step:
        at = self._index(key) + 1
        return self._question(at) if at < len(self.steps) else self.finish(text)

    async def resume(self, key: str) -> questions.Step:
        return self._question(self._index(key))  # the same question, asked again

    async def declined(self, key: str) -> questions.Settled:
        return error_result(f"the user would not answer {key!r}: nothing was done")

    def _index(self, key: str) -> int:
        return next(i for i, step in enumerate(self.steps) if step[0] == key)

    def _question(self, at: int) -> questions.Question:
        key, message, field = self.steps[at]
        return questions.Question(key, form(message, field), self.unasked(message))

    def unasked(self, message: str) -> questions.Settled:
        return error_result(f"this tool needs the user's answer to {message!r}, and the "
                            "client declared no form elicitation to ask it with")  # fmt: skip


class Greeting(Steps):
    """``test_input_required_result_elicitation`` (scenario A1): the user's name, then a
    greeting."""

    steps = (("user_name", "What is your name?", questions.Field("name")),)

    def done(self, answer: str) -> str:
        return f"Hello, {answer}!"


class TwoRounds(Steps):
    """``test_input_required_result_multi_round``: a name, then a colour, each round its own
    ``requestState``."""

    steps = (
        ("step1", "Step 1: What is your name?", questions.Field("name")),
        ("step2", "Step 2: What is your favorite color?", questions.Field("color")),
    )

    def done(self, answer: str) -> str:
        return f"Your favorite color is {answer}."


class Confirmation(Steps):
    """``test_input_required_result_request_state`` and ``_tampered_state``: a yes or no
    (a boolean form), then ``state-ok``. The ``requestState`` that comes back is the one
    mq9-mcp sealed (else the call is refused before it gets here)."""

    steps = (("confirm", "Please confirm", questions.Field("ok", "boolean")),)

    def done(self, answer: str) -> str:
        return f"state-ok: the requestState came back as sealed; confirmed: {answer}"


class PromptContext(Steps):
    """``test_input_required_result_prompt`` (a prompt that asks, SEP-2322's non-tool
    request): the context to use, then the prompt."""

    steps = (("user_context", "What context should the prompt use?", questions.Field("context")),)

    def finish(self, answer: str) -> types.GetPromptResult:
        return prompt_result(f"Use this context: {answer}")

    def unasked(self, message: str) -> types.GetPromptResult:
        return prompt_result(f"Ask the user first: {message}")

    async def declined(self, key: str) -> types.GetPromptResult:
        raise MCPError(types.INVALID_PARAMS, f"the user would not give {key!r}: no prompt")


def prompt_result(text: str) -> types.GetPromptResult:
    message = types.PromptMessage(role="user", content=types.TextContent(type="text", text=text))
    return types.GetPromptResult(description="A prompt that asks", messages=[message])


FIXTURES: dict[str, type[Steps]] = {
    ELICITATION: Greeting,
    MULTI_ROUND: TwoRounds,
    REQUEST_STATE: Confirmation,
    TAMPERED_STATE: Confirmation,
}
PROMPTS: dict[str, type[Steps]] = {PROMPT: PromptContext}
TOOLS = [
    types.Tool(
        name=name,
        description=(fixture.__doc__ or "").split("\n\n")[0],
        input_schema={"type": "object", "properties": {}},
    )
    for name, fixture in FIXTURES.items()
]
FIXTURE_PROMPTS = [
    types.Prompt(name=name, description=(fixture.__doc__ or "").split("\n\n")[0])
    for name, fixture in PROMPTS.items()
]


class ServerWithFixtures(Mq9McpServer):
    """mq9-mcp with the suite's input-required fixtures among its tools and prompts."""

    async def handle_list_tools(self, ctx: Any, params: Any) -> types.ListToolsResult:
        listed = await super().handle_list_tools(ctx, params)
        return types.ListToolsResult(tools=[*listed.tools, *TOOLS])

    async def handle_call_tool(self, ctx: Any, params: types.CallToolRequestParams) -> Any:
        fixture = FIXTURES.get(params.name)
        if fixture is None:
            return await super().handle_call_tool(ctx, params)
        return await questions.ask_user(ctx, params, fixture())

    async def handle_list_prompts(self, ctx: Any, params: Any) -> types.ListPromptsResult:
        listed = await super().handle_list_prompts(ctx, params)
        return types.ListPromptsResult(prompts=[*listed.prompts, *FIXTURE_PROMPTS])

    async def handle_get_prompt(self, ctx: Any, params: types.GetPromptRequestParams) -> Any:
        fixture = PROMPTS.get(params.name)
        if fixture is None:
            return await super().handle_get_prompt(ctx, params)
        return await questions.ask_user(ctx, params, fixture())


class _Uvicorn(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Iterator[None]:  # the test runner keeps its own handlers
        yield


@contextmanager
def fixture_server(*options: str, state_keys: Sequence[str] = ()) -> Iterator[str]:
    """``ServerWithFixtures`` over HTTP on a free loopback port, built from mq9-mcp's own
    command-line ``options`` (and ``MQ9_MCP_STATE_KEYS``' ``state_keys``) as ``mq9-mcp
    --transport http`` builds its server, served in a thread; yields the /mcp URL and stops it
    afterwards."""
    parser = build_parser()
    args = parser.parse_args(["--transport", "http", *options])
    policy = tool_policy(args, parser)
    connection = broker_connection(args, parser, args.server, {})
    server = ServerWithFixtures(connection, policy, sessions_compete=True, state_keys=state_keys)
    app = create_http_app(server, connection, host="127.0.0.1")
    port = unclaimed_port()
    served = _Uvicorn(uvicorn_config(app, "127.0.0.1", port))
    thread = threading.Thread(target=served.run, name="mq9-mcp-fixtures", daemon=True)
    thread.start()
    try:

        def started() -> bool:
            if not thread.is_alive():
                raise RuntimeError("mq9-mcp with the suite's fixtures stopped while starting")
            return served.started

        what = "mq9-mcp with the suite's fixtures started"
        until_sync(started, timeout=30, what=what, every=0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        served.should_exit = True
        thread.join(timeout=30)
