"""An a2a-sdk ``AgentExecutor`` served over mq9: agent code written for a2a-sdk's servers (HTTP,
gRPC) takes tasks from its mailbox unchanged (docs/a2a.md, "An a2a-sdk AgentExecutor over mq9").

    server = await serve_executor(MyExecutor(), name="agent.x", client=mq9_client)

Each turn calls ``executor.execute(context, queue)``; what it published (its final status and
artifacts, or a ``Message``) decides the turn, and reaches the caller as it was given (parts
of every kind, the status message, a Message answer). Needs the ``a2a`` extra.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
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

from ...client.client import Mq9Client
from .. import mail as w
from ..server import AgentServer, StateFields, Turn
from ..shapes import ArtifactJson, MessageJson
from .protojson import artifact_json, json_object, message_json, to_proto


class ExecutorFailed(Exception):
    """The executor ended the task failed (or rejected); its words are the reason."""


class _Collected(EventQueue):
    """The events an executor publishes during one turn; ``progress``, where given, is awaited
    with them after each update of a task still working (each is an event the caller's
    stream gets, and may replay)."""

    def __init__(self, progress: Callable[[list[Event]], Awaitable[None]] | None = None) -> None:
        self.events: list[Event] = []
        self.progress = progress

    async def enqueue_event(self, event: Event) -> None:
        self.events.append(event)
        if self.progress is None:
            return
        if isinstance(event, TaskArtifactUpdateEvent) or (
            isinstance(event, TaskStatusUpdateEvent)
            and json_object(event).get("status", {}).get("state") == w.WORKING
        ):
            await self.progress(self.events)


@dataclass
class Outcome:
    """What an executor published in one turn, as it gave it."""

    state: str | None = None  # the last state published
    status_message: MessageJson | None = None  # its status message, whole
    artifacts: list[ArtifactJson] = field(default_factory=list)  # by artifactId, in order
    answer: MessageJson | None = None  # a Message it answered with instead of a task

    @property
    def text(self) -> str:
        return w.parts_text(self.status_message.get("parts") if self.status_message else None)

    def add_artifact(self, artifact: ArtifactJson, append: bool) -> None:
        """An artifact update: a new artifact, one replaced, or (``append``) parts added to
        the one of that id (a result streamed in chunks)."""
        for i, kept in enumerate(self.artifacts):
            if kept.get("artifactId") == artifact.get("artifactId"):
                if append:
                    parts = [*(kept.get("parts") or []), *(artifact.get("parts") or [])]
                    self.artifacts[i] = {**kept, "parts": parts}
                else:
                    self.artifacts[i] = artifact
                return
        self.artifacts.append(artifact)


def _outcome(events: list[Event]) -> Outcome:
    """One turn's outcome from the events the executor published, in order."""
    found = Outcome()
    for event in events:
        if isinstance(event, Message):
            found.state, found.answer = w.COMPLETED, message_json(event)
            found.status_message = found.answer
        elif isinstance(event, Task | TaskStatusUpdateEvent):
            json = json_object(event)  # a Task's, or an update's: both hold a status
            status = json.get("status", {})
            found.state = status.get("state", found.state)
            found.status_message = status.get("message")
            if isinstance(event, Task):
                found.artifacts = list(json.get("artifacts", []))
        elif isinstance(event, TaskArtifactUpdateEvent):
            found.add_artifact(artifact_json(event.artifact), event.append)
    return found


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
        queue = _Collected(lambda events: self._progress(turn, events))
        try:
            await self.executor.execute(context, queue)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):  # its own cleanup; the task is canceled anyway
                await asyncio.shield(self.executor.cancel(context, _Collected()))
            raise
        found = _outcome(queue.events)
        state, text = found.state, found.text
        if state in (w.FAILED, w.REJECTED):
            raise ExecutorFailed(text or w.short_state(state))
        if state == w.CANCELED:
            raise asyncio.CancelledError
        if state == w.INPUT_REQUIRED:
            return None, [found]
        if state != w.COMPLETED:
            raise ExecutorFailed(
                f"the executor returned with the task {w.short_state(state or 'unknown')}, "
                "not completed, failed or input-required"
            )
        return found, None

    async def _progress(self, turn: Turn, events: list[Event]) -> None:
        """A working task's update (its status message, or an artifact or a chunk of one):
        kept as a ``working`` state with what was published so far, an event of the task."""
        found = _outcome(events)
        self._progressed.add(turn.slot)  # the server's own "working" is said by then
        await self._report(
            turn, w.WORKING, artifacts=found.artifacts, status_message=found.status_message
        )

    def _asked(self, interrupts: Any) -> StateFields:
        """The question as the executor asked it: its whole status message."""
        [found] = interrupts
        if found.status_message and found.text.strip():
            return {"status_message": found.status_message}
        return {"status_text": found.text or "input required"}

    def _completed(self, result: Any) -> StateFields:
        """The completed state as the executor gave it: its artifacts (file parts with their
        names and media types, data parts as data), its status message, and a Message answer
        marked as one (the Message is then the status message: docs/a2a.md, "The wire")."""
        assert isinstance(result, Outcome)
        artifacts = result.artifacts
        if result.answer is not None and not artifacts:
            # Callers that read results from artifacts (the call tools) find its parts there
            artifacts = [
                {
                    "artifactId": w.new_id(),
                    "name": "result",
                    "parts": result.answer.get("parts") or [],
                }
            ]
        fields: StateFields = {"artifacts": artifacts, "status_message": result.status_message}
        if result.answer is not None:
            fields["answer"] = w.MESSAGE_ANSWER
        return fields


async def serve_executor(
    executor: AgentExecutor, *, name: str, client: Mq9Client, **options: Any
) -> AgentServer:
    """Serve an a2a-sdk ``AgentExecutor`` as agent ``name`` on its mq9 mailbox (the options of
    ``serve_agent``: ``card``, ``worker``, ``mailbox``, ...). Returns the running server."""
    return await ExecutorServer(executor, name=name, client=client, **options).start()
