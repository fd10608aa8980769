"""A2A push notifications on the A2A server over mq9 (#62): a task's owner sets a push config
(tasks/pushNotificationConfig/*, over the mq9 binding), and each later state of the task is
POSTed to its URL, through the agent operator's allow-list; a stranger's config request is
"not found", a URL outside the allow-list is refused, an agent without push_destinations says
so; on memory://, the bundled broker and the RobustMQ-shaped listener."""

from __future__ import annotations

import asyncio
import json

import pytest

from langchain_mq9.serving import AgentServer
from mq9_platform.a2a import mail as w
from mq9_platform.a2a.caller import AgentCaller
from mq9_platform.wake import Destinations
from testbed.support.waiting import until

HANG_GUARD = 30.0


class Gate:
    """A graph that waits until told, so the task stays working while the test sets push."""

    def __init__(self) -> None:
        self.open = asyncio.Event()

    async def ainvoke(self, payload, config=None):
        await self.open.wait()
        return {"messages": [{"role": "assistant", "content": "done"}]}


async def ask(client, agent: str, reply_to: str, method: str, task_id: str, body: dict) -> dict:
    """One push config request over the mq9 binding; the answer left in the reply mailbox."""
    before = {m.msg_id for m in await client.query(reply_to, limit=100)}
    headers = {w.HEADER_METHOD: method, w.HEADER_REPLY_TO: reply_to, w.HEADER_TASK_ID: task_id}
    await client.send(agent, json.dumps(body), headers=headers)

    async def answer() -> dict | None:
        for message in await client.query(reply_to, limit=100):
            kind = message.header.get(w.HEADER_TYPE)
            if message.msg_id not in before and kind and kind != "Task" and "task" not in kind:
                return {"type": kind, **message.json()}
        return None

    return await until(answer, timeout=HANG_GUARD, what=f"an answer to {method}", every=0.05)


@pytest.mark.slow  # over a second on a quiet machine (#89)
async def test_a_tasks_owner_gets_its_states_pushed(lane, receiver):
    gate = Gate()
    async with lane.client() as client:
        agent = AgentServer(
            gate,
            name="agent.pushed",
            client=client,
            register=False,
            push_destinations=Destinations(hosts=["127.0.0.1/32"]),
        )
        await agent.start()
        try:
            assert agent.agent_card()["capabilities"]["pushNotifications"] is True
            caller = await AgentCaller(client, "agent.owner").open()
            call = await caller.call("agent.pushed", "work", wait=0)
            task_id, mine = call.task_id, caller.reply_mailbox
            for _ in range(int(HANG_GUARD / 0.05)):  # the agent took the task (it works on it)
                if (await caller.check(task_id, wait=0)).state == w.WORKING:
                    break
                await asyncio.sleep(0.05)
            made = await ask(
                client,
                "agent.pushed",
                mine,
                w.CREATE_PUSH,
                task_id,
                {"taskId": task_id, "url": receiver.url, "token": "tok-1"},
            )
            assert made["type"] == "TaskPushNotificationConfig" and made["url"] == receiver.url
            listed = await ask(
                client, "agent.pushed", mine, w.LIST_PUSH, task_id, {"taskId": task_id}
            )
            assert [c["id"] for c in listed["configs"]] == [made["id"]]
            # a stranger (another reply mailbox) learns nothing of it
            stranger = await AgentCaller(client, "agent.stranger").open()
            refused = await ask(
                client,
                "agent.pushed",
                stranger.reply_mailbox,
                w.LIST_PUSH,
                task_id,
                {"taskId": task_id},
            )
            assert "not found" in refused["error"]["message"]
            # a URL inside the network the operator did not allow
            inside = await ask(
                client,
                "agent.pushed",
                mine,
                w.CREATE_PUSH,
                task_id,
                {"taskId": task_id, "url": "http://169.254.169.254/x"},
            )
            assert "refused" in inside["error"]["message"]
            gate.open.set()
            for _ in range(int(HANG_GUARD / 0.05)):
                states = [json.loads(b)["task"]["status"]["state"] for b, _ in receiver.requests]
                if w.COMPLETED in states:
                    break
                await asyncio.sleep(0.05)
            assert states[-1] == w.COMPLETED
            assert all(h.get("X-A2A-Notification-Token") == "tok-1" for _, h in receiver.requests)
            gone = await ask(
                client,
                "agent.pushed",
                mine,
                w.DELETE_PUSH,
                task_id,
                {"taskId": task_id, "id": made["id"]},
            )
            assert gone["type"] == "Empty"
        finally:
            await agent.stop()


async def test_an_agent_without_push_says_so(memory_lane):
    gate = Gate()
    gate.open.set()
    async with memory_lane.client() as client:
        agent = await AgentServer(gate, name="agent.plain", client=client, register=False).start()
        try:
            assert agent.agent_card()["capabilities"]["pushNotifications"] is False
            caller = await AgentCaller(client, "agent.owner").open()
            call = await caller.call("agent.plain", "work", wait=5)
            answer = await ask(
                client,
                "agent.plain",
                caller.reply_mailbox,
                w.CREATE_PUSH,
                call.task_id,
                {"taskId": call.task_id, "url": "http://x/"},
            )
            assert "not enabled" in answer["error"]["message"]
        finally:
            await agent.stop()
