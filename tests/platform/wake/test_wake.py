"""Mail that wakes its agent (#62): rules kept on the broker, one signed webhook per burst,
a command started, mail already read waking nothing, the minimum interval, cap and quiet hours
on an injected clock, a waker killed mid-burst losing no wake, two wakers never waking twice
for the same mail, and a rule to an address the operator did not allow refused; on memory://,
on a real nats-server (arrivals announced) and on the RobustMQ-shaped listener (polling)."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest

from mq9_broker import ManualClock
from mq9_platform import Mq9Client
from mq9_platform.wake import (
    Deliverer,
    Destinations,
    Limits,
    RuleBook,
    RuleError,
    Waker,
    WakeRule,
    rules_address,
)
from mq9_platform.wake.rules import FAILED_ADDRESS
from tests.platform.wake.wake_world import SECRET, Receiver

LOOPBACK = Destinations(hosts=["127.0.0.1/32"])
NO_FLOOR = Limits(min_interval=0)
DAY = 1_700_000_000 - 1_700_000_000 % 86400  # a UTC midnight


def hook(mailbox: str, url: str, **policy) -> WakeRule:
    return WakeRule(mailbox=mailbox, target="webhook", url=url, secret=SECRET, **policy)


def waker_for(lane, client, clock=None, destinations=LOOPBACK, limits=NO_FLOOR, **options) -> Waker:
    """A waker on a clock of the test's (the operator's floor at 0 unless given: these
    tests judge the rules' own intervals)."""
    options.setdefault("poll_interval", 0.05)
    return Waker(
        client,
        Deliverer(destinations, backoff=0.01, limits=limits),
        clock=clock or ManualClock(DAY + 12 * 3600),
        **options,
    )


async def settle(seconds: float = 0.5) -> None:
    await asyncio.sleep(seconds)


# -- the rules ------------------------------------------------------------------------------


async def test_rules_are_kept_on_the_broker_and_never_show_their_secret(memory_lane):
    async with memory_lane.client() as client:
        await client.mailbox_create(name="agent.me")
        book = RuleBook(client)
        rule = await book.add(hook("agent.me", "http://127.0.0.1:9/hook", min_interval=5))
        assert SECRET not in repr(rule) and SECRET not in json.dumps(rule.view())
        # another client (a restarted waker) reads the same rules from the broker
        async with memory_lane.client() as other:
            assert await RuleBook(other).list("agent.me") == [rule]
        again = await book.add(hook("agent.me", "http://127.0.0.1:9/other"))
        assert await book.list("agent.me") == [again]  # same name: replaced
        assert await book.remove("agent.me", "default")
        assert await book.list("agent.me") == []
        assert not await book.remove("agent.me", "default")


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"target": "webhook", "url": "ftp://x", "secret": SECRET}, "http:// or https://"),
        ({"target": "webhook", "url": "http://x", "secret": "short"}, "secret"),
        ({"target": "command", "argv": "rm -rf /"}, "never one shell string"),
        ({"target": "agent_server", "url": "http://x"}, "assistant"),
        ({"target": "mail"}, "target 'mail'"),
        ({"target": "callback", "callback": "f", "quiet_hours": "25:00-01:00"}, "HH:MM"),
        ({"target": "callback", "callback": "f", "min_interval": -1}, "between 0"),
        ({"target": "callback", "callback": "f", "surprise": 1}, "unknown wake rule field"),
        ({"target": "callback", "callback": "f", "mailbox": "mq9.tasks.x"}, "reserved root"),
    ],
)
def test_a_bad_rule_gets_one_line(fields, says):
    with pytest.raises(RuleError) as caught:
        WakeRule.from_dict({"mailbox": "agent.me", **fields})
    assert says in str(caught.value) and "\n" not in str(caught.value)


async def test_no_rule_for_a_mailbox_that_is_not_there(memory_lane):
    async with memory_lane.client() as client:
        with pytest.raises(RuleError, match=r"no wake rule for 'agent\.nobody'"):
            await RuleBook(client).add(hook("agent.nobody", "http://127.0.0.1:9/"))


# -- webhooks -------------------------------------------------------------------------------


