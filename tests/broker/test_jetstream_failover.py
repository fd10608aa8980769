"""Two brokers on one JetStream-kept state (issue #55, item 2): one serves, one stands by.

The leader lock (langchain_mq9/broker/standby/lock.py): one holder at a time; the holder's lease
ends before a standby can take the lock; a stale holder's late write is refused once the new
holder wrote its fence; the engine answers nothing past its lease. The command line: the same
command started twice gives a serving broker and a standby, which serves once the first stops.
And the kill lane (bench/js_failover.py): 3 servers, 2 brokers, writers and group readers
through SIGKILLs of the stream leader's server, a follower and the serving broker; one kill of
each kind here, 11 of each with ``MQ9_KILL_LANE_FULL=1`` (the figures in bench/CLUSTER.md);
and its group-reader lane (issue #61): 30 kills under ``GroupReader``s on one client.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import uuid
from pathlib import Path

import pytest
from devbroker_helpers import DevBroker
from jetstream_servers import JetStreamCluster, wait_serving

from langchain_mq9 import Mq9Client
from langchain_mq9 import protocol as p
from langchain_mq9.broker import BrokerEngine, ManualClock
from langchain_mq9.broker.standby.leader import LEASE_ENDED, NOT_SERVING, LeaderLock, LeaseEngine
from langchain_mq9.broker.storage import JetStreamStorage

pytestmark = pytest.mark.slow  # nats-server processes

WAIT = 60.0  # bounded waits on real processes, generous for a busy 2-core machine


@pytest.fixture(scope="module")
def lone_jetstream():
    with JetStreamCluster(1) as cluster:
        yield cluster


@pytest.fixture
def stream():
    return f"FO{uuid.uuid4().hex[:10]}"


@pytest.fixture
def locks(lone_jetstream, stream):
    made: list[LeaderLock] = []

    def make(**options) -> LeaderLock:
        made.append(LeaderLock(lone_jetstream.urls, stream, **options))
        return made[-1]

    yield make
    for lock in made:
        lock.release()
        lock.close()


def test_one_holder_at_a_time_and_its_lease_ends_before_another_can_take_it(locks):
    first, second = locks(), locks()
    assert first.try_take() and first.holds()
    assert not second.try_take() and not second.holds()
    assert second.current_holder() == first.holder
    # first is not kept (a process frozen or cut off): second takes the lock once JetStream
    # expired the entry, and by then first's lease has ended
    assert second.wait_to_take(_deadline(WAIT))
    assert not first.holds()
    assert second.holds() and second.current_holder() == second.holder


def test_the_lease_ends_on_the_clock_without_a_renewal(locks):
    clock = ManualClock(0)
    lock = locks(clock=clock)
    assert lock.try_take()
    clock.advance(lock.ttl - lock.margin - 0.01)
    assert lock.holds()
    clock.advance(0.02)  # the entry may expire margin seconds later: no longer serving
    assert not lock.holds()


def test_a_kept_lock_is_not_taken_and_a_released_one_is_taken_at_once(locks):
    first, second = locks(), locks()
    assert first.try_take()
    lost = threading.Event()
    first.keep(lost.set)
    # two lifetimes of the entry: still first's, renewed
    deadline = time.monotonic() + 2 * first.ttl
    while time.monotonic() < deadline:
        assert not second.try_take()
        time.sleep(0.2)
    assert first.holds() and not lost.is_set()
    first.release()
    assert not first.holds()
    assert second.try_take()  # the entry was deleted: no wait for it to expire


def test_a_holder_that_cannot_renew_is_told_it_lost_the_lock(locks, lone_jetstream):
    lock = locks()
    assert lock.try_take()
    lost = threading.Event()
    lock.keep(lost.set)
    server = lone_jetstream.servers[0]
    server.stop()  # no JetStream: no renewal
    try:
        assert lost.wait(WAIT)
        assert not lock.holds()
    finally:
        server.start()


async def test_a_stale_holders_late_write_is_refused_once_the_new_holder_fenced(
    lone_jetstream, stream, locks
):
    """The old holder's engine still runs (a request it began in time): after the new holder
    wrote its fence and read the stream, the old one's ACK is refused, so the new one never
    hands out again a message acked behind its back; and msg_ids go on from the stream."""
    servers = lone_jetstream.urls
    old = BrokerEngine(storage=JetStreamStorage(servers, stream=stream))
    new: BrokerEngine | None = None
    try:
        await _ok(old, p.MAILBOX_CREATE, {"name": "fo.box"})
        for i in range(3):
            await _ok(old, p.send_subject("fo.box"), f"m{i}".encode())
        assert locks().fence() > 0
        new = BrokerEngine(storage=JetStreamStorage(servers, stream=stream))
        ack = {"group_name": "g", "mail_address": "fo.box", "msg_id": 1}
        late = await _call(old, p.ack_subject("fo.box"), ack)
        assert "could not save the change" in late["error"], late
        fetch = {"group_name": "g", "deliver": "earliest", "config": {"max_wait_ms": 0}}
        handed = await _ok(new, p.fetch_subject("fo.box"), fetch)
        assert [m["msg_id"] for m in handed["messages"]] == [0, 1, 2]
        assert (await _ok(new, p.send_subject("fo.box"), b"after"))["msg_id"] == 3
    finally:
        for engine in (old, new):
            if engine is not None:
                engine.storage.close()


async def test_an_answer_made_after_the_lease_ended_is_not_sent():
    """A FETCH waiting for messages when the lease ends: its answer, made after, could hand
    out what another broker had acked meanwhile; it is replaced by an error saying so."""
    serving = [True]
    engine = LeaseEngine(lambda: serving[0])
    await _ok(engine, p.MAILBOX_CREATE, {"name": "lease.box"})
    fetch = {"group_name": "g", "deliver": "earliest", "config": {"max_wait_ms": 30_000}}
    waiting = asyncio.create_task(_call(engine, p.fetch_subject("lease.box"), fetch))
    await asyncio.sleep(0)  # the FETCH is waiting
    await _ok(engine, p.send_subject("lease.box"), b"wakes it")
    serving[0] = False  # the lease ends before the woken FETCH makes its answer
    reply = await asyncio.wait_for(waiting, WAIT)
    assert reply["error"] == LEASE_ENDED and "messages" not in reply


async def test_an_engine_past_its_lease_answers_every_request_with_the_reason():
    serving = [True]
    engine = LeaseEngine(lambda: serving[0])
    await _ok(engine, p.MAILBOX_CREATE, {"name": "lease.box"})
    serving[0] = False
    reply = await _call(engine, p.send_subject("lease.box"), b"late")
    assert reply["error"] == NOT_SERVING
    serving[0] = True
    assert (await _ok(engine, p.query_subject("lease.box"), {}))["messages"] == []


async def test_the_same_command_twice_serves_once_and_the_standby_takes_over(
    lone_jetstream, stream
):
    """Started twice, the command gives one broker serving and one standing by (their ready
    lines say which); a client given the ready line's URL list is served through the first
    one's stop; msg_ids go on."""
    url = ",".join(lone_jetstream.urls * 2)  # a list, as for a cluster
    args = ("--nats", url, "--store", "jetstream", "--stream", stream, "--no-search")
    with DevBroker(*args) as first, DevBroker(*args) as second:
        assert _ready_line(first).endswith("(serving)")
        assert _ready_line(second).endswith("(standby)")
        assert "standby for JetStream stream" in second.output()
        async with Mq9Client(first.url, request_timeout=30) as client:
            await client.mailbox_create(name="two.box")
            assert [await client.send("two.box", f"m{i}") for i in range(3)] == [0, 1, 2]
            assert first.stop() == 0
            wait_serving(second)
            assert await client.send("two.box", "after") == 3
            got = await client.query("two.box")
            assert [m.text() for m in got] == ["m0", "m1", "m2", "after"]
        assert "restored 1 mailboxes, 3 messages" in second.output()


