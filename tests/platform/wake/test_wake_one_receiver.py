"""One receiver, one ceiling, however its host is spelled (#88 item 4).

Before #88 the allow-list read a host one way (``127.1``, ``2130706433``, ``0x7f000001`` are
127.0.0.1 to it) and the ceilings another (each spelling a receiver of its own): with
``--runs-per-hour 2`` and the allow-list 127.0.0.1/32, 5 POSTs in 6 s reached one webhook.
Now one function (``canonical_host``) normalises a host for both, and a name is counted by the
addresses it resolves to (the POST goes to those, never to a later DNS answer), so neither a
spelling nor a name buys another ceiling; two receivers still keep two.

A real waker delivers to real HTTP receivers on loopback; its clock is injected
(``ManualClock``); names are resolved by a resolver the test gives (``Destinations(resolve=)``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import threading

import pytest

from mq9_broker import ManualClock
from mq9_platform.wake import Deliverer, Destinations, Limits, RuleBook, Waker, WakeRule
from testbed.support.waiting import until
from tests.platform.wake.wake_world import SECRET, Receiver

NOON = 1_700_006_400.0  # a UTC noon: no quiet hours
LOOPBACK = ipaddress.ip_address("127.0.0.1")
SECOND = ipaddress.ip_address("127.0.0.2")

# 127.0.0.1 written as a resolver reads it (each reaches the receiver: checked below)
ADDRESS_SPELLINGS = [
    "127.0.0.1",
    "127.1",  # the three
    "2130706433",
    "0x7f000001",
    "0X7F000001",
    "0x7f.1",
    "127.0.1",
    "017700000001",
    "127.0.0.1.",
    "127.0.0.%31",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[0:0:0:0:0:ffff:7f00:0001]",
]


class Names:
    """A DNS the test controls: ``answers`` maps a name to its addresses, a list of answers
    given in turn (the last one then for good)."""

    def __init__(self, answers: dict[str, list[list[ipaddress._BaseAddress]]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list:
        self.asked.append(host)
        turns = self.answers.get(host, [[]])
        return list(turns.pop(0) if len(turns) > 1 else turns[0])


def _beside(receiver: Receiver, host: str) -> Receiver:
    """Another receiver, on ``host`` at ``receiver``'s port."""
    other = Receiver(host)
    handler = other.server.RequestHandlerClass
    other.close()
    other.server = type(other.server)((host, receiver.server.server_address[1]), handler)
    other.url = receiver.url.replace("127.0.0.1", host, 1)
    other.thread = threading.Thread(target=other.server.serve_forever, daemon=True)
    other.thread.start()
    return other


def _url(receiver: Receiver, host: str) -> str:
    return receiver.url.replace("127.0.0.1", host, 1)


async def _add_webhooks(client, urls: list[str], prefix: str) -> list[WakeRule]:
    rules = []
    for n, url in enumerate(urls):
        rule = WakeRule(
            mailbox=f"{prefix}{n}", target="webhook", url=url, secret=SECRET, min_interval=0
        )
        await client.mailbox_create(name=rule.mailbox)
        await RuleBook(client).add(rule)
        rules.append(rule)
    return rules


async def _round(client, waker: Waker, rules: list[WakeRule]) -> None:
    """Mail to every mailbox, then every one looked at at once."""
    for rule in rules:
        await client.send(rule.mailbox, "hello")
    await asyncio.gather(*(waker.check(rule.mailbox) for rule in rules))


async def _resolved(deliverer: Deliverer, rules: list[WakeRule]) -> None:
    """Wait until every rule's receiver is known (a name is resolved in the background,
    asked by a look: ``free_at``)."""

    def known() -> bool:
        for rule in rules:
            deliverer.free_at(rule, NOON)
        return all(deliverer.keys(rule) is not None for rule in rules)

    await until(
        known,
        timeout=30,
        what="every rule's host resolved",
    )


async def _flood(client, deliverer: Deliverer, rules: list[WakeRule], clock, rounds=3) -> None:
    """``rounds`` rounds of mail, 2 s apart (the issue's 6 s), each mailbox looked at at once."""
    waker = await Waker(client, deliverer, clock=clock, events=False, poll_interval=3600).start()
    try:
        await _resolved(deliverer, rules)
        for _ in range(rounds):
            await _round(client, waker, rules)
            clock.advance(2)
    finally:
        await waker.stop()


async def test_every_spelling_of_an_address_reaches_the_receiver(memory_lane, receiver):
    # the legitimate use: each spelling is a working URL (so the ceiling below counts POSTs
    # that would have been sent, not spellings that fail anyway)
    urls = [_url(receiver, host) for host in ADDRESS_SPELLINGS]
    limits = Limits(min_interval=0, runs_per_hour=1000)
    deliverer = Deliverer(Destinations(hosts=["127.0.0.1/32"]), attempts=1, limits=limits)
    async with memory_lane.client() as client:
        rules = await _add_webhooks(client, urls, "agent.each")
        await _flood(client, deliverer, rules, ManualClock(NOON), rounds=1)
    wakes = await receiver.wait_for(len(urls))
    assert sorted(w["mailbox"] for w in wakes) == sorted(r.mailbox for r in rules)


