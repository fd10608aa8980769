"""#70's two attacks left open after the served agent took a task's owner from ``mq9-sender``:
on a ``--credentials`` broker mallory (a raw nats-py client holding her own valid credential)
could still name the victim's reply mailbox in requests to a served agent, and

(a) have the agent leave the states of her own new tasks in the victim's reply mailbox;
(b) with a task id the agent had not read yet (the agent offline), have her task take that id
    first, so that the victim saw her result under it (with a reply mailbox of her own, the
    victim's call was then refused, "task T exists": closed by the agent keeping a task id
    its vouched owner's, tests/langchain/a2a/test_task_ids_are_their_owners.py).

The broker now refuses a SEND whose ``mq9-reply-to`` names a mailbox that is not its sender's
(unless it goes into the sender's own mailbox): each attack is refused in one line, the agent
reads nothing of it, and the victim's call (and mallory's with a reply mailbox of her own)
still works. Three credentials: the served agent ``vault``, the caller ``victim``,
``mallory``. docs/security.md's "Agent calls" rows name these tests.
"""

from __future__ import annotations

import json

import pytest
from nats.aio.client import Client as NatsConnection

from mq9_platform.a2a import mail as w
from mq9_wire import protocol as p
from testbed.support.a2a_support import Counting
from testbed.support.credentials_support import ask, ok
from testbed.support.waiting import until
from tests.langchain.a2a.vault_world import AGENT, World, world_fixture

pytestmark = pytest.mark.slow  # a dev broker process per test

REFUSAL = "SEND refused: mq9-reply-to "
WAIT = 20.0  # seconds: a guard against a hang, never a measure


world = world_fixture(served=False, work=Counting)  # work.runs: what the graph ran, by text


async def mallorys_task(world: World, reply_to: str, task_id: str, text: str, **extra: str):
    """Mallory's new task to the agent, its answers asked into ``reply_to``: the broker's
    answer (critical, so that the agent would read it before anything waiting)."""
    headers = {
        w.HEADER_METHOD: w.SEND,
        w.HEADER_REPLY_TO: reply_to,
        w.HEADER_TASK_ID: task_id,
        p.HEADER_PRIORITY: "critical",
        **extra,
    }
    body = w.json_text(w.send_request(w.message(text))).encode()
    return await ask(world.mallory, "mallory", p.send_subject(AGENT), body, headers=headers)


def refused_in_one_line(said: dict) -> None:
    assert said["error"].startswith(REFUSAL), said
    assert "is not a mailbox of yours" in said["error"] and "\n" not in said["error"], said


async def nothing_of(world: World, task_id: str) -> None:
    """The victim's reply mailbox holds nothing about mallory's task, and its calls are its
    own."""
    kept = await world.victim.query(world.caller.reply_mailbox)
    assert not [m for m in kept if m.header.get(w.HEADER_TASK_ID) == task_id], kept
    assert not [m for m in kept if (m.key or "").endswith(task_id)], kept


async def until_completed(connection: NatsConnection, reply: str, task_id: str) -> dict:
    """The completed task ``task_id`` the agent left in mallory's own reply mailbox."""

    async def completed() -> dict | None:
        found = await ok(connection, "mallory", p.MSG_QUERY + reply, {"key": w.TASK_KEY + task_id})
        tasks = [json.loads(message["payload"]) for message in found["messages"]]
        return next((dict(t) for t in tasks if t["status"]["state"] == w.COMPLETED), None)

    return await until(completed, timeout=WAIT, what=f"task {task_id} completed in {reply}")


