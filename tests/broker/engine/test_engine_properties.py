"""Property tests of the broker engine against a small model of RobustMQ's offsets.

Requests go in on the wire (``engine.handle``) with a ``ManualClock``; the model is written from
RobustMQ 8bd49dc (nats-broker ``mq9/fetch.rs``, storage adapter ``consumer.rs`` and
``consumer_priority.rs``), not from the engine:

* a group is one committed offset per priority lane per mailbox; committed offsets are found
  by group name, whatever mailbox they were committed on;
* FETCH reads the lanes critical, urgent, normal, each up to ``num_msgs`` live messages from its
  start, stopping once the answer holds ``num_msgs``; it commits nothing, except that
  ``force_deliver`` on a group with offsets commits target + 1 to all three lanes;
* a lane's start: its committed offset on this mailbox (none there: the lane's beginning) if
  the group committed anything anywhere, else the deliver policy;
* ACK X commits X + 1 to all three lanes of the body's mailbox;
* QUERY and DELETE move no offset; msg_ids grow by one per written message, never reused.

Arbitrary interleavings over two mailboxes and two groups are checked step by step. Examples
are bounded so the file runs in a few seconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from unittest.mock import patch

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import mq9_broker.engine.answers as answers
import mq9_broker.state.mailbox as mailbox_module
from mq9_broker import BrokerEngine, ManualClock
from mq9_wire import protocol as p

LANES = ("critical", "urgent", "normal")
BOXES = ("prop.a", "prop.b")
GROUPS = (None, "g1", "g2")
T0 = 1_700_000_000


@dataclass
class Box:
    next_id: int = 0
    live: dict[int, tuple[str, int]] = field(default_factory=dict)  # msg_id -> (lane, expire_at)
    keys: dict[str, int] = field(default_factory=dict)

    @property
    def end(self) -> int:
        return max(self.next_id - 1, 0)

    def visible(self, msg_id: int, now: int) -> bool:
        expire_at = self.live[msg_id][1]
        return expire_at == 0 or expire_at >= now


@dataclass
class Model:
    now: int = T0
    boxes: dict[str, Box] = field(default_factory=lambda: {b: Box() for b in BOXES})
    # "{group}-{lane}" -> mailbox -> committed offset
    offsets: dict[str, dict[str, int]] = field(default_factory=dict)
    issued: dict[str, list[int]] = field(default_factory=lambda: {b: [] for b in BOXES})

    def send(self, box: str, lane: str, key: str | None, ttl: int | None) -> int:
        mailbox = self.boxes[box]
        if key is not None and key in mailbox.keys:
            mailbox.live.pop(mailbox.keys.pop(key), None)
        msg_id = mailbox.next_id
        mailbox.next_id += 1
        mailbox.live[msg_id] = (lane, 0 if ttl is None else self.now + ttl)
        if key is not None:
            mailbox.keys[key] = msg_id
        return msg_id

    def delete(self, box: str, msg_id: int) -> None:
        mailbox = self.boxes[box]
        if mailbox.live.pop(msg_id, None) is not None:
            for key, holder in list(mailbox.keys.items()):
                if holder == msg_id:
                    del mailbox.keys[key]

    def commit(self, group: str, box: str, offset: int) -> None:
        for lane in LANES:
            self.offsets.setdefault(f"{group}-{lane}", {})[box] = offset

    def initial(self, box: str, deliver: str, from_id: int) -> int:
        end = self.boxes[box].end
        return {"earliest": 0, "latest": end, "from_id": min(from_id, end)}[deliver]

    def fetch(
        self, box: str, group: str | None, deliver: str, from_id: int, num: int, force: bool
    ) -> list[int]:
        if group is None:
            starts = dict.fromkeys(LANES, self.initial(box, deliver, from_id))
        elif force and self.offsets.get(f"{group}-normal"):
            target = self.initial(box, deliver, from_id)
            self.commit(group, box, target + 1)
            starts = dict.fromkeys(LANES, target)
        else:
            starts = {}
            for lane in LANES:
                committed = self.offsets.get(f"{group}-{lane}")
                if committed:
                    starts[lane] = committed.get(box, 0)
                else:
                    starts[lane] = self.initial(box, deliver, from_id)
        mailbox = self.boxes[box]
        answer: list[int] = []
        for lane in LANES:
            ids = sorted(
                m
                for m, (in_lane, _) in mailbox.live.items()
                if in_lane == lane and m >= starts[lane] and mailbox.visible(m, self.now)
            )
            answer += ids[:num]
            if len(answer) >= num:
                break
        return answer

    def query(self, box: str) -> list[int]:
        mailbox = self.boxes[box]
        return sorted(m for m in mailbox.live if mailbox.visible(m, self.now))[: p.QUERY_CAP]


async def call(engine: BrokerEngine, subject: str, body=b"", headers=None) -> dict:
    if isinstance(body, dict):
        body = p.encode(body)
    reply = json.loads(await engine.handle(subject, headers, body))
    assert isinstance(reply, dict) and isinstance(reply.get("error"), str)
    return reply


def wire_ids(reply: dict) -> list[int]:
    assert reply["error"] == "", reply
    return [m["msg_id"] for m in reply["messages"]]


def engine_offsets(engine: BrokerEngine) -> dict[str, dict[str, int]]:
    """The engine's committed offsets, with shards named by their mailbox."""
    box_of = {box.shard: address for address, box in engine.mailboxes.items()}
    return {
        lane: {box_of[shard]: offset for shard, offset in shards.items()}
        for lane, shards in engine.offsets.items()
    }


