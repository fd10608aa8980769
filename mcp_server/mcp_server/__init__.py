"""0.5's import name of mq9-mcp's server, kept for one release: it is ``mq9_mcp`` now
(``mcp_server.server`` is ``mq9_mcp.server``, the same module). Importing it warns once."""

from mq9_wire.moved import forward

__getattr__ = forward(__name__, "mq9_mcp", {"mq9_mcp": "mq9-mcp"})
