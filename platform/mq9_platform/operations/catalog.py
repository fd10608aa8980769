"""The operation catalog: every mq9 operation an agent can call, defined once, with the hints
a client reads (read-only, destructive, ...). The LangChain tools (``tools.py``) and the MCP
server (``mq9_mcp``) are thin adapters over it, so their names, schemas and behaviour are the
same. What an operation is and how one runs: ``operation.py``; its parts live by job in the
modules imported below.
"""

from __future__ import annotations

from . import calls, registry, wake
from . import mailbox as mail
from .errors import OperationError, explain
from .operation import Handler, Operation, prefixed
from .policy import ToolPolicy
from .results import (
    AgentRegistered,
    AgentReported,
    AgentsFound,
    AgentUnregistered,
    CallsListed,
    CallStarted,
    CallStatus,
    MailboxCreated,
    MessageDeleted,
    MessagesAcked,
    MessageSent,
    MessagesFetched,
    MessagesQueried,
    WakeRules,
)
from .schemas import (
    DESCRIPTIONS,
    AckMessagesInput,
    AgentDiscoverInput,
    AgentRegisterInput,
    AgentReportInput,
    AgentUnregisterInput,
    CreateMailboxInput,
    DeleteMessageInput,
    FetchMessagesInput,
    QueryMessagesInput,
    SendMessageInput,
)
from .views import CARD_NOTE, MAX_SHOWN_DEPTH, message_view


def _catalog(*operations: Operation) -> dict[str, Operation]:
    return {op.name: op for op in operations}


# Each operation written out: its name, what it reads and runs and returns, and its hints.
OPERATIONS: dict[str, Operation] = _catalog(
    Operation(
        name="agent_register",
        title="Register this agent",
        input_model=AgentRegisterInput,
        handler=registry.agent_register,
        result=AgentRegistered,
        description_text=DESCRIPTIONS["agent_register"],
        idempotent=True,
    ),
    Operation(
        name="agent_discover",
        title="Find agents",
        input_model=AgentDiscoverInput,
        handler=registry.agent_discover,
        result=AgentsFound,
        description_text=DESCRIPTIONS["agent_discover"],
        read_only=True,
        idempotent=True,
    ),
    Operation(
        name="create_mailbox",
        title="Create a mailbox",
        input_model=CreateMailboxInput,
        handler=mail.create_mailbox,
        result=MailboxCreated,
        description_text=DESCRIPTIONS["create_mailbox"],
    ),
    Operation(
        name="send_message",
        title="Send a message",
        input_model=SendMessageInput,
        handler=mail.send_message,
        result=MessageSent,
        description_text=DESCRIPTIONS["send_message"],
    ),
    Operation(
        name="fetch_messages",
        title="Fetch messages",
        input_model=FetchMessagesInput,
        handler=mail.fetch_messages,
        result=MessagesFetched,
        description_text=DESCRIPTIONS["fetch_messages"],
        looks_when_read_only=True,
        waits=True,
    ),
    Operation(
        name="ack_messages",
        title="Acknowledge messages",
        input_model=AckMessagesInput,
        handler=mail.ack_messages,
        result=MessagesAcked,
        description_text=DESCRIPTIONS["ack_messages"],
        idempotent=True,
    ),
    Operation(
        name="query_messages",
        title="Inspect a mailbox",
        input_model=QueryMessagesInput,
        handler=mail.query_messages,
        result=MessagesQueried,
        description_text=DESCRIPTIONS["query_messages"],
        read_only=True,
        idempotent=True,
    ),
    Operation(
        name="delete_message",
        title="Delete a message",
        input_model=DeleteMessageInput,
        handler=mail.delete_message,
        result=MessageDeleted,
        description_text=DESCRIPTIONS["delete_message"],
        destructive=True,
    ),
    Operation(
        name="agent_unregister",
        title="Unregister an agent",
        input_model=AgentUnregisterInput,
        handler=registry.agent_unregister,
        result=AgentUnregistered,
        description_text=DESCRIPTIONS["agent_unregister"],
        destructive=True,
        in_default_set=False,
    ),
    Operation(
        name="agent_report",
        title="Report agent status",
        input_model=AgentReportInput,
        handler=registry.agent_report,
        result=AgentReported,
        description_text=DESCRIPTIONS["agent_report"],
        idempotent=True,
        in_default_set=False,
    ),
    # The agent-call tools (calls.py): opt-in, and only with ToolConfig.calls
    Operation(
        name="call_agent",
        title="Delegate a task to an agent",
        input_model=calls.CallAgentInput,
        handler=calls.call_agent,
        result=CallStarted,
        description_text=calls.DESCRIPTIONS["call_agent"],
        in_default_set=False,
        needs_calls=True,
        waits=True,
        asks=True,
    ),
    Operation(
        name="check_call",
        title="Check a delegated task",
        input_model=calls.CheckCallInput,
        handler=calls.check_call,
        result=CallStatus,
        description_text=calls.DESCRIPTIONS["check_call"],
        in_default_set=False,
        needs_calls=True,
        read_only=True,
        waits=True,
        asks=True,
    ),
    Operation(
        name="answer_call",
        title="Answer a delegated task",
        input_model=calls.AnswerCallInput,
        handler=calls.answer_call,
        result=CallStatus,
        description_text=calls.DESCRIPTIONS["answer_call"],
        in_default_set=False,
        needs_calls=True,
        asks=True,
    ),
    Operation(
        name="cancel_call",
        title="Cancel a delegated task",
        input_model=calls.CancelCallInput,
        handler=calls.cancel_call,
        result=CallStatus,
        description_text=calls.DESCRIPTIONS["cancel_call"],
        in_default_set=False,
        needs_calls=True,
        destructive=True,
        idempotent=True,
        extra_wait=calls.CANCEL_WAIT,
    ),
    Operation(
        name="list_calls",
        title="List delegated tasks",
        input_model=calls.ListCallsInput,
        handler=calls.list_calls,
        result=CallsListed,
        description_text=calls.DESCRIPTIONS["list_calls"],
        in_default_set=False,
        needs_calls=True,
        read_only=True,
    ),
    # wake rules (wake.py), an extra
    Operation(
        name="wake_rule",
        title="Wake an agent when mail waits",
        input_model=wake.WakeRuleInput,
        handler=wake.wake_rule,
        result=WakeRules,
        description_text=wake.DESCRIPTIONS["wake_rule"],
        in_default_set=False,
    ),
)

DEFAULT_OPERATIONS = tuple(name for name, op in OPERATIONS.items() if op.in_default_set)


def unknown_tool(name: str, policy: ToolPolicy) -> str:
    """The answer to a call of a tool ``policy`` does not have: the ones it has, by name."""
    names = [policy.tool_name(n) for n, op in OPERATIONS.items() if op.allowed(policy)]
    return f"unknown tool {name!r}: the mq9 tools here are {', '.join(names)}"


__all__ = [  # the catalog, and what tests and bench/ import of the modules it is made from
    "CARD_NOTE",
    "DEFAULT_OPERATIONS",
    "MAX_SHOWN_DEPTH",
    "OPERATIONS",
    "FetchMessagesInput",
    "Handler",
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
