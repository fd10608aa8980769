"""Test your agents offline: ``ScriptedChatModel``, a chat model that plays a script of tool calls.

It binds tools as a real model does (``langchain_core``'s ``GenericFakeChatModel`` implements no
``bind_tools``, so ``create_agent`` cannot use it with tools) and emits real tool calls that the
agent executes against the real tools, so a test runs the whole agent loop without an API key,
the same every time. Each step of the script sees the conversation so far, so it can use what
earlier tool calls returned (a mailbox address, a msg_id), as a real model would. The package's
own tests, examples and notebooks are driven by it.

>>> from langchain.agents import create_agent
>>> from langchain_mq9 import Mq9Toolkit
>>> from langchain_mq9.testing import ScriptedChatModel, call, tool_result
>>> model = ScriptedChatModel(steps=[
...     call("create_mailbox", ttl=600),
...     lambda messages: call("send_message", mail_address="agent.worker",
...                           payload={"reply_to": tool_result(messages)["mail_address"]}),
...     "Task sent.",
... ])
>>> agent = create_agent(model, Mq9Toolkit(server="memory://").get_tools())

A step is an ``AIMessage``, a text (the final answer), or a function of the conversation that
returns one; ``call`` and ``calls`` make tool-calling turns, ``tool_result`` reads a tool's
answer. A step that calls a tool the agent does not have, or with an argument its schema does
not declare, raises: a stale script fails loudly.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field

Step = AIMessage | str | Callable[[list[BaseMessage]], "AIMessage | str"]

_ids = itertools.count(1)


def call(name: str, /, **args: Any) -> AIMessage:
    """An assistant turn that calls one tool."""
    return calls((name, args))


def calls(*invocations: tuple[str, dict[str, Any]]) -> AIMessage:
    """An assistant turn that calls several tools at once."""
    return AIMessage(
        content="",
        tool_calls=[
            {"name": name, "args": args, "id": f"call_{next(_ids)}", "type": "tool_call"}
            for name, args in invocations
        ],
    )


def tool_result(messages: Sequence[BaseMessage], name: str | None = None) -> Any:
    """The newest tool result (of tool ``name``, if given), parsed as JSON when it is JSON."""
    for message in reversed(messages):
        if isinstance(message, ToolMessage) and (name is None or message.name == name):
            text = message.content
            if isinstance(text, list):  # content blocks, as MCP tools through adapters give
                text = "".join(b if isinstance(b, str) else b.get("text", "") for b in text)
            try:
                return json.loads(text)
            except (TypeError, ValueError):
                return text
    raise LookupError(f"no result of tool {name or '(any)'} in the conversation yet")


class ScriptedChatModel(BaseChatModel):
    """Answers with the script's next step; the step number is how many assistant turns the
    conversation already has, so one model serves many independent conversations."""

    steps: list[Any] = Field(default_factory=list)
    final: str = "Done."
    tool_names: list[str] | None = None
    # The argument names each bound tool's schema declares, where it has a JSON schema: a step
    # calling a tool with another argument is a stale script, refused like an unknown tool.
    tool_arguments: dict[str, list[str]] = Field(default_factory=dict)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
        names = [getattr(t, "name", None) or getattr(t, "__name__", str(t)) for t in tools]
        arguments = {}
        for name, tool in zip(names, tools, strict=True):
            schema = getattr(tool, "args_schema", None)
            if isinstance(schema, dict) and isinstance(schema.get("properties"), dict):
                arguments[name] = list(schema["properties"])
        return self.model_copy(update={"tool_names": names, "tool_arguments": arguments})

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        turn = sum(isinstance(m, AIMessage) for m in messages)
        step: Step = self.steps[turn] if turn < len(self.steps) else self.final
        if callable(step) and not isinstance(step, BaseMessage):
            step = step(messages)
        message = AIMessage(content=step) if isinstance(step, str) else step
        for tool_call in message.tool_calls:
            if self.tool_names is not None and tool_call["name"] not in self.tool_names:
                raise ValueError(
                    f"script step {turn} calls {tool_call['name']!r}, which is not among the "
                    f"bound tools {self.tool_names}"
                )
            declared = self.tool_arguments.get(tool_call["name"])
            unknown = sorted(set(tool_call["args"]) - set(declared or ()))
            if declared is not None and unknown:
                raise ValueError(
                    f"script step {turn} calls {tool_call['name']} with {unknown[0]!r}, which "
                    f"is not among its arguments {declared}"
                )
        return ChatResult(generations=[ChatGeneration(message=message)])
