"""The mq9 agent platform: persistent mailboxes, consumer groups with dead letters,
agent calls (A2A over mailboxes, and A2A reach both ways), mail that wakes its agent, tracing,
and the catalog of operations every face adapts (the LangChain tools, mq9-mcp, the console).
No framework owns it: nothing here imports LangChain, LangGraph or LangSmith
(tests/project/test_distributions.py holds it).

The client, for any program::

    from mq9_platform import Mq9Client

    async with Mq9Client("memory://") as client:  # or nats://host:4222
        await client.mailbox_create(name="agent.me")
        await client.send("agent.me", "hello")

- ``Mq9Client``: the protocol client (``Consumer`` and ``GroupReader`` read consumer groups).
- ``AgentCaller``, ``AgentServer``, ``serve_agent``: A2A tasks between agents over mq9.
- ``RuleBook``, ``WakeRule``, ``Waker``: mail that wakes its agent (``mq9-wake``).
- ``OPERATIONS``: the catalog of operations (``mq9_platform.operations``).
- Every error is an ``Mq9Error`` (a broker's or the client's) or an ``OperationError``.

Documentation: docs/architecture.md (the parts), docs/client.md, docs/a2a.md, docs/wake.md.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from mq9_wire.protocol import Priority
from mq9_wire.protocol.errors import Mq9Error

from ._version import __version__
from .client.client import Message, Mq9Client
from .client.transport import InProcessBroker, register_memory_engines
from .groups.reader import Consumer, GroupReader


def _bundled_broker(name: str) -> InProcessBroker:
    """The bundled broker's engine behind ``memory://NAME``: the client finds it through this
    registration, never importing the broker (imported here at the first memory:// client)."""
    from mq9_broker import memory_broker

    return memory_broker(name)


register_memory_engines(_bundled_broker)

# Imported on first use, so a client (and mq9-dev-broker's) starts without loading pydantic's
# schemas, the A2A parts or the waker
_LAZY = {
    "OPERATIONS": "operations.catalog",
    "Operation": "operations.catalog",
    "OperationError": "operations.catalog",
    "ToolPolicy": "operations.catalog",
    "RuleBook": "wake",
    "WakeRule": "wake",
    "Waker": "wake",
    "AgentCaller": "a2a.caller",
    "AgentServer": "a2a.server",
    "serve_agent": "a2a.server",
}

if TYPE_CHECKING:
    from .a2a.caller import AgentCaller
    from .a2a.server import AgentServer, serve_agent
    from .operations.catalog import OPERATIONS, Operation, OperationError, ToolPolicy
    from .wake import RuleBook, Waker, WakeRule


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mq9_platform' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "OPERATIONS",
    "AgentCaller",
    "AgentServer",
    "Consumer",
    "GroupReader",
    "Message",
    "Mq9Client",
    "Mq9Error",
    "Operation",
    "OperationError",
    "Priority",
    "RuleBook",
    "ToolPolicy",
    "WakeRule",
    "Waker",
    "__version__",
    "serve_agent",
]
