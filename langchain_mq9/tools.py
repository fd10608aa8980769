"""The mq9 operations as LangChain tools: thin adapters over ``operations.OPERATIONS``.

Each tool returns ``(content, artifact)``: compact JSON for the model and the typed result
(``Message`` objects, msg_ids, agent cards) for code. Broker and input errors come back to the
model as an error ``ToolMessage`` that says how to fix the call; they never crash the graph.

A tool's ``args_schema`` is the JSON schema the model sees (``Operation.input_schema``), the
same one the MCP server lists, so every provider converts exactly that; the pydantic input
model (``get_input_schema()``) validates each call and re-checks every bound.
"""

# No ``from __future__ import annotations`` here, and only ``Any`` on ``_run``/``_arun``:
# LangChain reads their type hints on every tool call (string ones are compiled and evaluated
# each time, a large share of a send_message call's own cost; ``Any`` costs little more than
# none, a ``tuple[str, Any]`` more: bench/HOTPATH.md).

import inspect
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, ClassVar, Literal

from langchain_core.tools import BaseTool, ToolException
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mq9_platform.client.connection import Mq9Connection
from mq9_platform.operations.catalog import (
    OPERATIONS,
    Operation,
    OperationError,
    ToolPolicy,
)
from mq9_platform.operations.errors import explain, explain_validation
from mq9_platform.operations.results import Outcome
from mq9_wire.protocol.errors import Mq9Error

from .run_context import current_run, tool_call_key

# The id of the tool call under way: ``BaseTool.arun``/``run`` are told it (``_arun`` is not),
# and ``_arun`` runs in a copy of their context, so it reads it here.
_TOOL_CALL: ContextVar[str | None] = ContextVar("mq9_tool_call", default=None)


