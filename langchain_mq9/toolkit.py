"""``Mq9Toolkit``: the mq9 tools over one shared ``Mq9Connection``, with the safety options."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

from langchain_core.tools import BaseTool, BaseToolkit
from pydantic import ConfigDict, Field, PrivateAttr

from .connection import Mq9Connection
from .leases import DEFAULT_LEASE_TTL, MIN_LEASE_TTL
from .operations import (
    DEFAULT_DISCOVER_LIMIT,
    DEFAULT_GROUP,
    DEFAULT_MAX_PAYLOAD_CHARS,
    DEFAULT_NUM_MSGS,
    DEFAULT_OPERATIONS,
    OPERATIONS,
    ToolPolicy,
)
from .redaction import redact, redact_options
from .tools import TOOL_CLASSES


def default_server() -> str | None:
    """The broker URL from the environment: ``MQ9_SERVER``, else ``NATS_URL``."""
    return os.environ.get("MQ9_SERVER") or os.environ.get("NATS_URL") or None


class Mq9Toolkit(BaseToolkit):
    """The eight mq9 tools for an agent, sharing lazily opened connections (one per event loop
    that calls, one for sync code; see ``connection.py``), never one per call.

    >>> toolkit = Mq9Toolkit(server="nats://localhost:4222")   # or "memory://" offline
    >>> agent = create_react_agent(llm, toolkit.get_tools())

    One toolkit is one reader of a consumer group: its ``fetch_messages`` hands each message
    out once, and its ``ack_messages`` confirms what its own fetches handed out; what was not
    acked is handed out again to whoever reads the group next (a restarted agent, under any
    toolkit). So give each agent its own toolkit, and take an agent's tools from one toolkit.
    Several agents sharing one mailbox as competing workers each set ``worker`` (a name unique
    among them): leases then keep them from getting the same message, and one that dies has
    its messages taken over after ``lease_ttl`` seconds (docs/groups.md).

    ``tools`` picks tools by name (``agent_unregister`` and ``agent_report`` are extra ones you
    can add); ``allowed_mailboxes`` limits the mailboxes and agent names the model may touch
    to these address prefixes (plus ``agent_mailbox`` and the mailboxes it creates; ``[]``:
    only those); ``read_only`` leaves only discover, query and a fetch that takes nothing;
    ``max_payload_chars`` cuts what other agents wrote (payloads, keys, tags, agent cards)
    before the model sees it (with a note). Close with ``await toolkit.aclose()``,
    ``toolkit.close()`` or a ``with`` block.

    Knobs a model rarely needs are pinned here, not tool arguments: ``agent_mailbox`` (this
    agent's own mailbox: the mailbox arguments of fetch, ack, query, delete and the name of
    agent_register default to it, and the descriptions name it, e.g. as the reply_to to use),
    ``agent_card`` (extra A2A card fields agent_register publishes: version, provider,
    skills, ...), ``default_group``, ``deliver`` (where the group starts the first time it reads
    a mailbox), ``num_msgs`` (messages per fetch), ``discover_by`` and ``discover_limit``.
    """

    server: str | None = Field(
        default=None, description="mq9 broker URL (nats://, tls://, memory://)"
    )
    client: Any = Field(default=None, description="An open Mq9Client to use instead of server")
    tools: Sequence[str] | None = Field(default=None, description="Tool names; default the eight")
    default_group: str = DEFAULT_GROUP
    worker: str | None = Field(
        default=None,
        description="This toolkit's name among the competing workers of a consumer group "
        "(default None: the group's one reader). A restarted worker that uses its old name "
        "takes back the messages it held.",
    )
    lease_ttl: int = Field(
        default=DEFAULT_LEASE_TTL,
        ge=MIN_LEASE_TTL,
        description="With worker: seconds a worker may hold a message before another takes it "
        "over (longer than handling one takes)",
    )
    agent_mailbox: str | None = Field(
        default=None,
        description="This agent's own mailbox: mailbox arguments default to it, descriptions "
        "name it (e.g. as the reply_to to give)",
    )
    agent_card: dict[str, Any] | None = Field(
        default=None,
        description="Extra A2A AgentCard fields agent_register publishes (version, provider, "
        "skills as [{id, name, description, tags}], ...)",
    )
    deliver: Literal["earliest", "latest"] = Field(
        default="earliest",
        description="Where a consumer group starts the first time it reads a mailbox: "
        "everything stored, or from the newest stored message on",
    )
    num_msgs: int = Field(default=DEFAULT_NUM_MSGS, ge=1, le=100, description="Per fetch")
    discover_by: Literal["semantic", "text"] = Field(
        default="semantic",
        description="How agent_discover searches: by meaning (semantic, ranks every agent) or "
        "full-text keywords (text, only agents holding a query word)",
    )
    discover_limit: int = Field(default=DEFAULT_DISCOVER_LIMIT, ge=1, le=100)
    allowed_mailboxes: Sequence[str] | None = None
    read_only: bool = False
    max_payload_chars: int = Field(default=DEFAULT_MAX_PAYLOAD_CHARS, ge=1)
    request_timeout: float = Field(default=5.0, gt=0)
    client_options: dict[str, Any] = Field(
        default_factory=dict,
        description="More Mq9Client options: user, password, token, creds, tls",
    )
    model_config = ConfigDict(arbitrary_types_allowed=True)

    _connection: Mq9Connection = PrivateAttr()
    _policy: ToolPolicy = PrivateAttr()

    def __repr_args__(self):
        # repr(), str(), logs and traces show the toolkit: never its secrets
        for name, value in super().__repr_args__():
            if name == "server" and isinstance(value, str):
                value = redact(value)
            elif name == "client_options":
                value = redact_options(value)
            yield name, value

    def model_post_init(self, context: Any) -> None:
        unknown = sorted(set(self.tools or ()) - set(OPERATIONS))
        if unknown:
            raise ValueError(
                f"unknown mq9 tool {unknown[0]!r}: choose from {', '.join(OPERATIONS)}"
            )
        if self.client is not None:
            if self.server is not None:
                raise ValueError("give server= or client=, not both")
            self._connection = Mq9Connection(client=self.client)
        else:
            server = self.server or default_server()
            if server is None:
                raise ValueError(
                    "Mq9Toolkit needs server= (e.g. 'nats://localhost:4222', or 'memory://' "
                    "for the in-process broker), client=, or MQ9_SERVER in the environment"
                )
            self.server = server
            self._connection = Mq9Connection(
                server, request_timeout=self.request_timeout, **self.client_options
            )
        self._policy = ToolPolicy(
            default_group=self.default_group,
            allowed_mailboxes=(
                None if self.allowed_mailboxes is None else tuple(self.allowed_mailboxes)
            ),
            read_only=self.read_only,
            max_payload_chars=self.max_payload_chars,
            agent_mailbox=self.agent_mailbox,
            agent_card=dict(self.agent_card) if self.agent_card is not None else None,
            deliver=self.deliver,
            num_msgs=self.num_msgs,
            discover_by=self.discover_by,
            discover_limit=self.discover_limit,
            worker=self.worker,
            lease_ttl=self.lease_ttl,
        )

    @property
    def connection(self) -> Mq9Connection:
        return self._connection

    @property
    def policy(self) -> ToolPolicy:
        return self._policy

    def get_tools(self) -> list[BaseTool]:
        names = self.tools if self.tools is not None else DEFAULT_OPERATIONS
        return [
            TOOL_CLASSES[name](connection=self._connection, policy=self._policy)
            for name in names
            if OPERATIONS[name].allowed(self._policy)
        ]

    async def aclose(self) -> None:
        await self._connection.aclose()

    def close(self) -> None:
        self._connection.close()

    async def __aenter__(self) -> Mq9Toolkit:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __enter__(self) -> Mq9Toolkit:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