@pytest.mark.slow  # over a second on a quiet machine (#89)
async def test_one_signed_wake_per_burst(lane, receiver):
    clock = ManualClock(DAY + 12 * 3600)
    async with lane.client() as client:
        await client.mailbox_create(name="agent.sleeper")
        await RuleBook(client).add(hook("agent.sleeper", receiver.url, min_interval=60))
        waker = await waker_for(lane, client, clock).start()
        try:
            ids = [await client.send("agent.sleeper", f"job {n}") for n in range(100)]
            (first,) = await receiver.wait_for(1)
            await settle()
            assert len(receiver.requests) == 1, "a burst is one wake"
            assert first["mailbox"] == "agent.sleeper" and "messages" not in first
            assert "job" not in json.dumps(first)  # never the payload unless asked
            assert first["priorities"] and first["waiting"] >= 1
            # what came after the first wake is owed, and delivered once the interval is over
            clock.advance(61)
            await waker.check("agent.sleeper")
            wakes = receiver.wakes()
            assert len(wakes) <= 2
            assert max(w["newest_msg_id"] for w in wakes) == ids[-1]
            assert len({w["wake_key"] for w in wakes}) == len(wakes)
        finally:
            await waker.stop()


async def test_payloads_only_when_the_rule_says(memory_lane, receiver):
    async with memory_lane.client() as client:
        await client.mailbox_create(name="agent.me")
        await RuleBook(client).add(hook("agent.me", receiver.url, include_payload=True))
        waker = await waker_for(memory_lane, client).start()
        try:
            await client.send("agent.me", "hello", priority="urgent")
            (wake,) = await receiver.wait_for(1)
            assert wake["messages"][0]["payload"] == "hello"
            assert wake["priorities"] == {"urgent": 1}
        finally:
            await waker.stop()


async def test_a_rule_to_an_address_not_allowed_is_refused(memory_lane, receiver):
    other = Receiver("127.0.0.2")  # loopback too, but not on the allow-list
    try:
        async with memory_lane.client() as client:
            await client.mailbox_create(name="agent.me")
            book = RuleBook(client)
            await book.add(hook("agent.me", other.url, name="inside"))
            await book.add(hook("agent.me", "http://169.254.169.254/latest", name="metadata"))
            await book.add(hook("agent.me", "http://localhost:1/x", name="byname"))
            await book.add(hook("agent.me", receiver.url, name="allowed"))
            waker = await waker_for(memory_lane, client).start()
            try:
                await client.send("agent.me", "hi")
                await receiver.wait_for(1)
                await settle(0.3)
                assert other.requests == []
                assert waker.set_aside == 3
                failed = await client.query(FAILED_ADDRESS)
                reasons = sorted(json.loads(m.payload)["reason"] for m in failed)
                assert all(r.startswith("refused:") for r in reasons)
                assert any("allow-list" in r for r in reasons)
                assert all(SECRET not in m.text() for m in failed)
            finally:
                await waker.stop()
    finally:
        other.close()


async def test_a_failing_webhook_is_retried_then_set_aside(memory_lane, receiver):
    receiver.status = 500
    async with memory_lane.client() as client:
        await client.mailbox_create(name="agent.me")
        await RuleBook(client).add(hook("agent.me", receiver.url))
        waker = await waker_for(memory_lane, client).start()
        try:
            await client.send("agent.me", "hi")
            await receiver.wait_for(5)  # Deliverer's attempts
            for _ in range(100):
                if waker.set_aside:
                    break
                await asyncio.sleep(0.05)
            assert waker.set_aside == 1 and waker.wakes == 0
            assert len({h["X-Mq9-Wake-Key"] for _, h in receiver.requests}) == 1
            (record,) = await client.query(FAILED_ADDRESS)
            assert "500" in json.loads(record.payload)["reason"]
        finally:
            await waker.stop()


# -- commands and callbacks -----------------------------------------------------------------


@pytest.mark.slow  # a process: the command
async def test_a_command_is_started_with_the_mailbox_in_its_environment(memory_lane, tmp_path):
    out = tmp_path / "woken.json"
    script = (
        "import json, os, sys; json.dump({k: v for k, v in os.environ.items() "
        "if k.startswith('MQ9_')}, open(sys.argv[1], 'w'))"
    )
    async with memory_lane.client() as client:
        await client.mailbox_create(name="agent.me")
        await RuleBook(client).add(
            WakeRule(
                mailbox="agent.me", target="command", argv=(sys.executable, "-c", script, str(out))
            )
        )
        allowed = Destinations(commands=[sys.executable])
        waker = await waker_for(memory_lane, client, destinations=allowed).start()
        try:
            await client.send("agent.me", "$(touch /tmp/pwned); `id`")
            for _ in range(600):
                if out.exists() and out.stat().st_size:
                    break
                await asyncio.sleep(0.05)
            env = json.loads(out.read_text())
            assert env["MQ9_WAKE_MAILBOX"] == "agent.me" and env["MQ9_WAKE_WAITING"] == "1"
            assert not any("pwned" in v for v in env.values())
        finally:
            await waker.stop()


