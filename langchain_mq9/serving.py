"""A LangGraph graph served as an A2A agent over its mq9 mailbox (placeholder while #108 moves
it here: the platform's server, re-exported)."""

from mq9_platform.a2a.server import AgentServer, serve_agent

__all__ = ["AgentServer", "serve_agent"]
