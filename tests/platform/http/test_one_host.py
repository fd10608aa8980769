"""One host, one spelling (#88 item 4): ``canonical_host`` is the one normaliser the allow-list
judges a host by and the waker's ceilings count it by, so every spelling a resolver accepts
is the same host to both, and different hosts stay different.

Before #88 the allow-list read ``127.1`` as 127.0.0.1 and the ceilings as a receiver of its
own (``tests/platform/wake/test_wake_one_receiver.py`` plays that against a real waker)."""

from __future__ import annotations

import ipaddress
import itertools
import socket

import pytest

from mq9_platform._http.ssrf import HostPolicy, HostRefused, Resolved, canonical_host
from mq9_platform.wake.receivers import receiver_key, receiver_keys

LOOPBACK = ipaddress.ip_address("127.0.0.1")


def _number(value: int, form: str) -> str:
    forms = {"dec": str(value), "oct": "0" + format(value, "o"), "hex": hex(value)}
    return forms.get(form) or "0X" + format(value, "X")


def inet_aton_spellings(address: str) -> list[str]:
    """Every way inet_aton reads ``address``: 4, 3, 2 or 1 parts (the last part filling the
    rest), each part decimal, octal (``0177``), hex (``0x7f``) or ``0X7F``: 340 spellings."""
    a, b, c, d = (int(x) for x in address.split("."))
    splits = [[a, b, c, d], [a, b, c << 8 | d], [a, b << 16 | c << 8 | d]]
    splits.append([a << 24 | b << 16 | c << 8 | d])
    found = []
    for parts in splits:
        for forms in itertools.product(("dec", "oct", "hex", "HEX"), repeat=len(parts)):
            found.append(".".join(_number(p, f) for p, f in zip(parts, forms, strict=True)))
    return sorted(set(found))


SPELLINGS = inet_aton_spellings("127.0.0.1")
OTHER_SPELLINGS = [
    "127.0.0.1.",
    "127.1.",
    "127.0.0.%31",
    "%31%32%37.%30.%30.%31",
    "[::ffff:127.0.0.1]",
    "::ffff:127.0.0.1",
    "::FFFF:7F00:1",
    "0:0:0:0:0:ffff:7f00:1",
    "0000:0000:0000:0000:0000:ffff:7f00:0001",
    "::ffff:127.0.0.1%25eth0",
    "１２７.０.０.１",  # full-width: nameprep maps it, as a resolver's IDNA would
]


def test_every_spelling_a_resolver_reads_is_one_address():
    assert len(SPELLINGS) == 340
    for spelling in SPELLINGS:
        assert socket.inet_aton(spelling) == LOOPBACK.packed, spelling  # the resolver's reading
        assert canonical_host(spelling) == "127.0.0.1", spelling
    for spelling in OTHER_SPELLINGS:
        assert canonical_host(spelling) == "127.0.0.1", spelling


@pytest.mark.parametrize(
    ("spellings", "one"),
    [
        (["::1", "[::1]", "0:0:0:0:0:0:0:1", "0000:0000:0000:0000:0000:0000:0000:0001",
          "0::0:1", "[0:0::1]", "%3a%3a1", "::1%lo"], "::1"),
        (["fe80::1", "FE80:0:0:0:0:0:0:1", "fe80::0001%eth0"], "fe80::1"),
        (["2001:db8::1", "2001:0DB8:0000:0000:0000:0000:0000:0001", "[2001:db8:0::1]"],
         "2001:db8::1"),
        (["hooks.example.com", "HOOKS.Example.COM", "hooks.example.com.", "hooks%2Eexample.com",
          "%68ooks.example.com", " hooks.example.com "], "hooks.example.com"),
        (["bücher.example", "BÜCHER.example", "xn--bcher-kva.example", "XN--BCHER-KVA.example."],
         "xn--bcher-kva.example"),
        (["localhost", "LOCALHOST", "localhost."], "localhost"),
    ],
)
def test_every_spelling_of_one_host_is_one_host(spellings, one):
    assert {canonical_host(s) for s in spellings} == {one}


