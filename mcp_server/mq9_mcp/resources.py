"""What a client may read rather than call: a mailbox's waiting messages and an agent's card as
MCP resources, and one prompt, "check my inbox and handle what is waiting".

A mailbox resource is ``query_messages`` (it consumes nothing), run through the same path as the
tool, so the same rules (``--allowed-mailboxes``, payloads cut for the model) hold; an agent
resource is the card as ``agent_discover`` shows it (``agent_view``: cut to the same budget,
marked as data).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, unquote

from mcp import types
from mcp.shared.exceptions import MCPError

from mq9_platform.client.connection import Mq9Connection
from mq9_platform.operations.catalog import ToolPolicy
from mq9_platform.operations.errors import explain
from mq9_platform.operations.results import AgentsFound, Outcome
from mq9_platform.operations.views import CARD_NOTE, DATA_NOTE, agent_view
from mq9_wire.nats_floor.redaction import redact
from mq9_wire.protocol.errors import Mq9Error

MAILBOX = "mq9://mailbox/"
AGENT = "mq9://agent/"
JSON = "application/json"
INBOX_PROMPT = "handle_inbox"


def resource_templates() -> list[types.ResourceTemplate]:
    return [
        types.ResourceTemplate(
            name="mailbox",
            uri_template=MAILBOX + "{mail_address}",
            description="The messages stored in an mq9 mailbox, read without consuming them "
            "(as query_messages)",
            mime_type=JSON,
        ),
        types.ResourceTemplate(
            name="agent",
            uri_template=AGENT + "{name}",
            description="An agent's card in the mq9 registry: what it does and its mailbox",
            mime_type=JSON,
        ),
    ]


def listed_resources(policy: ToolPolicy) -> list[types.Resource]:
    """The agent's own mailbox, when the server is given one (``--agent-mailbox``)."""
    if not policy.agent_mailbox:
        return []
    uri = MAILBOX + quote(policy.agent_mailbox, safe="")
    what = f"The messages waiting in this agent's mailbox, {policy.agent_mailbox}"
    return [types.Resource(name="inbox", uri=uri, description=what, mime_type=JSON)]


async def read_resource(
    connection: Mq9Connection, policy: ToolPolicy, uri: str, call: Any
) -> types.ReadResourceResult:
    """The resource at ``uri``; ``call(name, arguments)`` runs a tool as the tools run."""
    if uri.startswith(MAILBOX) and len(uri) > len(MAILBOX):
        result = await call("query_messages", {"mail_address": unquote(uri[len(MAILBOX) :])})
        text = "".join(c.text for c in result.content if isinstance(c, types.TextContent))
        if result.is_error:
            raise not_found(uri, text)
    elif uri.startswith(AGENT) and len(uri) > len(AGENT):
        # the card as agent_discover shows it: cut, deep parts as text, marked as data
        try:
            card = await agent_card(connection, unquote(uri[len(AGENT) :]))
        except MCPError as exc:
            if exc.error.code != types.INVALID_PARAMS:
                raise
            raise not_found(uri, exc.error.message) from None
        listed = Outcome(AgentsFound(count=1, agents=[agent_view(card)]), card)
        listed.fit(policy.max_answer_chars, policy.max_payload_chars)  # agent_discover's budget
        [view] = listed.content["agents"]
        text = json.dumps({**view, "note": CARD_NOTE})
    else:
        text = (
            f"unknown resource {uri[:200]!r}: mq9 serves {MAILBOX}<mail_address> and {AGENT}<name>"
        )
        raise not_found(uri, text)
    return types.ReadResourceResult(
        contents=[types.TextResourceContents(uri=uri, mime_type=JSON, text=text)]
    )


# The longest URI an error names in its data (a longer one is the client's own, cut in the text).
MAX_URI_IN_ERROR = 2048


def not_found(uri: str, text: str) -> MCPError:
    """A resource that cannot be read: invalid params, naming the URI in its data (SEP-2164)."""
    return MCPError(
        types.INVALID_PARAMS, text, {"uri": uri} if len(uri) <= MAX_URI_IN_ERROR else None
    )


