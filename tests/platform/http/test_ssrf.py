"""The package's SSRF guard (_http/ssrf.py) played against: a DNS answer that changes
between the check and the connection (the resolver injected), every spelling of a loopback,
private or link-local address, redirects, proxies from the environment and endless answers.
Real HTTP servers on loopback stand for the target and for what an attacker wants reached."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import trustme

from mq9_platform._http.hosts import HostPolicy as A2aPolicy
from mq9_platform._http.ssrf import (
    HostPolicy,
    HostRefused,
    ResponseTooLarge,
    guarded_client,
)
from mq9_platform.wake.deliver import Deliverer, Destinations, Refused

PUBLIC = ipaddress.ip_address("93.184.216.34")
LOOPBACK = ipaddress.ip_address("127.0.0.1")
TARGET = ipaddress.ip_address("127.0.0.2")  # the allowed target: loopback too, listed alone


class Server:
    """An HTTP/1.1 server that keeps each request's head and answers ``answer``."""

    def __init__(self, answer: bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok") -> None:
        self.answer = answer
        self.heads: list[str] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.heads.append(head.decode("latin-1"))
            length = [ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")]
            if length:
                await reader.readexactly(int(length[0].split(b":")[1]))
            writer.write(self.answer)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def serving(host: str, server: Server) -> AsyncIterator[int]:
    listener = await asyncio.start_server(server._serve, host, 0)
    try:
        yield listener.sockets[0].getsockname()[1]
    finally:
        listener.close()
        await listener.wait_closed()


class Rebinding:
    """A DNS that answers ``first`` once, then ``then`` (a rebinding attacker's name)."""

    def __init__(self, first: ipaddress._BaseAddress, then: ipaddress._BaseAddress) -> None:
        self.answers = [first, then]
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list:
        self.asked.append(host)
        return [self.answers[0] if len(self.asked) == 1 else self.answers[1]]


async def test_a_connection_goes_to_the_address_checked_not_where_the_name_leads_next():
    target, victim = Server(), Server()
    dns = Rebinding(TARGET, LOOPBACK)
    policy = HostPolicy(["rebind.test", "127.0.0.2"], resolve=dns)
    async with serving("127.0.0.2", target) as port, serving("127.0.0.1", victim):
        async with guarded_client(policy, timeout=20) as http:
            answer = await http.get(f"http://rebind.test:{port}/hook")
        assert answer.status_code == 200 and answer.text == "ok"
        # One resolution for the connection, and it went where that one said
        assert dns.asked == ["rebind.test"]
        assert len(target.heads) == 1 and victim.heads == []
        assert f"host: rebind.test:{port}" in target.heads[0].lower()  # the name, as built


async def test_a_name_public_at_the_check_and_loopback_at_the_connection_never_reaches_it():
    victim = Server()
    async with serving("127.0.0.1", victim) as port:
        url = f"http://rebind.test:{port}/hook"
        # wake: checked when the delivery starts, then at the connection
        deliverer = Deliverer(Destinations(["rebind.test"]), attempts=3)
        deliverer.destinations.hosts.resolve = Rebinding(PUBLIC, LOOPBACK)
        with pytest.raises(Refused, match=r"127\.0\.0\.1"):
            await deliverer.post(url, b"{}", {}, "push")
        await deliverer.close()
        # A2A: a card fine when checked, then the call out
        dns = Rebinding(PUBLIC, LOOPBACK)
        policy = HostPolicy(["*"], resolve=dns)
        assert await policy.check(url) == [PUBLIC]
        async with guarded_client(policy, timeout=20) as http:
            with pytest.raises(HostRefused, match="non-public"):
                await http.post(url, content=b"{}")
        assert victim.heads == []


LOOPBACK_SPELLINGS = [
    "127.0.0.1",
    "127.1",
    "2130706433",
    "0x7f000001",
    "0x7f.0.0.1",
    "0177.0.0.1",
    "017700000001",
    "127.0.0.1.",
    "localhost",
    "localhost.",
    "LocalHost",
    "api.localhost",
    "[::1]",
    "[0:0:0:0:0:0:0:1]",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[::127.0.0.1]",
    "[64:ff9b::127.0.0.1]",
    "[2002:7f00:1::1]",
]
INSIDE_SPELLINGS = [
    "0.0.0.0",
    "0",
    "[::]",
    "10.0.0.1",
    "012.0.0.1",
    "172.16.0.1",
    "192.168.1.1",
    "0xc0a80101",
    "169.254.169.254",
    "0xa9fea9fe",
    "[::ffff:169.254.169.254]",
    "[fe80::1]",
    "[fd00::1]",
    "100.64.0.1",
]


async def public_everywhere(host: str, port: int) -> list:
    return [PUBLIC]  # so no refusal below comes from the DNS


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS + INSIDE_SPELLINGS)
@pytest.mark.parametrize("make", [HostPolicy, A2aPolicy])
async def test_every_spelling_of_an_inside_address_is_refused_by_any_public_list(make, host):
    policy = make(["*"], resolve=public_everywhere)
    with pytest.raises(HostRefused, match="non-public"):
        await policy.check(f"http://{host}:8080/x")


# (the IPv6 forms that lead to a gateway, not to the address they carry, stay refused)
@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS[:-3])
async def test_every_spelling_of_loopback_is_the_loopback_an_operator_allows(host):
    policy = HostPolicy(["127.0.0.1", "::1"], resolve=public_everywhere)
    found = await policy.check(f"http://{host}/")
    plain = {getattr(a, "ipv4_mapped", None) or a for a in found}
    assert found and plain <= {LOOPBACK, ipaddress.ip_address("::1")}