send_action = st.tuples(
    st.just("send"),
    st.sampled_from(BOXES),
    st.sampled_from(LANES),
    st.sampled_from([None, None, None, "k1", "k2"]),  # key
    st.sampled_from([None, None, None, 0, 5]),  # message ttl
)
fetch_action = st.tuples(
    st.just("fetch"),
    st.sampled_from(BOXES),
    st.sampled_from(GROUPS),
    st.sampled_from(["earliest", "latest", "from_id"]),
    st.integers(0, 12),  # from_id
    st.integers(0, 5),  # num_msgs
    st.sampled_from([False, False, False, True]),  # force_deliver
)
ack_action = st.tuples(
    st.just("ack"),
    st.sampled_from(BOXES),
    st.sampled_from(GROUPS[1:]),
    st.integers(0, 3),  # which message of the last answer (3: beyond it, a stale or wild ACK)
)
delete_action = st.tuples(st.just("delete"), st.sampled_from(BOXES), st.integers(0, 15))
query_action = st.tuples(st.just("query"), st.sampled_from(BOXES))
advance_action = st.tuples(st.just("advance"), st.sampled_from([1, 3, 6]))
actions = st.lists(
    st.one_of(
        send_action,
        send_action,
        send_action,
        fetch_action,
        fetch_action,
        ack_action,
        ack_action,
        delete_action,
        query_action,
        advance_action,
    ),
    max_size=50,
)


async def run_scenario(steps) -> None:
    clock = ManualClock(T0)
    engine = BrokerEngine(clock=clock)
    model = Model()
    for box in BOXES:
        await call(engine, p.MAILBOX_CREATE, {"name": box, "ttl": 0})
    last_answer: list[int] = []

    for step in steps:
        kind = step[0]
        before = engine_offsets(engine)
        if kind == "send":
            _, box, lane, key, ttl = step
            headers = {"mq9-priority": lane}
            if key:
                headers["mq9-key"] = key
            if ttl is not None:
                headers["mq9-ttl"] = str(ttl)
            expected = model.send(box, lane, key, ttl)
            reply = await call(engine, p.send_subject(box), str(expected).encode(), headers)
            assert reply == {"error": "", "msg_id": expected}
            assert all(expected > i for i in model.issued[box])  # never given out before
            model.issued[box].append(expected)
            assert engine_offsets(engine) == before
        elif kind == "fetch":
            _, box, group, deliver, from_id, num, force = step
            body = {
                "group_name": group,
                "deliver": deliver,
                "from_id": from_id,
                "force_deliver": force,
                "config": {"num_msgs": num, "max_wait_ms": 0},
            }
            expected = model.fetch(box, group, deliver, from_id, num, force)
            reply = await call(engine, p.fetch_subject(box), body)
            got = wire_ids(reply)
            assert got == expected, (got, expected)
            for item in reply["messages"]:
                assert item["payload"] == str(item["msg_id"])
                assert item["priority"] == model.boxes[box].live[item["msg_id"]][0]
            if not force:  # reading commits nothing
                assert engine_offsets(engine) == before
            last_answer = got
        elif kind == "ack":
            _, box, group, index = step
            msg_id = last_answer[index] if index < len(last_answer) else index * 4
            reply = await call(
                engine,
                p.ack_subject(box),
                {"group_name": group, "mail_address": box, "msg_id": msg_id},
            )
            assert reply == {"error": ""}
            model.commit(group, box, msg_id + 1)
        elif kind == "delete":
            _, box, msg_id = step
            reply = await call(engine, p.delete_subject(box, msg_id))
            assert reply == {"error": "", "deleted": True}
            model.delete(box, msg_id)
            assert engine_offsets(engine) == before
        elif kind == "query":
            _, box = step
            assert wire_ids(await call(engine, p.query_subject(box))) == model.query(box)
            assert engine_offsets(engine) == before
        elif kind == "advance":
            clock.advance(step[1])
            model.now += step[1]
        assert engine_offsets(engine) == model.offsets

    for box in BOXES:
        assert wire_ids(await call(engine, p.query_subject(box))) == model.query(box)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(backlog=st.lists(send_action, max_size=10), steps=actions, compact_early=st.booleans())
