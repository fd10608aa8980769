"""The operation catalog: every mq9 operation an agent can call, defined once, with the hints
a client reads (read-only, destructive, ...). The LangChain tools (``tools.py``) and the MCP
server (``mcp_server``) are thin adapters over it, so their names, schemas and behaviour are the
same. Its parts live by job in the modules imported below.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from ..a2a.caller import CallError
from ..protocol import Mq9Error
from . import calls, registry
from . import mailbox as mail
from .config import ToolConfig
from .errors import OperationError, explain
from .policy import CALL_CLIENT, ToolPolicy
from .results import ADVICE, Outcome, ToolResult
from .schemas import (
    DESCRIPTIONS,
    FetchMessagesInput,
    QueryMessagesInput,
    SendMessageInput,
    input_schema,
    tool_description,
)
from .views import CARD_NOTE, MAX_SHOWN_DEPTH, message_view

Handler = Callable[[Any, Any, ToolPolicy], Awaitable[Outcome]]


@dataclass(frozen=True)
class Operation:
    name: str
    title: str
    input_model: type[BaseModel]
    handler: Handler
    result: type[ToolResult]
    description_text: str
    read_only: bool = False  # changes nothing on the broker
    destructive: bool = False  # removes data
    idempotent: bool = False
    in_default_set: bool = True
    # A read-only toolkit keeps it: it then only looks (fetch_messages without a group).
    looks_when_read_only: bool = False
    needs_calls: bool = False  # an agent-call tool: only a policy with ``calls`` allows it
    extra_wait: float = 0.0  # seconds it waits of its own beyond its arguments' wait

    def describe(self, policy: ToolPolicy | None = None) -> str:
        """What the model reads about this tool, for the toolkit with ``policy``."""
        text = tool_description(self.description_text, policy.agent_mailbox if policy else None)
        return prefixed(text, policy)

    def input_schema(self, policy: ToolPolicy | None = None) -> dict[str, Any]:
        """The JSON schema of the arguments, for the toolkit with ``policy``."""
        schema = input_schema(self.input_model, policy.agent_mailbox if policy else None)
        for spec in schema["properties"].values():
            if "description" in spec:
                spec["description"] = prefixed(spec["description"], policy)
        return schema

    @property
    def hints(self) -> dict[str, bool]:
        """MCP's tool annotations where they differ from MCP's defaults (readOnlyHint false,
        destructiveHint true, idempotentHint false, openWorldHint true: the mailboxes and
        registry are shared with other agents), and only those: a writer that removes nothing
        says destructiveHint false, a reader says readOnlyHint true (MCP ignores a reader's
        other hints). The MCP server declares them; the LangChain tools carry them in
        ``metadata``, as langchain-mcp-adapters does."""
        if self.read_only:
            return {"readOnlyHint": True}
        hints = {"destructiveHint": self.destructive}
        if self.idempotent:
            hints["idempotentHint"] = True
        return hints

    @property
    def output_schema(self) -> dict[str, Any]:
        """The JSON schema of ``Outcome.content`` (MCP's outputSchema), a copy."""
        return self.result.output_schema()

    def allowed(self, policy: ToolPolicy) -> bool:
        return self.unavailable(policy) is None

    def unavailable(self, policy: ToolPolicy) -> str | None:
        """Why ``policy`` leaves this tool out, and how to have it; None: it is there."""
        if self.needs_calls and not policy.calls:
            return (
                f"{self.name} is not available: the agent-call tools are off (turn them on "
                "with calls=True on the toolkit, --calls for mq9-mcp)"
            )
        if policy.read_only and not (self.read_only or self.looks_when_read_only):
            return f"{self.name} is not available: this toolkit is read-only"
        return None

    def wait_seconds(self, args: BaseModel) -> float:
        """How long a call may legitimately block beyond a request (fetch's, a call's wait)."""
        waits = getattr(args, "max_wait_ms", 0) / 1000 + getattr(args, "wait_seconds", 0)
        return waits + self.extra_wait

    async def execute(self, client: Any, args: BaseModel | dict, policy: ToolPolicy) -> Outcome:
        """Run the operation; every failure the caller can act on is an ``OperationError``."""
        refusal = self.unavailable(policy)
        if refusal is not None:
            raise OperationError(prefixed(refusal, policy))
        if not isinstance(args, self.input_model):
            args = self.input_model.model_validate(args)
        address = getattr(args, "mail_address", None) or policy.agent_mailbox
        token = CALL_CLIENT.set(client)
        try:
            outcome = await self.handler(client, args, policy)
        except (OperationError, CallError) as exc:  # a CallError says what to do, too
            raise OperationError(prefixed(str(exc), policy)) from exc
        except Mq9Error as exc:
            text = explain(exc, operation=self.name, address=address, own=policy.agent_mailbox)
            raise OperationError(prefixed(text, policy)) from exc
        finally:
            CALL_CLIENT.reset(token)
        # What the client noticed of this mailbox's log (lost or split by the broker)
        warning = getattr(client, "warnings", {}).get(address)
        if warning:
            outcome.content["warning"] = warning
        for key in ADVICE:
            if key in outcome.content:
                outcome.content[key] = prefixed(outcome.content[key], policy)
        outcome.fit(policy.max_answer_chars)
        return outcome


def _catalog(*operations: Operation) -> dict[str, Operation]:
    return {op.name: op for op in operations}


def _op(handler: Handler, title: str, **flags: Any) -> Operation:
    """The operation a handler runs, named as it is: its input model and its result model are
    the ones its annotations name (``args: SendMessageInput``, ``-> Outcome[MessageSent]``)."""
    name, hints = handler.__name__, typing.get_type_hints(handler)
    (result,) = typing.get_args(hints["return"])
    if name in calls.DESCRIPTIONS:  # opt-in, and only with ToolConfig.calls
        flags = {"in_default_set": False, "needs_calls": True, **flags}
    text = DESCRIPTIONS.get(name) or calls.DESCRIPTIONS[name]
    return Operation(name, title, hints["args"], handler, result, text, **flags)


OPERATIONS: dict[str, Operation] = _catalog(
    _op(registry.agent_register, "Register this agent", idempotent=True),
    _op(registry.agent_discover, "Find agents", read_only=True, idempotent=True),
    _op(mail.create_mailbox, "Create a mailbox"),
    _op(mail.send_message, "Send a message"),
    _op(mail.fetch_messages, "Fetch messages", looks_when_read_only=True),
    _op(mail.ack_messages, "Acknowledge messages", idempotent=True),
    _op(mail.query_messages, "Inspect a mailbox", read_only=True, idempotent=True),
    _op(mail.delete_message, "Delete a message", destructive=True),
    _op(registry.agent_unregister, "Unregister an agent", destructive=True, in_default_set=False),
    _op(registry.agent_report, "Report agent status", idempotent=True, in_default_set=False),
    # The agent-call tools (calls.py)
    _op(calls.call_agent, "Delegate a task to an agent"),
    _op(calls.check_call, "Check a delegated task", read_only=True),
    _op(calls.answer_call, "Answer a delegated task"),
    _op(
        calls.cancel_call,
        "Cancel a delegated task",
        destructive=True,
        idempotent=True,
        extra_wait=calls.CANCEL_WAIT,
    ),
    _op(calls.list_calls, "List delegated tasks", read_only=True),
)

DEFAULT_OPERATIONS = tuple(name for name, op in OPERATIONS.items() if op.in_default_set)

# A tool named in a text the model reads (a description, a next step, a hint), as a word.
_TOOL_NAMES = re.compile(r"\b(?:" + "|".join(OPERATIONS) + r")\b")


def unknown_tool(name: str, policy: ToolPolicy) -> str:
    """The answer to a call of a tool ``policy`` does not have: the ones it has, by name."""
    names = [policy.tool_name(n) for n, op in OPERATIONS.items() if op.allowed(policy)]
    return f"unknown tool {name!r}: the mq9 tools here are {', '.join(names)}"


def prefixed(text: str, policy: ToolPolicy | ToolConfig | None) -> str:
    """``text`` with every tool it names under its name for ``policy`` (its tool_prefix)."""
    prefix = policy.tool_prefix if policy is not None else ""
    return _TOOL_NAMES.sub(lambda found: prefix + found[0], text) if prefix else text


__all__ = [  # the catalog, and what tests and bench/ import of the modules it is made from
    "CARD_NOTE",
    "DEFAULT_OPERATIONS",
    "MAX_SHOWN_DEPTH",
    "OPERATIONS",
    "FetchMessagesInput",
    "Operation",
    "OperationError",
    "QueryMessagesInput",
    "SendMessageInput",
    "ToolPolicy",
    "explain",
    "message_view",
    "prefixed",
    "unknown_tool",
]