def test_a_broker_of_another_store_serving_there_is_refused_and_the_lock_let_go(
    lone_jetstream, stream, locks
):
    """The lock is free but a broker keeping its state elsewhere answers mq9 on this NATS:
    the JetStream broker refuses to start beside it, and does not keep the lock."""
    with DevBroker("--nats", lone_jetstream.urls[0], "--no-search"):
        refused = DevBroker(
            "--nats", lone_jetstream.urls[0], "--store", "jetstream", "--stream", stream,
            "--no-search", wait=False,
        )  # fmt: skip
        assert refused.wait_exit() == 1
        assert "an mq9 broker already serves" in refused.output()
    assert locks().try_take()  # deleted on the way out: no wait for it to expire


def test_no_jetstream_on_the_server_is_a_clear_error_at_once(nats_server):
    refused = DevBroker("--nats", nats_server.url, "--store", "jetstream", wait=False)
    assert refused.wait_exit() == 1
    assert "JetStream is not available" in refused.output()
    assert "Traceback" not in refused.output()


def test_the_kill_lane():
    """SIGKILLs of the stream leader's server, a follower and the serving broker under 4
    writers and 4 group readers: nothing acknowledged lost, nothing handed out after its ACK,
    no msg_id reused, every SEND that failed raised (bench/js_failover.py checks)."""
    from bench.js_failover import KINDS, run_lane

    full = os.environ.get("MQ9_KILL_LANE_FULL") == "1"
    rounds = 11 if full else 1
    result = asyncio.run(run_lane(rounds))
    print(result.summary())
    out = os.environ.get("MQ9_KILL_LANE_OUT")
    if out:
        Path(out).write_text(json.dumps({"summary": result.summary()}, indent=1))
    assert len(result.rounds) == rounds * len(KINDS)
    assert result.acked > 0 and result.delivered >= result.acked
    assert result.lost == []
    assert result.handed_out_after_ack == []
    assert result.reused == [] and result.probes_reused == []
    assert result.unknown == [] and result.client_warnings == []


