"""An a2a-sdk ``AgentExecutor`` served over mq9: agent code written for a2a-sdk's servers (HTTP,
gRPC) takes tasks from its mailbox unchanged (docs/a2a.md, "An a2a-sdk AgentExecutor over mq9").

    server = await serve_executor(MyExecutor(), name="agent.x", client=mq9_client)

Each turn calls ``executor.execute(context, queue)``; what it published (its final status and
artifacts, or a ``Message``) decides the turn. Needs the ``a2a`` extra.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.context import ServerCallContext
from a2a.server.events.event_queue import Event, EventQueue
from a2a.types.a2a_pb2 import (
    Message,
    SendMessageRequest,
    Task,
    TaskArtifactUpdateEvent,
    TaskStatusUpdateEvent,
)

from ..client.client import Mq9Client
from . import wire as w
from .protojson import to_json, to_proto
from .server import AgentServer, Turn


class ExecutorFailed(Exception):
    """The executor ended the task failed (or rejected); its words are the reason."""


class _Collected(EventQueue):
    """The events an executor publishes during one turn."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def enqueue_event(self, event: Event) -> None:
        self.events.append(event)


def _outcome(events: list[Event]) -> tuple[str | None, str, list[dict[str, Any]]]:
    """(the last state published, its status text, the artifacts) of one turn."""
    state, text, artifacts = None, "", []
    for event in events:
        if isinstance(event, Message):
            state, text = w.COMPLETED, w.parts_text(to_json(event).get("parts"))
            artifacts.append(w.artifact(text))
        elif isinstance(event, Task | TaskStatusUpdateEvent):
            status = to_json(event).get("status", {})
            state = status.get("state", state)
            text = w.parts_text((status.get("message") or {}).get("parts"))
            artifacts += to_json(event).get("artifacts", []) if isinstance(event, Task) else []
        elif isinstance(event, TaskArtifactUpdateEvent):
            artifacts.append(to_json(event.artifact))
    return state, text, artifacts


class ExecutorServer(AgentServer):
    """``AgentServer`` whose work is an a2a-sdk ``AgentExecutor`` instead of a graph."""

    def __init__(self, executor: AgentExecutor, **options: Any) -> None:
        super().__init__(executor, to_output=lambda result: result, **options)
        self.executor = executor

    async def _invoke(self, turn: Turn) -> tuple[Any, Any]:
        request = to_proto(
            {"message": {**turn.message, "taskId": turn.task_id, "contextId": turn.context_id}},
            SendMessageRequest,
        )
        context = RequestContext(
            ServerCallContext(),
            request=request,
            task_id=turn.task_id,
            context_id=turn.context_id,
            task=to_proto(turn.existing, Task) if turn.existing else None,
        )
        queue = _Collected()
        try:
            await self.executor.execute(context, queue)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):  # its own cleanup; the task is canceled anyway
                await asyncio.shield(self.executor.cancel(context, _Collected()))
            raise
        state, text, artifacts = _outcome(queue.events)
        if state in (w.FAILED, w.REJECTED):
            raise ExecutorFailed(text or w.short_state(state))
        if state == w.CANCELED:
            raise asyncio.CancelledError
        if state == w.INPUT_REQUIRED:
            return None, [text or "input required"]
        if state != w.COMPLETED:
            raise ExecutorFailed(
                f"the executor returned with the task {w.short_state(state or 'unknown')}, "
                "not completed, failed or input-required"
            )
        return "\n".join(w.parts_text(a.get("parts")) for a in artifacts), None


async def serve_executor(
    executor: AgentExecutor, *, name: str, client: Mq9Client, **options: Any
) -> AgentServer:
    """Serve an a2a-sdk ``AgentExecutor`` as agent ``name`` on its mq9 mailbox (the options of
    ``serve_agent``: ``card``, ``worker``, ``mailbox``, ...). Returns the running server."""
    return await ExecutorServer(executor, name=name, client=client, **options).start()
