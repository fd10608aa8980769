"""Poison messages (issue #42, docs/groups.md "Poison messages"): a retry budget counted on the
broker, a dead-letter mailbox, a group that moves on, and dead letters sent back.

Over ``memory://``, the dev broker on a real nats-server, and RobustMQ in its lane. The
consumers' retries back off in real time (0.1 s, doubling): the budgets here are small, so a
poison message is set aside within a second; no test sleeps to wait for anything.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import Counter

import pytest
from langchain.agents import create_agent

from langchain_mq9 import Mq9Toolkit
from langchain_mq9.testing import ScriptedChatModel, call, calls, tool_result
from mq9_platform import GroupReader, Message, Mq9Error
from mq9_platform.groups import DeadLetter, Replayed, replay
from mq9_platform.groups.dead_letters import DEAD_LETTER_HEADER
from mq9_platform.groups.leases import GRACE, delivery_tags, handout_tag, lease_address
from mq9_platform.operations.catalog import OPERATIONS, OperationError, ToolPolicy

# A hang guard, no timing claim: what takes well under a second on the in-process store takes
# 10-26 s on the JetStream store's lane (test_jetstream_suites: 1,000 messages, 4 competing
# workers' leases and done records, each a write on the cluster; 20-26 s measured on a quiet
# 2-core machine), more beside other workers of the suite
WAIT = 120
POLL_MS = 50
_boxes = itertools.count()


async def new_box(client, count: int = 0, poison_at: int | None = None) -> str:
    box = await client.mailbox_create(name=f"dl.box{next(_boxes)}")
    for i in range(count):
        await client.send(box, "poison" if i == poison_at else f"m{i}")
    return box


class Work:
    """A handler shared by consumers: raises on "poison", counts every other message it
    handled, and wakes the test once ``expected`` were handled and a poison was set aside."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.handled: Counter[int] = Counter()
        self.poison_calls = 0
        self.consumers: list = []
        self.finished = asyncio.Event()

    async def __call__(self, message: Message) -> None:
        if message.payload == b"poison":
            self.poison_calls += 1
            raise ValueError("cannot parse 'poison'")
        self.handled[message.msg_id] += 1
        self.check()

    def check(self, *_: object) -> None:
        aside = any(c.dead_lettered for c in self.consumers)
        if aside and sum(self.handled.values()) >= self.expected:
            self.finished.set()


async def run_consumers(clients, box: str, work: Work, workers: bool, **options) -> None:
    for i, client in enumerate(clients):
        work.consumers.append(
            await client.consume(
                box,
                work,
                group_name="g",
                deliver="earliest",
                max_wait_ms=POLL_MS,
                error_handler=work.check,
                worker=f"w{i}" if workers else None,
                **options,
            )
        )
    try:
        await asyncio.wait_for(work.finished.wait(), WAIT)
    finally:
        for consumer in work.consumers:
            await consumer.stop()


async def assert_set_aside_and_passed(
    client, box: str, poison: int, budget: int, *, competing: bool = False
) -> None:
    """The poison is in ``<box>.dlq`` with its reason, once or (a crash between the copy and
    the ack) more; the group's position is past everything (competing workers: past the
    poison, as their position follows the done records lazily and stopped workers may leave
    the last move to the next reader, whom the done records keep from handling anything)."""
    letters = [DeadLetter.read(m) for m in await client.query(f"{box}.dlq")]
    assert letters and {(d.mailbox, d.group, d.msg_id) for d in letters} == {(box, "g", poison)}
    letter = letters[0]
    assert letter.attempts >= budget
    assert letter.reason == "ValueError: cannot parse 'poison'"
    assert letter.message.payload == b"poison"
    left = await client.fetch(box, group_name="g", max_wait_ms=0, num_msgs=100)
    assert all(m.msg_id > poison for m in left) if competing else left == []


