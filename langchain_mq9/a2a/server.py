"""``langchain_mq9.a2a.server`` until 0.5.0: the platform's server is
``mq9_platform.a2a.server`` now, which serves any runnable, and a LangGraph graph is served by
``langchain_mq9.serving`` (its messages, its ``interrupt()`` resumed). This path warns and hands
out the platform module's names, with LangGraph's ``AgentServer`` and ``serve_agent`` as they
were here, for one release."""

import warnings

from mq9_platform.a2a import server as _platform

from ..serving import AgentServer, serve_agent
from ..serving import last_message_text as default_output
from ..serving import messages_input as default_input

warnings.warn(
    "langchain_mq9.a2a.server moved: serve a LangGraph graph with langchain_mq9.serving (or "
    "from langchain_mq9 import serve_agent), any other runnable with mq9_platform.a2a.server "
    "(langchain_mq9.a2a.server goes in the next release)",
    FutureWarning,  # shown wherever it is imported, as the other old paths' (_moved.py)
    stacklevel=2,
)


def __getattr__(name: str) -> object:
    return getattr(_platform, name)


__all__ = ["AgentServer", "default_input", "default_output", "serve_agent"]
