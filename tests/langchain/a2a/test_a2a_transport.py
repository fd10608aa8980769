"""A real a2a-sdk client, through our ClientTransport for the mq9 protocol binding, to a served
LangGraph graph: send (blocking and streaming), get task, list, cancel, a question answered."""

from __future__ import annotations

import asyncio

import pytest
from a2a.client import ClientConfig, ClientFactory
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    TaskState,
)
from a2a.utils.errors import TaskNotCancelableError, TaskNotFoundError

from mq9_platform.a2a.sdk.transport import mq9_agent_card, register_mq9
from mq9_platform.a2a.server import AgentServer
from testbed.support.a2a_support import asking, text_graph, text_io

pytestmark = pytest.mark.slow


def request(text: str, task_id: str = "", context_id: str = "") -> SendMessageRequest:
    msg = Message(message_id="m-" + text, role=Role.ROLE_USER, parts=[Part(text=text)])
    if task_id:
        msg.task_id = task_id
    if context_id:
        msg.context_id = context_id
    return SendMessageRequest(message=msg)


async def a2a_client(client, *, streaming: bool):
    factory = ClientFactory(ClientConfig(supported_protocol_bindings=["mq9"], streaming=streaming))
    register_mq9(factory, client)
    card = await mq9_agent_card(client, "agent.lang")
    assert [(i.protocol_binding, i.url) for i in card.supported_interfaces] == [
        ("mq9", "mq9://agent.lang")
    ]
    return factory.create(card)


async def last_event(a2a, req):
    events = [event async for event in a2a.send_message(req)]
    return events[-1].task, events


@pytest.mark.parametrize("streaming", [False, True])
async def test_an_a2a_sdk_client_sends_gets_and_lists_tasks(client, streaming):
    async def work(text: str) -> str:
        return asking(text) if text == "greet" else text.upper()

    graph = text_graph(work)
    async with AgentServer(graph, name="agent.lang", client=client, worker="w1", **text_io()):
        a2a = await a2a_client(client, streaming=streaming)
        task, events = await last_event(a2a, request("hello"))
        assert task.status.state == TaskState.TASK_STATE_COMPLETED
        assert task.artifacts[0].parts[0].text == "HELLO"
        if streaming:  # submitted first, then what the agent reported
            assert events[0].task.status.state == TaskState.TASK_STATE_SUBMITTED
        got = await a2a.get_task(GetTaskRequest(id=task.id))
        assert got.status.state == TaskState.TASK_STATE_COMPLETED and got.id == task.id

        # A question, and the answer as A2A sends it: a message naming the task.
        asked, _ = await last_event(a2a, request("greet"))
        assert asked.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
        assert asked.status.message.parts[0].text == "Which language?"
        done, _ = await last_event(a2a, request("Dutch", asked.id, asked.context_id))
        assert done.status.state == TaskState.TASK_STATE_COMPLETED
        assert done.artifacts[0].parts[0].text == "greet in Dutch"

        listed = await a2a.list_tasks(ListTasksRequest())
        assert {t.id for t in listed.tasks} == {task.id, asked.id}
        with pytest.raises(TaskNotFoundError):
            await a2a.get_task(GetTaskRequest(id="nosuchtask"))
        with pytest.raises(TaskNotCancelableError):
            await a2a.cancel_task(CancelTaskRequest(id=task.id))
        await a2a.close()


async def test_an_a2a_sdk_client_cancels_a_running_task(client):
    started = asyncio.Event()

    async def slow(text: str) -> str:
        started.set()
        await asyncio.sleep(60)
        return text

    graph = text_graph(slow)
    async with AgentServer(graph, name="agent.lang", client=client, worker="w1", **text_io()):
        a2a = await a2a_client(client, streaming=False)
        req = request("long")
        req.configuration.return_immediately = True
        (event,) = [e async for e in a2a.send_message(req)]
        assert event.task.status.state == TaskState.TASK_STATE_SUBMITTED
        await asyncio.wait_for(started.wait(), 10)
        canceled = await a2a.cancel_task(CancelTaskRequest(id=event.task.id))
        assert canceled.status.state == TaskState.TASK_STATE_CANCELED
        got = await a2a.get_task(GetTaskRequest(id=event.task.id))
        assert got.status.state == TaskState.TASK_STATE_CANCELED