async def test_spellings_of_one_address_make_at_most_the_ceiling(memory_lane, receiver):
    # the attack: --runs-per-hour 2, the allow-list one address, the receiver named as
    # 127.1, 2130706433, 0x7f000001 (and ten more): 5 POSTs in 6 s before #88
    urls = [_url(receiver, host) for host in ADDRESS_SPELLINGS]
    limits = Limits(min_interval=0, runs_per_hour=2)
    deliverer = Deliverer(Destinations(hosts=["127.0.0.1/32"]), attempts=1, limits=limits)
    async with memory_lane.client() as client:
        rules = await _add_webhooks(client, urls, "agent.spelt")
        await _flood(client, deliverer, rules, ManualClock(NOON))
    assert len(receiver.requests) == 2


async def test_names_of_one_address_make_at_most_the_ceiling(memory_lane, receiver):
    # one receiver under many names: names the attacker's DNS points at it, localhost and
    # *.localhost (loopback, never asked of the DNS), a trailing dot, capitals, IDNA
    dns = Names(
        {
            **{f"hook{n}.attacker.test": [[LOOPBACK]] for n in range(4)},
            "xn--bcher-kva.attacker.test": [[LOOPBACK]],
        }
    )
    hosts = [f"hook{n}.attacker.test" for n in range(4)]
    hosts += ["HOOK0.Attacker.Test.", "bücher.attacker.test", "localhost", "a.localhost"]
    urls = [_url(receiver, host) for host in hosts]
    limits = Limits(min_interval=0, runs_per_hour=2)
    allow = ["127.0.0.1/32", "::1/128"]
    deliverer = Deliverer(Destinations(hosts=allow, resolve=dns), attempts=1, limits=limits)
    async with memory_lane.client() as client:
        rules = await _add_webhooks(client, urls, "agent.named")
        await _flood(client, deliverer, rules, ManualClock(NOON))
    assert len(receiver.requests) == 2
    assert set(dns.asked) <= {h.lower().rstrip(".") for h in hosts[:4]} | {
        "xn--bcher-kva.attacker.test"
    }  # localhost is never asked


@pytest.mark.slow  # over a second on a quiet machine (#89)
async def test_two_receivers_keep_two_ceilings(memory_lane):
    # the legitimate use beside it: receivers at two addresses (one by name) each get theirs
    first, second = Receiver("127.0.0.1"), Receiver("127.0.0.2")
    try:
        dns = Names({"second.hooks.test": [[SECOND]]})
        urls = [first.url, _url(first, "127.1"), _url(second, "second.hooks.test"), second.url]
        limits = Limits(min_interval=0, runs_per_hour=2)
        destinations = Destinations(hosts=["127.0.0.0/30"], resolve=dns)
        deliverer = Deliverer(destinations, attempts=1, limits=limits)
        async with memory_lane.client() as client:
            rules = await _add_webhooks(client, urls, "agent.two")
            await _flood(client, deliverer, rules, ManualClock(NOON))
        assert (len(first.requests), len(second.requests)) == (2, 2)
    finally:
        first.close()
        second.close()


@pytest.mark.slow  # over a second on a quiet machine (#89)
async def test_a_wake_goes_to_the_address_it_was_counted_against(memory_lane):
    # a DNS answer that changes after the wake was counted (against 127.0.0.2, with room)
    # cannot send it to 127.0.0.1, whose ceiling is spent: the POST goes where it was counted
    spent = Receiver("127.0.0.1")
    counted = _beside(spent, "127.0.0.2")  # the same port: only the address tells them apart
    try:
        # answered once for the count, then the spent receiver's address for good
        dns = Names({"flip.attacker.test": [[SECOND], [LOOPBACK]]})
        limits = Limits(min_interval=0, runs_per_hour=1)
        destinations = Destinations(hosts=["127.0.0.0/30"], resolve=dns)
        deliverer = Deliverer(destinations, attempts=1, limits=limits)
        urls = [spent.url, _url(spent, "flip.attacker.test")]
        async with memory_lane.client() as client:
            rules = await _add_webhooks(client, urls, "agent.flip")
            await _flood(client, deliverer, rules, ManualClock(NOON), rounds=1)
        assert len(spent.requests) == 1  # its own rule's, the only one its ceiling allows
        assert len(counted.requests) == 1
        assert counted.requests[0][1]["Host"].startswith("flip.attacker.test:")
    finally:
        spent.close()
        counted.close()
