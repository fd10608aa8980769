"""The waker's records and its cost (#74): the broker requests one wake takes, counted where
the broker receives them (the memory:// engine's ``handle``, wrapped); records written before
#74 (a ``state`` record without its tag, a claim without a key) read by this waker, so an
upgrade loses no cursor and honours a live claim; a claim released by the state record holding
nothing; and a stop that ends when a cancel is lost."""

from __future__ import annotations

import asyncio
import json

from mq9_broker import ManualClock
from mq9_platform.wake import Deliverer, Destinations, Limits, RuleBook, Waker, WakeRule
from mq9_platform.wake.rules import rules_address
from mq9_wire import protocol as p
from tests.platform.wake.wake_world import SECRET

DAY = 1_700_000_000 - 1_700_000_000 % 86400
NO_FLOOR = Limits(min_interval=0)


class Counted:
    """Every request the engine behind a memory:// lane receives: (command, address)."""

    def __init__(self, engine) -> None:
        self.requests: list[tuple[str, str]] = []
        self._handle = engine.handle
        engine.handle = self.handle  # the transport looks ``handle`` up at each request

    async def handle(self, subject, headers, body):
        noun, verb, address = subject.removeprefix(p.PREFIX + ".").split(".", 2)
        self.requests.append((f"{noun}.{verb}", address))
        return await self._handle(subject, headers, body)

    def since(self, mark: int) -> list[str]:
        return [verb for verb, _ in self.requests[mark:]]


def callbacks(seen: list) -> Deliverer:
    return Deliverer(callbacks={"seen": seen.append}, limits=NO_FLOOR)


async def with_rule(client, rule: WakeRule) -> None:
    await client.mailbox_create(name=rule.mailbox)
    await RuleBook(client).add(rule)


async def test_a_webhook_wake_costs_at_most_six_broker_requests(memory_lane, receiver):
    clock = ManualClock(DAY + 12 * 3600)
    async with memory_lane.client() as client:
        await with_rule(
            client,
            WakeRule(
                mailbox="agent.me",
                target="webhook",
                url=receiver.url,
                secret=SECRET,
                min_interval=0,
            ),
        )
        deliverer = Deliverer(Destinations(hosts=["127.0.0.1/32"]), limits=NO_FLOOR)
        waker = await Waker(
            client, deliverer, clock=clock, events=False, poll_interval=3600
        ).start()
        counted = Counted(memory_lane.engine)
        try:
            costs = []
            for n in range(4):
                await client.send("agent.me", f"job {n}")
                mark = len(counted.requests)
                await waker.check("agent.me")
                costs.append(counted.since(mark))
                clock.advance(1)
            mark = len(counted.requests)
            await waker.check("agent.me")  # nothing new: one FETCH
            idle = counted.since(mark)
        finally:
            await waker.stop()
        assert len(receiver.requests) == 4, "one POST a wake"
        assert all(len(cost) <= 6 for cost in costs), costs
        # the first wake of a mailbox also asks for a state record written before #74; then
        # FETCH (anything new?), SEND (claim), QUERY (rules, claims, state), FETCH (the wake's
        # messages), SEND (the state, releasing the claim): nine before #74
        assert costs[-1] == ["MSG.FETCH", "MSG.SEND", "MSG.QUERY", "MSG.FETCH", "MSG.SEND"]
        assert idle == ["MSG.FETCH"]


