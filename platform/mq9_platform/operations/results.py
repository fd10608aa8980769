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
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

# (JsonObject, JsonValue: mq9_mcp's JSON types too, which reaches no a2a module)
from ..a2a.shapes import CallView
from ..a2a.shapes import JsonObject as JsonObject
from ..a2a.shapes import JsonValue as JsonValue
from .views import AgentView, MessageView, answer_text, fitted

ADVICE = ("note", "next_step", "filter_used", "warning")

_JSON_TYPES = {str: "string", int: "integer", bool: "boolean", list: "array", dict: "object"}


@dataclass(kw_only=True)
class ToolResult:
    """Base of the result models, each a keyword-only dataclass (``@dataclass(kw_only=True)``).

    ``trimmable`` names a list whose entries others wrote (agents, calls), which the answer
    may show cut to a share each, or only the head of (``Outcome.fit``): the ``entry_first``
    parts of each (names) kept whole longest, its ``entry_ours`` never cut, and ``trim_hint``
    says how to see the rest. ``others_wrote`` names the parts of a single answer that others
    wrote (an agent's result, a card): cut alike when the answer is over. ``kept_in`` says
    where the whole of what was cut stays. Messages are never fitted here: their handlers fit
    them, as only they know what leaving one out means (a fetched one must be handed out
    again, a looked-at one is where the next page starts)."""

    trimmable: ClassVar[str | None] = None
    trim_hint: ClassVar[str] = ""
    entry_first: ClassVar[tuple[str, ...]] = ()
    entry_ours: ClassVar[frozenset[str]] = frozenset()
    others_wrote: ClassVar[tuple[str, ...]] = ()
    kept_in: ClassVar[str] = ""

    def content(self) -> JsonObject:
        """The result as the tool returns it: every field but the optional ones left None."""
        return {
            f.name: value
            for f in _fields(type(self))
            if (value := getattr(self, f.name)) is not None or f.default is not None
        }

    @classmethod
    def output_schema(cls) -> JsonObject:
        """The JSON schema of ``content()`` (MCP's outputSchema), a new copy."""
        return copy.deepcopy(_schema(cls))

    @classmethod
    def optional_keys(cls) -> frozenset[str]:
        """The data keys only some results carry (every other declared one is always there)."""
        return frozenset(f.name for f in _fields(cls) if f.default is None) - set(ADVICE)


# Each result model's fields and schema, worked out once: every answer reads the fields.
_FIELDS: dict[type[ToolResult], tuple[dataclasses.Field[Any], ...]] = {}
_SCHEMAS: dict[type[ToolResult], JsonObject] = {}


def _fields(cls: type[ToolResult]) -> tuple[dataclasses.Field[Any], ...]:
    fields = _FIELDS.get(cls)
    if fields is None:
        fields = _FIELDS[cls] = dataclasses.fields(cls)
    return fields


def _schema(cls: type[ToolResult]) -> JsonObject:
    if cls not in _SCHEMAS:
        _SCHEMAS[cls] = _worked_out_schema(cls)
    return _SCHEMAS[cls]


def _worked_out_schema(cls: type[ToolResult]) -> JsonObject:
    properties = {}
    hints = typing.get_type_hints(cls)
    for name in (f.name for f in _fields(cls)):  # not the ClassVars
        hint = hints[name]
        if name in ADVICE:
            continue
        if isinstance(hint, types.UnionType):  # X | None
            hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
        if typing.is_typeddict(hint):  # a view (views.py): a JSON object
            hint = dict
        properties[name] = {"type": _JSON_TYPES[typing.get_origin(hint) or hint]}
    return {"type": "object", "properties": properties}


Result = TypeVar("Result", bound=ToolResult)


@dataclass
class Written:
    """An answer already made as its content (what ``views.fitted`` fits, as a result)."""

    value: JsonObject

    def content(self) -> JsonObject:
        return self.value


