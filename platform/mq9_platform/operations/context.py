"""``CallContext``: what one tool call runs with, handed to its handler as a parameter.

``Operation.execute`` builds it for each call, from what its surface passes in: the LangChain
tools their connection's client and the run's policy, ``mq9_mcp`` the same plus a progress
callback when the MCP client asked for progress. Nothing a handler uses is ambient.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..a2a.shapes import CallView as CallView  # (mq9_mcp's too: it reaches no a2a module)
from ..client.api import Mq9ClientLike
from .policy import ToolPolicy

# Told each state a waiting agent call goes through (its ``CallState.view()``).
Progress = Callable[[CallView], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class CallContext:
    """One tool call's ``client``, the ``policy`` of the agent calling, and where a call that
    waits reports its ``progress`` (None: nowhere)."""

    # Ours, or the official mq9 SDK's: what the two share (client/api.py says where they differ)
    client: Mq9ClientLike
    policy: ToolPolicy
    progress: Progress | None = None
