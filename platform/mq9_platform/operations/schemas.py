"""What a model sees of the mq9 operations: their input models, descriptions and JSON schemas.

Every tool is read by the model on every step of every agent run, so this text is kept short,
and its schemas are safe under every provider's strict mode:

* no open object anywhere (a JSON payload, a card's details are JSON *text*);
* no ``anyOf`` null wrapper: an optional argument has a neutral value of its own type that
  means "not given" (``""``, ``0``, ``[]``), which a strict-mode model, made to give every
  argument, can pass as well; ``null`` is taken as "not given" too (crewai-tools' MCP adapter
  sends it for every argument a call leaves out, and llama-index and crewai show models each
  optional argument as "value or null");
* what Gemini's function declarations refuse (a subset of OpenAPI 3.0's schema: an enum holds
  non-empty strings only, HTTP 400 otherwise) is never written: an enum whose neutral value
  is ``""`` lists the other values only, and ``""`` is still taken;
* no bound a provider may drop (Gemini keeps none) is relied on: the pydantic models below
  check every bound again and answer "Invalid arguments: ..." when one is broken;
* no pydantic titles, no defaults (a description says what the neutral value means);
* no wait a default MCP client cannot hold: a wait's description names the toolkit's cap
  (``ToolConfig.wait_cap_ms``; ``{cap_ms}`` and ``{cap_s}`` in a description are filled in).

Knobs a model rarely needs (the consumer group, where a group starts, messages per fetch, how
discovery searches, the agent card's extra fields) are ``ToolConfig``'s, not arguments. The
agent's own mailbox is written into the descriptions and schemas built for a toolkit.
"""

from __future__ import annotations

import functools
import json
from typing import Annotated, ClassVar, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator, model_validator

from mq9_wire.protocol import MAX_DELAY_SECONDS, QUERY_CAP

from ..a2a.shapes import JsonObject, JsonValue

MAX_TOOL_WAIT_MS = 120_000
# In a description, the longest one call of the toolkit waits (``ToolConfig.wait_cap_ms``), in
# milliseconds and in whole seconds (filled in by ``input_schema``).
CAP_MS, CAP_S = "{cap_ms}", "{cap_s}"
# The longest idempotency key a tool takes: 256 UTF-8 bytes at most, as the client takes
# (a key derived from a tool call is 35 characters: run_context.py)
MAX_IDEMPOTENCY_KEY = 64

# A JSON object may be given as text (what the schema says, and all a strict-mode model can
# produce) or, by code calling a tool directly, as a dict.
JsonText = Annotated[str | JsonObject, WithJsonSchema({"type": "string"})]
# A JSON Schema, with the keywords pydantic writes (the tools' input schemas are these, lean).
JsonSchema: TypeAlias = JsonObject


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Fields that default to the toolkit's agent_mailbox (their neutral value is ""): the
    # schema requires them when the toolkit has none, and names the default when it has one.
    own_fields: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _null_is_not_given(cls, data: object) -> object:
        """An optional argument given as ``null`` is one not given (crewai-tools' MCP adapter
        fills every argument a call leaves out with it); a required one stays, and is refused
        in the usual words."""
        if isinstance(data, dict) and None in data.values():
            fields = cls.model_fields
            return {
                name: value
                for name, value in data.items()
                if value is not None or name not in fields or fields[name].is_required()
            }
        return data


class _MailboxInput(_Input):
    # A mail_address argument needs no words (the tool's description says which mailbox);
    # the schema adds "default: <agent_mailbox>" where the toolkit has one.
    own_fields = ("mail_address",)
    mail_address: str = ""


class AgentRegisterInput(_Input):
    own_fields = ("name",)
    name: str = Field(default="", description="Your name and mailbox address.")
    capabilities: str = Field(min_length=1, description="What you do, as others would search it.")


class AgentDiscoverInput(_Input):
    query: str = Field(
        default="",
        # RobustMQ's own search embeds with an English model; the bundled broker's and the
        # client's own ranking read 16 languages (docs/discovery.md)
        description="Skill needed; in English on RobustMQ; '' lists all.",
    )


class CreateMailboxInput(_Input):
    name: str = Field(default="", description="'' = private, unguessable.")
    ttl: int = Field(default=0, ge=0, description="Seconds to live; 0 = forever.")


class SendMessageInput(_Input):
    mail_address: str = Field(min_length=1)
    payload: JsonText = Field(description="Text, or JSON object text.")
    priority: Literal["normal", "urgent", "critical"] = "normal"
    key: str = Field(default="", description="A newer message with this key replaces it.")
    tags: list[str] = Field(default_factory=list)
    delay: int = Field(default=0, ge=0, le=MAX_DELAY_SECONDS, description="Seconds until readable.")
    ttl: int = Field(default=0, ge=0, description="Seconds to live; 0 = forever.")
    # A send with a key is stored once, however often it is retried (within the broker's
    # window); '' = the LangChain tool call's own key (tools.py). No words for the model: the
    # name says it, and the eight tools' token budget is tight (bench/tokens.py).
    idempotency_key: str = Field(default="", max_length=MAX_IDEMPOTENCY_KEY)


