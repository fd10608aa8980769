"""The waker's ceilings stop a flood, not a fleet (#77 items 7 and 10).

- one receiver spelled many ways (``HTTP://``, ``?``, ``#x``, ``:0PORT``, ...) is one key, so
  seven rules spelling it seven ways make at most ``--runs-per-hour`` POSTs;
- the ceiling is checked and recorded in one step: mailboxes looked at at once pass it only
  as often as it allows;
- 30 (and 1,000) mailboxes behind one receiver are each woken on every round, where the
  ceiling before #77 (120 an hour per target, freed an hour after the first) starved them;
- one rule flooding is still stopped (the ceiling per rule), renaming it starts no new count,
  and its next wake is free 3600/N seconds later, not an hour after the first.

The waker's clock is injected (``ManualClock``): nothing here is timed.
"""

from __future__ import annotations

import asyncio

import pytest

from mq9_broker import ManualClock
from mq9_platform.wake import Deliverer, Destinations, Limits, RuleBook, Waker, WakeRule
from mq9_platform.wake.receivers import UNPARSABLE, receiver_key
from tests.platform.wake.wake_world import SECRET

NOON = 1_700_006_400.0  # a UTC noon: no quiet hours
LOOPBACK = Destinations(hosts=["127.0.0.1/32"])


def spellings(url: str) -> list[str]:
    """Seven ways to write ``url`` (http://127.0.0.1:PORT/hook) that reach one receiver."""
    origin, path = url.rsplit("/", 1)
    port = origin.rsplit(":", 1)[1]
    return [
        url,
        url.replace("http://", "HTTP://"),
        url + "?",
        url + "#x",
        origin.replace(f":{port}", f":0{port}") + "/" + path,
        origin + "/./" + path,
        origin + "/%68ook" + "?#frag",
    ]


# -- the key -------------------------------------------------------------------------------


@pytest.mark.parametrize("keep", ["origin", "path", "query"])
def test_one_receiver_spelled_many_ways_is_one_key(keep):
    base = "http://hooks.example.com/hook"
    same = [
        "HTTP://HOOKS.EXAMPLE.COM/hook",
        "http://hooks.example.com:80/hook",
        "http://hooks.example.com:0080/hook",
        "http://hooks.example.com./hook",
        "http://hooks.example.com/hook?",
        "http://hooks.example.com/hook#x",
        "http://user:pw@hooks.example.com/hook",
        "http://hooks.example.com/a/../hook",
        "http://hooks.example.com/./hook",
        "http://hooks.example.com/%68%6F%6Fk",
        "  http://hooks.example.com/hook ",
    ]
    assert {receiver_key(u, keep) for u in [base, *same]} == {receiver_key(base, keep)}
    assert receiver_key("https://h.example", keep) == receiver_key("https://H.example:443/", keep)
    assert receiver_key("http://[::1]:8/", keep) == receiver_key("http://[0:0::1]:08", keep)
    assert receiver_key("http://h.example", keep).startswith("http://h.example:80")  # explicit


def test_what_tells_receivers_apart_is_the_operators_policy():
    def keys(keep: str) -> int:
        urls = [
            "http://h.example/a",
            "http://h.example/b",
            "http://h.example/a?n=1",
            "http://h.example/a?n=2",
            "http://h.example/a#n=3",
        ]
        return len({receiver_key(u, keep) for u in urls})

    assert (keys("origin"), keys("path"), keys("query")) == (1, 2, 4)  # never the fragment
    assert receiver_key("http://h.example/a?", "query") == "http://h.example:80/a"
    assert receiver_key("http://h.example/%7e%2f", "path") == "http://h.example:80/~%2F"
    # different ports, schemes and hosts are different receivers under every policy
    assert (
        len(
            {
                receiver_key(u)
                for u in (
                    "http://h.example",
                    "https://h.example",
                    "http://h.example:81",
                    "http://g.example",
                )
            }
        )
        == 4
    )
    with pytest.raises(ValueError, match="one of origin, path, query"):
        receiver_key("http://h.example", "everything")


