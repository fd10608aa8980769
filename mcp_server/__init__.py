"""MCP server exposing the mq9 operations (see the MCP server issue)."""
