"""``serve_agent``: a LangGraph graph (``langchain.agents.create_agent``, a ``StateGraph``, or any
LangChain Runnable) served as an A2A agent on its mq9 mailbox (docs/a2a.md, "Serve a graph").

The serving itself is the platform's (``mq9_platform.a2a.server``: the consumer group, at least
once, owners, push, cancels); this is LangGraph's face of it. A graph with a ``messages``
channel is given the request as a user message, and its last message's text is the result.
Each task runs with a LangGraph ``thread_id`` made of its ``contextId`` and its owner, so a
checkpointer keeps one conversation per caller; ``interrupt()`` makes the task
input-required, and the owner's answer resumes it with ``Command(resume=<answer text>)``.
"""

from __future__ import annotations

from typing import Any

from langgraph.types import Command

from mq9_platform.a2a import server as platform
from mq9_platform.a2a.shapes import CardJson, JsonObject
from mq9_platform.client.client import Mq9Client

__all__ = ["AgentServer", "last_message_text", "messages_input", "resume_command", "serve_agent"]


def messages_input(graph: Any, text: str) -> Any:
    """What a graph is invoked with: a user message for a graph with a ``messages`` channel
    (``langchain.agents.create_agent``, ``MessagesState``), else the text itself."""
    channels = getattr(graph, "channels", None)
    if isinstance(channels, dict) and "messages" in channels:
        return {"messages": [("user", text)]}
    return text


def last_message_text(result: Any) -> Any:
    """The task's result from what the graph returned: the last message's text for a state
    with ``messages``, a string as it is, anything else as JSON data."""
    if isinstance(result, dict) and isinstance(result.get("messages"), list):
        last = result["messages"][-1] if result["messages"] else None
        result = getattr(last, "content", last)
        if isinstance(result, list):  # content blocks
            result = "".join(b.get("text", "") if isinstance(b, dict) else str(b) for b in result)
    return platform.default_output(result)


def resume_command(text: str) -> Command[Any]:
    """The input that resumes a graph stopped at ``interrupt()``: the owner's answer."""
    return Command(resume=text)


class AgentServer(platform.AgentServer):
    """The platform's ``AgentServer`` with LangGraph's defaults: ``to_input=messages_input``,
    ``to_output=last_message_text`` and ``to_resume=resume_command``; each can still be given."""

    def __init__(self, graph: Any, **options: Any) -> None:
        options.setdefault("to_input", messages_input)
        options.setdefault("to_output", last_message_text)
        options.setdefault("to_resume", resume_command)
        super().__init__(graph, **options)

    @property
    def graph(self) -> Any:
        """The graph served (the platform calls it its runnable)."""
        return self.runnable


async def serve_agent(
    graph: Any,
    *,
    name: str,
    card: CardJson | None = None,
    server: str | None = None,
    client: Mq9Client | None = None,
    client_options: JsonObject | None = None,
    **options: Any,
) -> AgentServer:
    """Serve ``graph`` as the A2A agent ``name`` on its mq9 mailbox (``name`` too, unless
    ``mailbox=`` says otherwise) and return the running ``AgentServer``; ``await
    server.stop()`` ends it (``serve_forever()`` blocks).

    >>> server = await serve_agent(graph, name="agent.summarizer",
    ...                            card={"description": "Summarizes reports"},
    ...                            server="nats://127.0.0.1:4222", worker="replica-1")

    Give ``server=`` (a URL: the server opens and closes its own client, with
    ``client_options``: ``Mq9Client``'s, e.g. the agent's ``credential``, which is otherwise
    read from ``MQ9_CREDENTIAL`` or ``MQ9_CREDENTIAL_FILE``) or ``client=`` (an open
    ``Mq9Client``). ``worker`` names this replica among the agent's replicas: unique per live
    replica, the same after a restart (it then takes back the tasks it held). The other
    options are the platform's (``mq9_platform.a2a.server.serve_agent``): ``mailbox``,
    ``group``, ``max_concurrency``, ``to_input``/``to_output``/``to_resume`` (LangGraph's
    here: ``messages_input``, ``last_message_text``, ``resume_command``), ``register``,
    ``reader_options``, ``retry_delay``, ``working_after``, ``event_ttl``, ``push_destinations``.
    """
    return await AgentServer.serve(
        graph,
        name=name,
        card=card,
        server=server,
        client=client,
        client_options=client_options,
        **options,
    )
