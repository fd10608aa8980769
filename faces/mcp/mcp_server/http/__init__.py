"""mq9-mcp's HTTP edge: streamable HTTP at ``/mcp`` (``app``), who may use it (``auth``), what a
request body may be (``limits``), how many sessions stay open (``sessions``), the event ids of
its streams (``sse``) and the guarded uvicorn connection under it all (``guard``).

What the MCP SDK does itself and what is kept here, and why: docs/mcp.md, "The HTTP edge".
"""

from .app import MCP_PATH, create_http_app, serve_http, uvicorn_config
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
