"""Persistent mailboxes, an agent registry and agent-to-agent calls for LangChain and LangGraph
agents, over mq9 (RobustMQ's agent-messaging protocol on NATS): the LangChain face of the mq9
platform (``mq9_platform``, which needs no framework).

The toolkit, for an agent::

    from langchain.agents import create_agent
    from langchain_mq9 import Mq9InboxMiddleware, Mq9Toolkit

    toolkit = Mq9Toolkit(server="memory://", agent_mailbox="agent.me")  # or nats://host:4222
    agent = create_agent(model, toolkit.get_tools(), middleware=[Mq9InboxMiddleware(toolkit)])

- ``Mq9Toolkit``: the eight mq9 tools (``create_mailbox``, ``send_message``, ``fetch_messages``,
  ``ack_messages``, ``query_messages``, ``delete_message``, ``agent_register``,
  ``agent_discover``), with the safety options; ``Mq9InboxMiddleware`` brings new mail to the
  model before each model call.
- ``Mq9Client``: the platform's protocol client, re-exported (``Consumer`` and ``GroupReader``
  read consumer groups).
- ``AgentCaller``, ``AgentServer``, ``serve_agent``: A2A tasks between agents over mq9; a
  LangGraph graph served here (``serving.py``) keeps its messages and resumes its
  ``interrupt()``.
- Every error is an ``Mq9Error`` (a broker's or the client's) or an ``OperationError`` (a tool
  call the model can fix), each importable from here: ``from langchain_mq9 import
  MailboxNotFound``.
- ``langchain_mq9.testing.ScriptedChatModel``: a chat model that follows a script of real tool
  calls, to test agents offline and deterministically.

Documentation: docs/langchain.md (this integration), docs/toolkit.md (the tools).
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

# (importing mq9_platform registers the bundled broker for memory://)
from mq9_platform.client.client import Message, Mq9Client
from mq9_platform.groups.reader import Consumer, GroupReader
from mq9_wire.protocol import Priority
from mq9_wire.protocol.errors import (
    AnswerTooLarge,
    ClusterUnavailable,
    ConnectFailed,
    ConnectionLost,
    InvalidAddress,
    InvalidArgument,
    KeysFull,
    LimitReached,
    ListingTooLarge,
    MailboxExists,
    MailboxNotFound,
    MalformedReply,
    Mq9Error,
    NoBroker,
    NotAllowed,
    NotAwaitingAck,
    NotConnected,
    NotOwner,
    PayloadTooLarge,
    RequestTimeout,
    SearchIndexEmpty,
    SearchNotBuilt,
    StorageMissing,
    StoreUnavailable,
    TooLarge,
    Unavailable,
    WireError,
)

from ._version import __version__
from .langsmith_runs import RUNS as _RUNS  # noqa: F401 (importing it registers LangSmith's runs)

# The LangChain side is imported on first use, so the client and the broker (mq9-dev-broker)
# start without loading langchain-core.
_LAZY = {
    "OPERATIONS": "mq9_platform.operations.catalog",
    "Operation": "mq9_platform.operations.catalog",
    "OperationError": "mq9_platform.operations.catalog",
    "ToolPolicy": "mq9_platform.operations.catalog",
    "Mq9Toolkit": "toolkit",
    "Mq9InboxMiddleware": "middleware",
    "AckMessagesTool": "tools",
    "AgentDiscoverTool": "tools",
    "AgentRegisterTool": "tools",
    "AgentReportTool": "tools",
    "AgentUnregisterTool": "tools",
    "CreateMailboxTool": "tools",
    "DeleteMessageTool": "tools",
    "FetchMessagesTool": "tools",
    "Mq9Tool": "tools",
    "QueryMessagesTool": "tools",
    "SendMessageTool": "tools",
    "CallAgentTool": "tools",
    "CheckCallTool": "tools",
    "AnswerCallTool": "tools",
    "CancelCallTool": "tools",
    "ListCallsTool": "tools",
    "WakeRuleTool": "tools",
    # Mail that wakes its agent (docs/wake.md)
    "RuleBook": "mq9_platform.wake",
    "WakeRule": "mq9_platform.wake",
    "Waker": "mq9_platform.wake",
    # Agent calls: A2A tasks over mq9 (docs/a2a.md)
    "AgentCaller": "mq9_platform.a2a.caller",
    "AgentServer": "serving",
    "serve_agent": "serving",
}

if TYPE_CHECKING:
    from mq9_platform.a2a.caller import AgentCaller
    from mq9_platform.operations.catalog import OPERATIONS, Operation, OperationError, ToolPolicy
    from mq9_platform.wake import RuleBook, Waker, WakeRule

    from .middleware import Mq9InboxMiddleware
    from .serving import AgentServer, serve_agent
    from .toolkit import Mq9Toolkit
    from .tools import (
        AckMessagesTool,
        AgentDiscoverTool,
        AgentRegisterTool,
        AgentReportTool,
        AgentUnregisterTool,
        AnswerCallTool,
        CallAgentTool,
        CancelCallTool,
        CheckCallTool,
        CreateMailboxTool,
        DeleteMessageTool,
        FetchMessagesTool,
        ListCallsTool,
        Mq9Tool,
        QueryMessagesTool,
        SendMessageTool,
        WakeRuleTool,
    )


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'langchain_mq9' has no attribute {name!r}")
    # the platform's names by their own path (mq9_platform), the LangChain face's from here
    where = module if module.startswith("mq9_platform") else f".{module}"
    value = getattr(import_module(where, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    # The lazy names too, so dir() and help() show them.
    return sorted({*globals(), *_LAZY})


__all__ = [  # noqa: RUF022  (grouped: the client, its errors, then the LangChain side)
    "Consumer",
    "GroupReader",
    "Message",
    "Mq9Client",
    "Priority",
    "__version__",
    # every error class, a broker's or the client's (docs/protocol.md §10.1)
    "Mq9Error",
    "InvalidArgument",
    "InvalidAddress",
    "WireError",
    "MailboxNotFound",
    "MailboxExists",
    "TooLarge",
    "PayloadTooLarge",
    "AnswerTooLarge",
    "ListingTooLarge",
    "KeysFull",
    "LimitReached",
    "SearchNotBuilt",
    "SearchIndexEmpty",
    "NotAllowed",
    "NotAwaitingAck",
    "NotConnected",
    "NotOwner",
    "MalformedReply",
    "Unavailable",
    "ConnectFailed",
    "RequestTimeout",
    "ConnectionLost",
    "NoBroker",
    "ClusterUnavailable",
    "StorageMissing",
    "StoreUnavailable",
    # the LangChain side, imported on first use
    "OPERATIONS",
    "Operation",
    "OperationError",
    "ToolPolicy",
    "Mq9Toolkit",
    "Mq9InboxMiddleware",
    "AckMessagesTool",
    "AgentDiscoverTool",
    "AgentRegisterTool",
    "AgentReportTool",
    "AgentUnregisterTool",
    "CreateMailboxTool",
    "DeleteMessageTool",
    "FetchMessagesTool",
    "Mq9Tool",
    "QueryMessagesTool",
    "SendMessageTool",
    "CallAgentTool",
    "CheckCallTool",
    "AnswerCallTool",
    "CancelCallTool",
    "ListCallsTool",
    "WakeRuleTool",
    "RuleBook",
    "WakeRule",
    "Waker",
    "AgentCaller",
    "AgentServer",
    "serve_agent",
]
