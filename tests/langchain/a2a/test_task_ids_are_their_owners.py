"""On a ``--credentials`` broker a task id is its vouched owner's (#70): the served agent keeps
each task under its owner's part of the store (``store.Asker.scope``), so mallory (a raw
nats-py client holding her own valid credential, with a reply mailbox of her own: all the
broker lets her name) who sends a task under an id the victim uses makes a task of her own.
Her GetTask, cancel, answer and push config of that id reach her task only; the victim's task
goes on, and completes with its own result. A task kept before ids were their owner's (under
the shared ``task.{id}``) stays its owner's and is nobody else's. Three credentials: the
served agent ``vault``, the caller ``victim``, ``mallory``. docs/security.md's "Agent calls"
rows name these tests; tests/langchain/a2a/test_reply_mailbox_is_the_senders.py has the same
attack
with the agent offline while she sends.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from mq9_platform.a2a import mail as w
from mq9_platform.a2a.store import Asker, deliver
from mq9_wire import protocol as p
from testbed.support.credentials_support import ask, ok
from testbed.support.waiting import until
from tests.langchain.a2a.vault_world import AGENT, MINE, World, world_fixture
from tests.platform.a2a.push_support import Receiver, registered_jwks

pytestmark = pytest.mark.slow  # a dev broker process per test

TOKEN = "tok-" + "7" * 20
WAIT = 20.0  # seconds: a guard against a hang, never a measure


world = world_fixture(served=True, pushes=True, mallorys_mailbox=True)


async def mallorys(world: World, method: str, task_id: str, body: Any) -> None:
    """Mallory's request to the agent about ``task_id``, its answers asked into her own reply
    mailbox (critical, so that the agent reads it before anything waiting): the broker takes
    it (the attack is what the agent does with it)."""
    headers = {
        w.HEADER_METHOD: method,
        w.HEADER_REPLY_TO: MINE,
        w.HEADER_TASK_ID: task_id,
        p.HEADER_PRIORITY: "critical",
    }
    said = await ask(
        world.mallory, "mallory", p.send_subject(AGENT), w.json_text(body).encode(), headers
    )
    assert said["error"] == "", said


async def in_her_mailbox(world: World, key: str, state: str | None = None) -> dict:
    """What the agent left in mallory's reply mailbox under ``key`` (a task in ``state``)."""

    async def left() -> dict | None:
        found = await ok(world.mallory, "mallory", p.MSG_QUERY + MINE, {"key": key})
        kept = [json.loads(message["payload"]) for message in reversed(found["messages"])]
        wanted = (k for k in kept if state is None or k.get("status", {}).get("state") == state)
        return next((dict(k) for k in wanted), None)

    return await until(left, timeout=WAIT, what=f"{key} in mallory's mailbox", every=0.05)


async def victims_config(world: World, task_id: str, url: str) -> bool:
    """Whether the agent answered the victim's push config for ``url`` (in its reply mailbox)."""
    kept = await world.victim.query(world.caller.reply_mailbox, key=f"answer.{task_id}")
    return any(url in message.payload.decode() for message in kept)


async def nothing_of_hers(world: World) -> None:
    """The victim's reply mailbox holds nothing of mallory's tasks, nor any error."""
    kept = await world.victim.query(world.caller.reply_mailbox)
    assert "steal" not in json.dumps([m.payload.decode() for m in kept])
    assert not [m for m in kept if m.header.get(w.HEADER_TYPE) == "Error"], kept


