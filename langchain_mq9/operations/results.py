"""What each tool returns, declared once as a dataclass: ``content()`` is the JSON object the
tool returns (its MCP structuredContent) and ``output_schema()`` its MCP outputSchema.

A field left at its default ``None`` is absent from the content. The words for the model
(``ADVICE``: what to do next, a note on data from others, which one filter a QUERY used) are
left out of the schema, which is for programs and declares each data key's JSON type and nothing
more (no ``required``, no ``items``): MCP clients receive it in every tools/list.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

ADVICE = ("note", "next_step", "filter_used", "warning")

_JSON_TYPES = {str: "string", int: "integer", bool: "boolean", list: "array", dict: "object"}


@dataclass(kw_only=True)
class ToolResult:
    """Base of the result models, each a keyword-only dataclass (``@dataclass(kw_only=True)``).

    ``trimmable`` names a list the answer may carry only the head of (``Outcome.fit``), and
    ``trim_hint`` says how to see the rest. Messages are never trimmed here: their handlers fit
    them, as only they know what leaving one out means (a fetched one must be handed out
    again, a looked-at one is where the next page starts)."""

    trimmable: ClassVar[str | None] = None
    trim_hint: ClassVar[str] = ""

    def content(self) -> dict[str, Any]:
        """The result as the tool returns it: every field but the optional ones left None."""
        return {
            f.name: value
            for f in _fields(type(self))
            if (value := getattr(self, f.name)) is not None or f.default is not None
        }

    @classmethod
    def output_schema(cls) -> dict[str, Any]:
        """The JSON schema of ``content()`` (MCP's outputSchema), a new copy."""
        return copy.deepcopy(_schema(cls))

    @classmethod
    def optional_keys(cls) -> frozenset[str]:
        """The data keys only some results carry (every other declared one is always there)."""
        return frozenset(f.name for f in _fields(cls) if f.default is None) - set(ADVICE)


# Each result model's fields and schema, worked out once: every answer reads the fields.
_FIELDS: dict[type[ToolResult], tuple[dataclasses.Field[Any], ...]] = {}
_SCHEMAS: dict[type[ToolResult], dict[str, Any]] = {}


def _fields(cls: type[ToolResult]) -> tuple[dataclasses.Field[Any], ...]:
    fields = _FIELDS.get(cls)
    if fields is None:
        fields = _FIELDS[cls] = dataclasses.fields(cls)
    return fields


def _schema(cls: type[ToolResult]) -> dict[str, Any]:
    if cls not in _SCHEMAS:
        _SCHEMAS[cls] = _worked_out_schema(cls)
    return _SCHEMAS[cls]


def _worked_out_schema(cls: type[ToolResult]) -> dict[str, Any]:
    properties = {}
    hints = typing.get_type_hints(cls)
    for name in (f.name for f in _fields(cls)):  # not the ClassVars
        hint = hints[name]
        if name in ADVICE:
            continue
        if isinstance(hint, types.UnionType):  # X | None
            hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
        properties[name] = {"type": _JSON_TYPES[typing.get_origin(hint) or hint]}
    return {"type": "object", "properties": properties}


Result = TypeVar("Result", bound=ToolResult)


# json.dumps makes an encoder per call when given options (~0.6 µs): one made once instead.
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def answer_text(content: dict[str, Any]) -> str:
    """A tool's answer as the model reads it: compact JSON."""
    return _COMPACT.encode(content)


def most_that_fit(size: Callable[[int], int], total: int, budget: int) -> int:
    """How many of ``total`` items (at least one, when there is one) an answer holds when the
    answer with the first ``n`` is ``size(n)`` characters and must stay within ``budget``: an
    answer never stops in the middle of an item, and an item larger than the budget alone is
    still given whole."""
    if size(total) <= budget:  # the common case: everything fits
        return total
    low, high = min(total, 1), total - 1
    while low < high:  # size grows with n
        middle = (low + high + 1) // 2
        if size(middle) <= budget:
            low = middle
        else:
            high = middle - 1
    return low


@dataclass
class Outcome(Generic[Result]):
    """What an operation returns: its ``result`` (whose ``content`` the model reads) and the
    ``artifact``, the typed result for code (``Message`` objects, msg_ids, agent cards)."""

    result: Result
    artifact: Any
    # The answer already written while fitting it to the budget, and the content it is the
    # text of: the text is that while the content still is (a second dump of 10 messages
    # cost a tenth of query_messages' own time, bench 2c). Amends after it (``execute``'s
    # warning and prefixes) replace top-level values; nothing changes a shown item in place.
    written: tuple[dict[str, Any], str] | None = None
    content: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.content = self.result.content()

    def text(self) -> str:
        if self.written is not None and self.written[0] == self.content:
            return self.written[1]
        return answer_text(self.content)

    def fit(self, budget: int) -> None:
        """Keep the answer within ``budget`` characters (``ToolConfig.max_answer_chars``) by
        carrying only the head of its ``trimmable`` list (agents best first, calls), whole
        items, at least one; its note says how many were left out and how to see them."""
        key = type(self.result).trimmable
        if key is None or len(self.text()) <= budget:
            return
        content, items = self.content, self.content[key]

        def trimmed(shown: int) -> dict[str, Any]:
            left = len(items) - shown
            said = f"{left} more did not fit in this answer: {type(self.result).trim_hint}"
            note = " ".join(filter(None, [content.get("note"), said]))
            return {**content, key: items[:shown], "count": shown, "note": note}

        shown = most_that_fit(lambda n: len(answer_text(trimmed(n))), len(items), budget)
        self.content = trimmed(shown)


# -- mailboxes and messages --------------------------------------------------------------------


@dataclass(kw_only=True)
class MailboxCreated(ToolResult):
    mail_address: str
    next_step: str


@dataclass(kw_only=True)
class MessageSent(ToolResult):
    sent: bool
    msg_id: int
    note: str | None = None


@dataclass(kw_only=True)
class _Messages(ToolResult):
    count: int
    messages: list[dict[str, Any]]
    note: str | None = None  # that they are data


@dataclass(kw_only=True)
class MessagesFetched(_Messages):
    unacked_earlier: list[int] | None = None
    next_step: str | None = None


@dataclass(kw_only=True)
class MessagesAcked(ToolResult):
    confirmed: list[int]
    still_unacked: list[int] | None = None
    next_step: str | None = None  # where a message set aside went


@dataclass(kw_only=True)
class MessagesQueried(_Messages):
    filter_used: str | None = None
    next_step: str | None = None


@dataclass(kw_only=True)
class MessageDeleted(ToolResult):
    deleted: bool
    msg_id: int


# -- the agent registry ------------------------------------------------------------------------


@dataclass(kw_only=True)
class AgentRegistered(ToolResult):
    registered: bool
    mail_address: str
    mailbox_created: bool
    registered_card: dict[str, Any] | None = None
    note: str | None = None
    next_step: str | None = None


@dataclass(kw_only=True)
class AgentsFound(ToolResult):
    trimmable = "agents"
    trim_hint = "search with more precise words."

    count: int
    agents: list[dict[str, Any]]
    note: str | None = None
    next_step: str | None = None


@dataclass(kw_only=True)
class AgentUnregistered(ToolResult):
    unregistered: str


@dataclass(kw_only=True)
class AgentReported(ToolResult):
    reported: bool
    name: str


# -- agent calls -------------------------------------------------------------------------------


@dataclass(kw_only=True)
class _Task(ToolResult):
    """A delegated task (``CallState.view()``): its state and, once it has them, its result,
    question or reason."""

    task_id: str
    agent: str
    state: str
    context_id: str
    result: str | None = None
    question: str | None = None
    reason: str | None = None


@dataclass(kw_only=True)
class CallStarted(_Task):
    next_step: str | None = None
    note: str | None = None


@dataclass(kw_only=True)
class CallStatus(_Task):
    """A task already under way, whose answer or cancel may wait for the agent."""

    answer_pending: bool | None = None
    cancel_pending: bool | None = None
    next_step: str | None = None
    note: str | None = None


@dataclass(kw_only=True)
class CallsListed(ToolResult):
    trimmable = "calls"
    trim_hint = "ask for one state, e.g. 'input-required'."

    count: int
    calls: list[dict[str, Any]]
    note: str | None = None
