"""mq9-mcp's HTTP edge: streamable HTTP at ``/mcp`` (``app``), who may use it (``auth``), what a
request body may be (``limits``), how many sessions stay open (``sessions``), the event ids of
its streams (``sse``) and the guarded uvicorn connection under it all (``guard``).

What the MCP SDK does itself and what is kept here, and why: docs/mcp-http.md, "The HTTP edge".

``app``'s names are imported at their first use: the app stands on the server, which stands on
this package's checks (``scope_check``), so the package itself imports no server.
"""

from typing import TYPE_CHECKING

from .auth import is_loopback
from .sessions import DEFAULT_MAX_SESSIONS, DEFAULT_SESSION_IDLE_TIMEOUT

__all__ = [
    "DEFAULT_MAX_SESSIONS",
    "DEFAULT_SESSION_IDLE_TIMEOUT",
    "MCP_PATH",
    "create_http_app",
    "is_loopback",
    "serve_http",
    "uvicorn_config",
]

if TYPE_CHECKING:
    from .app import MCP_PATH, create_http_app, serve_http, uvicorn_config

_APP_NAMES = ("MCP_PATH", "create_http_app", "serve_http", "uvicorn_config")


def __getattr__(name: str) -> object:
    if name not in _APP_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from . import app

    return getattr(app, name)
