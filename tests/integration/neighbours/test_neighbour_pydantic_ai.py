"""mq9-mcp through Pydantic AI's own MCP client (``pydantic_ai.mcp.MCPToolset``, on FastMCP): an
Agent whose model is a ``FunctionModel`` (a local function, no LLM) picks each tool, so every
call goes the agent's way (its argument validation, the toolset's call); the tool definitions
it hands the model are converted by Pydantic AI's own OpenAI (strict) and Gemini transformers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastmcp.client.transports import StdioTransport
from pydantic_ai import Agent
from pydantic_ai.mcp import MCPToolset
from pydantic_ai.messages import (
    ModelMessage,
    ModelResponse,
    RetryPromptPart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.profiles.google import GoogleJsonSchemaTransformer
from pydantic_ai.profiles.openai import OpenAIJsonSchemaTransformer
from pydantic_ai.tools import ToolDefinition

from tests.integration.neighbours.lane import (
    STDIO_CWD,
    TOOLS,
    TRANSPORTS,
    answer_of,
    make_the_calls,
    mq9_mcp,
    refused_enums,
    stdio_command,
    stdio_env,
)

pytestmark = pytest.mark.slow


class OneCall:
    """The model: asks for the call it is given, then answers the tool's result as its text."""

    def __init__(self) -> None:
        self.next: tuple[str, dict[str, Any]] | None = None
        self.tools: list[ToolDefinition] = []

    def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.tools = info.function_tools
        if self.next is not None:
            name, arguments = self.next
            self.next = None
            return ModelResponse(parts=[ToolCallPart(name, arguments)])
        part = messages[-1].parts[-1]
        if isinstance(part, ToolReturnPart):
            content = part.content
            return ModelResponse(parts=[TextPart(json.dumps(content))])
        assert isinstance(part, RetryPromptPart), part
        return ModelResponse(parts=[TextPart(part.model_response())])


def toolset(url: str | None, nats_url: str) -> MCPToolset:
    if url is not None:
        return MCPToolset(url)
    command, args = stdio_command(nats_url)
    return MCPToolset(StdioTransport(command, args, env=stdio_env(), cwd=STDIO_CWD))


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_pydantic_ai_lists_converts_and_calls(nats_server, transport):
    model = OneCall()
    async with mq9_mcp(transport, nats_server.url) as url:
        mq9 = toolset(url, nats_server.url)
        agent = Agent(FunctionModel(model), toolsets=[mq9])

        async def call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
            model.next = (name, arguments)
            result = await agent.run(f"call {name}")
            return answer_of(result.output)

        async with mq9:
            await make_the_calls(call, f"pydanticai.{transport}")

    assert sorted(tool.name for tool in model.tools) == TOOLS
    for tool in model.tools:
        strict = OpenAIJsonSchemaTransformer(tool.parameters_json_schema, strict=True)
        strict.walk()
        assert strict.is_strict_compatible, tool.name
        gemini = GoogleJsonSchemaTransformer(tool.parameters_json_schema).walk()
        assert refused_enums(gemini, tool.name) == []
