"""MCP server exposing the mq9 operations to Claude Desktop, Claude Code, Cursor and any MCP
client: the same tools, schemas and behaviour as the LangChain toolkit, from the same catalog
(``mq9_platform.operations.catalog``).

Run it with ``mq9-mcp`` or ``python -m mcp_server`` (``--help`` lists the options), or embed it:

>>> from mq9_platform.client.connection import Mq9Connection
>>> server = Mq9McpServer(Mq9Connection("memory://"))   # an mcp.server.lowlevel.Server
"""

from .http import create_http_app
from .server import Mq9McpServer, create_server, tool_definitions

__all__ = ["Mq9McpServer", "create_http_app", "create_server", "tool_definitions"]
