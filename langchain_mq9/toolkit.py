"""``Mq9Toolkit``: the mq9 tools over one shared ``Mq9Connection``, with the safety options."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, cast

from langchain_core.tools import BaseTool, BaseToolkit
from pydantic import ConfigDict, Field, PrivateAttr, SkipValidation, WithJsonSchema

from mq9_platform.client.api import Mq9ClientLike
from mq9_platform.client.client import Mq9Client
from mq9_platform.client.connection import Mq9Connection
from mq9_platform.operations.catalog import DEFAULT_OPERATIONS, OPERATIONS
from mq9_platform.operations.config import ToolConfig
from mq9_platform.operations.policy import ToolPolicy
from mq9_wire.nats_floor.redaction import redact, redact_options

from .tools import TOOL_CLASSES


class Mq9Toolkit(BaseToolkit, ToolConfig):
    """The mq9 tools for a LangChain or LangGraph agent: persistent mailboxes, an agent
    registry and (with ``calls=True``) agent-to-agent calls.

    >>> from langchain.agents import create_agent
    >>> toolkit = Mq9Toolkit(server="memory://", agent_mailbox="agent.me")  # nats://host:4222
    >>> agent = create_agent(model, toolkit.get_tools())

    ``get_tools()`` gives ``agent_register``, ``agent_discover``, ``create_mailbox``,
    ``send_message``, ``fetch_messages``, ``ack_messages``, ``query_messages`` and
    ``delete_message`` (``tools=[...]`` picks by name; ``agent_unregister`` and
    ``agent_report`` are extras). Each tool returns compact JSON for the model and the typed
    result as its artifact; a mistake comes back to the model as an error it can fix, never as
    an exception in your graph. Each tool's ``metadata`` carries MCP's hints (``readOnlyHint``,
    ``destructiveHint``): ``{t.name: True for t in tools if t.metadata.get("destructiveHint")}``
    is a human-in-the-loop ``interrupt_on``.

    Settings (each also an ``mq9-mcp`` flag): ``agent_mailbox`` (the agent's own mailbox, the
    default of the mailbox arguments), ``allowed_mailboxes`` (what the model may touch),
    ``read_only``, ``max_payload_chars`` and ``max_answer_chars`` (what one answer may hold),
    ``default_group``, ``worker`` and ``lease_ttl`` (competing workers on one mailbox),
    ``deliver``, ``num_msgs``, ``discover_by``, ``discover_limit``, ``discover_rerank`` (rank
    the registry here: docs/discovery.md), ``agent_card`` (what
    ``agent_register`` publishes), ``calls``, ``reply_mailbox``, ``tool_prefix``,
    ``wait_cap_ms`` (the longest one call waits; none: as asked, up to 120 s);
    docs/toolkit.md says what each does. Connect with ``server=`` (a URL, or ``MQ9_SERVER`` in
    the environment) or ``client=`` (an open ``Mq9Client``); one connection per event loop is
    shared by the tools.

    One run names its own agent: ``agent_mailbox``, ``group`` and ``worker`` in the run's
    context or config take the place of the toolkit's for that run, so one toolkit serves
    many users and threads (docs/langchain.md). A run only narrows what the tools touch: its
    mailbox is one ``allowed_mailboxes`` allow, its group and worker the toolkit's or one
    listed in ``run_groups`` and ``run_workers``. ``Mq9InboxMiddleware(toolkit)`` brings new mail
    to the model before each model call.

    A toolkit (or a run identity) is one reader of its consumer group: ``ack_messages``
    confirms what its ``fetch_messages`` handed out, and what is not acked is handed out again
    to whoever reads the group next, so nothing is lost when an agent stops halfway. Take an
    agent's tools from one toolkit. Close with ``await toolkit.aclose()``, ``toolkit.close()``
    or ``with``. Test agents offline with ``langchain_mq9.testing.ScriptedChatModel``.
    """

    server: str | None = Field(
        default=None, description="mq9 broker URL (nats://, tls://, memory://)"
    )
    # This package's Mq9Client or the official mq9 SDK's: a Protocol pydantic cannot check with
    # isinstance, so taken as given (as before), its JSON schema left open.
    client: Annotated[Mq9ClientLike | None, SkipValidation(), WithJsonSchema({})] = Field(
        default=None, description="An open Mq9Client to use instead of server"
    )
    tools: Sequence[str] | None = Field(default=None, description="Tool names; default the eight")
    request_timeout: float = Field(default=5.0, gt=0)
    client_options: dict[str, Any] = Field(
        default_factory=dict,
        description="More Mq9Client options: user, password, token, creds, tls",
    )
    # Built on ToolConfig for its fields and checks, but a toolkit itself is not frozen.
    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=False, extra="ignore")

    _connection: Mq9Connection = PrivateAttr()
    _policy: ToolPolicy = PrivateAttr()

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
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
            # Mq9Connection hands on a client given as it is, to the catalog's handlers, which
            # use only what Mq9ClientLike names (its own type says Mq9Client: the ones it opens)
            self._connection = Mq9Connection(client=cast(Mq9Client, self.client))
        else:
            server = self.server or os.environ.get("MQ9_SERVER") or os.environ.get("NATS_URL")
            if not server:
                raise ValueError(
                    "Mq9Toolkit needs server= (e.g. 'nats://localhost:4222', or 'memory://' "
                    "for the in-process broker), client=, or MQ9_SERVER in the environment"
                )
            self.server = server
            self._connection = Mq9Connection(
                server, request_timeout=self.request_timeout, **self.client_options
            )
        settings = {name: getattr(self, name) for name in ToolConfig.model_fields}
        settings["calls"] = self.calls or any(OPERATIONS[n].needs_calls for n in self.tools or ())
        self._policy = ToolPolicy(ToolConfig(**settings))

    @property
    def connection(self) -> Mq9Connection:
        return self._connection

    @property
    def policy(self) -> ToolPolicy:
        return self._policy

    def get_tools(self) -> list[BaseTool]:
        names = list(self.tools if self.tools is not None else DEFAULT_OPERATIONS)
        if self.calls:
            names += [n for n, op in OPERATIONS.items() if op.needs_calls and n not in names]
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
