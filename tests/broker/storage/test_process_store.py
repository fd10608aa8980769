"""``ProcessStore`` (storage/in_process/store.py): the one engine (``Engine``) over the state held
in this process, kept by a SQLite ``Storage`` (issue #80).

The durability suite's restarts that speak only on the wire run here unchanged over it
(``durable``: the same file, restarted in process, a hand-moved clock); then what the store
decides in one step itself: a refusal at a bound changes nothing (nothing is restored from the
file for it), housekeeping falls due at the clock's exact second inside a call, the retention
is stored, each written message is announced, and mypy holds it to ``MailboxStore``
(tests/project/test_types.py, ``in_process._checked``). The whole conformance suites run over
it with ``MQ9_TEST_STORE=process`` (testbed/support/store_lane.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_durability import (  # noqa: F401  (the tests, run here over the process store)
    T0,
    Restartable,
    a2a_card,
    test_an_expired_mailbox_log_survives_restart,
    test_delayed_messages_wait_across_a_restart,
    test_messages_keep_every_field_and_msg_ids_are_never_reused,
    test_the_registry_and_its_search_index_survive,
)

from mq9_broker import BrokerEngine, BrokerLimits, ManualClock
from mq9_broker.storage import SqliteStorage
from mq9_wire import protocol as p

pytestmark = pytest.mark.slow  # SQLite files, a commit per request


class OverProcessStore(Restartable):
    """``Restartable``, its engine ``BrokerEngine`` (the engine over a ``ProcessStore``) on
    the file."""

    def __init__(self, path: Path, clock: ManualClock | None = None, **limits: int) -> None:
        self.limits = BrokerLimits(**limits)
        super().__init__(path, clock)

    def _start(self) -> BrokerEngine:
        engine = BrokerEngine(
            clock=self.clock, limits=self.limits, storage=SqliteStorage(self.path)
        )
        self.store = engine.store
        return engine

    def stop(self) -> None:
        self.store.storage.close()


@pytest.fixture
def durable(tmp_path):
    broker = OverProcessStore(tmp_path / "broker.sqlite3")
    yield broker
    broker.stop()


async def test_a_refusal_at_a_bound_changes_nothing_and_restores_nothing(tmp_path):
    """``Full`` is a ``StorageError`` (the JetStream store's), yet no failed write: the state
    stays as it is, nothing read back from the file in its place."""
    broker = OverProcessStore(tmp_path / "b.sqlite3", max_agents=1, max_groups=1, max_mailboxes=1)
    try:
        await broker.ok(p.AGENT_REGISTER, a2a_card("one", "the only agent"))
        refused = await broker.call(p.AGENT_REGISTER, a2a_card("two", "one too many"))
        assert refused["error"] == p.err_agent_limit(1)
        await broker.create("box")
        assert (await broker.call(p.MAILBOX_CREATE, {"name": "more"}))["error"] == (
            p.err_mailbox_limit(1)
        )
        msg_id = await broker.send("box", "m")
        await broker.ack("box", "g1", msg_id)
        body = {"group_name": "g2", "mail_address": "box", "msg_id": msg_id}
        assert (await broker.call(p.ack_subject("box"), body))["error"] == (
            p.err_group_limit(1, "box")
        )
        await broker.ack("box", "g1", msg_id)  # the group that exists keeps committing
        assert [a["name"] for a in await broker.discover()] == ["one"]
        broker.restart()
        assert [a["name"] for a in await broker.discover()] == ["one"]
        assert [m["payload"] for m in await broker.query("box")] == ["m"]
    finally:
        broker.stop()


async def test_housekeeping_falls_due_at_the_clocks_second_and_is_stored(durable):
    await durable.create("short", ttl=10)
    await durable.create("box", ttl=0)
    for _ in range(3):
        await durable.send("box", "old")
    durable.clock.advance(9)
    await durable.send("short", "still live")  # its last second
    durable.clock.advance(1)
    assert (await durable.call(p.send_subject("short"), b"x"))["error"] == (
        "mailbox short does not exist"
    )
    durable.clock.advance(7 * 86_400 + 600)
    await durable.send("box", "kept")  # the retention scan runs before it
    assert durable.store.topics["box"].start_offset == 3
    assert "short" not in durable.store.topics  # an expired mailbox's emptied log forgotten
    durable.restart()
    assert [m["msg_id"] for m in await durable.query("box")] == [3]
    assert durable.store.topics["box"].start_offset == 3
    assert (await durable.call(p.query_subject("short")))["error"].startswith("Tenant")


async def test_each_written_message_is_announced_a_delayed_one_when_due(durable):
    told: list[str] = []
    durable.engine.arrivals.append(told.append)
    await durable.create("box")
    await durable.send("box", "now")
    assert await durable.send("box", "later", {"mq9-delay": "5"}) == -1
    assert told == ["box"]
    durable.clock.advance(5)
    assert [m["payload"] for m in await durable.query("box")] == ["now", "later"]
    assert told == ["box", "box"]


async def test_a_taken_name_keeps_its_first_registration_across_a_restart(durable):
    first = {"name": "agent", "payload": json.dumps(a2a_card("agent", "the first"))}
    await durable.ok(p.AGENT_REGISTER, first)
    durable.clock.advance(1)
    await durable.ok(p.AGENT_REGISTER, {"name": "agent", "payload": "the second"})
    durable.restart()
    [listed] = await durable.discover()
    assert listed["agent_info"] == first["payload"]
    assert durable.store.registry.entries["agent"].create_time == T0


async def test_a_dropped_group_starts_again_by_its_deliver_policy_after_a_restart(durable):
    await durable.create("box")
    for i in range(3):
        await durable.send("box", f"m{i}")
    await durable.ack("box", "g", 1)
    assert await durable.fetch("box", group_name="g") == [2]
    assert durable.store.drop_group("g", "box")
    assert not durable.store.drop_group("g", "no.such.box")
    durable.restart()
    assert await durable.fetch("box", group_name="g", deliver="earliest") == [0, 1, 2]