def test_a_url_no_key_is_made_of_counts_as_one_receiver():
    from mq9_platform.wake.receivers import key_or_unparsable

    for bad in ("http://h.example:99999/", "http://[::1/", "ftp://h.example/", "http:///x"):
        assert key_or_unparsable(bad) == UNPARSABLE  # no ceiling of its own per spelling


# -- seven spellings, several looks at once ----------------------------------------------------


async def _add_webhooks(client, urls: list[str], prefix: str = "agent.w") -> list[str]:
    names = []
    for n, url in enumerate(urls):
        name = f"{prefix}{n}"
        await client.mailbox_create(name=name)
        await RuleBook(client).add(
            WakeRule(mailbox=name, target="webhook", url=url, secret=SECRET, min_interval=0)
        )
        names.append(name)
    return names


async def _round(client, waker: Waker, names: list[str]) -> None:
    """Mail to every mailbox, then every one looked at at once."""
    for name in names:
        await client.send(name, "hello")
    await asyncio.gather(*(waker.check(name) for name in names))


@pytest.mark.parametrize("keep", ["origin", "path", "query"])
async def test_seven_spellings_of_one_receiver_make_at_most_the_ceiling(
    memory_lane, receiver, keep
):
    clock = ManualClock(NOON)
    limits = Limits(min_interval=0, runs_per_hour=2, receiver_key=keep)
    async with memory_lane.client() as client:
        names = await _add_webhooks(client, spellings(receiver.url))
        waker = await Waker(
            client,
            Deliverer(LOOPBACK, attempts=1, limits=limits),
            clock=clock,
            events=False,
            poll_interval=3600,
        ).start()
        try:
            for _ in range(3):  # 6 s of mail (#77: 14 POSTs in 6 s)
                await _round(client, waker, names)
                clock.advance(2)
            assert len(receiver.requests) == 2
            # the ceiling is rate-shaped: one more run 1800 s on, not an hour after the first
            clock.advance(1800)
            await asyncio.gather(*(waker.check(name) for name in names))
            assert len(receiver.requests) == 3
            # and what was held is owed, not lost: each mailbox's wake covers all it got
            for _ in range(len(names)):
                clock.advance(1800)
                await asyncio.gather(*(waker.check(name) for name in names))
            by_mailbox = dict.fromkeys(names, 0)
            for wake in receiver.wakes():
                by_mailbox[wake["mailbox"]] += wake["waiting"]
            assert by_mailbox == dict.fromkeys(names, 3)  # every message in one wake
            assert len(receiver.requests) == len(names) + 2  # the first two woke twice
        finally:
            await waker.stop()


async def test_seven_rules_of_one_mailbox_spelling_one_receiver(memory_lane, receiver):
    clock = ManualClock(NOON)
    async with memory_lane.client() as client:
        await client.mailbox_create(name="agent.seven")
        for n, url in enumerate(spellings(receiver.url)):
            await RuleBook(client).add(
                WakeRule(
                    mailbox="agent.seven",
                    name=f"r{n}",
                    target="webhook",
                    url=url,
                    secret=SECRET,
                    min_interval=0,
                )
            )
        limits = Limits(min_interval=0, runs_per_hour=2)
        waker = await Waker(
            client,
            Deliverer(LOOPBACK, attempts=1, limits=limits),
            clock=clock,
            events=False,
            poll_interval=3600,
        ).start()
        try:
            for _ in range(3):
                await client.send("agent.seven", "hello")
                await waker.check("agent.seven")
                clock.advance(2)
            assert len(receiver.requests) == 2
        finally:
            await waker.stop()


async def test_mailboxes_looked_at_at_once_pass_the_ceiling_only_as_often_as_it_allows(
    lane, receiver
):
    # on every lane: over a real nats-server the looks' requests interleave as they come
    clock = ManualClock(NOON)
    async with lane.client() as client:
        names = await _add_webhooks(client, [receiver.url] * 12, prefix="agent.once")
        limits = Limits(min_interval=0, runs_per_hour=3)
        waker = await Waker(
            client,
            Deliverer(LOOPBACK, attempts=1, limits=limits),
            clock=clock,
            events=False,
            poll_interval=3600,
        ).start()
        try:
            await _round(client, waker, names)  # 12 looks under way together
            assert len(receiver.requests) == 3  # #77: 3 to 5 against a ceiling of 2
        finally:
            await waker.stop()