@pytest.mark.slow  # over a second on a quiet machine (#89)
@pytest.mark.parametrize("workers", [1, 4])
async def test_one_poison_among_many_is_set_aside_and_the_rest_handled_once(
    broker, client, workers
):
    """Issue #42's measurement: one always-failing message held the group's position for
    ever, and every restart handed out again all that followed it."""
    count = 1000
    box = await new_box(client, count, poison_at=count // 3)
    poison = count // 3
    work = Work(expected=count - 1)
    clients = [client] + [broker.client() for _ in range(workers - 1)]
    for other in clients[1:]:
        await other.connect()
    try:
        await run_consumers(clients, box, work, workers > 1, max_deliveries=3)
    finally:
        for other in clients[1:]:
            await other.close()
    assert set(work.handled) == set(range(count)) - {poison}
    assert set(work.handled.values()) == {1}  # every other message handled once
    assert work.poison_calls == 3  # the budget, then set aside
    await assert_set_aside_and_passed(client, box, poison, budget=3, competing=workers > 1)
    # a reader started afterwards, of the group's kind (docs/groups.md: one reader, or
    # competing workers, whose done records a worker-less reader does not read), is handed
    # nothing that was finished
    late = {"worker": "late"} if workers > 1 else {}
    assert await GroupReader(client, box, "g", **late).fetch(num_msgs=100) == []


async def test_failures_are_counted_across_restarts_and_readers(client):
    """The count lives on the broker: two failures by one consumer, one by the next (another
    reader, restarted), and the third sets it aside."""
    box = await new_box(client, 3, poison_at=1)
    first = GroupReader(client, box, "g", max_deliveries=3)
    batch = await first.fetch()
    assert [m.text() for m in batch] == ["m0", "poison", "m2"]
    await first.begin([1])  # its first batch: each begin is recorded (h)
    assert await first.fail(1, ValueError("bad")) == (1, False)
    await first.begin([1])  # handed to the handler again after a failure: recorded again
    assert await first.fail(1, "still bad") == (2, False)
    await first.done([0, 2])
    assert first.committed == 0  # held before the poison; 2 is recorded done
    # a new reader of the group (the first one died): handed out again, the count goes on;
    # what the first one finished is not handed out again
    second = GroupReader(client, box, "g", max_deliveries=3)
    assert [m.msg_id for m in await second.fetch()] == [1]
    assert second.handed_out(1) == 3
    await second.begin([1])
    assert await second.fail(1, ValueError("bad")) == (3, True)
    assert await second.fetch() == []
    assert second.committed == 2  # past the poison
    [copy] = await client.query(f"{box}.dlq")
    letter = DeadLetter.read(copy)
    assert (letter.attempts, letter.reason, letter.msg_id) == (3, "ValueError: bad", 1)
    # where the count lives: each recorded begin (h), and failures not counted by one (f; r:
    # only the reason of a delivery its begin counts)
    records = await client.query(lease_address(box, "g"), tags=list(delivery_tags(batch[1])))
    records.sort(key=lambda r: r.msg_id)  # a QUERY by tags answers tag by tag
    assert [(r.tags[0][0], r.text()) for r in records if r.tags[0][0] in "fr"] == [
        ("r", "ValueError: bad"),
        ("r", "still bad"),
        ("r", "ValueError: bad"),
    ]
    assert sum(handout_tag(batch[1]) in r.tags for r in records) == 3


async def test_a_dead_letter_keeps_the_original_headers_priority_tags_and_key(client):
    box = await new_box(client)
    await client.send(
        box,
        '{"order": 7}',
        priority="urgent",
        key="order-7",
        tags=["orders", "eu"],
        headers={"mq9-reply-to": "caller.inbox", "x-trace": "abc"},
    )
    reader = GroupReader(client, box, "g", dead_letter="ops.poison")
    [message] = await reader.fetch()
    long_reason = "line one\nline two \u2028 é " + "x" * 2000
    assert await reader.dead_letter(message.msg_id, long_reason) == 1
    assert reader.committed == message.msg_id  # the group moved past it
    assert not await exists(client, f"{box}.dlq")  # configured elsewhere
    [copy] = await client.query("ops.poison")
    letter = DeadLetter.read(copy)
    assert copy.payload == message.payload and copy.priority.value == "urgent"
    assert copy.tags == ["orders", "eu"] and copy.key is None  # the key is kept below
    assert letter.header == {"mq9-reply-to": "caller.inbox", "x-trace": "abc"}
    assert (letter.mailbox, letter.group, letter.key) == (box, "g", "order-7")
    assert letter.create_time == message.create_time
    assert len(letter.reason) < 600 and letter.reason.startswith("line one\nline two")
    assert "\n" not in copy.header[DEAD_LETTER_HEADER]  # one header line, whatever the reason


async def test_a_crash_between_the_copy_and_the_ack_copies_twice_never_none(client):
    box = await new_box(client, 2, poison_at=0)
    dying = GroupReader(client, box, "g", max_deliveries=1)
    await dying.fetch()

    async def crash(ids: list[int]) -> None:  # the process dies right after the copy
        raise SystemExit

    dying._done = crash
    with pytest.raises(SystemExit):
        await dying.fail(0, ValueError("cannot parse 'poison'"))
    assert len(await client.query(f"{box}.dlq")) == 1
    assert await client.fetch(box, group_name="g", max_wait_ms=0)  # nothing acked
    # (a budget of 1 would set both aside at once: each was handed out to a reader that died)
    restarted = GroupReader(client, box, "g", max_deliveries=2)
    assert [m.msg_id for m in await restarted.fetch()] == [0, 1]
    assert await restarted.fail(0, ValueError("cannot parse 'poison'")) == (2, True)
    await restarted.done([1])
    await assert_set_aside_and_passed(client, box, 0, budget=1)
    assert len(await client.query(f"{box}.dlq")) == 2


async def test_dead_letters_are_sent_back_and_handled(client):
    box = await new_box(client)
    await client.send(box, "poison", priority="critical", headers={"x-trace": "t1"})
    await client.send(box, "ok")
    work = Work(expected=1)
    await run_consumers([client], box, work, workers=False, max_deliveries=2)
    assert len(await client.query(f"{box}.dlq")) == 1
    # fixed: the handler now copes; the dead letters go back to their mailbox
    sent = (await replay(client, f"{box}.dlq")).sent
    assert len(sent) == 1
    assert await replay(client, f"{box}.dlq") == Replayed([], {})  # each is sent back once
    [back] = [m for m in await client.query(box) if m.msg_id == sent[0]]
    assert back.payload == b"poison" and back.priority.value == "critical"
    assert back.header.get("x-trace") == "t1" and DEAD_LETTER_HEADER not in back.header
    reader = GroupReader(client, box, "g")
    assert [m.msg_id for m in await reader.fetch()] == sent  # the group reads it anew


async def test_refusals(client):
    box = await new_box(client, 1)
    with pytest.raises(ValueError, match="library's own records"):
        GroupReader(client, box, "g", dead_letter="mq9.dlq")
    with pytest.raises(Mq9Error, match="invalid max_deliveries"):
        GroupReader(client, box, "g", max_deliveries=0)
    too_long = r"dead_letter: invalid mail_address.*longer than 3800 .*give dead_letter"
    with pytest.raises(ValueError, match=too_long):
        GroupReader(client, box, "g", dead_letter="x" * 3801)
    reader = GroupReader(client, box, "g")
    with pytest.raises(Mq9Error, match="fetch it first"):
        await reader.fail(0, "never handed out")
    await reader.fetch()
    await reader.done([0])
    with pytest.raises(Mq9Error, match="fetch it first"):
        await reader.dead_letter(0, "done already")
    assert not await exists(client, f"{box}.dlq")
    with pytest.raises(ValueError, match="not a dead letter"):
        DeadLetter.read((await client.query(box))[0])


async def exists(client, address: str) -> bool:
    try:
        await client.query(address)
    except Mq9Error:
        return False
    return True


# -- through the tools (LangChain and MCP share the operations) --------------------------------


async def tool(client, operation: str, policy: ToolPolicy, **args) -> dict:
    return (await OPERATIONS[operation].execute(client, args, policy)).content


async def test_fetch_messages_shows_what_was_handed_out_before_and_ack_sets_one_aside(client):
    box = await new_box(client, 3, poison_at=1)
    crashed = ToolPolicy(agent_mailbox=box, allowed_mailboxes=["elsewhere"])
    first = await tool(client, "fetch_messages", crashed)
    assert [m.get("handed_out") for m in first["messages"]] == [None, None, None]
    # the session ends without an ack; the next one is told these were handed out before
    session = crashed.session()
    again = await tool(client, "fetch_messages", session)
    assert [(m["msg_id"], m["handed_out"]) for m in again["messages"]] == [(0, 2), (1, 2), (2, 2)]
    assert "set_aside='<why>'" in again["next_step"]
    aside = await tool(client, "ack_messages", session, msg_id=1, set_aside="not JSON: 'poison'")
    assert aside["confirmed"] == [] and aside["still_unacked"] == [0, 2]
    assert f"query_messages(mail_address='{box}.dlq')" in aside["next_step"]
    done = await tool(client, "ack_messages", session, msg_id=2)
    assert done["confirmed"] == [0, 2] and "still_unacked" not in done
    assert await client.fetch(box, group_name="default", max_wait_ms=0) == []
    # the dead letter is readable through the tools (the own mailbox's dead letters are
    # allowed with it), what it says marked as data
    seen = await tool(client, "query_messages", session, mail_address=f"{box}.dlq")
    [letter] = seen["messages"]
    assert letter["payload"] == "poison" and seen["note"]
    about = json.loads(letter["dead_letter"])
    assert (about["mailbox"], about["msg_id"], about["reason"]) == (box, 1, "not JSON: 'poison'")
    assert about["attempts"] == 2
    # sent back with the tools: its payload to its mailbox, then the dead letter consumed
    back = {"mail_address": about["mailbox"], "payload": letter["payload"]}
    await tool(client, "send_message", session, **back)
    taken = await tool(client, "fetch_messages", session, mail_address=f"{box}.dlq")
    last = taken["messages"][-1]["msg_id"]
    await tool(client, "ack_messages", session, mail_address=f"{box}.dlq", msg_id=last)
    assert [m["payload"] for m in (await tool(client, "fetch_messages", session))["messages"]] == [
        "poison"
    ]
    with pytest.raises(OperationError, match="outside the mailboxes"):
        await tool(client, "query_messages", session, mail_address="other.dlq")
    with pytest.raises(OperationError, match="is reserved"):
        await tool(client, "query_messages", session, mail_address="mq9.lease.x.dlq")


async def test_set_aside_refuses_what_is_not_waiting(client):
    box = await new_box(client, 1)
    policy = ToolPolicy()
    with pytest.raises(OperationError, match="Call fetch_messages"):
        await tool(client, "ack_messages", policy, mail_address=box, msg_id=0, set_aside="x")
    await tool(client, "fetch_messages", policy, mail_address=box)
    await tool(client, "ack_messages", policy, mail_address=box, msg_id=0, set_aside="x")
    with pytest.raises(OperationError, match="not waiting for an ack"):
        await tool(client, "ack_messages", policy, mail_address=box, msg_id=0, set_aside="x")
    assert len(await client.query(f"{box}.dlq")) == 1
    assert not OPERATIONS["ack_messages"].allowed(ToolPolicy(read_only=True))


async def test_a_model_sets_a_malformed_message_aside_and_handles_the_rest(broker):
    """The model reads its inbox of orders, one of which it cannot parse: it records the
    others in a ledger, sets the malformed one aside with a reason, and acks the rest."""
    async with broker.client() as client:
        inbox = await client.mailbox_create(name=f"dl.orders{next(_boxes)}")
        ledger = await client.mailbox_create(name=f"{inbox}.ledger")
        for text in ('{"order": 1}', "{order: 2 <<<", '{"order": 3}'):
            await client.send(inbox, text)

    def handle(messages):
        fetched = tool_result(messages, "fetch_messages")["messages"]
        good = [m for m in fetched if isinstance(m["payload"], dict)]
        [bad] = [m for m in fetched if not isinstance(m["payload"], dict)]
        return calls(
            *[("send_message", {"mail_address": ledger, "payload": m["payload"]}) for m in good],
            ("ack_messages", {"msg_id": bad["msg_id"], "set_aside": "payload is not JSON"}),
        )

    def ack_rest(messages):
        fetched = tool_result(messages, "fetch_messages")["messages"]
        return call("ack_messages", msg_id=fetched[-1]["msg_id"])

    script = [call("fetch_messages", max_wait_ms=0), handle, ack_rest, "Orders handled."]
    async with broker.client() as client, Mq9Toolkit(client=client, agent_mailbox=inbox) as kit:
        agent = create_agent(ScriptedChatModel(steps=script), kit.get_tools())
        state = await agent.ainvoke({"messages": [("human", "Process your orders.")]})
    errors = [m.content for m in state["messages"] if getattr(m, "status", "") == "error"]
    assert not errors, errors
    assert state["messages"][-1].content == "Orders handled."
    async with broker.client() as client:
        assert [m.json() for m in await client.query(ledger)] == [{"order": 1}, {"order": 3}]
        [letter] = [DeadLetter.read(m) for m in await client.query(f"{inbox}.dlq")]
        assert letter.message.payload == b"{order: 2 <<<"
        assert (letter.msg_id, letter.reason) == (1, "payload is not JSON")
        assert await client.fetch(inbox, group_name="default", max_wait_ms=0) == []


async def test_a_hook_hears_of_each_dead_letter_before_the_group_moves_on(client):
    """What an agent server needs to answer the caller of a request it sets aside, whether a
    handler failed or every reader died holding it (set aside inside a fetch)."""
    box = await new_box(client, 1, poison_at=0)
    heard: list[tuple[int, int, str]] = []

    async def hook(message: Message, attempts: int, reason: str) -> None:
        if not heard:
            heard.append((message.msg_id, attempts, "failed once"))
            raise RuntimeError("the caller's mailbox is gone")  # not done: set aside again
        heard.append((message.msg_id, attempts, reason))

    reader = GroupReader(client, box, "g", max_deliveries=1, on_dead_letter=hook)
    await reader.fetch()
    with pytest.raises(RuntimeError, match="mailbox is gone"):
        await reader.fail(0, "bad")
    await client.send(box, "m1")
    # the next reader finds it past its budget in its first batch: set aside in the fetch
    after = GroupReader(client, box, "g", max_deliveries=1, on_dead_letter=hook)
    assert [m.msg_id for m in await after.fetch()] == [1]
    assert heard == [(0, 1, "failed once"), (0, 1, "bad")]  # handed out once, failed once
    await after.done([1])
    assert await after.fetch() == [] and after.committed == 1


async def test_a_message_that_kills_every_worker_holding_it_is_set_aside(broker, client):
    """Workers die on it (no failure is ever recorded): each restarted worker's first batch,
    and each takeover after a dead holder's lease, counts a delivery; past the budget the
    next worker sets it aside instead of handing it out, and handles the rest."""
    box = await new_box(client, 3, poison_at=0)
    for life in range(3):  # three workers, each killed while handling message 0
        dying = GroupReader(client, box, "g", worker=f"w{life}", lease_ttl=30, max_deliveries=3)
        [first, *_] = await dying.fetch(num_msgs=1)
        assert first.msg_id == 0
        assert dying.handed_out(0) == life + 1
        await dying.begin([0])  # handed to its handler, which dies
        broker.clock.advance(30 + GRACE + 1)  # its lease runs out
    survivor = GroupReader(client, box, "g", worker="w9", lease_ttl=30, max_deliveries=3)
    assert [m.msg_id for m in await survivor.fetch(num_msgs=1)] == [1]  # not "nothing"
    assert [m.msg_id for m in await survivor.fetch()] == [2]
    [letter] = [DeadLetter.read(m) for m in await client.query(f"{box}.dlq")]
    assert letter.msg_id == 0 and "never finished" in letter.reason
    await survivor.done([1, 2])
    assert await survivor.fetch() == [] and survivor.committed == 2


async def test_a_worker_taking_over_counts_the_delivery(broker, client):
    box = await new_box(client, 2)
    first = GroupReader(client, box, "g", worker="a", lease_ttl=30)
    await first.fetch(num_msgs=1)
    await first.begin([0])  # its first batch: message 0, recorded as it is handled
    other = GroupReader(client, box, "g", worker="b", lease_ttl=30)
    assert [m.msg_id for m in await other.fetch()] == [1]  # b's first batch
    broker.clock.advance(30 + GRACE + 1)  # a is gone; b takes 0 over, in a later fetch
    assert [m.msg_id for m in await other.fetch()] == [0]
    assert other.handed_out(0) == 2
