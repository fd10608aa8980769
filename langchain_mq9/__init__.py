"""LangChain tools and an mq9 client for persistent agent mailboxes and an agent registry.

>>> from langchain_mq9 import Mq9Toolkit
>>> tools = Mq9Toolkit(server="memory://").get_tools()
"""

from .client import Consumer, Message, Mq9Client
from .operations import OPERATIONS, Operation, OperationError, ToolPolicy
from .protocol import Mq9Error, Priority
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

__version__ = "0.1.0"

__all__ = [
    "OPERATIONS",
    "AckMessagesTool",
    "AgentDiscoverTool",
    "AgentRegisterTool",
    "AgentReportTool",
    "AgentUnregisterTool",
    "Consumer",
    "CreateMailboxTool",
    "DeleteMessageTool",
    "FetchMessagesTool",
    "Message",
    "Mq9Client",
    "Mq9Error",
    "Mq9Tool",
    "Mq9Toolkit",
    "Operation",
    "OperationError",
    "Priority",
    "QueryMessagesTool",
    "SendMessageTool",
    "ToolPolicy",
    "__version__",
]
