"""Property tests of the broker engine, driven on the wire (``engine.handle``) with a
``ManualClock``, against a small model written from PROTOCOL.md.

Arbitrary interleavings of SEND (priorities, keys, message TTLs), FETCH by several workers of
one group, ACK (batch acks included, stale ones too), DELETE, stateless FETCH and clock moves
(lease expiry) are checked step by step:

* every FETCH answer is exactly the first ``num_msgs`` of the eligible messages ordered by
  priority (critical > urgent > normal) then msg_id: so priority order, FIFO inside a priority,
  nothing leased to another worker, nothing already acked;
* a message is handed to the group again only after its lease ended unacked;
* at the end, after the leases end, one FETCH drains everything never acked: nothing is lost.

"The same FETCH answer" for a batch ACK is the latest answer that handed the acked message out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from unittest.mock import patch

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from langchain_mq9 import protocol as p
from langchain_mq9.broker import BrokerEngine, BrokerLimits, ManualClock
from langchain_mq9.broker import mailbox as mailbox_module

ACK_WAIT = 30
RANK = {"critical": 0, "urgent": 1, "normal": 2}
BOX = "prop.box"
GROUP = "workers"
WORKERS = 3

send_action = st.tuples(
    st.just("send"),
    st.sampled_from(["normal", "urgent", "critical"]),
    st.sampled_from([None, None, None, "k1", "k2"]),  # key
    st.sampled_from([None, None, None, 5, 45]),  # message ttl
)
fetch_action = st.tuples(st.just("fetch"), st.integers(0, WORKERS - 1), st.integers(1, 5))
ack_action = st.tuples(st.just("ack"), st.integers(0, WORKERS - 1), st.integers(0, 4))
advance_action = st.tuples(st.just("advance"), st.sampled_from([1, 4, 29, 30, 31]))
delete_action = st.tuples(st.just("delete"), st.integers(0, 40))
peek_action = st.tuples(st.just("peek"), st.integers(1, 8))
actions = st.lists(
    st.one_of(
        send_action, send_action, fetch_action, fetch_action, ack_action, ack_action,
        advance_action, delete_action, peek_action,
    ),
    max_size=60,
)


@dataclass
class Model:
    """What PROTOCOL.md says the mailbox and the group hold."""

    now: int = 1_700_000_000
    next_id: int = 0
    live: dict[int, str] = field(default_factory=dict)  # msg_id -> priority
    created: dict[int, int] = field(default_factory=dict)
    expires: dict[int, int] = field(default_factory=dict)
    keys: dict[str, int] = field(default_factory=dict)
    acked: set[int] = field(default_factory=set)
    lease_end: dict[int, int] = field(default_factory=dict)
    batch_of: dict[int, tuple[int, ...]] = field(default_factory=dict)
    handed_at: dict[int, int] = field(default_factory=dict)
    started: bool = False

    def expire(self) -> None:
        for msg_id in [m for m, t in self.expires.items() if t <= self.now]:
            self.forget(msg_id)

    def forget(self, msg_id: int) -> None:
        self.live.pop(msg_id, None)
        self.expires.pop(msg_id, None)
        for key, holder in list(self.keys.items()):
            if holder == msg_id:
                del self.keys[key]

    def send(self, priority: str, key: str | None, ttl: int | None) -> int:
        self.expire()
        if key is not None and key in self.keys:
            self.forget(self.keys[key])
        msg_id = self.next_id
        self.next_id += 1
        self.live[msg_id] = priority
        self.created[msg_id] = self.now
        if ttl:
            self.expires[msg_id] = self.now + ttl
        if key is not None:
            self.keys[key] = msg_id
        return msg_id

    def ordered(self, ids) -> list[int]:
        return sorted(ids, key=lambda m: (RANK[self.live[m]], m))

    def eligible(self) -> list[int]:
        return self.ordered(
            m for m in self.live
            if m not in self.acked and self.lease_end.get(m, self.now) <= self.now
        )

    def hand_out(self, num: int) -> list[int]:
        self.expire()
        answer = self.eligible()[:num]
        for msg_id in answer:
            self.lease_end[msg_id] = self.now + ACK_WAIT
            self.batch_of[msg_id] = tuple(answer)
        return answer

    def ack(self, msg_id: int) -> None:
        self.expire()
        batch = self.batch_of.get(msg_id)
        confirmed = batch[: batch.index(msg_id) + 1] if batch else (msg_id,)
        for done in confirmed:
            self.acked.add(done)
            self.lease_end.pop(done, None)
            self.batch_of.pop(done, None)


async def call(engine: BrokerEngine, subject: str, body=b"", headers=None) -> dict:
    if isinstance(body, dict):
        body = p.encode(body)
    reply = json.loads(await engine.handle(subject, headers, body))
    assert isinstance(reply, dict) and isinstance(reply.get("error"), str)
    return reply


def wire_ids(reply: dict) -> list[int]:
    assert reply["error"] == "", reply
    return [m["msg_id"] for m in reply["messages"]]


async def run_scenario(steps) -> None:
    clock = ManualClock(1_700_000_000)
    engine = BrokerEngine(clock=clock, limits=BrokerLimits(ack_wait=ACK_WAIT))
    model = Model()
    await call(engine, p.MAILBOX_CREATE, {"name": BOX})
    last_batch: dict[int, list[int]] = {}

    async def group_fetch(num: int) -> list[int]:
        request = {"group_name": GROUP, "deliver": "earliest",
                   "config": {"num_msgs": num, "max_wait_ms": 0}}
        reply = await call(engine, p.fetch_subject(BOX), request)
        got = wire_ids(reply)
        # priorities and payloads on the wire agree with what was sent
        for message in reply["messages"]:
            assert message["priority"] == model.live[message["msg_id"]]
            assert message["payload"] == p.encode_payload(str(message["msg_id"]).encode())
            assert message["create_time"] == model.created[message["msg_id"]]
        return got

    for step in steps:
        kind = step[0]
        if kind == "send":
            _, priority, key, ttl = step
            headers = {"mq9-priority": priority}
            if key:
                headers["mq9-key"] = key
            if ttl:
                headers["mq9-ttl"] = str(ttl)
            expected = model.send(priority, key, ttl)
            reply = await call(engine, p.send_subject(BOX), str(expected).encode(), headers)
            assert reply == {"error": "", "msg_id": expected}
        elif kind == "fetch":
            _, worker, num = step
            expected = model.hand_out(num)
            got = await group_fetch(num)
            assert got == expected, (got, expected)
            for msg_id in got:  # never twice while leased, never after an ack
                assert msg_id not in model.acked
                previous = model.handed_at.get(msg_id)
                assert previous is None or model.now >= previous + ACK_WAIT
                model.handed_at[msg_id] = model.now
            last_batch[worker] = got
        elif kind == "ack":
            _, worker, index = step
            batch = last_batch.get(worker, [])
            if not batch:
                continue
            msg_id = batch[min(index, len(batch) - 1)]  # often the last: a whole-batch ACK
            reply = await call(engine, p.ack_subject(BOX),
                               {"group_name": GROUP, "mail_address": BOX, "msg_id": msg_id})
            assert reply == {"error": ""}
            model.ack(msg_id)
        elif kind == "advance":
            clock.advance(step[1])
            model.now += step[1]
        elif kind == "delete":
            if model.next_id == 0:
                continue
            msg_id = step[1] % model.next_id
            model.expire()
            reply = await call(engine, p.delete_subject(BOX, msg_id))
            if msg_id in model.live:
                assert reply == {"error": "", "deleted": True}
                model.forget(msg_id)
            else:
                assert reply == {"error": "message not found"}
        elif kind == "peek":
            model.expire()
            request = {"deliver": "earliest", "config": {"num_msgs": step[1], "max_wait_ms": 0}}
            got = wire_ids(await call(engine, p.fetch_subject(BOX), request))
            assert got == model.ordered(model.live)[: step[1]]

    # every message stays accounted for: once the leases end, one FETCH drains the rest
    clock.advance(ACK_WAIT)
    model.now += ACK_WAIT
    expected = model.hand_out(p.MAX_NUM_MSGS)
    assert await group_fetch(p.MAX_NUM_MSGS) == expected
    if expected:
        reply = await call(engine, p.ack_subject(BOX),
                           {"group_name": GROUP, "mail_address": BOX, "msg_id": expected[-1]})
        assert reply == {"error": ""}
    clock.advance(ACK_WAIT)
    model.now += ACK_WAIT
    model.expire()
    assert await group_fetch(p.MAX_NUM_MSGS) == []
    # QUERY sees exactly the live messages, in msg_id order
    assert wire_ids(await call(engine, p.query_subject(BOX))) == sorted(model.live)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    backlog=st.lists(send_action, max_size=12), steps=actions, compact_early=st.booleans()
)
async def test_group_delivery_matches_the_protocol_model(backlog, steps, compact_early):
    # with compact_early the mailbox compacts its indexes after two holes, not 256
    holes = 2 if compact_early else mailbox_module._COMPACT_MIN_HOLES
    with patch.object(mailbox_module, "_COMPACT_MIN_HOLES", holes):
        await run_scenario(backlog + steps)


@settings(max_examples=60, deadline=None)
@given(
    sends=st.lists(st.sampled_from(["normal", "urgent", "critical"]), max_size=40),
    num=st.integers(1, 50),
    from_id=st.integers(0, 45),
)
async def test_stateless_fetch_is_priority_then_fifo(sends, num, from_id):
    engine = BrokerEngine(clock=ManualClock())
    await call(engine, p.MAILBOX_CREATE, {"name": BOX})
    for index, priority in enumerate(sends):
        reply = await call(engine, p.send_subject(BOX), b"x", {"mq9-priority": priority})
        assert reply["msg_id"] == index
    request = {"deliver": "from_id", "from_id": from_id,
               "config": {"num_msgs": num, "max_wait_ms": 0}}
    got = wire_ids(await call(engine, p.fetch_subject(BOX), request))
    expected = sorted(range(from_id, len(sends)), key=lambda m: (RANK[sends[m]], m))[:num]
    assert got == expected


@settings(max_examples=40, deadline=None)
@given(
    batches=st.lists(st.integers(1, 6), min_size=1, max_size=8),
    workers=st.integers(1, 4),
    sends=st.lists(st.sampled_from(["normal", "urgent", "critical"]), min_size=1, max_size=30),
)
async def test_competing_workers_with_batch_acks_lose_and_duplicate_nothing(
    batches, workers, sends
):
    """Workers take turns fetching batches of varying sizes and ack each batch with one ACK
    of its last message; every message is handed out exactly once."""
    engine = BrokerEngine(clock=ManualClock())
    await call(engine, p.MAILBOX_CREATE, {"name": BOX})
    for priority in sends:
        await call(engine, p.send_subject(BOX), b"x", {"mq9-priority": priority})
    handed: list[int] = []
    turn = 0
    while True:
        size = batches[turn % len(batches)]
        request = {"group_name": GROUP, "deliver": "earliest",
                   "config": {"num_msgs": size, "max_wait_ms": 0}}
        got = wire_ids(await call(engine, p.fetch_subject(BOX), request))
        if not got:
            break
        assert len(got) <= size
        handed.extend(got)
        if turn % workers == 0:  # some workers ack, the others hold their leases
            await call(engine, p.ack_subject(BOX),
                       {"group_name": GROUP, "mail_address": BOX, "msg_id": got[-1]})
        turn += 1
    assert sorted(handed) == list(range(len(sends)))
    assert handed == sorted(handed, key=lambda m: (RANK[sends[m]], m))