async def test_mallorys_new_tasks_leave_nothing_in_the_victims_reply_mailbox(world):
    """(a): her new tasks naming the victim's reply mailbox are refused; none runs; the
    victim's reply mailbox and calls hold only its own. Her own reply mailbox works."""
    async with world.agent():
        asked = await world.caller.call(AGENT, "victim's words", wait=WAIT)
        assert asked.state == w.COMPLETED
        reply = world.caller.reply_mailbox
        hers = [w.new_id() for _ in range(3)]
        refused_in_one_line(await mallorys_task(world, reply, hers[0], "mallory's"))
        # in other spellings, and with the victim's name written as the sender besides
        refused_in_one_line(
            await mallorys_task(world, "", hers[1], "mallory's", **{"MQ9-Reply-To": reply})
        )
        refused_in_one_line(
            await mallorys_task(world, reply, hers[2], "mallory's", **{p.HEADER_SENDER: "victim"})
        )
        # the legitimate use beside it: a reply mailbox of her own, which the agent answers
        mine = w.caller_address("mallory")
        await ok(world.mallory, "mallory", p.MAILBOX_CREATE, {"name": mine, "ttl": 0})
        own = w.new_id()
        assert (await mallorys_task(world, mine, own, "her own"))["error"] == ""
        done = await until_completed(world.mallory, mine, own)
        assert done["artifacts"][0]["parts"][0]["text"] == "HER OWN"
        # and the victim's next call
        again = await world.caller.call(AGENT, "victim again", wait=WAIT)
        assert again.state == w.COMPLETED and again.view()["result"] == "VICTIM AGAIN"
    assert dict(world.work.runs) == {"victim's words": 1, "her own": 1, "victim again": 1}
    for task_id in hers:
        await nothing_of(world, task_id)
    calls = await world.caller.calls()
    assert sorted(c.task_id for c in calls) == sorted([asked.task_id, again.task_id])


async def test_a_task_id_not_read_yet_stays_the_victims(world):
    """(b): the agent is offline with the victim's request waiting; mallory, knowing its task
    id, sends a task of hers under it naming the victim's reply mailbox (critical, so that it
    would be read first): refused. The agent, back, runs the victim's task, whose result is
    the victim's own."""
    async with world.agent():
        pass  # its mailbox and task store made, then offline
    asked = await world.caller.call(AGENT, "victim's words")
    assert asked.state == w.SUBMITTED
    reply = world.caller.reply_mailbox
    refused_in_one_line(await mallorys_task(world, reply, asked.task_id, "mallory's result"))
    [waiting] = await world.vault.query(AGENT)
    assert waiting.header[p.HEADER_SENDER] == "victim"  # nothing of hers is waiting
    async with world.agent():
        done = await world.caller.check(asked.task_id, wait=WAIT)
    assert done.state == w.COMPLETED and done.view()["result"] == "VICTIM'S WORDS"
    assert "mallory" not in json.dumps(done.task)
    assert dict(world.work.runs) == {"victim's words": 1}


async def test_a_task_id_she_takes_with_her_own_reply_mailbox_is_hers_alone(world):
    """What the broker's rule leaves, closed by the agent (docs/security.md): with a reply
    mailbox of her own, her task takes a task id the agent has not read yet (unguessable, and
    on this broker only the agent's owner reads its mailbox: she must have learned it
    elsewhere). A task id is its vouched owner's: hers is a task of her own, its result in her
    reply mailbox, and the victim's call, read after it, runs and completes with its own."""
    async with world.agent():
        pass
    asked = await world.caller.call(AGENT, "victim's words")
    mine = w.caller_address("mallory")
    await ok(world.mallory, "mallory", p.MAILBOX_CREATE, {"name": mine, "ttl": 0})
    said = await mallorys_task(world, mine, asked.task_id, "mallory's result")
    assert said["error"] == "", said
    async with world.agent():
        hers = await until_completed(world.mallory, mine, asked.task_id)
        done = await world.caller.check(asked.task_id, wait=WAIT)
    assert hers["artifacts"][0]["parts"][0]["text"] == "MALLORY'S RESULT"
    assert done.state == w.COMPLETED and done.view()["result"] == "VICTIM'S WORDS", done
    assert done.task["metadata"]["mq9"]["sender"] == "victim"
    assert hers["metadata"]["mq9"]["sender"] == "mallory"
    assert dict(world.work.runs) == {"mallory's result": 1, "victim's words": 1}
    kept = await world.victim.query(world.caller.reply_mailbox)
    assert "MALLORY" not in json.dumps([m.payload.decode() for m in kept])
    assert not [m for m in kept if m.header.get(w.HEADER_TYPE) == "Error"], kept