async def test_a_command_not_allowed_is_never_started(memory_lane, tmp_path):
    async with memory_lane.client() as client:
        await client.mailbox_create(name="agent.me")
        await RuleBook(client).add(
            WakeRule(mailbox="agent.me", target="command", argv=("/bin/touch", str(tmp_path / "x")))
        )
        waker = await waker_for(memory_lane, client, events=False).start()
        try:
            await client.send("agent.me", "hi")
            await waker.check("agent.me")
            assert waker.set_aside == 1 and not (tmp_path / "x").exists()
        finally:
            await waker.stop()


# -- what is due ----------------------------------------------------------------------------


async def manual(lane, client, clock, seen: list, **policy) -> Waker:
    await client.mailbox_create(name="agent.me")
    await RuleBook(client).add(
        WakeRule(mailbox="agent.me", target="callback", callback="seen", **policy)
    )
    # the operator's floor at 0: the rules' own intervals are what these tests judge
    deliverer = Deliverer(callbacks={"seen": seen.append}, limits=NO_FLOOR)
    return await Waker(client, deliverer, clock=clock, events=False, poll_interval=3600).start()


async def test_mail_already_read_wakes_nothing(memory_lane):
    seen: list = []
    clock = ManualClock(DAY + 12 * 3600)
    async with memory_lane.client() as client:
        waker = await manual(memory_lane, client, clock, seen, group="readers")
        try:
            msg_id = await client.send("agent.me", "hi")
            await client.ack("agent.me", "readers", msg_id)  # the agent read it first
            await waker.check("agent.me")
            assert seen == []
            await client.send("agent.me", "unread")
            await waker.check("agent.me")
            assert [w.waiting for w in seen] == [1]
        finally:
            await waker.stop()


async def test_minimum_interval_cap_and_quiet_hours(memory_lane):
    seen: list = []
    clock = ManualClock(DAY + 21 * 3600)  # 21:00 UTC
    async with memory_lane.client() as client:
        waker = await manual(
            memory_lane,
            client,
            clock,
            seen,
            min_interval=10,
            cap=2,
            cap_window=3600,
            quiet_hours="22:00-07:00",
        )
        try:

            async def mail_then_look(advance: float) -> int:
                clock.advance(advance)
                await client.send("agent.me", "x")
                await waker.check("agent.me")
                return len(seen)

            assert await mail_then_look(0) == 1
            assert await mail_then_look(5) == 1  # within the minimum interval: owed
            clock.advance(5)
            await waker.check("agent.me")
            assert len(seen) == 2 and seen[1].waiting == 1  # the owed wake, once
            assert await mail_then_look(20) == 2  # the cap: 2 an hour
            clock.advance(3600)  # 22:00:30: the cap's window is over, but quiet hours began
            await waker.check("agent.me")
            assert len(seen) == 2
            clock.advance(9 * 3600)  # 07:00:30: quiet hours over, one wake for all that waited
            await waker.check("agent.me")
            assert len(seen) == 3
            assert len({w.key for w in seen}) == 3
        finally:
            await waker.stop()


async def test_a_restarted_waker_neither_misses_nor_repeats(memory_lane):
    seen: list = []
    clock = ManualClock(DAY + 12 * 3600)
    async with memory_lane.client() as client:
        waker = await manual(memory_lane, client, clock, seen, min_interval=0)
        await client.send("agent.me", "one")
        await waker.check("agent.me")
        await waker.stop()
        await client.send("agent.me", "two")  # while no waker runs
        again = await Waker(
            client,
            Deliverer(callbacks={"seen": seen.append}, limits=NO_FLOOR),
            clock=clock,
            events=False,
            poll_interval=3600,
        ).start()
        try:
            await again.check("agent.me")
            assert [w.waiting for w in seen] == [1, 1]
            assert seen[1].newest_msg_id > seen[0].newest_msg_id
        finally:
            await again.stop()


# -- several wakers -------------------------------------------------------------------------


async def test_a_waker_killed_mid_burst_loses_no_wake(lane, receiver):
    clock = ManualClock(DAY + 12 * 3600)
    hung = asyncio.Event()

    async def hang(wake) -> None:  # the waker dies while delivering
        hung.set()
        await asyncio.Event().wait()

    async with lane.client() as client:
        await client.mailbox_create(name="agent.me")
        await RuleBook(client).add(
            WakeRule(mailbox="agent.me", target="callback", callback="hang", min_interval=0)
        )
        dying_client = lane.client()
        await dying_client.connect()
        dying = await Waker(
            dying_client,
            Deliverer(callbacks={"hang": hang}),
            clock=clock,
            lease=30,
            poll_interval=0.05,
        ).start()
        for n in range(50):
            await client.send("agent.me", f"burst {n}")
        await asyncio.wait_for(hung.wait(), 30)
        await dying_client.close()  # killed: its claim stays, its state is never written
        await dying.stop()
        seen: list = []
        survivor = await Waker(
            client,
            Deliverer(callbacks={"hang": seen.append}),
            clock=clock,
            lease=30,
            poll_interval=0.05,
        ).start()
        try:
            await settle(0.3)
            assert seen == [], "the dead waker's claim holds the mailbox until its lease ends"
            clock.advance(31)
            await survivor.check("agent.me")
            assert len(seen) >= 1
            assert seen[0].key.endswith(".0")  # the wake the dead waker owed: the same key
        finally:
            await survivor.stop()


