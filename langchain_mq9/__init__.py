"""LangChain tools and an mq9 client for persistent agent mailboxes and an agent registry.

>>> from langchain_mq9 import Mq9Toolkit
>>> tools = Mq9Toolkit(server="memory://").get_tools()
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .client import Message, Mq9Client
from .consumer import Consumer, GroupReader
from .protocol import Mq9Error, Priority

__version__ = "0.4.0"

# The LangChain side is imported on first use, so the client and the broker (mq9-dev-broker)
# start without loading langchain-core.
_LAZY = {
    "OPERATIONS": "operations",
    "Operation": "operations",
    "OperationError": "operations",
    "ToolPolicy": "operations",
    "Mq9Toolkit": "toolkit",
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
    # Agent calls: A2A tasks over mq9 (docs/a2a.md)
    "AgentCaller": "agent_calls",
    "AgentServer": "agent_server",
    "serve_agent": "agent_server",
}

if TYPE_CHECKING:
    from .agent_calls import AgentCaller
    from .agent_server import AgentServer, serve_agent
    from .operations import OPERATIONS, Operation, OperationError, ToolPolicy
    from .toolkit import Mq9Toolkit
    from .tools import (
        AckMessagesTool,
        AgentDiscoverTool,
        AgentRegisterTool,
        AgentReportTool,
        AgentUnregisterTool,
        CreateMailboxTool,
        DeleteMessageTool,
        FetchMessagesTool,
        Mq9Tool,
        QueryMessagesTool,
        SendMessageTool,
    )


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'langchain_mq9' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [  # noqa: RUF022  (grouped: the client first, then the LangChain side)
    "Consumer",
    "GroupReader",
    "Message",
    "Mq9Client",
    "Mq9Error",
    "Priority",
    "__version__",
    "OPERATIONS",
    "Operation",
    "OperationError",
    "ToolPolicy",
    "Mq9Toolkit",
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
    "AgentCaller",
    "AgentServer",
    "serve_agent",
]
