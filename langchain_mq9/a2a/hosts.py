"""Which HTTP hosts an A2A card import or a call out may reach: the operator's allow-list.

A card's URL is written by whoever registered or served it, so it may point inside the network
(127.0.0.1, 169.254.169.254, 10.0.0.0/8, ...). Nothing goes out unless the allow-list lets it:

- ``MQ9_A2A_ALLOW_HOSTS`` (or ``HostPolicy(allow=...)``): comma-separated entries, each a host
  name (``agents.example.com``), a suffix (``*.example.com``), an address or a network
  (``10.1.0.0/16``), or ``*`` for any host whose every address is public;
- a host that resolves to a private, loopback, link-local or otherwise non-public address is
  refused unless an entry names it or a network holding it (``*`` is not enough).

Every request is checked and sent to the address checked (``pinned_transport``), so a card
that was fine when imported cannot send a later call elsewhere, nor can a DNS answer that
changes between the check and the connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:  # httpx comes with the a2a extra; the policy itself needs none
    import httpx

ENV = "MQ9_A2A_ALLOW_HOSTS"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class HostRefused(Exception):
    """A URL the allow-list does not let us reach, in words that say what to do."""


class HostPolicy:
    """The allow-list (see the module's text). Empty: no HTTP A2A traffic at all."""

    def __init__(self, allow: Iterable[str] = ()) -> None:
        self.names: set[str] = set()
        self.suffixes: list[str] = []
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self.public = False
        for entry in (e.strip().lower() for e in allow):
            if not entry:
                continue
            if entry == "*":
                self.public = True
            elif entry.startswith("*."):
                self.suffixes.append(entry[1:])
            else:
                try:
                    self.networks.append(ipaddress.ip_network(entry, strict=False))
                except ValueError:
                    self.names.add(entry.rstrip("."))

    @classmethod
    def from_env(cls, extra: Iterable[str] = ()) -> HostPolicy:
        return cls([*os.environ.get(ENV, "").split(","), *extra])

    @property
    def empty(self) -> bool:
        return not (self.public or self.names or self.suffixes or self.networks)

    def _named(self, host: str) -> bool:
        return host in self.names or any(host.endswith(s) for s in self.suffixes)

    def _listed(self, address: Address) -> bool:
        return any(address in net for net in self.networks)

    async def check(self, url: str) -> list[Address]:
        """The addresses to reach ``url`` at, all checked (connect to them, not to the name
        again); ``HostRefused`` unless ``url`` may be reached."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise HostRefused(f"{url[:120]!r} is no http(s) URL")
        host = parts.hostname.lower().rstrip(".")
        if self.empty:
            raise HostRefused(
                f"HTTP A2A agents are off here: the operator allows hosts with {ENV} "
                f"(e.g. {host}); {host} is not allowed"
            )
        named = self._named(host)
        addresses = await _addresses(host, parts.port or (443 if parts.scheme == "https" else 80))
        if not addresses:
            raise HostRefused(f"{host} does not resolve")
        for address in addresses:
            if named or self._listed(address):
                continue
            if not self.public:
                raise HostRefused(f"{host} is not on the allow-list ({ENV})")
            if not address.is_global:
                raise HostRefused(
                    f"{host} resolves to {address}, a non-public address: refused unless "
                    f"{ENV} names it"
                )
        return addresses


async def _addresses(host: str, port: int) -> list[Address]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return []
    # An IPv6 scope ("fe80::1%eth0") is no part of the address.
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in found]


def pinned_transport(policy: HostPolicy) -> httpx.AsyncBaseTransport:
    """An httpx transport that checks each request's host and connects to the very address
    it checked (the name is not resolved a second time: a DNS answer that changes after the
    check cannot send the request elsewhere); TLS still verifies the host's name."""
    import httpx

    class Pinned(httpx.AsyncBaseTransport):
        def __init__(self) -> None:
            self.inner = httpx.AsyncHTTPTransport()

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            host = request.url.host
            addresses = await policy.check(str(request.url))
            for address in addresses:  # in the resolver's order, as a connection tries them
                if str(address) != host:  # the Host header stays the name, as built
                    request.url = request.url.copy_with(host=str(address))
                    request.extensions = {**request.extensions, "sni_hostname": host}
                try:
                    return await self.inner.handle_async_request(request)
                except httpx.ConnectError:
                    if address == addresses[-1]:
                        raise
            raise AssertionError("check returns at least one address")

        async def aclose(self) -> None:
            await self.inner.aclose()

    return Pinned()
