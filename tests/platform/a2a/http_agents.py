"""A real a2a-sdk HTTP A2A agent (JSON-RPC, streaming) served by uvicorn on 127.0.0.1, for the
tests of calls out, card import and the gateway."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from a2a.helpers.proto_helpers import new_task
from a2a.server.agent_execution import AgentExecutor
from a2a.server.request_handlers import DefaultRequestHandlerV2
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types.a2a_pb2 import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    Part,
    TaskState,
)
from starlette.applications import Starlette

from testbed.ports import unclaimed_port


class Shouter(AgentExecutor):
    """Shouts the text back; "ask" asks first; "fail" fails; "wait" runs until canceled."""

    def __init__(self) -> None:
        self.canceled: list[str] = []
        self.running = asyncio.Event()

    async def execute(self, context, event_queue) -> None:
        updater = TaskUpdater(event_queue, context.task_id, context.context_id)
        text = context.get_user_input()
        if context.current_task is None:  # a new task: a2a-sdk's server needs it first
            await event_queue.enqueue_event(
                new_task(context.task_id, context.context_id, TaskState.TASK_STATE_SUBMITTED)
            )
        await updater.start_work()
        if text == "fail":
            await updater.failed(updater.new_agent_message([Part(text="cannot shout that")]))
            return
        if text == "wait":
            self.running.set()
            await asyncio.sleep(120)
        if text == "ask":
            await updater.requires_input(updater.new_agent_message([Part(text="How loud?")]))
            return
        await updater.add_artifact([Part(text=text.upper())])
        await updater.complete()

    async def cancel(self, context, event_queue) -> None:
        self.canceled.append(context.task_id)
        updater = TaskUpdater(event_queue, context.task_id, context.context_id)
        await updater.cancel()


def shouter_card(url: str, *, streaming: bool = True) -> AgentCard:
    return AgentCard(
        name="Shouter",
        description="Shouts text back in capital letters",
        version="1.0.0",
        supported_interfaces=[
            AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="1.0")
        ],
        capabilities=AgentCapabilities(streaming=streaming),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[
            AgentSkill(
                id="shout", name="shout", description="shouts text in capitals", tags=["shout"]
            )
        ],
    )


@contextlib.asynccontextmanager
async def serve_http(app: Any, port: int | None = None) -> AsyncIterator[str]:
    """Serve an ASGI app on 127.0.0.1 (a free port): its base URL, until the block ends."""
    port = port or unclaimed_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started:
                break
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


@contextlib.asynccontextmanager
async def a2a_http_agent(
    executor: AgentExecutor | None = None, *, streaming: bool = True, port: int | None = None
) -> AsyncIterator[tuple[str, AgentExecutor]]:
    """An a2a-sdk agent (``Shouter`` unless given): (its base URL, the executor)."""
    executor = executor or Shouter()
    port = port or unclaimed_port()
    base = f"http://127.0.0.1:{port}"
    card = shouter_card(base + "/rpc", streaming=streaming)
    handler = DefaultRequestHandlerV2(executor, InMemoryTaskStore(), card)
    routes = [*create_agent_card_routes(card), *create_jsonrpc_routes(handler, "/rpc")]
    async with serve_http(Starlette(routes=routes), port):
        yield base, executor