async def test_her_task_under_the_victims_id_neither_blocks_nor_sees_it(world):
    asked = await world.caller.call(AGENT, "greet", wait=WAIT)
    assert asked.state == w.INPUT_REQUIRED
    task_id = asked.task_id
    # a new task of hers under the victim's id: hers, not "task exists", not the victim's
    await mallorys(world, w.SEND, task_id, w.send_request(w.message("steal")))
    hers = await in_her_mailbox(world, w.TASK_KEY + task_id, w.INPUT_REQUIRED)
    assert hers["history"][-1]["parts"][0]["text"] == "steal"
    # GetTask of that id: her own task
    await mallorys(world, w.GET_TASK, task_id, {"id": task_id})
    keys = await registered_jwks(world.victim, AGENT)
    with Receiver() as her_url, Receiver(keys) as theirs:
        # a push config on that id: on her task
        config = {"taskId": task_id, "url": her_url.url, "token": TOKEN}
        await mallorys(world, w.CREATE_PUSH, task_id, config)
        made = await in_her_mailbox(world, f"answer.{task_id}")
        assert made["url"] == her_url.url
        # her answer resumes her task, in her thread: never the victim's question
        answer = w.send_request(w.message("Klingon", task_id=task_id))
        await mallorys(world, w.SEND, task_id, answer)
        done = await in_her_mailbox(world, w.TASK_KEY + task_id, w.COMPLETED)
        assert done["artifacts"][0]["parts"][0]["text"] == "steal in Klingon"
        # her cancel of that id: her task (ended already: its state again), never the victim's
        key = {"key": w.TASK_KEY + task_id}
        [last] = (await ok(world.mallory, "mallory", p.MSG_QUERY + MINE, key))["messages"]
        await mallorys(world, w.CANCEL_TASK, task_id, {"id": task_id})
        async with asyncio.timeout(WAIT):  # a hang guard only
            while True:
                [again] = (await ok(world.mallory, "mallory", p.MSG_QUERY + MINE, key))["messages"]
                if again["msg_id"] != last["msg_id"]:
                    break
                await asyncio.sleep(0.05)
        assert json.loads(again["payload"])["status"]["state"] == w.COMPLETED
        still = await world.caller.check(task_id)
        assert still.state == w.INPUT_REQUIRED and still.agent_error is None, still
        assert "steal" not in json.dumps(still.task)
        # the victim's own task goes on: its push config, its answer, its result
        config = {"taskId": task_id, "url": theirs.url, "token": TOKEN + "v"}
        await world.victim.send(
            AGENT,
            w.json_text(config),
            headers={
                w.HEADER_METHOD: w.CREATE_PUSH,
                w.HEADER_REPLY_TO: world.caller.reply_mailbox,
                w.HEADER_TASK_ID: task_id,
            },
        )
        # made before the answer goes (as an A2A client waits for its config's answer): the
        # agent handles its requests at once, so an answer sent sooner may complete the task
        # before the config exists, and nothing is pushed (a clean-clone run)
        await until(
            lambda: victims_config(world, task_id, theirs.url),
            timeout=WAIT,
            what="the victim's push config made",
            every=0.05,
        )
        finished = await world.caller.answer(task_id, "French", wait=WAIT)
        assert finished.state == w.COMPLETED, finished
        assert finished.view()["result"] == "greet in French"
        pushed = await theirs.until(TOKEN + "v", w.COMPLETED)
        assert pushed[-1]["artifacts"][0]["parts"][0]["text"] == "greet in French"
        seen_by_her = json.dumps([body.decode() for body, _ in her_url.requests])
        assert "greet" not in seen_by_her
    await nothing_of_hers(world)


async def test_a_task_kept_under_the_shared_id_stays_its_owners(world):
    """A task kept before ids were their owner's (its record under ``task.{id}``, as this
    server wrote it until then) is still found by its owner, who answers it; to mallory it is
    as if absent: her task under that id is her own, and the owner's goes on."""
    asked = await world.caller.call(AGENT, "greet", wait=WAIT)
    assert asked.state == w.INPUT_REQUIRED
    task_id, store = asked.task_id, world.server.store
    owner = Asker(world.caller.reply_mailbox, "victim")
    [now] = await world.vault.query(store.mailbox, key=f"{owner.scope}{w.TASK_KEY}{task_id}")
    # the record as it was kept before: under the shared key, the owner's own one gone
    await deliver(world.vault, store.mailbox, json.loads(now.payload))
    await world.vault.delete(store.mailbox, now.msg_id)
    assert await store.get(task_id, owner) == json.loads(now.payload)
    assert await store.get(task_id, Asker(MINE, "mallory")) is None
    await mallorys(world, w.SEND, task_id, w.send_request(w.message("steal")))
    hers = await in_her_mailbox(world, w.TASK_KEY + task_id, w.INPUT_REQUIRED)
    assert hers["metadata"]["mq9"]["sender"] == "mallory"
    done = await world.caller.answer(task_id, "French", wait=WAIT)
    assert done.state == w.COMPLETED and done.view()["result"] == "greet in French", done
    listed = await store.list(owner)
    assert [(t["id"], t["status"]["state"]) for t in listed] == [(task_id, w.COMPLETED)]
    await nothing_of_hers(world)