class Mq9Tool(BaseTool):
    """Base of the mq9 tools. Build one with ``server=`` (a URL), ``client=`` (an open
    ``Mq9Client``) or ``connection=`` (shared, as ``Mq9Toolkit`` does), plus a ``policy``.

    The policy also remembers what ``fetch_messages`` handed out, which ``ack_messages``
    confirms: tools built one by one must share one ``policy`` (``Mq9Toolkit`` does that)."""

    operation: ClassVar[Operation]

    # Filled in from the operation for the policy (``_fill_in``) unless given.
    name: str = ""
    description: str = ""
    connection: Mq9Connection
    policy: ToolPolicy = Field(default_factory=ToolPolicy)
    response_format: Literal["content", "content_and_artifact"] = "content_and_artifact"
    handle_tool_error: bool = True
    handle_validation_error: Any = explain_validation
    model_config = ConfigDict(arbitrary_types_allowed=True)

    @model_validator(mode="before")
    @classmethod
    def _fill_in(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        operation = cls.operation
        policy = data.get("policy")
        if not isinstance(policy, ToolPolicy):
            policy = data["policy"] = ToolPolicy()
        data.setdefault("name", policy.tool_name(operation.name))
        data.setdefault("description", operation.describe(policy))
        data.setdefault("args_schema", operation.input_schema(policy))
        # readOnlyHint/destructiveHint as MCP declares them and langchain-mcp-adapters puts
        # them in a tool's metadata: what a human-in-the-loop policy reads (docs/langchain.md)
        data.setdefault("metadata", dict(operation.hints))
        if "connection" not in data:
            server, client = data.pop("server", None), data.pop("client", None)
            data["connection"] = Mq9Connection(server, client=client)
        return data

    def get_input_schema(self, config: Any = None) -> type[BaseModel]:
        return self.operation.input_model

    def _arguments(self, kwargs: dict[str, Any], policy: ToolPolicy) -> BaseModel:
        kwargs.pop("run_manager", None)
        args = self.operation.input_model.model_validate(kwargs)
        # A send the model gave no key is keyed by its tool call: a replayed or retried call
        # (LangGraph's durable execution, a RetryPolicy) stores one message, a new call another
        # (its arguments too: code that reuses a call id for other arguments sends anew), and
        # the key names its agent, so two agents' calls never share one
        if vars(args).get("idempotency_key") == "":
            call = _TOOL_CALL.get()
            if call:
                agent = policy.agent_mailbox
                key = tool_call_key(self.operation.name, call, repr(kwargs), agent)
                args.idempotency_key = key  # type: ignore[attr-defined]
        return args

    # ``arun``/``run`` are LangChain's public entry points (``invoke`` and ``ainvoke`` end
    # there); they alone are handed the tool call's id, which ``_arguments`` keys sends by.
    async def arun(self, *args: Any, **kwargs: Any) -> Any:
        token = _TOOL_CALL.set(kwargs.get("tool_call_id"))
        try:
            return await super().arun(*args, **kwargs)
        finally:
            _TOOL_CALL.reset(token)

    def run(self, *args: Any, **kwargs: Any) -> Any:
        token = _TOOL_CALL.set(kwargs.get("tool_call_id"))
        try:
            return super().run(*args, **kwargs)
        finally:
            _TOOL_CALL.reset(token)

    def _call(
        self, args: BaseModel, policy: ToolPolicy
    ) -> Callable[[Any], Awaitable[Outcome[Any]]]:
        return lambda client: self.operation.execute(client, args, policy)

    # _run/_arun return (content, artifact), annotated ``Any`` (see the top of this module).
    # The run may name the agent (run_context.py): its policy then, else the toolkit's.
    def _run(self, **kwargs: Any) -> Any:
        run = current_run(self.policy)
        args = self._arguments(kwargs, run.policy)
        wait = self.operation.wait_seconds(args, run.policy)
        with _as_tool_errors(), run.waiting(self.name, wait):
            outcome = self.connection.run_sync(self._call(args, run.policy), wait=wait)
        return outcome.text(), outcome.artifact

    async def _arun(self, **kwargs: Any) -> Any:
        run = current_run(self.policy)
        args = self._arguments(kwargs, run.policy)
        with (
            _as_tool_errors(),
            run.waiting(self.name, self.operation.wait_seconds(args, run.policy)),
        ):
            outcome = await self.connection.run(self._call(args, run.policy))
        return outcome.text(), outcome.artifact


# LangChain asks for ``_run``'s or ``_arun``'s signature on every tool call (``BaseTool.arun``:
# does it take ``run_manager``, a config?), and ``inspect.signature`` works it out each time
# (a share of a send_message call's own cost worth saving: bench/HOTPATH.md). A
# function's ``__signature__`` is what ``inspect.signature`` answers when it has one: written
# once here, the same signature.
for _method in (Mq9Tool._run, Mq9Tool._arun):
    setattr(_method, "__signature__", inspect.signature(_method))  # noqa: B010


@contextmanager
def _as_tool_errors() -> Iterator[None]:
    """Failures the model can act on become tool error messages; bugs still raise."""
    try:
        yield
    except OperationError as exc:
        raise ToolException(str(exc)) from exc
    except Mq9Error as exc:
        raise ToolException(explain(exc)) from exc


# One class per operation: its ``operation`` is all a tool class adds. What the model reads of
# each (name, description, schema) is the operation's (``operations/schemas.py``).


class AgentRegisterTool(Mq9Tool):
    """``agent_register``: publish this agent in the registry and create its mailbox."""

    operation = OPERATIONS["agent_register"]


class AgentDiscoverTool(Mq9Tool):
    """``agent_discover``: find agents by what they can do."""

    operation = OPERATIONS["agent_discover"]


class CreateMailboxTool(Mq9Tool):
    """``create_mailbox``: create a mailbox."""

    operation = OPERATIONS["create_mailbox"]


class SendMessageTool(Mq9Tool):
    """``send_message``: leave a message in a mailbox."""

    operation = OPERATIONS["send_message"]


class FetchMessagesTool(Mq9Tool):
    """``fetch_messages``: take the waiting messages, each handed out once (a read-only
    toolkit only looks)."""

    operation = OPERATIONS["fetch_messages"]


class AckMessagesTool(Mq9Tool):
    """``ack_messages``: confirm fetched messages handled."""

    operation = OPERATIONS["ack_messages"]


class QueryMessagesTool(Mq9Tool):
    """``query_messages``: look at a mailbox without taking anything."""

    operation = OPERATIONS["query_messages"]


class DeleteMessageTool(Mq9Tool):
    """``delete_message``: delete one message."""

    operation = OPERATIONS["delete_message"]


# The two extra registry tools (``tools=[...]`` names them)


class AgentUnregisterTool(Mq9Tool):
    """``agent_unregister``: remove an agent from the registry (not in the default eight)."""

    operation = OPERATIONS["agent_unregister"]


class AgentReportTool(Mq9Tool):
    """``agent_report``: report an agent's status (not in the default eight)."""

    operation = OPERATIONS["agent_report"]


class WakeRuleTool(Mq9Tool):
    """``wake_rule``: wake rules of a mailbox you read (not in the default eight)."""

    operation = OPERATIONS["wake_rule"]


# The agent-call tools (``Mq9Toolkit(calls=True)``)


class CallAgentTool(Mq9Tool):
    """``call_agent``: delegate a task to another agent (an agent-call tool: ``calls=True``)."""

    operation = OPERATIONS["call_agent"]


class CheckCallTool(Mq9Tool):
    """``check_call``: the state of a delegated task (an agent-call tool)."""

    operation = OPERATIONS["check_call"]


class AnswerCallTool(Mq9Tool):
    """``answer_call``: answer a delegated task's question (an agent-call tool)."""

    operation = OPERATIONS["answer_call"]


class CancelCallTool(Mq9Tool):
    """``cancel_call``: cancel a delegated task (an agent-call tool)."""

    operation = OPERATIONS["cancel_call"]


class ListCallsTool(Mq9Tool):
    """``list_calls``: the delegated tasks and their states (an agent-call tool)."""

    operation = OPERATIONS["list_calls"]


TOOL_CLASSES: dict[str, type[Mq9Tool]] = {
    tool.operation.name: tool
    for tool in (
        AgentRegisterTool,
        AgentDiscoverTool,
        CreateMailboxTool,
        SendMessageTool,
        FetchMessagesTool,
        AckMessagesTool,
        QueryMessagesTool,
        DeleteMessageTool,
        AgentUnregisterTool,
        AgentReportTool,
        CallAgentTool,
        CheckCallTool,
        AnswerCallTool,
        CancelCallTool,
        ListCallsTool,
        WakeRuleTool,
    )
}
