"""QUERY and FETCH cost (#12 item 14): what a read looks at does not grow with the messages a
mailbox holds that it cannot return. Key and tag QUERYs go straight to their index; runs of
expired (or removed) messages are walked once, then jumped over. Costs are counted as lookups
in the mailbox's message table, never timed; the answers stay exactly as before."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from mq9_broker import BrokerEngine, ManualClock
from mq9_broker.state.mailbox import Mailbox, StoredMessage
from mq9_wire import protocol as p
from mq9_wire.protocol import PRIORITY_ORDER, Priority


class CountingDict(dict):
    """The mailbox's message table, counting the lookups a read makes."""

    lookups = 0

    def get(self, key, default=None):
        self.lookups += 1
        return super().get(key, default)


async def _mailbox(sends: list[dict | None]) -> tuple[BrokerEngine, ManualClock, CountingDict]:
    clock = ManualClock()
    engine = BrokerEngine(clock=clock)
    await engine.handle(p.MAILBOX_CREATE, None, b'{"name":"box","ttl":0}')
    for headers in sends:
        reply = json.loads(await engine.handle(p.MSG_SEND + "box", headers, b"m"))
        assert reply["error"] == ""
    mailbox = engine.topics["box"]
    mailbox.messages = table = CountingDict(mailbox.messages)
    return engine, clock, table


async def _query(engine: BrokerEngine, body: bytes) -> list[int]:
    reply = json.loads(await engine.handle(p.MSG_QUERY + "box", None, body))
    assert reply["error"] == "", reply
    return [m["msg_id"] for m in reply["messages"]]


async def test_query_by_tag_or_key_that_matches_nothing_looks_at_no_message():
    engine, _, table = await _mailbox(
        [{p.HEADER_TAGS: "a", p.HEADER_KEY: f"k{i}"} for i in range(5_000)]
    )
    assert await _query(engine, b'{"tags":["nope","none"]}') == []
    assert await _query(engine, b'{"key":"nope"}') == []
    assert table.lookups == 0
    assert await _query(engine, b'{"tags":["nope","a"],"limit":3}') == [0, 1, 2]
    assert table.lookups == 3


async def test_expired_messages_are_walked_once_then_jumped_over():
    """Before: every QUERY walked all 6,000 expired messages again (6,000+ lookups each)."""
    live = {p.HEADER_TAGS: "a"}
    dying = {p.HEADER_TAGS: "a", p.HEADER_TTL: "1"}
    # one live message, 3,000 that expire, another live one, 3,000 more that expire
    sends = [live] + [dying] * 3_000 + [live] + [dying] * 3_000
    engine, clock, table = await _mailbox(sends)
    clock.advance(5)
    for body in (b"{}", b'{"tags":["a"]}'):
        table.lookups = 0
        assert await _query(engine, body) == [0, 3_001]
        assert table.lookups >= 6_000  # the first read finds the runs
        for _ in range(3):
            table.lookups = 0
            assert await _query(engine, body) == [0, 3_001]
            assert table.lookups <= 4
    # a FETCH reading the normal lane from the start jumps too
    fetch = b'{"deliver":"earliest","config":{"max_wait_ms":0}}'
    for round_ in range(2):
        table.lookups = 0
        reply = json.loads(await engine.handle(p.MSG_FETCH + "box", None, fetch))
        assert [m["msg_id"] for m in reply["messages"]] == [0, 3_001]
        assert table.lookups >= 6_000 if round_ == 0 else table.lookups <= 4
    # new messages that expire later are walked once more, and no more
    for _ in range(100):
        await engine.handle(p.MSG_SEND + "box", dying, b"m")
    clock.advance(5)
    table.lookups = 0
    assert await _query(engine, b"{}") == [0, 3_001]
    assert table.lookups <= 4 + 100
    table.lookups = 0
    assert await _query(engine, b"{}") == [0, 3_001]
    assert table.lookups <= 4


# -- the answers stay exactly those of a plain walk --------------------------------------------

_STEPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("send"),
            st.sampled_from(PRIORITY_ORDER),
            st.sampled_from([(), ("a",), ("b",), ("a", "b")]),
            st.integers(0, 3),  # a TTL in seconds; 0 = none
        ),
        st.tuples(st.just("remove"), st.integers(0, 400)),
        st.tuples(st.just("advance"), st.integers(0, 3)),
        st.tuples(st.just("read"), st.integers(0, 400), st.integers(1, 50)),
    ),
    max_size=120,
)


def _expected(mailbox: Mailbox, keep, start: int | None, limit: int, now: int) -> list[int]:
    ids = sorted(i for i, m in mailbox.messages.items() if keep(m) and not m.expired(now))
    return [i for i in ids if start is None or i >= start][:limit]


@settings(max_examples=150, deadline=None)
@given(steps=_STEPS, burst=st.integers(0, 300))
def test_reads_jumping_dead_runs_answer_as_a_plain_walk(steps, burst):
    mailbox = Mailbox("box", create_time=0, ttl=0)
    now = 0
    for _i in range(burst):  # a long run that expires at once
        mailbox.append(StoredMessage(-1, b"", Priority.NORMAL, now, tags=("a",), expire_at=1))
    for step in steps:
        if step[0] == "send":
            _, priority, tags, ttl = step
            message = StoredMessage(-1, b"", priority, now, tags=tags)
            message.expire_at = now + ttl if ttl else 0
            mailbox.append(message)
        elif step[0] == "remove":
            mailbox.remove(step[1])
        elif step[0] == "advance":
            now += step[1]
        else:
            _, start, limit = step
            got = [m.msg_id for m in mailbox.read(None, limit, now)]
            assert got == _expected(mailbox, lambda m: True, None, limit, now)
            got = [m.msg_id for m in mailbox.read(start, limit, now)]
            assert got == _expected(mailbox, lambda m: True, start, limit, now)
            got = [m.msg_id for m in mailbox.read_tag("a", limit, now)]
            assert got == _expected(mailbox, lambda m: "a" in m.tags, None, limit, now)
            for priority in PRIORITY_ORDER:
                got = [m.msg_id for m in mailbox.read_lane(priority, start, limit, now)]
                keep = lambda m, wanted=priority: m.priority is wanted  # noqa: E731
                assert got == _expected(mailbox, keep, start, limit, now)


def test_reads_with_the_clock_set_back_see_messages_live_again():
    """A clock set back (a system clock corrected) makes expired messages visible again, as
    a plain walk would: the runs learned at a later time are not used."""
    mailbox = Mailbox("box", create_time=0, ttl=0)
    for _ in range(100):
        mailbox.append(StoredMessage(-1, b"", Priority.NORMAL, 0, expire_at=10))
    assert list(mailbox.read(None, 10, 20)) == []
    assert [m.msg_id for m in mailbox.read(None, 3, 5)] == [0, 1, 2]
