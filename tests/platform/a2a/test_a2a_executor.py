"""An a2a-sdk AgentExecutor (agent code written for a2a-sdk's servers) served over mq9, and
reached by our caller (the call tools' engine) and by an a2a-sdk client through our transport."""

from __future__ import annotations

import asyncio

import pytest
from a2a.client import ClientConfig, ClientFactory
from a2a.server.agent_execution import AgentExecutor
from a2a.server.tasks import TaskUpdater
from a2a.types.a2a_pb2 import Message, Part, Role, SendMessageRequest, TaskState

from mq9_platform.a2a import mail as w
from mq9_platform.a2a.caller import AgentCaller
from mq9_platform.a2a.sdk.executor import ExecutorServer
from mq9_platform.a2a.sdk.transport import mq9_agent_card, register_mq9

pytestmark = pytest.mark.slow


class Shouter(AgentExecutor):
    """Shouts the text back; asks first when told "ask"; fails on "fail"; "wait" runs on."""

    def __init__(self) -> None:
        self.canceled: list[str] = []
        self.running = asyncio.Event()

    async def execute(self, context, event_queue) -> None:
        updater = TaskUpdater(event_queue, context.task_id, context.context_id)
        text = context.get_user_input()
        if text == "fail":
            await updater.failed(updater.new_agent_message([Part(text="cannot shout that")]))
            return
        if text == "wait":
            self.running.set()
            await asyncio.sleep(60)
        if text == "ask" and context.current_task is None:
            await updater.requires_input(updater.new_agent_message([Part(text="How loud?")]))
            return
        await updater.add_artifact([Part(text=text.upper())])
        await updater.complete()

    async def cancel(self, context, event_queue) -> None:
        self.canceled.append(context.task_id)


async def test_our_caller_reaches_an_a2a_sdk_executor(client):
    executor = Shouter()
    async with ExecutorServer(executor, name="agent.shout", client=client, worker="w1"):
        caller = await AgentCaller(client, "agent.me.calls").open()
        done = await caller.call("agent.shout", "hi", wait=10)
        assert done.state == w.COMPLETED and done.view()["result"] == "HI"
        failed = await caller.call("agent.shout", "fail", wait=10)
        assert failed.state == w.FAILED and "cannot shout that" in failed.view()["reason"]
        asked = await caller.call("agent.shout", "ask", wait=10)
        assert asked.view()["question"] == "How loud?"
        answered = await caller.answer(asked.task_id, "very", wait=10)
        assert answered.state == w.COMPLETED and answered.view()["result"] == "VERY"
        running = await caller.call("agent.shout", "wait")
        await asyncio.wait_for(executor.running.wait(), 10)
        canceled = await caller.cancel(running.task_id, wait=10)
        assert canceled.state == w.CANCELED
    assert executor.canceled == [running.task_id]


async def test_an_a2a_sdk_client_reaches_an_a2a_sdk_executor_over_mq9(client):
    async with ExecutorServer(Shouter(), name="agent.shout", client=client, worker="w1"):
        factory = ClientFactory(ClientConfig(supported_protocol_bindings=["mq9"]))
        register_mq9(factory, client)
        a2a = factory.create(await mq9_agent_card(client, "agent.shout"))
        message = Message(message_id="1", role=Role.ROLE_USER, parts=[Part(text="hello")])
        events = [e async for e in a2a.send_message(SendMessageRequest(message=message))]
        assert events[-1].task.status.state == TaskState.TASK_STATE_COMPLETED
        assert events[-1].task.artifacts[0].parts[0].text == "HELLO"
