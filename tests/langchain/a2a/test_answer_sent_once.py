"""A served agent sends a task's answer once (issue #90): a request handed out again after its
task ended (a replica killed between keeping the answer and marking the request done; the
group hands the request out again) resends the state it kept, and the broker stores that SEND
once: the caller's reply mailbox and the agent's task store each hold the answer under the
msg_id it first had. The redelivery is made as the group makes it: the same request, in the
agent's mailbox, handed out again. Since #106 the agent sends a stopped task's state again only
where its caller never got it, so on RobustMQ too (which keeps no idempotency keys) the caller
holds its answer once: what it receives is checked, on every broker (#111)."""

from __future__ import annotations

from mq9_platform.a2a import mail as w
from mq9_platform.a2a.caller import AgentCaller
from mq9_platform.a2a.server import AgentServer
from testbed.support.a2a_support import text_graph, text_io
from testbed.support.waiting import until

AGENT = "agent.once"


async def kept_msg_id(client, mailbox: str, key: str) -> int:
    [kept] = await client.query(mailbox, key=key)
    return kept.msg_id


async def answers_in(client, mailbox: str, key: str) -> list[int]:
    """The msg_ids of every message the mailbox holds under ``key``, read without the key's
    filter: what a reader of the mailbox is handed."""
    return [m.msg_id for m in await client.query(mailbox) if m.key == key]


async def test_a_request_handed_out_again_after_its_task_ended_sends_its_answer_once(
    client,
):
    await client.mailbox_create(name=AGENT, ttl=0)
    caller = await AgentCaller(client, "agent.boss.calls").open()
    request = w.send_request(w.message("hello"))
    task_id = await caller.submit(AGENT, request)
    server = AgentServer(text_graph(str.upper), name=AGENT, client=client, worker="w1", **text_io())
    async with server:
        done = await caller.check(task_id, wait=20)
        assert done.state == w.COMPLETED
        store = w.store_address(AGENT)
        answered = await kept_msg_id(client, caller.reply_mailbox, w.TASK_KEY + task_id)
        stored = await kept_msg_id(client, store, w.TASK_KEY + task_id)
        # The same request again, as the group hands out a request whose replica died after
        # keeping its answer and before marking it done
        await caller.send_request(AGENT, request, w.SEND, task_id)
        await until(lambda: server.handled >= 2, timeout=20, what="the request handled again")
    finished = await caller.check(task_id)
    assert finished.state == w.COMPLETED and finished.task is not None
    assert w.result_text(finished.task) == "HELLO"
    # the caller's reply mailbox holds the answer once, under the msg_id it first had
    assert await answers_in(client, caller.reply_mailbox, w.TASK_KEY + task_id) == [answered]
    assert await kept_msg_id(client, store, w.TASK_KEY + task_id) == stored