@pytest.mark.parametrize(
    "host",
    ["2130706433", "0x7f.1", "[::ffff:127.0.0.1]", "localhost.", "127.0.0.1", "[::1]", "0.0.0.0"],
)
async def test_the_client_and_the_waker_refuse_them_before_any_connection(host):
    victim = Server()
    async with serving("127.0.0.1", victim) as port:
        url = f"http://{host}:{port}/"
        async with guarded_client(HostPolicy(["*"]), timeout=20) as http:
            with pytest.raises(HostRefused):
                await http.get(url)
        deliverer = Deliverer(Destinations(["localhost", "*.example.com"]), attempts=1)
        with pytest.raises(Refused):
            await deliverer.post(url, b"{}", {}, "push")
        await deliverer.close()
    assert victim.heads == []


async def test_a_name_not_on_the_list_is_not_even_resolved():
    dns = Rebinding(PUBLIC, PUBLIC)
    policy = HostPolicy(["agents.example.com"], resolve=dns)
    with pytest.raises(HostRefused, match="not on the allow-list"):
        await policy.check("https://secret.attacker.example/")
    assert dns.asked == []  # a name is a message to whoever runs its DNS


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://127.0.0.1/", "http:///x", "http://a.example.com:99999/"]
)
async def test_no_http_url_is_refused_in_words(url):
    with pytest.raises(HostRefused, match="no http"):
        await HostPolicy(["*"]).check(url)


async def test_an_empty_list_lets_nothing_out():
    with pytest.raises(HostRefused, match="names none"):
        await HostPolicy([], knob="--allow-host").check("https://example.com/")


async def test_a_redirect_is_not_followed():
    victim = Server()
    async with serving("127.0.0.1", victim) as vport:
        moved = f"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{vport}/\r\n"
        target = Server((moved + "Content-Length: 0\r\n\r\n").encode())
        policy = HostPolicy(["127.0.0.2"])
        async with serving("127.0.0.2", target) as port, guarded_client(policy, timeout=20) as http:
            answer = await http.get(f"http://127.0.0.2:{port}/")
    assert answer.status_code == 302 and len(target.heads) == 1 and victim.heads == []