def test_different_hosts_stay_different():
    hosts = [
        "127.0.0.1",
        "127.0.0.2",
        "::1",
        "::127.0.0.1",  # IPv4-compatible IPv6: an IPv6 address of its own, not 127.0.0.1
        "64:ff9b::7f00:1",  # NAT64: goes through a gateway, not to 127.0.0.1
        "10.0.0.1",
        "localhost",
        "a.localhost",
        "hooks.example.com",
        "hooks.example.co",
    ]
    assert len({canonical_host(h) for h in hosts}) == len(hosts)


async def test_the_allow_list_and_the_key_read_each_spelling_alike():
    # one address listed: every spelling is let in as it, and keyed as it
    policy = HostPolicy(["127.0.0.1/32"])
    key = receiver_key("http://127.0.0.1:8080/hook")
    for spelling in SPELLINGS + OTHER_SPELLINGS:
        host = spelling if ":" not in spelling or spelling.startswith("[") else f"[{spelling}]"
        assert await policy.addresses(spelling, 8080) == [LOOPBACK], spelling
        assert receiver_key(f"http://{host}:8080/other") == key, spelling
    with pytest.raises(HostRefused):
        await policy.addresses("127.0.0.2", 8080)


async def test_an_entry_is_read_as_a_host_is():
    # an entry spelled one way lets in every spelling of what it names
    policy = HostPolicy(["127.1", "::ffff:10.0.0.0/104", "HOOKS.Example.COM.", "*.Hooks.TEST."])
    assert await policy.addresses("2130706433", 80) == [LOOPBACK]
    assert await policy.addresses("10.1.2.3", 80) == [ipaddress.ip_address("10.1.2.3")]
    assert await policy.addresses("::ffff:10.9.9.9", 80) == [ipaddress.ip_address("10.9.9.9")]
    assert policy._named("hooks.example.com") and policy._named("a.hooks.test")
    with pytest.raises(HostRefused):
        await policy.addresses("11.0.0.1", 80)


def test_ports_schemes_and_the_default_port():
    assert receiver_key("http://127.1") == receiver_key("http://127.0.0.1:80/")
    assert receiver_key("https://0x7f000001") == receiver_key("https://127.0.0.1:0443")
    assert receiver_key("http://127.0.0.1:443") != receiver_key("https://127.0.0.1:443")
    assert receiver_key("http://127.0.0.1:81") != receiver_key("http://127.0.0.1")
    assert receiver_key("http://[::ffff:127.0.0.1]:81") == "http://127.0.0.1:81"
    assert receiver_key("http://[0:0::1]:81") == "http://[::1]:81"


def test_a_name_is_keyed_by_its_addresses_when_resolved():
    addresses = ["::ffff:127.0.0.1", "127.0.0.1", "0:0::1"]
    assert receiver_keys("http://a.test:8/p", "path", addresses) == [
        "http://127.0.0.1:8/p",
        "http://[::1]:8/p",
    ]
    assert receiver_keys("http://A.test.:8/p", "origin") == ["http://a.test:8"]  # unresolved


async def test_resolved_names_are_kept_checked_and_by_one_spelling():
    asked: list[str] = []

    async def dns(host: str, port: int) -> list:
        asked.append(host)
        return {"a.test": [LOOPBACK], "inside.test": [ipaddress.ip_address("10.0.0.1")]}[host]

    now = [0.0]
    names = Resolved(HostPolicy(["127.0.0.1/32"], resolve=dns), keep=60, clock=lambda: now[0])
    assert names.known("a.test", 80) is None
    assert await names.resolve("A.test.", 80) == (LOOPBACK,)
    assert names.known("a.TEST", 80) == (LOOPBACK,) and asked == ["a.test"]
    assert await names.resolve("inside.test", 80) == ()  # refused by the allow-list: nothing
    now[0] = 60.0
    assert names.known("a.test", 80) is None  # kept 60 s, then asked again