class FetchMessagesInput(_MailboxInput):
    max_wait_ms: int = Field(
        default=500,
        ge=0,
        le=MAX_TOOL_WAIT_MS,
        description="Wait up to this long for one (max {cap_ms}).",
    )


class AckMessagesInput(_MailboxInput):
    msg_id: int = Field(ge=0)
    set_aside: str = Field(default="", description="Set it aside instead, saying why.")


class QueryMessagesInput(_MailboxInput):
    key: str = Field(default="", description="Only the newest with this key.")
    tags: list[str] = Field(default_factory=list)  # any of these
    # Both described by the tool (a page, and its size) and by each answer (the exact calls).
    from_id: int = Field(default=0, ge=0)
    limit: int = Field(default=0, ge=0, le=QUERY_CAP)  # 0: a page of 10


class DeleteMessageInput(_MailboxInput):
    msg_id: int = Field(ge=0)


class AgentUnregisterInput(_Input):
    own_fields = ("name",)
    name: str = Field(default="", description="The agent's registered name.")


class AgentReportInput(_Input):
    own_fields = ("name",)
    name: str = Field(default="", description="The agent's registered name.")
    status: str = Field(min_length=1, description="A word or two, e.g. 'busy', 'idle'.")
    details: JsonText = Field(default="", description="More fields, as a JSON object text.")

    @field_validator("details")
    @classmethod
    def _an_object(cls, value: str | JsonObject) -> JsonObject:
        parsed: JsonValue = value
        if isinstance(value, str):
            try:
                parsed = json.loads(value) if value.strip() else {}
            except ValueError:
                parsed = None
        if not isinstance(parsed, dict):
            raise ValueError("details must be a JSON object")
        return parsed


# -- descriptions ------------------------------------------------------------------------------

DESCRIPTIONS = {
    "agent_register": "Register this agent (and its mailbox) once, at start.",
    "agent_discover": "Find agents by what they do, best first, with mailboxes for send_message.",
    "create_mailbox": "Create a mailbox; returns its address.",
    "send_message": "Leave a message; recipients may be offline. Take mailboxes from "
    "agent_discover, never guess.{reply}",
    "fetch_messages": "Take waiting messages, most urgent first; then ack_messages the last "
    "msg_id handled.",
    "ack_messages": "Confirm fetched messages handled, through msg_id.",
    "query_messages": "Read without taking, e.g. to check whether anyone replied; oldest first.",
    "delete_message": "Delete one message for good.",
    "agent_unregister": "Remove an agent from the registry (this agent when it stops, or "
    "before registering a changed card).",
    "agent_report": "Report an agent's status (busy, idle, load) to the broker's operators. "
    "agent_discover does not show it.",
}

_REPLY_TO_MINE = " For an answer, put reply_to: '{mailbox}' in a JSON payload."
_REPLY_TO_ANY = (
    " For an answer, put reply_to (your mailbox, from create_mailbox) in a JSON payload."
)


def tool_description(text: str, agent_mailbox: str | None = None) -> str:
    """A tool's description ``text`` (one of ``DESCRIPTIONS``) for a toolkit whose own mailbox
    is ``agent_mailbox``."""
    reply = _REPLY_TO_MINE.format(mailbox=agent_mailbox) if agent_mailbox else _REPLY_TO_ANY
    return text.format(reply=reply)


# -- schemas -----------------------------------------------------------------------------------

_KEPT = ("type", "enum", "items", "description")


def _lean(spec: JsonSchema, cap_ms: int) -> JsonSchema:
    """Only the keywords a model needs, in new containers (the cached schema stays whole),
    a wait's words naming the cap ``cap_ms``."""
    lean = {key: spec[key] for key in _KEPT if key in spec}
    if "description" in lean:
        text = lean["description"]
        lean["description"] = text.replace(CAP_MS, str(cap_ms)).replace(CAP_S, str(cap_ms // 1000))
    if "enum" in lean:
        lean["enum"] = list(lean["enum"])
    if "items" in lean:
        lean["items"] = _lean(lean["items"], cap_ms)
    return lean


@functools.cache
def _pydantic_schema(model: type[_Input]) -> JsonSchema:
    return model.model_json_schema()  # pydantic builds it anew on every call


def input_schema(
    model: type[_Input], agent_mailbox: str | None = None, wait_cap_ms: int = MAX_TOOL_WAIT_MS
) -> JsonSchema:
    """The JSON schema a model sees for ``model``, a new dict each time: the same for every
    provider and for MCP (``wait_cap_ms``: the longest one call waits, named where a wait
    is asked)."""
    raw = _pydantic_schema(model)
    required = list(raw.get("required", ()))
    properties = {}
    for name, spec in raw["properties"].items():
        lean = _lean(spec, wait_cap_ms)
        if name in model.own_fields:
            if agent_mailbox:
                lean["description"] = f"Default: '{agent_mailbox}'."
            else:
                required.append(name)
        properties[name] = lean
    schema: JsonSchema = {"type": "object", "properties": properties}
    required.sort(key=list(properties).index)
    if required:
        schema["required"] = required
    return schema