@example(  # g1 commits on a, then reads b, where it never committed: from the lanes' start
    backlog=[("send", "prop.b", "normal", None, None)] * 3,
    steps=[
        ("ack", "prop.a", "g1", 3),
        ("fetch", "prop.b", "g1", "latest", 0, 5, False),
        ("fetch", "prop.b", "g1", "from_id", 2, 5, True),
        ("fetch", "prop.b", "g1", "latest", 0, 5, False),
    ],
    compact_early=False,
)
async def test_fetch_ack_and_offsets_match_the_model(backlog, steps, compact_early):
    # with compact_early the mailbox compacts its indexes after two holes, not 256
    holes = 2 if compact_early else mailbox_module._COMPACT_MIN_HOLES
    with patch.object(mailbox_module, "_COMPACT_MIN_HOLES", holes):
        await run_scenario(backlog + steps)


@settings(max_examples=60, deadline=None)
@given(
    sends=st.lists(st.sampled_from(LANES), max_size=40),
    num=st.integers(0, 50),
    from_id=st.integers(0, 45),
)
async def test_stateless_fetch_reads_lanes_in_priority_order(sends, num, from_id):
    engine = BrokerEngine(clock=ManualClock())
    await call(engine, p.MAILBOX_CREATE, {"name": "box"})
    for index, lane in enumerate(sends):
        reply = await call(engine, p.send_subject("box"), b"x", {"mq9-priority": lane})
        assert reply["msg_id"] == index
    request = {
        "deliver": "from_id",
        "from_id": from_id,
        "config": {"num_msgs": num, "max_wait_ms": 0},
    }
    got = wire_ids(await call(engine, p.fetch_subject("box"), request))
    start = min(from_id, max(len(sends) - 1, 0))  # clamped to the newest message
    expected: list[int] = []
    for lane in LANES:
        expected += [m for m in range(start, len(sends)) if sends[m] == lane][:num]
        if len(expected) >= num:
            break
    assert got == expected
    # each lane is FIFO, lanes come critical first, and no lane gives more than num
    assert got == sorted(got, key=lambda m: (LANES.index(sends[m]), m))
    assert all(sum(sends[m] == lane for m in got) <= num for lane in LANES)


@settings(max_examples=60, deadline=None)
@given(
    sends=st.lists(st.sampled_from(LANES), min_size=1, max_size=30),
    batch=st.integers(1, 6),
)
async def test_a_fetch_then_ack_the_newest_loop_ends_and_never_repeats(sends, batch):
    """A worker that acks the largest msg_id of every answer: the loop ends, nothing comes
    twice, and what it skips is exactly the lower-priority messages an ACK jumped over."""
    engine = BrokerEngine(clock=ManualClock())
    await call(engine, p.MAILBOX_CREATE, {"name": "box"})
    for lane in sends:
        await call(engine, p.send_subject("box"), b"x", {"mq9-priority": lane})
    handed: list[int] = []
    request = {
        "group_name": "w",
        "deliver": "earliest",
        "config": {"num_msgs": batch, "max_wait_ms": 0},
    }
    for _ in range(len(sends) + 1):
        got = wire_ids(await call(engine, p.fetch_subject("box"), request))
        if not got:
            break
        assert not set(got) & set(handed)
        # reading again without an ACK hands out the same answer
        assert wire_ids(await call(engine, p.fetch_subject("box"), request)) == got
        handed.extend(got)
        await call(
            engine,
            p.ack_subject("box"),
            {"group_name": "w", "mail_address": "box", "msg_id": max(got)},
        )
    else:
        raise AssertionError("the loop did not end")
    assert len(handed) == len(set(handed))
    if len(set(sends)) == 1:  # one lane: every message, in order
        assert handed == list(range(len(sends)))
    assert max(handed) == len(sends) - 1 or sends[-1] != "critical"


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(LANES), st.booleans()), max_size=30))
async def test_msg_ids_grow_by_one_and_are_never_reused(sends):
    """Deleting, even the newest message, never gives a msg_id out again."""
    engine = BrokerEngine(clock=ManualClock())
    await call(engine, p.MAILBOX_CREATE, {"name": "box"})
    for expected, (lane, delete_it) in enumerate(sends):
        reply = await call(engine, p.send_subject("box"), b"x", {"mq9-priority": lane})
        assert reply == {"error": "", "msg_id": expected}
        if delete_it:
            await call(engine, p.delete_subject("box", expected))


@settings(max_examples=300, deadline=None)
@given(
    payload=st.binary(max_size=64),
    header=st.none() | st.binary(max_size=300),
    msg_id=st.integers(min_value=-1, max_value=2**64 - 1),
)
def test_a_messages_size_is_known_without_writing_it(payload, header, msg_id):
    """The SEND's size check (``wire_size``) counts exactly what a FETCH will write, and its
    shortcut (``wire_size_bound``) never counts less."""
    message = mailbox_module.StoredMessage(msg_id, payload, p.Priority.URGENT, T0, header=header)
    assert message.wire_size() == len(message.wire())
    assert message.wire_size_bound() >= len(message.wire())


@given(msg_id=st.integers(min_value=-1, max_value=2**64 - 1))
def test_a_sends_answer_written_by_hand_is_the_encoders(msg_id):
    """The SEND answer the engine writes without the encoder (``answers.SENT``) is byte for
    byte what ``p.SEND_REPLY`` encodes."""
    assert answers.SENT % msg_id == p.encode(p.SEND_REPLY.write(error="", msg_id=msg_id))