def test_the_kill_lane_of_group_readers():
    """Issue #61 item 7: 30 SIGKILLs (10 of each kind, a short phase of traffic between them)
    under 4 writers and 4 ``GroupReader``s of one group on one client: no message handed out
    by a fetch sent after a ``done`` covering it had returned, no stored commit moving the
    group back, nothing acknowledged lost. ``MQ9_KILL_LANE_FULL=1``: 60 kills, longer phases."""
    from bench.js_failover import KINDS, run_lane

    full = os.environ.get("MQ9_KILL_LANE_FULL") == "1"
    rounds, pause = (20, 3.0) if full else (10, 0.5)
    result = asyncio.run(run_lane(rounds, readers="group", pause=pause))
    print(result.summary())
    assert len(result.rounds) == rounds * len(KINDS)
    assert result.acked > 0 and result.records_observed > 0
    assert result.handed_out_after_done == []
    # A diagnostic of the same: every ACK of the group comes from the readers' one client,
    # which never sends one below another it sent (its outcome unknown or not)
    assert result.commits_back == [], result.commits_back_why
    assert result.lost == [] and result.reused == [] and result.unknown == []
    assert result.client_warnings == [] and result.probes_reused == []


# -- helpers -----------------------------------------------------------------------------------


def _deadline(seconds: float) -> threading.Event:
    """An event set after ``seconds``: a bound on a wait that should end long before."""
    event = threading.Event()
    timer = threading.Timer(seconds, event.set)
    timer.daemon = True
    timer.start()
    return event


async def _call(engine: BrokerEngine, subject: str, body: bytes | dict) -> dict:
    raw = p.encode(body) if isinstance(body, dict) else body
    return json.loads(await engine.handle(subject, {}, raw))


async def _ok(engine: BrokerEngine, subject: str, body: bytes | dict) -> dict:
    reply = await _call(engine, subject, body)
    assert reply["error"] == "", reply
    return reply


def _ready_line(broker: DevBroker) -> str:
    return next(line for line in broker.stdout if line.startswith("mq9 dev broker ready on"))
