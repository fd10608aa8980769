"""``ToolConfig``: the settings of the mq9 tools, declared and validated in this one place.

``Mq9Toolkit`` is built on this model and ``mq9-mcp`` generates a flag from each field
(``--agent-mailbox`` for ``agent_mailbox``, its description the flag's help), so both refuse the
same values in the same words. What one agent remembers while it works is ``ToolPolicy``'s.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mq9_wire.protocol import MAX_SECONDS, QUERY_CAP, check_group_name, is_valid_address
from mq9_wire.protocol.errors import Mq9Error

from ..a2a.shapes import CardJson
from ..groups.leases import DEFAULT_LEASE_TTL, MIN_LEASE_TTL, is_reserved
from .schemas import MAX_TOOL_WAIT_MS

_ADDRESS = "lowercase letters, digits and dots"
# MCP and every provider take tool names of [A-Za-z0-9_-], at most 64 long (the longest of
# ours, agent_unregister, is 16).
_PREFIX = re.compile(r"[A-Za-z0-9_-]{0,48}")
# Gemini takes a function name that starts with a letter or "_" only (its FunctionDeclaration).
_NAME_START = re.compile(r"[A-Za-z_]")

# The longest one tool call of mq9-mcp waits unless its operator says (``wait_cap_ms``): under
# the 5 s after which openai-agents' and google-adk's MCP clients give up on a call by default.
# A LangChain toolkit's call runs in the agent's own process: it waits as long as asked.
MCP_WAIT_CAP_MS = 3000


def unknown_option(owner: str, name: str, known: Iterable[str]) -> TypeError:
    """The error for an option ``owner`` does not have, naming the nearest it has: a misspelt
    safety option (``read_onyl``) must not leave the tools unrestricted without a word."""
    known = sorted(known)
    nearest = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"did you mean {nearest[0]!r}?" if nearest else f"its options: {', '.join(known)}"
    return TypeError(f"{owner} has no option {name!r}: {hint}")


class ToolConfig(BaseModel):
    """What the tools let a model do, and the knobs a developer pins instead of the model.

    Whatever the allow-list, no address under the library's reserved root (``mq9``, where the
    consumer-group leases live) is ever usable."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    allowed_mailboxes: tuple[str, ...] | None = Field(
        default=None,
        description="address prefixes (comma-separated) the tools may touch as mailboxes and "
        "as agent names ('team' allows team and team.x), besides agent_mailbox and the "
        "mailboxes the model creates; none given: all, an empty list: only those",
    )
    read_only: bool = Field(
        default=False,
        description="only agent_discover, query_messages and a fetch_messages that takes nothing",
    )
    max_payload_chars: int = Field(
        default=4000,
        ge=1,
        description="what other agents wrote (payloads, keys, tags, agent cards) is cut to this "
        "many characters for the model, with a note saying so",
    )
    max_answer_chars: int = Field(
        default=9000,
        ge=1000,
        description="the budget of everything a model reads in one tool answer or inbox "
        "message, in characters of its JSON (as read: a control character counts six): each "
        "message, agent or call gets its share (cut, and marked so) before the last ones are "
        "left for the next call, with a note saying so",
    )
    default_group: str = Field(
        default="default", description="the consumer group fetch_messages and ack_messages use"
    )
    agent_mailbox: str | None = Field(
        default=None,
        description="this agent's own mailbox: the mailbox arguments of fetch, ack, query and "
        "delete and agent_register's name default to it, the descriptions name it (as reply_to)",
    )
    agent_card: CardJson | None = Field(
        default=None,
        description="extra A2A AgentCard fields agent_register publishes (a JSON object: "
        'version, provider, skills as [{"id", "name", "description", "tags"}], ...)',
    )
    deliver: Literal["earliest", "latest"] = Field(
        default="earliest",
        description="where the consumer group starts the first time it reads a mailbox: "
        "everything stored, or from the newest stored message on",
    )
    num_msgs: int = Field(default=10, ge=1, le=QUERY_CAP, description="messages per fetch")
    discover_by: Literal["semantic", "text"] = Field(
        default="semantic",
        description="how agent_discover searches: by meaning (ranks every agent) or by "
        "full-text keywords (only agents holding a query word)",
    )
    discover_limit: int = Field(
        default=10, ge=1, le=100, description="agents per agent_discover search"
    )
    discover_rerank: bool = Field(
        default=False,
        description="semantic agent_discover reads the whole registry (up to 2,000 agents) and "
        "ranks it here, with this process's embedding model and shared words, instead of the "
        "broker's search (RobustMQ's is English-only): needs an embedding extra",
    )
    worker: str | None = Field(
        default=None,
        description="this agent's name among the competing workers of the consumer group "
        "(none: the group's one reader); leases keep two live workers from getting the same "
        "message, and a restarted worker under its old name takes back what it held",
    )
    lease_ttl: int = Field(
        default=DEFAULT_LEASE_TTL,
        ge=MIN_LEASE_TTL,
        le=MAX_SECONDS,
        description="with worker: seconds a worker may hold a message before another takes it "
        "over (longer than handling one takes)",
    )
    calls: bool = Field(
        default=False,
        description="add the agent-call tools: call_agent, check_call, answer_call, "
        "cancel_call, list_calls (A2A tasks over mq9)",
    )
    reply_mailbox: str | None = Field(
        default=None,
        description="where the call tools' results wait (default '<agent_mailbox>.calls', else "
        "a private mailbox): a restarted agent with the same one picks up its calls",
    )
    run_groups: tuple[str, ...] = Field(
        default=(),
        description="consumer groups (comma-separated) a LangChain run may name as its group "
        "(in its context or configurable) instead of default_group; none: a run reads with "
        "default_group only, so a graph's caller cannot read another service's group",
    )
    run_workers: tuple[str, ...] = Field(
        default=(),
        description="worker names (comma-separated) a LangChain run may name as its worker "
        "instead of worker; none: a run reads as the toolkit's worker only, so a graph's "
        "caller cannot take over another worker's leases",
    )
    wait_cap_ms: int | None = Field(
        default=None,
        ge=0,
        le=MAX_TOOL_WAIT_MS,
        description="the longest one tool call waits, in ms (fetch_messages' max_wait_ms, the "
        "call tools' wait_seconds): a call asking more answers then, saying to call again, and "
        f"the descriptions name it; none: {MCP_WAIT_CAP_MS} in mq9-mcp (MCP clients such as "
        f"openai-agents' and google-adk's give up after 5 s), {MAX_TOOL_WAIT_MS} in Mq9Toolkit. "
        "Raise it only for MCP clients whose timeout is longer",
    )
    tool_prefix: str = Field(
        default="",
        description="put before every tool name, e.g. 'mq9mcp_' for mq9mcp_send_message, where "
        "another server's tools have the same names (not 'mq9_': RobustMQ's own MCP server "
        "names its tools mq9_send_message, ...)",
    )

    @model_validator(mode="before")
    @classmethod
    def _known_options(cls, values: Any) -> Any:
        # A TypeError, as for any unknown keyword argument: pydantic passes it on unchanged,
        # without the input values (which may hold a password) that its own errors repeat.
        if isinstance(values, dict):
            for name in values:
                if name not in cls.model_fields:
                    raise unknown_option(cls.__name__, name, cls.model_fields)
        return values

    @field_validator("allowed_mailboxes", mode="before")
    @classmethod
    def _prefixes(cls, value: Any) -> Any:
        if value is None:
            return None
        given = value.split(",") if isinstance(value, str) else list(value)
        prefixes = tuple(p.strip().rstrip(".") for p in given if p.strip().rstrip("."))
        if isinstance(value, str) and not prefixes:
            raise ValueError("no prefix given")
        bad = [p for p in prefixes if not is_valid_address(p) or is_reserved(p)]
        if bad:
            raise ValueError(f"{bad[0]!r} is not a mailbox address prefix ({_ADDRESS})")
        return prefixes

    @field_validator("run_groups", "run_workers", mode="before")
    @classmethod
    def _run_names(cls, value: Any, info: Any) -> Any:
        if isinstance(value, str):  # a command line's comma-separated list
            value = [n for n in value.split(",") if n.strip()]
        given = list(value or ())
        names = tuple(n.strip() for n in given if isinstance(n, str) and n.strip())
        if len(names) != len(given):
            raise ValueError(f"{info.field_name} must be non-empty names")
        if info.field_name == "run_groups":
            for name in names:
                try:
                    check_group_name(name)
                except Mq9Error as exc:
                    raise ValueError(exc.message) from None
        return names

    @field_validator("agent_mailbox", "reply_mailbox")
    @classmethod
    def _address(cls, value: str | None, info: Any) -> str | None:
        if value is not None and (not is_valid_address(value) or is_reserved(value)):
            raise ValueError(
                f"{info.field_name} {value!r} is not a mailbox address ({_ADDRESS}, e.g. "
                "'agent.me')"
            )
        return value

    @field_validator("agent_card", mode="before")
    @classmethod
    def _card(cls, value: Any) -> Any:
        if isinstance(value, str):  # JSON text, as a command line gives it
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise ValueError(f"not JSON: {exc}") from None
        if value is not None and not isinstance(value, dict):
            raise ValueError("agent_card must be a JSON object of A2A AgentCard fields")
        return value

    @field_validator("default_group")
    @classmethod
    def _group(cls, value: str) -> str:
        try:
            return check_group_name(value)
        except Mq9Error as exc:
            raise ValueError(exc.message) from None

    @field_validator("worker")
    @classmethod
    def _worker(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("worker must be a non-empty name, or None for a group's one reader")
        return value

    @field_validator("tool_prefix")
    @classmethod
    def _tool_prefix(cls, value: str) -> str:
        if not _PREFIX.fullmatch(value) or (value and not _NAME_START.match(value)):
            raise ValueError(
                f"tool_prefix {value!r}: at most 48 letters, digits, '_' and '-', starting with "
                "a letter or '_' (e.g. 'mq9mcp_')"
            )
        return value