async def test_a_proxy_from_the_environment_is_not_used(monkeypatch):
    proxy, target = Server(), Server()
    async with serving("127.0.0.1", proxy) as pport, serving("127.0.0.2", target) as port:
        for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "HTTPS_PROXY"):
            monkeypatch.setenv(name, f"http://127.0.0.1:{pport}")
        async with guarded_client(HostPolicy(["127.0.0.2"]), timeout=20) as http:
            assert (await http.get(f"http://127.0.0.2:{port}/")).status_code == 200
    assert proxy.heads == [] and len(target.heads) == 1


@pytest.mark.parametrize("announced", [True, False])
async def test_an_endless_answer_is_cut_off(announced):
    body = b"x" * 5000
    head = f"Content-Length: {len(body)}" if announced else "Connection: close"
    server = Server(f"HTTP/1.1 200 OK\r\n{head}\r\n\r\n".encode() + body)
    http = guarded_client(HostPolicy(["127.0.0.2"]), timeout=20, max_bytes=1000)
    async with serving("127.0.0.2", server) as port, http:
        with pytest.raises(ResponseTooLarge):
            await http.get(f"http://127.0.0.2:{port}/")


async def test_a_webhook_reaches_its_host_by_address_with_its_name_in_the_host_header():
    target = Server()
    destinations = Destinations(["hooks.test", "127.0.0.2"])
    destinations.hosts.resolve = Rebinding(TARGET, TARGET)
    deliverer = Deliverer(destinations, attempts=1)
    async with serving("127.0.0.2", target) as port:
        await deliverer.post(f"http://hooks.test:{port}/in", b"{}", {"X-T": "1"}, "push")
    await deliverer.close()
    assert len(target.heads) == 1 and "host: hooks.test" in target.heads[0].lower()


@asynccontextmanager
async def tls_serving(host: str, server: Server, cert_for: str, ca) -> AsyncIterator[tuple]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(cert_for).configure_cert(context)
    names: list[str | None] = []
    context.sni_callback = lambda _sock, name, _ctx: names.append(name)
    listener = await asyncio.start_server(server._serve, host, 0, ssl=context)
    try:
        yield listener.sockets[0].getsockname()[1], names
    finally:
        listener.close()
        await listener.wait_closed()


async def test_https_goes_to_the_address_and_verifies_the_name():
    ca = trustme.CA()
    trust = ssl.create_default_context()
    ca.configure_trust(trust)
    policy = HostPolicy(["*.test", "127.0.0.2"], resolve=lambda host, port: _at(TARGET))
    target = Server()
    http = guarded_client(policy, timeout=20, verify=trust)
    async with tls_serving("127.0.0.2", target, "agents.test", ca) as (port, names), http:
        answer = await http.get(f"https://agents.test:{port}/card")
        assert answer.status_code == 200 and names == ["agents.test"]
        assert "host: agents.test" in target.heads[0].lower()
        # The same address under another name: its certificate is not that name's
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await http.get(f"https://impostor.test:{port}/card")
    assert len(target.heads) == 1


async def _at(address: ipaddress._BaseAddress) -> list:
    return [address]


def test_an_httpx_whose_pool_the_guard_cannot_replace_makes_no_client(monkeypatch):
    # a later httpx keeping its pool elsewhere: the guard's own pool would be set and never
    # used, so every connection would go by name again; no client is made instead
    class Elsewhere(httpx.AsyncHTTPTransport):
        def __init__(self, **kwargs: object) -> None:
            super().__init__(**kwargs)  # type: ignore[arg-type]
            del self._pool

    monkeypatch.setattr(httpx, "AsyncHTTPTransport", Elsewhere)
    with pytest.raises(RuntimeError, match="could not be pinned"):
        guarded_client(HostPolicy(["*"]), timeout=20)
