"""The mq9 operations as LangChain tools: thin adapters over ``operations.OPERATIONS``.

Each tool returns ``(content, artifact)``: compact JSON for the model and the typed result
(``Message`` objects, msg_ids, agent cards) for code. Broker and input errors come back to the
model as an error ``ToolMessage`` that says how to fix the call; they never crash the graph.

A tool's ``args_schema`` is the JSON schema the model sees (``Operation.input_schema``), the
same one the MCP server lists, so every provider converts exactly that; the pydantic input
model (``get_input_schema()``) validates each call and re-checks every bound.
"""

# No ``from __future__ import annotations`` here, and no annotations on ``_run``/``_arun``:
# LangChain reads their type hints on every tool call (string ones are compiled and evaluated
# each time, about a fifth of a send_message call's own cost; even evaluated ones cost ~10 µs).

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from langchain_core.tools import BaseTool, ToolException
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .client.connection import Mq9Connection
from .operations.catalog import (
    OPERATIONS,
    Operation,
    OperationError,
    ToolPolicy,
)
from .operations.errors import explain, explain_validation
from .protocol import Mq9Error
from .run_context import current_run


class Mq9Tool(BaseTool):
    """Base of the mq9 tools. Build one with ``server=`` (a URL), ``client=`` (an open
    ``Mq9Client``) or ``connection=`` (shared, as ``Mq9Toolkit`` does), plus a ``policy``.

    The policy also remembers what ``fetch_messages`` handed out, which ``ack_messages``
    confirms: tools built one by one must share one ``policy`` (``Mq9Toolkit`` does that)."""

    operation: ClassVar[Operation]

    connection: Mq9Connection
    policy: ToolPolicy = Field(default_factory=ToolPolicy)
    response_format: str = "content_and_artifact"
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

    def _arguments(self, kwargs: dict[str, Any]) -> BaseModel:
        kwargs.pop("run_manager", None)
        return self.operation.input_model.model_validate(kwargs)

    def _call(self, args: BaseModel, policy: ToolPolicy):
        return lambda client: self.operation.execute(client, args, policy)

    # _run/_arun return (content, artifact), unannotated (see the top of this module). The
    # run may name the agent (run_context.py): its policy then, else the toolkit's.
    def _run(self, **kwargs):
        args = self._arguments(kwargs)
        run, wait = current_run(self.policy), self.operation.wait_seconds(args)
        with _as_tool_errors(), run.waiting(self.name, wait):
            outcome = self.connection.run_sync(self._call(args, run.policy), wait=wait)
        return outcome.text(), outcome.artifact

    async def _arun(self, **kwargs):
        args = self._arguments(kwargs)
        run = current_run(self.policy)
        with _as_tool_errors(), run.waiting(self.name, self.operation.wait_seconds(args)):
            outcome = await self.connection.run(self._call(args, run.policy))
        return outcome.text(), outcome.artifact


@contextmanager
def _as_tool_errors() -> Iterator[None]:
    """Failures the model can act on become tool error messages; bugs still raise."""
    try:
        yield
    except OperationError as exc:
        raise ToolException(str(exc)) from exc
    except Mq9Error as exc:
        raise ToolException(explain(exc)) from exc


def _tool_class(name: str) -> type[Mq9Tool]:
    """The tool class of operation ``name``: ``SendMessageTool`` for ``send_message``."""
    title = "".join(part.title() for part in name.split("_"))
    doc = f"``{name}``: {OPERATIONS[name].describe()}"
    namespace = {"operation": OPERATIONS[name], "__doc__": doc, "__module__": __name__}
    return type(f"{title}Tool", (Mq9Tool,), namespace)


# One class per operation (the agent-call tools too); the default eight and the two extra
# registry ones by name, as the package has always exported them.
TOOL_CLASSES: dict[str, type[Mq9Tool]] = {name: _tool_class(name) for name in OPERATIONS}
AgentRegisterTool = TOOL_CLASSES["agent_register"]
AgentDiscoverTool = TOOL_CLASSES["agent_discover"]
CreateMailboxTool = TOOL_CLASSES["create_mailbox"]
SendMessageTool = TOOL_CLASSES["send_message"]
FetchMessagesTool = TOOL_CLASSES["fetch_messages"]
AckMessagesTool = TOOL_CLASSES["ack_messages"]
QueryMessagesTool = TOOL_CLASSES["query_messages"]
DeleteMessageTool = TOOL_CLASSES["delete_message"]
AgentUnregisterTool = TOOL_CLASSES["agent_unregister"]
AgentReportTool = TOOL_CLASSES["agent_report"]
