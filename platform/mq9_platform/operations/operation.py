"""What one operation of the catalog is and how it runs: its name, arguments, handler and
result, the hints a client reads (read-only, destructive, ...), when a policy has it, how long
it may wait, and ``execute``, the one path every face's call takes (an ``OperationError`` for
what the caller can act on). The operations themselves are written out in ``catalog.py``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from mq9_wire.protocol.errors import Mq9Error

from ..a2a.caller import CallError
from ..a2a.shapes import JsonObject
from ..client.api import Mq9ClientLike
from . import calls, wake
from .config import ToolConfig
from .context import CallContext, Progress
from .errors import OperationError, explain, unexpected
from .policy import ToolPolicy
from .results import ADVICE, Outcome, ToolResult
from .schemas import DESCRIPTIONS, JsonSchema, _Input, input_schema, tool_description

log = logging.getLogger("mq9_platform")

# An operation's work: the call's context and its validated arguments (the operation's
# ``input_model``) in, its ``result`` wrapped in an ``Outcome`` out.
Handler = Callable[[CallContext, Any], Awaitable[Outcome[Any]]]


@dataclass(frozen=True)
class Operation:
    name: str
    title: str
    input_model: type[_Input]
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
    # A call may wait long (its arguments' wait): MCP may run it as a task.
    waits: bool = False
    # Its answer may be a called agent's question: MCP may put it to the user (elicitation).
    asks: bool = False

    def describe(self, policy: ToolPolicy | None = None) -> str:
        """What the model reads about this tool, for the toolkit with ``policy``."""
        text = tool_description(self.description_text, policy.agent_mailbox if policy else None)
        return prefixed(text, policy)

    def input_schema(self, policy: ToolPolicy | None = None) -> JsonSchema:
        """The JSON schema of the arguments, for the toolkit with ``policy``."""
        if policy is None:
            schema = input_schema(self.input_model)
        else:
            schema = input_schema(self.input_model, policy.agent_mailbox, policy.wait_cap_ms)
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
    def output_schema(self) -> JsonSchema:
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

    def wait_seconds(
        self, args: BaseModel, policy: ToolPolicy | None = None, cap_ms: int | None = None
    ) -> float:
        """How long a call may legitimately block beyond a request (fetch's, a call's wait, cut
        to ``policy``'s cap or ``cap_ms``: ``capped``)."""
        fields = vars(self.capped(args, policy, cap_ms))
        waits: float = fields.get("max_wait_ms", 0) / 1000 + fields.get("wait_seconds", 0)
        return waits + self.extra_wait

    @staticmethod
    def capped(args: BaseModel, policy: ToolPolicy | None, cap_ms: int | None = None) -> BaseModel:
        """``args`` with a wait longer than ``cap_ms`` (None: ``policy``'s ``wait_cap_ms``; no
        policy either: none) cut to it: a call answers before an MCP client gives up on it,
        and says to call again."""
        # Read from the model's fields (its __dict__): getattr of a field it has not raises
        # inside pydantic's __getattr__, on every tool call.
        fields = vars(args)
        if not ("max_wait_ms" in fields or "wait_seconds" in fields):
            return args
        cap = cap_ms if cap_ms is not None or policy is None else policy.wait_cap_ms
        if cap is None:
            return args
        cut = {}
        if fields.get("max_wait_ms", 0) > cap:
            cut["max_wait_ms"] = cap
        if fields.get("wait_seconds", 0) > cap // 1000:
            cut["wait_seconds"] = cap // 1000
        return args.model_copy(update=cut) if cut else args

    async def execute(
        self,
        client: Mq9ClientLike,
        args: BaseModel | JsonObject,
        policy: ToolPolicy,
        *,
        progress: Progress | None = None,
        wait_cap_ms: int | None = None,
    ) -> Outcome[Any]:
        """Run the operation with ``client`` for the agent with ``policy`` (``progress``: told
        each state a waiting agent call goes through; ``wait_cap_ms``: the most it waits,
        instead of the policy's, e.g. as an MCP task, which no request waits on); every
        failure the caller can act on is an ``OperationError``."""
        refusal = self.unavailable(policy)
        if refusal is not None:
            raise OperationError(prefixed(refusal, policy))
        if not isinstance(args, self.input_model):
            args = self.input_model.model_validate(args)
        args = self.capped(args, policy, wait_cap_ms)
        address = getattr(args, "mail_address", None) or policy.agent_mailbox
        try:
            outcome = await self.handler(CallContext(client, policy, progress), args)
        except (OperationError, CallError) as exc:  # a CallError says what to do, too
            raise OperationError(prefixed(str(exc), policy)) from exc
        except Mq9Error as exc:
            text = explain(exc, operation=self.name, address=address, own=policy.agent_mailbox)
            raise OperationError(prefixed(text, policy)) from exc
        except ValueError as exc:  # a valid input it could not take (a derived name too long)
            # The model reads a tool error and goes on: neither a graph run nor an MCP call
            # ends on it. The log keeps the traceback, in case it was a bug after all; any
            # other exception is one, and still raises (mq9-mcp logs it and keeps serving).
            log.error("mq9 tool %s could not take its input", self.name, exc_info=True)
            raise OperationError(prefixed(unexpected(self.name, exc), policy)) from exc
        # What the client noticed of this mailbox's log (lost or split by the broker)
        warning = getattr(client, "warnings", {}).get(address)
        if warning:
            outcome.content["warning"] = warning
        for key in ADVICE:
            if key in outcome.content:
                outcome.content[key] = prefixed(outcome.content[key], policy)
        outcome.fit(policy.max_answer_chars, policy.max_payload_chars)
        return outcome


# Every tool's name, as its description is keyed (schemas.py, calls.py, wake.py): the catalog
# names no other (tests/platform/operations/test_catalog_modules.py). Kept here, not read from the
# catalog, which is made of ``Operation``s: a tool named in a text the model reads (a
# description, a next step, a hint), as a word.
TOOL_NAMES = (*DESCRIPTIONS, *calls.DESCRIPTIONS, *wake.DESCRIPTIONS)
_TOOL_NAMES = re.compile(r"\b(?:" + "|".join(TOOL_NAMES) + r")\b")


def prefixed(text: str, policy: ToolPolicy | ToolConfig | None) -> str:
    """``text`` with every tool it names under its name for ``policy`` (its tool_prefix)."""
    prefix = policy.tool_prefix if policy is not None else ""
    return _TOOL_NAMES.sub(lambda found: prefix + found[0], text) if prefix else text
