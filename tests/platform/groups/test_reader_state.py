"""``ReaderState``, the decisions of a group reader without I/O, against a model of RobustMQ's
consumer group (lanes read from one position, ACK sets it for every lane), over random
interleavings of sends, fetches, partial dones, kills and late acks (docs/groups.md).

The invariants: an ack never passes a message nobody handled; a reader never hands a message
out twice; a message is handed out again only after a kill (what the killed reader held and
had not acked) or after a stale ack moved the position back behind what no live reader acked
past (what the live reader acked past, it puts back first); and in the end every message is
handled, the reader never answering "nothing" while one waits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mq9_platform.client.client import Message
from mq9_platform.groups.state import ReaderState
from mq9_wire.protocol import PRIORITY_ORDER, Priority


@dataclass
class Group:
    """One mailbox read by one group, as RobustMQ answers FETCH and ACK (P = 1)."""

    log: list[Message] = field(default_factory=list)
    position: int = 0
    acks: list[int] = field(default_factory=list)
    # The bundled broker's skip_through (#113): each lane read after its reader's done run,
    # every lane read; RobustMQ ignores it
    honours_skips: bool = False

    def send(self, priority: Priority) -> int:
        msg_id = len(self.log)
        self.log.append(Message(msg_id, b"x", priority, create_time=msg_id))
        return msg_id

    def fetch(self, asked: int, skips: dict[Priority, int] | None = None) -> list[Message]:
        skips = (skips or {}) if self.honours_skips else {}
        answer: list[Message] = []
        for priority in PRIORITY_ORDER:
            start = max(self.position, skips.get(priority, -1) + 1)
            lane = [m for m in self.log if m.priority is priority and m.msg_id >= start]
            answer += lane[:asked]
            if len(answer) >= asked:
                break
        return answer

    def ack(self, msg_id: int) -> None:
        self.position = msg_id + 1
        self.acks.append(msg_id)


@dataclass
class Run:
    group: Group = field(default_factory=Group)
    state: ReaderState = field(default_factory=ReaderState)
    handled: list[int] = field(default_factory=list)
    given: set[int] = field(default_factory=set)  # handed out by the reader now running
    # May come twice: held by a killed reader and not acked, or behind a stale ack and above
    # what the live reader acked (nobody knows the position went back there).
    may_repeat: set[int] = field(default_factory=set)
    rewound: set[int] = field(default_factory=set)  # behind a stale ack, not put back yet
    cap: int | None = None  # the most an answer holds: the reader asks no more (reader.py)

    def check_ack(self, msg_id: int) -> None:
        missed = {m.msg_id for m in self.group.log if m.msg_id <= msg_id} - set(self.handled)
        assert not missed, f"ack {msg_id} passes {sorted(missed)}, never handled"

    def fetch(self, num: int) -> list[int]:
        """One fetch as GroupReader makes it, without leases."""
        state, group = self.state, self.group
        asked = state.ask(num) if self.cap is None else min(state.ask(num), self.cap)
        state.skips = state.skip_through()
        answer = group.fetch(asked, state.skips)
        if state.went_back(answer):
            group.ack(state.committed)
            self.rewound.clear()
            answer = group.fetch(asked, state.skips)
        batch = state.accept(answer, asked)[:num]
        self.advance()
        state.hand_out(m.msg_id for m in batch)
        ids = [m.msg_id for m in batch]
        assert not set(ids) & self.given, "handed out twice by one reader"
        self.given |= set(ids)
        self.handled += ids
        return ids

    def done(self, ids: list[int]) -> None:
        self.state.check_done(ids)
        self.state.mark_done(ids)
        self.advance()

    def advance(self) -> None:
        ack = self.state.advance()
        if ack is not None:
            self.check_ack(ack)
            self.group.ack(ack)
            self.state.acked(ack)

    def kill(self) -> None:
        acked = self.state.committed if self.state.committed is not None else -1
        self.may_repeat |= {i for i in self.given if i > acked} | self.rewound
        self.state, self.given = ReaderState(), set()

    def late_ack(self, pick: int) -> None:
        if not self.group.acks:
            return
        stale = self.group.acks[pick % len(self.group.acks)]
        # The live reader puts back what it acked past; above that nobody knows it went back
        mine = self.state.committed if self.state.committed is not None else -1
        self.rewound |= set(range(stale + 1, min(mine, self.group.position - 1) + 1))
        self.may_repeat |= set(range(max(stale, mine) + 1, self.group.position))
        self.group.ack(stale)


priorities = st.sampled_from(list(Priority))
steps = st.lists(
    st.one_of(
        st.tuples(st.just("send"), priorities),
        st.tuples(st.just("fetch"), st.integers(1, 4), st.booleans()),
        st.tuples(st.just("kill"), st.just(0)),
        st.tuples(st.just("late_ack"), st.integers(0, 50)),
    ),
    max_size=40,
)


@pytest.mark.slow  # over a second on a quiet machine (#89)
@settings(max_examples=300, deadline=None)
@given(backlog=st.lists(priorities, max_size=12), steps=steps, honours_skips=st.booleans())
def test_no_loss_no_repeat_but_after_kills_and_stale_acks(backlog, steps, honours_skips):
    run = Run(group=Group(honours_skips=honours_skips))
    for priority in backlog:
        run.group.send(priority)
    holding: list[int] = []
    for step in steps:
        if step[0] == "send":
            run.group.send(step[1])
        elif step[0] == "fetch":
            holding += run.fetch(step[1])
            if step[2]:  # sometimes the batch is finished only at a later turn
                run.done(holding)
                holding = []
        elif step[0] == "kill":
            run.kill()
            holding = []
        else:
            run.late_ack(step[1])
    run.done(holding)
    for _ in range(len(run.group.log) + 5):  # drain: the reader never stalls
        batch = run.fetch(3)
        run.done(batch)
        if not batch and run.group.fetch(1) == []:
            break
    assert set(run.handled) == {m.msg_id for m in run.group.log}
    twice = {i for i in run.handled if run.handled.count(i) > 1}
    assert twice <= run.may_repeat, (twice, run.may_repeat)


@pytest.mark.parametrize("honours_skips", [True, False])
def test_a_backlog_of_higher_lanes_larger_than_an_answer_holds_back_only_robustmq(honours_skips):
    """(#113) Answers of at most 5 messages, and an older normal message below backlogs of 30
    critical and 20 urgent ones: read past its done runs, the reader gets everything in
    priority order; read from the position (RobustMQ), it cannot get past the first 5."""
    run = Run(group=Group(honours_skips=honours_skips), cap=5)
    order = ["normal"] + ["critical"] * 30 + ["urgent"] * 20 + ["normal"] * 3
    for priority in order:
        run.group.send(Priority(priority))
    for _ in range(len(order)):
        run.done(run.fetch(2))
    if not honours_skips:
        assert sorted(run.handled) == list(range(1, 6))  # the only critical ones it reaches
        return
    assert sorted(run.handled) == list(range(len(order)))
    lanes = ["critical", "urgent", "normal"]
    assert [order[i] for i in run.handled] == sorted(order, key=lanes.index)
    assert run.state.committed == len(order) - 1


def test_a_position_moved_back_is_put_back_before_anything_is_handed_out():
    run = Run()
    for _ in range(6):
        run.group.send(Priority.NORMAL)
    assert run.fetch(4) == [0, 1, 2, 3]
    run.done([0, 1, 2, 3])
    assert run.group.position == 4
    run.group.ack(0)  # another reader's late ack
    assert run.fetch(4) == [4, 5]  # not 1..3 again, and not "nothing new"
    assert run.group.acks == [3, 0, 3]  # the position was put back first


def test_new_messages_under_reused_ids_are_not_taken_for_a_move_back():
    state = ReaderState()
    first = [Message(i, b"x", Priority.NORMAL, create_time=100) for i in range(3)]
    state.accept(first, 10)
    state.hand_out(m.msg_id for m in first)
    state.mark_done([0, 1, 2])
    assert state.advance() == 2
    state.acked(2)
    again = [Message(0, b"y", Priority.NORMAL, create_time=100)]  # the old message 0
    assert state.went_back(again) and not state.reused_ids(again)
    reset = [Message(0, b"z", Priority.NORMAL, create_time=200)]  # a log that started over
    assert not state.went_back(reset) and state.reused_ids(reset) == [0]
