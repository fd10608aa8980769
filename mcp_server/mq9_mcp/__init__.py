"""mq9-mcp: the mq9 operations for Claude Desktop, Claude Code, Cursor and any MCP client, over
stdio and streamable HTTP: the same tools, schemas and behaviour as the LangChain toolkit, from
the same catalog (``mq9_platform.operations.catalog``).

Run it with ``mq9-mcp`` or ``python -m mq9_mcp`` (``--help`` lists the options), or embed it:

>>> from mq9_platform.client.connection import Mq9Connection
>>> server = Mq9McpServer(Mq9Connection("memory://"))   # an mcp.server.lowlevel.Server

This module is also the command's entry point, so it imports nothing of the MCP SDK: ``main``
checks that the SDK mq9-mcp runs on is here before loading the server, and says in one line
what to install when it is not (a virtualenv holding langchain-mcp-adapters has mcp 1.x, the
adapters pin it; mq9-mcp then runs from a virtualenv of its own), not an ImportError's
traceback. It also ends quietly on a Ctrl-C while the server loads, as it does once serving.
The server's names are imported at their first use.
"""


from __future__ import annotations

import os
import re
import signal
import sys
import threading
from importlib import metadata
from typing import TYPE_CHECKING, Any

NEEDED = (2, 3)  # mq9-mcp's lower bound for mcp, mcp_server/pyproject.toml
SOURCE = "git+https://github.com/mq9-agents/langchain-mq9"
# mq9-mcp stands on this repository's other distributions (wire/, broker/, platform/), which no
# package registry serves: each install names all four (docs/mcp.md, README.md#install)
WIRE = f"mq9-wire @ {SOURCE}#subdirectory=wire"
BROKER = f"mq9-broker @ {SOURCE}#subdirectory=broker"
PLATFORM = f"mq9-platform @ {SOURCE}#subdirectory=platform"
MCP = f"mq9-mcp @ {SOURCE}#subdirectory=mcp_server"
INSTALL = (
    f'pip install "{WIRE}" "{BROKER}" "{PLATFORM}" "{MCP}" '
    "(in a clone: pip install -e ./wire -e ./broker -e ./platform -e ./mcp_server)"
)
APART = f'uvx --from "{MCP}" --with "{WIRE}" --with "{BROKER}" --with "{PLATFORM}" mq9-mcp'


def sdk_problem() -> str | None:
    """Why the MCP SDK installed here cannot run mq9-mcp, with what to do; None when it can."""
    try:
        version = metadata.version("mcp")
    except metadata.PackageNotFoundError:
        return f"the MCP SDK is not installed: {INSTALL}"
    found = tuple(int(part) for part in re.findall(r"\d+", version)[:2])
    if found < NEEDED:
        return (
            f"mq9-mcp needs mcp>=2.3 and this environment has mcp {version} (langchain-mcp-"
            f"adapters pins mcp<2): run mq9-mcp from a virtualenv of its own, e.g. {APART}"
        )
    return None


def _interrupts_delivered_again() -> None:
    """A Ctrl-C that lands while Python runs a callback it cannot raise from (an import's
    module-lock weakref, a finaliser) is printed as "Exception ignored" with a traceback, and
    lost: the server went on. Such a KeyboardInterrupt is signalled again, to land where it
    stops the server as any Ctrl-C does: from a thread, a moment later (raised in the hook, it
    would land in the hook, where it is lost again)."""
    printed = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            # to the main thread itself: os.kill's signal may be taken by this timer's thread,
            # leaving the main thread's wait uninterrupted (CI saw the Ctrl-C lost so)
            if hasattr(signal, "pthread_kill"):
                to, args = signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT)
            else:  # (Windows)
                to, args = os.kill, (os.getpid(), signal.SIGINT)
            again = threading.Timer(0.01, to, args)
            again.daemon = True
            again.start()
            return
        printed(unraisable)

    sys.unraisablehook = hook


def main() -> int:
    problem = sdk_problem()
    if problem is not None:
        print(f"mq9-mcp: error: {problem}", file=sys.stderr)
        return 1
    _interrupts_delivered_again()
    try:
        from .cli import main as serve
    except KeyboardInterrupt:  # Ctrl-C while loading: stopped, as once serving (cli.main)
        return 0
    except RuntimeError as error:  # ... one landing in a class's __set_name__ (cli.main says)
        if not isinstance(error.__cause__, KeyboardInterrupt):
            raise
        return 0
    return serve()


if TYPE_CHECKING:
    from .http import create_http_app
    from .server import Mq9McpServer, create_server, tool_definitions

_SERVER_NAMES = {
    "Mq9McpServer": "server",
    "create_server": "server",
    "tool_definitions": "server",
    "create_http_app": "http",
}
__all__ = ["Mq9McpServer", "create_http_app", "create_server", "main", "tool_definitions"]


def __getattr__(name: str) -> object:
    """The server's names, imported at their first use (the MCP SDK with them)."""
    module = _SERVER_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