# -- a fleet behind one receiver ---------------------------------------------------------------


@pytest.mark.slow  # over a second on a quiet machine (#89)
async def test_thirty_mailboxes_behind_one_webhook_are_each_woken_every_round(lane, receiver):
    clock = ManualClock(NOON)
    async with lane.client() as client:
        names = await _add_webhooks(client, [receiver.url] * 30, prefix="agent.fleet")
        # the operator's defaults: sized for a fleet
        waker = await Waker(
            client, Deliverer(LOOPBACK, attempts=1), clock=clock, events=False, poll_interval=3600
        ).start()
        try:
            for n in range(1, 9):  # #77: the 5th round was not woken (120 an hour)
                await _round(client, waker, names)
                assert len(receiver.requests) == 30 * n, f"round {n}"
                clock.advance(60)
            by_mailbox = {name: 0 for name in names}
            for wake in receiver.wakes():
                by_mailbox[wake["mailbox"]] += wake["waiting"]
            assert set(by_mailbox.values()) == {8}
        finally:
            await waker.stop()


@pytest.mark.slow  # over a second on a quiet machine (#89)
async def test_a_thousand_mailboxes_behind_one_callback_are_each_woken(memory_lane):
    clock = ManualClock(NOON)
    seen: list = []
    async with memory_lane.client() as client:
        names = [f"agent.k{n}" for n in range(1000)]
        book = RuleBook(client)

        async def one(name: str) -> None:
            await client.mailbox_create(name=name)
            await book.add(WakeRule(mailbox=name, target="callback", callback="fleet"))

        for start in range(0, len(names), 100):
            await asyncio.gather(*(one(n) for n in names[start : start + 100]))
        waker = await Waker(
            client,
            Deliverer(callbacks={"fleet": seen.append}),
            clock=clock,
            events=False,
            poll_interval=3600,
        ).start()
        try:
            for n in range(1, 3):
                for start in range(0, len(names), 100):
                    await _round(client, waker, names[start : start + 100])
                assert len({w.mailbox for w in seen[(n - 1) * 1000 :]}) == 1000, f"round {n}"
                clock.advance(60)
            assert len(seen) == 2000
        finally:
            await waker.stop()


@pytest.mark.slow  # over a second on a quiet machine (#89)
async def test_one_rule_flooding_is_stopped_beside_the_fleet(memory_lane, receiver):
    clock = ManualClock(NOON)
    async with memory_lane.client() as client:
        fleet = await _add_webhooks(client, [receiver.url] * 10, prefix="agent.good")
        # one model's mailbox: three rules (renamed copies) to the same receiver, no interval
        await client.mailbox_create(name="agent.flood")
        for name in ("a", "b", "c"):
            await RuleBook(client).add(
                WakeRule(
                    mailbox="agent.flood",
                    name=name,
                    target="webhook",
                    url=receiver.url + "?" + name,
                    secret=SECRET,
                    min_interval=0,
                )
            )
        limits = Limits(min_interval=0, runs_per_rule=5)  # per receiver: the fleet default
        waker = await Waker(
            client,
            Deliverer(LOOPBACK, attempts=1, limits=limits),
            clock=clock,
            events=False,
            poll_interval=3600,
        ).start()
        try:
            for second in range(40):  # 40 s of mail to the flood, every 10 s to the fleet
                await _round(client, waker, ["agent.flood"] + (fleet if second % 10 == 0 else []))
                clock.advance(1)
            by_mailbox: dict[str, int] = {}
            for wake in receiver.wakes():
                by_mailbox[wake["mailbox"]] = by_mailbox.get(wake["mailbox"], 0) + 1
            assert by_mailbox.pop("agent.flood") == 5  # its three rules together
            assert by_mailbox == dict.fromkeys(fleet, 4)  # each woken on every round
            clock.advance(720 - 40)  # 3600/5: one more, for everything since
            await waker.check("agent.flood")
            flood = [w for w in receiver.wakes() if w["mailbox"] == "agent.flood"]
            assert len(flood) == 6
        finally:
            await waker.stop()