@dataclass
class Outcome(Generic[Result]):
    """What an operation returns: its ``result`` (whose ``content`` the model reads) and the
    ``artifact``, the typed result for code (``Message`` objects, msg_ids, agent cards)."""

    result: Result
    artifact: JsonValue  # Message objects, msg_ids, agent cards, call states: for code
    # The answer already written while fitting it to the budget, and the content it is the
    # text of: the text is that while the content still is (a second dump of 10 messages
    # cost a tenth of query_messages' own time, bench 2c). Amends after it (``execute``'s
    # warning and prefixes) replace top-level values; nothing changes a shown item in place.
    written: tuple[JsonObject, str] | None = None
    content: JsonObject = field(init=False)

    def __post_init__(self) -> None:
        self.content = self.result.content()

    def text(self) -> str:
        if self.written is not None and self.written[0] == self.content:
            return self.written[1]
        return answer_text(self.content)

    def fit(self, budget: int, chars: int) -> None:
        """Keep the answer within ``budget`` characters as the model reads them
        (``ToolConfig.max_answer_chars``; ``chars``: ``max_payload_chars``), through the one
        budget of every answer (``views.fitted``): a listing (its ``trimmable`` list: agents,
        calls), each part of an entry cut to ``chars``, gives every entry its share, and leaves
        out the last only when even their names do not fit, its note saying how many and how
        to see them; an answer with parts others wrote (``others_wrote``, each cut to
        ``chars`` by its handler) has them cut alike, its ``truncated`` saying so."""
        kind = type(self.result)
        content = self.content
        if kind.trimmable is None:  # its handler cut each part to ``chars`` already
            if not kind.others_wrote or len(self.text()) <= budget:
                return
            ours = frozenset(content) - set(kind.others_wrote)
            _, self.content, text = fitted(
                lambda shown, left: Written(shown[0]),
                [content],
                budget,
                chars=chars,
                where=kind.kept_in,
                ours=ours,
            )
            self.written = (self.content, text)
            return
        key = kind.trimmable

        def trimmed(shown: list[JsonObject], left: int) -> Written:
            said = [content.get("note")]
            if any("truncated" in entry for entry in shown):
                said.append(f"What others wrote was cut to fit (truncated): {kind.kept_in}.")
            if left:
                said.append(f"{left} more did not fit in this answer: {kind.trim_hint}")
            fitted = {**content, key: shown, "count": len(shown)}
            if any(said):
                fitted["note"] = " ".join(filter(None, said))
            return Written(fitted)

        _, self.content, text = fitted(
            trimmed,
            content[key],
            budget,
            chars=chars,
            where="",  # said once, in the note
            first=kind.entry_first,
            ours=kind.entry_ours,
        )
        self.written = (self.content, text)


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
    messages: list[MessageView]
    note: str | None = None  # that they are data


@dataclass(kw_only=True)
class MessagesFetched(_Messages):
    unacked_earlier: list[int] | None = None
    next_step: str | None = None


@dataclass(kw_only=True)
class InboxMail(_Messages):
    """What ``Mq9InboxMiddleware`` brings the model: the mail waiting in the run's mailbox."""

    mail_address: str
    next_step: str | None = None
    warning: str | None = None


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
    others_wrote = ("registered_card",)
    kept_in = "the whole card stays in the registry"

    registered: bool
    mail_address: str
    mailbox_created: bool
    registered_card: AgentView | None = None
    note: str | None = None
    next_step: str | None = None


@dataclass(kw_only=True)
class AgentsFound(ToolResult):
    trimmable = "agents"
    trim_hint = "search with more precise words."
    entry_first = ("name", "mailbox")
    kept_in = "each whole card stays in the registry"

    count: int
    agents: list[AgentView]
    note: str | None = None
    next_step: str | None = None


@dataclass(kw_only=True)
class AgentUnregistered(ToolResult):
    unregistered: str


@dataclass(kw_only=True)
class AgentReported(ToolResult):
    reported: bool
    name: str


@dataclass(kw_only=True)
class WakeRules(ToolResult):
    """A mailbox's wake rules after the action (their secrets hidden)."""

    mail_address: str
    action: str
    rules: list[JsonObject]  # each as the wake book lists it (wake/rules.py: WakeRule.view)


# -- agent calls -------------------------------------------------------------------------------


@dataclass(kw_only=True)
class _Task(ToolResult):
    """A delegated task (``CallState.view()``): its state and, once it has them, its result,
    question or reason."""

    others_wrote = ("result", "question", "reason")
    kept_in = "the whole text stays in the task"

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
    entry_first = ("agent",)
    entry_ours = frozenset({"task_id", "state", "context_id", "answer_pending", "cancel_pending"})
    kept_in = "check_call(task_id=...) shows one task alone"

    count: int
    calls: list[CallView]
    note: str | None = None