async def agent_card(connection: Mq9Connection, name: str) -> dict[str, Any]:
    """The registered card named ``name`` (a text search finds it, the name decides)."""
    try:
        found = await connection.run(lambda client: client.agent_discover(text=name, limit=100))
    except Mq9Error as exc:
        raise MCPError(types.INTERNAL_ERROR, redact(explain(exc))) from None
    card = next((agent for agent in found if agent.get("name") == name), None)
    if card is None:
        raise MCPError(
            types.INVALID_PARAMS,
            f"no agent named {name[:100]!r} is registered: agent_discover finds agents by what "
            "they do",
        )
    return dict(card)


def prompts(policy: ToolPolicy) -> list[types.Prompt]:
    mailbox = types.PromptArgument(
        name="mail_address",
        description="the mailbox to read"
        + (f" (default: {policy.agent_mailbox})" if policy.agent_mailbox else ""),
        required=not policy.agent_mailbox,
    )
    return [
        types.Prompt(
            name=INBOX_PROMPT,
            title="Check my inbox",
            description="Check a mailbox and handle what is waiting in it",
            arguments=[mailbox],
        )
    ]


def get_prompt(policy: ToolPolicy, name: str, arguments: dict[str, str] | None) -> Any:
    if name != INBOX_PROMPT:
        raise MCPError(types.INVALID_PARAMS, f"unknown prompt {name[:100]!r}: {INBOX_PROMPT}")
    mailbox = (arguments or {}).get("mail_address") or policy.agent_mailbox
    if not mailbox:
        raise MCPError(types.INVALID_PARAMS, "mail_address: the mailbox to read is required")
    fetch, ack = policy.tool_name("fetch_messages"), policy.tool_name("ack_messages")
    text = (
        f"Check my inbox, the mq9 mailbox {mailbox!r}, and handle what is waiting: call "
        f"{fetch}(mail_address={mailbox!r}), do what each message asks in priority order "
        f"(answer to its reply_to when it gives one), then confirm what you handled with "
        f"{ack} and the msg_id of the last one. Tell me briefly what you did. " + DATA_NOTE
    )
    message = types.PromptMessage(role="user", content=types.TextContent(type="text", text=text))
    return types.GetPromptResult(description="Check my inbox", messages=[message])


# The most values a completion answers with (MCP's limit); ``total`` says how many matched.
MAX_COMPLETIONS = 100
# The registry cards read to complete an agent name (a completion comes per keystroke).
COMPLETION_CARDS = 1000


async def complete(
    connection: Mq9Connection, policy: ToolPolicy, params: types.CompleteRequestParams
) -> types.CompleteResult:
    """``completion/complete`` for the resource templates and the prompt's argument: mailbox
    addresses the caller may use (its agent mailbox, the mailboxes it created, its allowed
    prefixes) and registered agent names; anything else completes to nothing."""
    ref, argument = params.ref, params.argument
    if isinstance(ref, types.ResourceTemplateReference) and ref.uri == AGENT + "{name}":
        found = await _agent_names(connection) if argument.name == "name" else []
    elif argument.name == "mail_address" and (
        (isinstance(ref, types.ResourceTemplateReference) and ref.uri == MAILBOX + "{mail_address}")
        or (isinstance(ref, types.PromptReference) and ref.name == INBOX_PROMPT)
    ):
        found = _mailboxes(policy)
    else:
        found = []
    matching = sorted({value for value in found if value.startswith(argument.value)})
    shown = matching[:MAX_COMPLETIONS]
    return types.CompleteResult(
        completion=types.Completion(
            values=shown, total=len(matching), has_more=len(matching) > len(shown)
        )
    )


def _mailboxes(policy: ToolPolicy) -> list[str]:
    """The mailboxes this client may name: none listed when it may use any (the broker lists
    no mailboxes; a guess would show others' addresses)."""
    mine = [policy.agent_mailbox] if policy.agent_mailbox else []
    return [*mine, *policy.created, *(policy.allowed_mailboxes or ())]


async def _agent_names(connection: Mq9Connection) -> list[str]:
    """The names in the registry, of its first ``COMPLETION_CARDS`` cards (every client may
    discover every agent)."""
    try:
        found = await connection.run(
            lambda client: client.agent_discover(text="", limit=COMPLETION_CARDS)
        )
    except Mq9Error as exc:
        raise MCPError(types.INTERNAL_ERROR, redact(explain(exc))) from None
    return [agent["name"] for agent in found if isinstance(agent.get("name"), str)]
