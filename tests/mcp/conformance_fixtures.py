"""The MCP conformance suite's input-required fixtures (SEP-2322), served by mq9-mcp itself.

The suite's ``input-required-result-*`` scenarios call tools of its own
(``test_input_required_result_elicitation`` and friends, each described in the scenario's text).
Here they are tools of an ``Mq9McpServer`` subclass beside mq9's eleven, each an ``Asker``
run by ``mcp_server.questions.ask_user``: the machinery ``call_agent`` asks the user through,
so the suite's calls (a wrong key, a missing answer, an echoed ``requestState``) exercise
mq9-mcp's own code path; nothing here builds an ``InputRequiredResult``.

Only the fixtures that ask the user a text form are here: sampling, roots, a boolean answer
and a capability-filtered mix are not questions mq9-mcp's machinery asks (the report lists
those scenarios as needing their fixture).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from mcp import types

from langchain_mq9.broker.cluster.servers import free_port
from mcp_server import questions
from mcp_server.cli import broker_connection, build_parser, tool_policy
from mcp_server.http import create_http_app, uvicorn_config
from mcp_server.server import Mq9McpServer, error_result

ELICITATION = "test_input_required_result_elicitation"
MULTI_ROUND = "test_input_required_result_multi_round"
# A form a user leaves open at 2025-11-25 (elicitation/create in the call) ends here.
FORM_WAIT_SECONDS = 60.0


def form(message: str, field: str) -> types.ElicitRequestFormParams:
    schema: types.ElicitRequestedSchema = {
        "type": "object",
        "properties": {field: {"type": "string"}},
        "required": [field],
    }
    return types.ElicitRequestFormParams(message=message, requested_schema=schema)


def text_result(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)])


class Steps:
    """A tool asking its questions in turn (``steps``: key, message, the answer's field),
    then answering with ``done`` of the last answer. Stateless as a 2026-07-28 server is: the
    key of the question answered says where the call stands."""

    steps: tuple[tuple[str, str, str], ...] = ()
    wait_seconds = FORM_WAIT_SECONDS

    def done(self, answer: str) -> str:
        raise NotImplementedError

    def owns(self, key: str) -> bool:
        return any(key == step[0] for step in self.steps)

    def field_of(self, key: str) -> str:
        return next(field for name, _message, field in self.steps if name == key)

    async def start(self) -> questions.Step:
        return self._question(0)

    async def answer(self, key: str, text: str) -> questions.Step:
        at = self._index(key) + 1
        return self._question(at) if at < len(self.steps) else text_result(self.done(text))

    async def resume(self, key: str) -> questions.Step:
        return self._question(self._index(key))  # the same question, asked again

    async def declined(self, key: str) -> types.CallToolResult:
        return error_result(f"the user would not answer {key!r}: nothing was done")

    def _index(self, key: str) -> int:
        return next(i for i, step in enumerate(self.steps) if step[0] == key)

    def _question(self, at: int) -> questions.Question:
        key, message, field = self.steps[at]
        unasked = error_result(f"this tool needs the user's answer to {message!r}, and the "
                               "client declared no form elicitation to ask it with")  # fmt: skip
        return questions.Question(key, form(message, field), unasked)


class Greeting(Steps):
    """``test_input_required_result_elicitation`` (scenario A1): the user's name, then a
    greeting."""

    steps = (("user_name", "What is your name?", "name"),)

    def done(self, answer: str) -> str:
        return f"Hello, {answer}!"


class TwoRounds(Steps):
    """``test_input_required_result_multi_round``: a name, then a colour, each round its own
    ``requestState``."""

    steps = (
        ("step1", "Step 1: What is your name?", "name"),
        ("step2", "Step 2: What is your favorite color?", "color"),
    )

    def done(self, answer: str) -> str:
        return f"Your favorite color is {answer}."


FIXTURES: dict[str, type[Steps]] = {ELICITATION: Greeting, MULTI_ROUND: TwoRounds}
TOOLS = [
    types.Tool(
        name=name,
        description=(fixture.__doc__ or "").split("\n\n")[0],
        input_schema={"type": "object", "properties": {}},
    )
    for name, fixture in FIXTURES.items()
]


class ServerWithFixtures(Mq9McpServer):
    """mq9-mcp with the suite's input-required fixtures among its tools."""

    async def handle_list_tools(self, ctx: Any, params: Any) -> types.ListToolsResult:
        listed = await super().handle_list_tools(ctx, params)
        return types.ListToolsResult(tools=[*listed.tools, *TOOLS])

    async def handle_call_tool(self, ctx: Any, params: types.CallToolRequestParams) -> Any:
        fixture = FIXTURES.get(params.name)
        if fixture is None:
            return await super().handle_call_tool(ctx, params)
        return await questions.ask_user(ctx, params, fixture())


class _Uvicorn(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Iterator[None]:  # the test runner keeps its own handlers
        yield


@contextmanager
def fixture_server(*options: str) -> Iterator[str]:
    """``ServerWithFixtures`` over HTTP on a free loopback port, built from mq9-mcp's own
    command-line ``options`` as ``mq9-mcp --transport http`` builds its server, served in a
    thread; yields the /mcp URL and stops it afterwards."""
    parser = build_parser()
    args = parser.parse_args(["--transport", "http", *options])
    policy = tool_policy(args, parser)
    connection = broker_connection(args, parser, args.server, {})
    server = ServerWithFixtures(connection, policy, sessions_compete=True)
    app = create_http_app(server, connection, host="127.0.0.1")
    port = free_port()
    served = _Uvicorn(uvicorn_config(app, "127.0.0.1", port))
    thread = threading.Thread(target=served.run, name="mq9-mcp-fixtures", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not served.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("mq9-mcp with the suite's fixtures did not start in 30 s")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        served.should_exit = True
        thread.join(timeout=30)
