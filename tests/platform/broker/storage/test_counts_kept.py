"""#106, item 3: a COUNT (``$mq9.AI.MSG.COUNT.<mailbox>``, engine/counting.py) is answered
from counts the stores in this process keep as they write, no walk of the mailbox: each lane's
live messages (``Mailbox.live_counts``) and the delayed messages held with the soonest due
(``Housekeeping.delayed_held``). The count stays what a walk finds through SENDs, delayed
messages falling due, ACKs and DELETEs, key replacement, TTLs ending (and a clock set back),
the retention, and, on SQLite, a restart: on the memory and the SQLite store, on an injected
clock. Each COUNT is checked against the walk the store did before #106."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mq9_broker import BrokerEngine
from mq9_broker.state.clock import ManualClock
from mq9_broker.state.mailbox import Mailbox, StoredMessage
from mq9_broker.storage import SqliteStorage
from mq9_broker.storage.in_process.housekeeping import RETENTION_SECONDS
from mq9_wire import protocol as p
from mq9_wire.protocol import PRIORITY_ORDER, Priority
from mq9_wire.protocol.subjects import count_subject

BOX = "team.counted"
START = 1_800_000_000


class Broker:
    """A ``BrokerEngine`` on a manual clock, kept in memory or in one SQLite file."""

    def __init__(self, where: Path | None) -> None:
        self.where, self.clock = where, ManualClock(START)
        self.engine = self._engine()

    def _engine(self) -> BrokerEngine:
        storage = None if self.where is None else SqliteStorage(self.where / "broker.sqlite3")
        return BrokerEngine(clock=self.clock, storage=storage, search=False)

    def restart(self) -> None:
        """(SQLite) A new engine over the same file: what it counts is what was stored."""
        self.engine.storage.close()
        self.engine = self._engine()

    async def ask(self, subject: str, body: bytes = b"{}", headers=None) -> dict:
        answer = json.loads(await self.engine.handle(subject, headers, body))
        assert answer["error"] == "", answer
        return answer

    async def send(self, payload: str, **headers: str) -> int:
        sent = await self.ask(p.send_subject(BOX), payload.encode(), headers or None)
        return int(sent["msg_id"])

    async def count(self) -> dict:
        """The COUNT's answer, checked against a walk of the mailbox (#99's count)."""
        answer = await self.ask(count_subject(BOX))
        assert answer["counts"] == self.walked(), answer
        return answer

    def walked(self) -> dict[str, int]:
        now = int(self.clock())
        counts = {priority.value: 0 for priority in PRIORITY_ORDER}
        for message in self.engine.topics[BOX].messages.values():
            if not message.expired(now):
                counts[message.priority.value] += 1
        return counts


@pytest.fixture(params=["memory", "sqlite"])
def broker(request, tmp_path):
    made = Broker(None if request.param == "memory" else tmp_path)
    yield made
    made.engine.storage.close()


def _lanes(critical: int = 0, urgent: int = 0, normal: int = 0) -> dict[str, int]:
    return {"critical": critical, "urgent": urgent, "normal": normal}


async def test_the_count_follows_sends_deletes_keys_and_acks(broker):
    await broker.ask(p.MAILBOX_CREATE, p.encode({"name": BOX, "ttl": 0}))
    assert (await broker.count())["counts"] == _lanes()
    first = await broker.send("a", **{p.HEADER_PRIORITY: "critical"})
    for n in range(3):
        await broker.send(f"u{n}", **{p.HEADER_PRIORITY: "urgent"})
    await broker.send("old", **{p.HEADER_KEY: "k"})
    newest = await broker.send("new", **{p.HEADER_KEY: "k"})  # replaces "old"
    answer = await broker.count()
    assert answer["counts"] == _lanes(1, 3, 1) and answer["newest_id"] == newest
    fetch = {"group_name": "g", "deliver": "earliest", "config": {"max_wait_ms": 0}}
    await broker.ask(p.fetch_subject(BOX), p.encode(fetch))
    ack = {"group_name": "g", "mail_address": BOX, "msg_id": first}
    await broker.ask(p.ack_subject(BOX), p.encode(ack))  # an ACK moves a group, removes nothing
    assert (await broker.count())["counts"] == _lanes(1, 3, 1)
    await broker.ask(p.delete_subject(BOX, first))
    await broker.ask(p.delete_subject(BOX, first))  # (gone already: counted once)
    assert (await broker.count())["counts"] == _lanes(0, 3, 1)
    if broker.where is not None:
        broker.restart()
        assert (await broker.count())["counts"] == _lanes(0, 3, 1)


async def test_the_count_follows_ttls_ending_and_a_clock_set_back(broker):
    await broker.ask(p.MAILBOX_CREATE, p.encode({"name": BOX, "ttl": 0}))
    short = await broker.send("short", **{p.HEADER_TTL: "5", p.HEADER_PRIORITY: "urgent"})
    await broker.send("longer", **{p.HEADER_TTL: "50"})
    await broker.send("kept")
    assert (await broker.count())["counts"] == _lanes(0, 1, 2)
    broker.clock.advance(5)  # visible through its expire_at second
    assert (await broker.count())["counts"] == _lanes(0, 1, 2)
    broker.clock.advance(1)
    assert (await broker.count())["counts"] == _lanes(0, 0, 2)
    await broker.ask(p.delete_subject(BOX, short))  # an expired one deleted: not taken twice
    assert (await broker.count())["counts"] == _lanes(0, 0, 2)
    broker.clock.advance(60)
    assert (await broker.count())["counts"] == _lanes(0, 0, 1)
    if broker.where is not None:
        broker.restart()
        assert (await broker.count())["counts"] == _lanes(0, 0, 1)
    broker.clock.now = START + 10  # set back (a system clock stepped): "longer" shows again
    assert (await broker.count())["counts"] == _lanes(0, 0, 2)


async def test_delayed_messages_are_counted_held_then_in_their_lane(broker):
    await broker.ask(p.MAILBOX_CREATE, p.encode({"name": BOX, "ttl": 0}))
    answer = await broker.count()
    assert (answer["scheduled"], answer["next_due"]) == (0, None)
    await broker.send("in an hour", **{p.HEADER_DELAY: "3600"})
    await broker.send("in a minute", **{p.HEADER_DELAY: "60", p.HEADER_PRIORITY: "urgent"})
    await broker.send("never", **{p.HEADER_DELAY: "120", p.HEADER_TTL: "30"})  # ends first
    answer = await broker.count()
    assert answer["counts"] == _lanes()
    assert (answer["scheduled"], answer["next_due"]) == (3, START + 60)
    if broker.where is not None:
        broker.restart()
        answer = await broker.count()
        assert (answer["scheduled"], answer["next_due"]) == (3, START + 60)
    broker.clock.advance(60)  # the minute's is due: written to its lane
    answer = await broker.count()
    assert answer["counts"] == _lanes(0, 1, 0)
    assert (answer["scheduled"], answer["next_due"]) == (2, START + 120)
    broker.clock.advance(60)  # its TTL ended before it was due: released, never written
    answer = await broker.count()
    assert answer["counts"] == _lanes(0, 1, 0)
    assert (answer["scheduled"], answer["next_due"]) == (1, START + 3600)
    broker.clock.advance(3600)
    answer = await broker.count()
    assert answer["counts"] == _lanes(0, 1, 1)
    assert (answer["scheduled"], answer["next_due"]) == (0, None)


async def test_another_mailboxs_delayed_messages_are_not_counted(broker):
    for name in (BOX, "other.box"):
        await broker.ask(p.MAILBOX_CREATE, p.encode({"name": name, "ttl": 0}))
    await broker.ask(p.send_subject("other.box"), b"x", {p.HEADER_DELAY: "10"})
    answer = await broker.count()
    assert (answer["scheduled"], answer["next_due"]) == (0, None)


async def test_the_retention_takes_its_messages_off_the_count(broker):
    await broker.ask(p.MAILBOX_CREATE, p.encode({"name": BOX, "ttl": 0}))
    await broker.send("old")
    broker.clock.advance(RETENTION_SECONDS - 10)
    await broker.send("young")
    assert (await broker.count())["counts"] == _lanes(0, 0, 2)
    broker.clock.advance(600)  # the next scan removes "old"
    assert (await broker.count())["counts"] == _lanes(0, 0, 1)


def test_a_mailbox_counts_what_it_holds_through_compaction():
    """Holes compacted away (their dying entries with them) leave the counts as they were."""
    mailbox = Mailbox("m", create_time=0, ttl=0)
    for n in range(600):
        mailbox.append(StoredMessage(0, b"x", Priority.NORMAL, 0, expire_at=100 + n % 7))
    assert mailbox.live_counts(103)[Priority.NORMAL] == 600 - 3 * 86  # (n % 7 of 0, 1, 2: 86 each)
    for msg_id in range(302):
        mailbox.remove(msg_id)  # past half: compacted
    tally = mailbox._tally
    assert tally is not None
    assert len(tally.dying) + len(tally.hidden) == len(mailbox.messages) == 298
    for now in (103, 104, 50, 106, 107):  # (50: a clock set back)
        walked = sum(not m.expired(now) for m in mailbox.messages.values())
        assert mailbox.live_counts(now) == {Priority.CRITICAL: 0, Priority.URGENT: 0,
                                              Priority.NORMAL: walked}  # fmt: skip
    assert mailbox.live_counts(107)[Priority.NORMAL] == 0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("send"), st.sampled_from(PRIORITY_ORDER), st.integers(0, 30)),
            st.tuples(st.just("remove"), st.integers(0, 60), st.just(0)),
            st.tuples(st.just("clock"), st.integers(-20, 20), st.just(0)),
        ),
        max_size=120,
    )
)
def test_a_mailboxs_kept_counts_are_what_a_walk_finds(steps):
    """Any run of writes (some with a TTL), removals and clock moves, back ones too."""
    mailbox, now = Mailbox("m", create_time=0, ttl=0), 100
    for kind, what, ttl in steps:
        if kind == "send":
            expire_at = now + ttl if ttl else 0
            mailbox.append(StoredMessage(0, b"x", what, now, expire_at=expire_at))
        elif kind == "remove":
            mailbox.remove(what)
        else:
            now = max(now + what, 0)
        walked = dict.fromkeys(PRIORITY_ORDER, 0)
        for message in mailbox.messages.values():
            walked[message.priority] += not message.expired(now)
        assert mailbox.live_counts(now) == walked