async def test_records_written_before_74_are_read(memory_lane):
    seen: list = []
    clock = ManualClock(DAY + 12 * 3600)
    now = clock()
    address = rules_address("agent.me")
    async with memory_lane.client() as client:
        await with_rule(
            client, WakeRule(mailbox="agent.me", target="callback", callback="seen", min_interval=0)
        )
        woken = [await client.send("agent.me", f"woken {n}") for n in range(3)]
        # what the waker before #74 left: its state (key only, no tag), woken up to the third
        # message, and a live claim of its own (a tag, no key), as if it were still delivering
        old_state = {
            "seen": woken[-1],
            "rules": {
                "default": {
                    "last_wake": now - 10,
                    "window_start": 0.0,
                    "window_count": 0,
                    "pending_from": -1,
                    "failures": 0,
                    "last_error": "",
                }
            },
        }
        await client.send(address, json.dumps(old_state), key="state")
        await client.send(
            address, json.dumps({"waker": "waker-old", "until": now + 30}), tags=["claim"], ttl=180
        )
        waker = await Waker(
            client, callbacks(seen), clock=clock, events=False, poll_interval=3600, lease=30
        ).start()
        try:
            new = await client.send("agent.me", "new")
            await waker.check("agent.me")
            assert seen == [], "the old waker's live claim holds the mailbox"
            clock.advance(31)  # its lease is over
            await waker.check("agent.me")
            assert [(w.waiting, w.newest_msg_id) for w in seen] == [(1, new)]
            assert seen[0].key.endswith(f".{new}"), "the old cursor kept: nothing woken twice"
            # the state is kept with its tag from then on, and the dead claim is gone
            (state,) = await client.query(address, tags=["state"])
            assert state.key == "state" and state.json()["seen"] == new
            claims = await client.query(address, tags=["claim"])
            assert "waker-old" not in [c.json()["waker"] for c in claims]
        finally:
            await waker.stop()


async def test_a_released_claim_holds_nothing(memory_lane):
    seen: list = []
    clock = ManualClock(DAY + 12 * 3600)  # never moves: no lease ends here
    address = rules_address("agent.me")
    async with memory_lane.client() as client:
        await with_rule(
            client, WakeRule(mailbox="agent.me", target="callback", callback="seen", min_interval=0)
        )
        first = await Waker(
            client, callbacks(seen), clock=clock, events=False, poll_interval=3600, name="first"
        ).start()
        second = await Waker(
            client, callbacks(seen), clock=clock, events=False, poll_interval=3600, name="second"
        ).start()
        try:
            await client.send("agent.me", "one")
            await first.check("agent.me")
            assert len(seen) == 1
            # the first waker's claim is still there, live by its time, but the state it
            # stored names it released
            (claim,) = await client.query(address, tags=["claim"])
            assert claim.json()["waker"] == "first" and claim.json()["until"] > clock()
            (state,) = await client.query(address, tags=["state"])
            assert state.json()["released"] == claim.msg_id
            await client.send("agent.me", "two")
            await second.check("agent.me")  # at once: no lease to wait out
            await first.check("agent.me")
            assert [w.waiting for w in seen] == [1, 1]
            assert len({w.key for w in seen}) == 2
        finally:
            await first.stop()
            await second.stop()


async def test_a_waker_stops_when_a_cancel_is_lost(memory_lane):
    """Python 3.11's ``asyncio.wait_for`` (in nats-py's request) returns a reply that arrives
    with a cancel and drops the cancel; a sweep worker that lost its cancel went on through
    every mailbox left. The engine's handle here answers every cancelled request anyway, as
    that race does at its worst."""
    engine = memory_lane.engine
    answered: list[str] = []
    handle = engine.handle

    async def answers_anyway(subject, headers, body):
        answered.append(subject)
        reply = asyncio.ensure_future(handle(subject, headers, body))
        try:
            return await asyncio.shield(reply)
        except asyncio.CancelledError:
            return await reply  # the cancel is dropped, the reply given

    mailboxes = [f"agent.n{n}" for n in range(2000)]
    async with memory_lane.client() as client:
        waker = await Waker(
            client, Deliverer(), mailboxes=mailboxes, events=False, poll_interval=0.01
        ).start()
        engine.handle = answers_anyway
        try:
            while len(answered) < 100:  # a sweep under way, most of its mailboxes ahead
                await asyncio.sleep(0.01)
        finally:
            mark = len(answered)
            await waker.stop()
        during = len(answered) - mark
        for _ in range(20):
            await asyncio.sleep(0.01)  # turns for anything still running to ask
        assert during < 500, f"{during} requests while stopping: the sweep went on"
        assert len(answered) == mark + during, "requests after stop() returned"