@pytest.mark.slow  # over a second on a quiet machine (#89)
async def test_two_wakers_never_wake_twice_for_the_same_mail(lane, receiver):
    clock = ManualClock(DAY + 12 * 3600)
    async with lane.client() as client, lane.client() as second:
        await client.mailbox_create(name="agent.me")
        await RuleBook(client).add(hook("agent.me", receiver.url, min_interval=0))
        wakers = [
            await waker_for(lane, client, clock).start(),
            await waker_for(lane, second, clock).start(),
        ]
        try:
            last = -1
            for burst in range(5):
                for n in range(20):
                    last = await client.send("agent.me", f"{burst}.{n}")
                await settle(0.3)
            for w in wakers:
                await w.check("agent.me")
            wakes = receiver.wakes()
            keys = [w["wake_key"] for w in wakes]
            assert len(keys) == len(set(keys)), "no wake delivered twice"
            starts = sorted(int(k.rsplit(".", 1)[1]) for k in keys)
            assert starts == sorted(set(starts))  # no mail woken for twice
            assert max(w["newest_msg_id"] for w in wakes) == last
        finally:
            for w in wakers:
                await w.stop()


async def test_rules_mailbox_is_reserved_for_the_tools(memory_lane):
    # the tools refuse the reserved root: no agent writes another's rules through them
    assert rules_address("agent.me").startswith("mq9.wake.")
    async with Mq9Client(memory_lane.url) as client:
        await client.mailbox_create(name="agent.me")
        await RuleBook(client).add(hook("agent.me", "http://127.0.0.1:9/"))
        forged = hook("agent.other", "http://127.0.0.1:9/").to_json()
        # a record naming another mailbox, slipped into agent.me's rules mailbox, is no rule
        await client.send(rules_address("agent.me"), forged, key="rule.x", tags=["rule"])
        assert [r.mailbox for r in await RuleBook(client).list("agent.me")] == ["agent.me"]


async def test_a_forged_claim_cannot_hold_a_mailbox_for_good(lane):
    seen: list = []
    clock = ManualClock(DAY + 12 * 3600)
    async with lane.client() as client:
        waker = await manual(lane, client, clock, seen, min_interval=0)
        try:
            # any client of an open broker may write there: a claim "until the end of time"
            forged = json.dumps({"waker": "squatter", "until": 1e18})
            await client.send(rules_address("agent.me"), forged, tags=["claim"])
            await client.send("agent.me", "hi")
            await waker.check("agent.me")
            assert [w.waiting for w in seen] == [1]
        finally:
            await waker.stop()


async def test_a_forged_cursor_cannot_silence_a_mailbox(lane):
    seen: list = []
    clock = ManualClock(DAY + 12 * 3600)
    async with lane.client() as client:
        waker = await manual(lane, client, clock, seen, min_interval=0)
        try:
            forged = json.dumps({"seen": 10**12, "rules": {}})
            await client.send(rules_address("agent.me"), forged, key="state")
            await client.send("agent.me", "hi")
            await waker.check("agent.me")
            assert [w.waiting for w in seen] == [1]
        finally:
            await waker.stop()


async def test_a_rule_removed_wakes_no_more(memory_lane):
    seen: list = []
    async with memory_lane.client() as client:
        await client.mailbox_create(name="agent.me")
        book = RuleBook(client)
        await book.add(
            WakeRule(mailbox="agent.me", target="callback", callback="seen", min_interval=0)
        )
        waker = await Waker(
            client, Deliverer(callbacks={"seen": seen.append}), clock=ManualClock(DAY)
        ).start()
        try:
            await client.send("agent.me", "one")
            for _ in range(200):
                if seen:
                    break
                await asyncio.sleep(0.02)
            assert len(seen) == 1
            await book.remove("agent.me", "default")
            await settle(0.2)  # the index's announcement: the waker reads the rules again
            await client.send("agent.me", "two")
            await settle(0.3)
            assert len(seen) == 1
        finally:
            await waker.stop()
