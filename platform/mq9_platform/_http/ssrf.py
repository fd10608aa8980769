"""Where an HTTP request to a URL an agent gave may go (SSRF): the operator's allow-list, checked
against the very addresses each connection is made to. Used by the HTTP A2A calls and card
imports (``_http/hosts.py``) and by the wake deliveries (``wake/deliver.py``).

An allow-list holds entries, each a host name (``agents.example.com``), a suffix
(``*.example.com``), an address or a network (``10.1.0.0/16``), or ``*`` for any host whose every
address is public. A URL's host may be reached when an entry lets it in (by name, or every
address it has inside a listed network) and every address it resolves to is public or inside a
listed network; ``trust_names`` also lets a host named outright resolve anywhere (the A2A list).

Every spelling of an address counts as that address: ``2130706433``, ``0x7f.1`` and ``0177.0.0.1``
are 127.0.0.1 (as the system's resolver reads them), ``::ffff:127.0.0.1`` and the other IPv6
forms that carry an IPv4 address are judged by it too, ``localhost`` and ``*.localhost`` are
loopback whatever the resolver says, a trailing dot changes nothing.

``guarded_client`` connects to the address it checked, never to the name again (so a DNS answer
that changes between the check and the connection cannot send a request elsewhere: DNS
rebinding), while the Host header, TLS's SNI and the certificate check stay on the name; it
follows no redirect, ignores proxy settings from the environment (a proxy would connect by
name) and reads no more than ``max_bytes`` of an answer.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:  # httpx comes with the extras that make HTTP requests; the policy needs none
    import httpx

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# host, port -> its addresses (tests give one that changes its answer, as a rebinding DNS does)
Resolve = Callable[[str, int], Awaitable[list[Address]]]

RESOLVE_TIMEOUT = 10.0  # seconds a name may take to resolve before it counts as not resolving
MAX_ANSWER_BYTES = 4 * 1024 * 1024
_LOOPBACK: list[Address] = [ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1")]
_NUMERIC = re.compile(r"[0-9a-fx.]+")  # what inet_aton may read as an IPv4 address
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_COMPATIBLE = ipaddress.IPv6Network("::/96")  # IPv4-compatible IPv6 (deprecated, still parsed)


class HostRefused(Exception):
    """A URL the allow-list does not let us reach, in words that say what to do."""


class ResponseTooLarge(Exception):
    """An HTTP answer over the client's ``max_bytes``."""


@lru_cache(maxsize=65_536)  # asked at every look and connection; few hosts are named
def canonical_host(host: str) -> str:
    """``host`` as the allow-list checks it and the waker's ceilings count it: the one
    normaliser, so that no spelling is let in as one host and counted as another.

    Percent escapes decoded, brackets, case and a trailing ``.`` dropped, a name in its IDNA
    (ASCII) form; an address in any spelling a resolver reads (``127.1``, ``2130706433``,
    ``0x7f000001``, ``0177.0.0.1``, IPv6 expanded or zero-padded) written as ``address_text``
    writes it, so an IPv4 address carried as ``::ffff:a.b.c.d`` is that IPv4 address."""
    host = unquote(host.strip()).strip("[]").lower().rstrip(".")
    if not host.isascii():
        # nameprep maps what a resolver would: case, full-width digits and dots, ...; with
        # no IDNA form, compared as written (lower-cased): no resolver finds it either
        with suppress(UnicodeError):
            host = host.encode("idna").decode("ascii").lower().rstrip(".")
    address = literal(host)
    return host if address is None else address_text(address)


def address_text(address: Address) -> str:
    """One spelling of ``address``: an IPv6 scope dropped (no part of the address), an IPv4
    address carried as ``::ffff:a.b.c.d`` written as IPv4 (a connection to it is one to the
    IPv4 address), every other in its short form."""
    if isinstance(address, ipaddress.IPv6Address):
        address = ipaddress.IPv6Address(address.packed)  # no scope
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
    return address.compressed


def literal(host: str) -> Address | None:
    """The address ``host`` spells, in any of the ways a resolver reads one, else None."""
    host = host.strip("[]").lower().rstrip(".")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _NUMERIC.fullmatch(host) and host[0].isdigit():
        try:  # decimal, octal, hex and short forms: 2130706433, 0177.0.0.1, 0x7f.1, 127.1
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def is_public(address: Address) -> bool:
    """Whether ``address`` is globally reachable, an IPv4 address carried inside an IPv6 one
    (mapped, compatible, 6to4, NAT64) judged as itself too."""
    if isinstance(address, ipaddress.IPv6Address):
        address = ipaddress.IPv6Address(address.packed)  # no scope
        inner = address.ipv4_mapped or address.sixtofour
        if inner is None and (address in _NAT64 or address in _COMPATIBLE):
            inner = ipaddress.IPv4Address(address.packed[-4:])
        if inner is not None and not inner.is_global:
            return False
    return address.is_global


async def system_resolve(host: str, port: int) -> list[Address]:
    loop = asyncio.get_running_loop()
    try:
        found = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT
        )
    except (OSError, TimeoutError):
        return []
    # An IPv6 scope ("fe80::1%eth0") is no part of the address.
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in found]


class HostPolicy:
    """An allow-list (see the module's text). ``knob`` names where the operator sets it, in
    refusals; ``trust_names``: a host named outright may resolve to any address; ``resolve``:
    the resolver (the system's by default). Empty: no host at all."""

    def __init__(
        self,
        allow: Iterable[str] = (),
        *,
        knob: str = "the allow-list",
        trust_names: bool = False,
        resolve: Resolve | None = None,
    ) -> None:
        self.names: set[str] = set()
        self.suffixes: list[str] = []
        self.networks: list[Network] = []
        self.public = False
        self.knob = knob
        self.trust_names = trust_names
        self.resolve = resolve or system_resolve
        for entry in (e.strip().lower() for e in allow):
            if not entry:
                continue
            if entry == "*":
                self.public = True
            elif entry.startswith("*."):
                self.suffixes.append("." + canonical_host(entry[2:]))
            else:
                self._add(entry)

    def __repr__(self) -> str:
        entries = [*(["*"] if self.public else []), *sorted(self.names)]
        entries += [f"*{s}" for s in self.suffixes] + [str(n) for n in self.networks]
        return f"HostPolicy({entries!r})"

    def _add(self, entry: str) -> None:
        # an entry is normalised as a URL's host is (canonical_host): "127.1" lists the
        # address 127.0.0.1, "::ffff:10.0.0.0/104" the network 10.0.0.0/8
        try:
            network = ipaddress.ip_network(entry.strip("[]"), strict=False)
        except ValueError:
            host = canonical_host(entry)
            address = literal(host)
            if address is None:
                self.names.add(host)
                return
            network = ipaddress.ip_network(address)
        mapped = ipaddress.IPv6Network("::ffff:0:0/96")
        if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(mapped):
            inner = ipaddress.IPv4Address(network.network_address.packed[-4:])
            network = ipaddress.IPv4Network(f"{inner}/{network.prefixlen - 96}", strict=False)
        self.networks.append(network)

    @property
    def empty(self) -> bool:
        return not (self.public or self.names or self.suffixes or self.networks)

    def _named(self, host: str) -> bool:
        return host in self.names or any(host.endswith(s) for s in self.suffixes)

    def _listed(self, address: Address) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1 to the list too
        return any(address in net for net in self.networks)

    async def check(self, url: str) -> list[Address]:
        """The addresses to reach ``url`` at, all checked; ``HostRefused`` unless ``url``
        may be reached. A request must connect to these (``guarded_client`` does)."""
        parts = urlsplit(url)
        try:
            host, port = parts.hostname, parts.port
        except ValueError:  # a port out of range or not a number
            host = None
        if parts.scheme not in ("http", "https") or not host:
            raise HostRefused(f"{url[:120]!r} is no http(s) URL with a host")
        return await self.addresses(host, port or (443 if parts.scheme == "https" else 80))

    async def addresses(self, host: str, port: int) -> list[Address]:
        """The checked addresses of ``host`` (see ``check``), which is judged as
        ``canonical_host`` writes it (the form the waker's ceilings count too)."""
        host = canonical_host(host)
        found = self.known_now(host)
        if found is None:
            found = self._checked(host, list(dict.fromkeys(await self.resolve(host, port))))
        return found

    def known_now(self, host: str) -> list[Address] | None:
        """``addresses`` where no DNS need be asked (an address in any spelling, ``localhost``
        and ``*.localhost``, or a host refused outright), else None: the name must be
        resolved. ``HostRefused`` as ``addresses`` refuses."""
        host = canonical_host(host)
        if self.empty:
            raise HostRefused(f"no host is allowed here ({self.knob} names none): {host} refused")
        if not (self._named(host) or self.public or self.networks):  # not even asked of the DNS
            raise HostRefused(f"{host} is not on the allow-list ({self.knob})")
        spelled = literal(host)
        if spelled is not None:
            return self._checked(host, [spelled])
        if host == "localhost" or host.endswith(".localhost"):
            return self._checked(host, list(_LOOPBACK))
        return None

    def _checked(self, host: str, found: list[Address]) -> list[Address]:
        named = self._named(host)
        if not found:
            raise HostRefused(f"{host} does not resolve")
        if not (named or self.public or all(self._listed(a) for a in found)):
            raise HostRefused(f"{host} is not on the allow-list ({self.knob})")
        for address in found:
            if self._listed(address) or (named and self.trust_names) or is_public(address):
                continue
            raise HostRefused(
                f"{host} resolves to {address}, a private, loopback or otherwise non-public "
                f"address: refused unless {self.knob} names it"
            )
        return found


# The addresses a request's connection must go to, set by a caller that keyed it by them
# (``pinned_to``): the waker counts a name's wakes by its addresses, and a second DNS answer
# at the connection could send the wake elsewhere than the address it was counted against
_PINNED: ContextVar[tuple[str, tuple[Address, ...]] | None] = ContextVar(
    "mq9_pinned_addresses", default=None
)


@contextmanager
def pinned_to(host: str, addresses: Iterable[Address]) -> Iterator[None]:
    """Within it, a new connection to ``host`` goes to ``addresses`` (which ``HostPolicy``
    checked: ``Resolved``), not to what the name resolves to now. A kept-alive connection
    went where it went: the caller sends ``Connection: close`` so that none is reused."""
    token = _PINNED.set((canonical_host(host), tuple(addresses)))
    try:
        yield
    finally:
        _PINNED.reset(token)


class Resolved:
    """Names' checked addresses (``policy.addresses``), each kept ``keep`` seconds: what the
    waker counts a name's wakes by, and connects them to (``pinned_to``), so the address a
    wake is counted against is the address it goes to. ``known`` is a look without waiting
    (a wake is checked and recorded in one step); ``ask`` resolves in the background."""

    def __init__(
        self,
        policy: HostPolicy,
        *,
        keep: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        size: int = 4096,
    ) -> None:
        self.policy = policy
        self.keep = keep
        self.clock = clock
        self.size = size
        # (host, port) -> (when, its addresses; () when refused or not resolving)
        self._found: dict[tuple[str, int], tuple[float, tuple[Address, ...]]] = {}
        self._asking: dict[tuple[str, int], asyncio.Task[None]] = {}

    def known(self, host: str, port: int) -> tuple[Address, ...] | None:
        """``host``'s checked addresses (empty: refused or not resolving), or None when not
        known (or known too long ago): ``ask``."""
        try:  # an address, localhost, or a host refused outright: known without the DNS
            now = self.policy.known_now(host)
        except HostRefused:
            return ()
        if now is not None:
            return tuple(now)
        found = self._found.get((canonical_host(host), port))
        if found is None or self.clock() - found[0] >= self.keep:
            return None
        return found[1]

    def ask(self, host: str, port: int) -> None:
        """Resolve ``host`` in the background (once however often asked)."""
        key = (canonical_host(host), port)
        if key not in self._asking:
            task = asyncio.ensure_future(self._resolve(key))
            self._asking[key] = task
            task.add_done_callback(lambda _: self._asking.pop(key, None))

    async def resolve(self, host: str, port: int) -> tuple[Address, ...]:
        """``host``'s checked addresses, resolved now unless known."""
        found = self.known(host, port)
        if found is None:
            await self._resolve((canonical_host(host), port))
            found = self._found[(canonical_host(host), port)][1]
        return found

    async def _resolve(self, key: tuple[str, int]) -> None:
        try:
            found = tuple(await self.policy.addresses(*key))
        except Exception:  # refused, or a resolver that failed: nothing to connect to
            found = ()
        self._found.pop(key, None)  # the newest last: the oldest go first when full
        self._found[key] = (self.clock(), found)
        while len(self._found) > self.size:
            del self._found[next(iter(self._found))]

    async def aclose(self) -> None:
        """Stop the resolutions under way."""
        tasks = list(self._asking.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def pinned_transport(
    policy: HostPolicy, verify: ssl.SSLContext | None = None, max_connections: int = 10
) -> httpx.AsyncBaseTransport:
    """An httpx transport whose every connection goes to an address ``policy`` checked for the
    request's host at that moment (the name is never resolved again); the URL keeps the name,
    so the Host header, SNI, the certificate check and the reuse of connections all go by it.
    ``verify``: the TLS context (the system's trust by default); ``max_connections``: open at
    once (httpcore's default, 10; the waker's deliveries take more, so that peers that never
    answer hold only their own)."""
    import httpcore
    import httpx

    class Pinned(httpcore.AsyncNetworkBackend):
        def __init__(self) -> None:
            self.inner = httpcore.AnyIOBackend()

        async def connect_tcp(
            self,
            host: str,
            port: int,
            timeout: float | None = None,
            local_address: str | None = None,
            socket_options: Iterable[Any] | None = None,
        ) -> httpcore.AsyncNetworkStream:
            pinned = _PINNED.get()
            if pinned is not None and pinned[0] == canonical_host(host) and pinned[1]:
                addresses = list(pinned[1])  # checked when resolved: see pinned_to
            else:
                addresses = await policy.addresses(host, port)
            for address in addresses:  # in the resolver's order, as a connection tries them
                try:
                    return await self.inner.connect_tcp(
                        str(address), port, timeout, local_address, socket_options
                    )
                except (httpcore.ConnectError, httpcore.ConnectTimeout):
                    if address == addresses[-1]:
                        raise
            raise AssertionError("addresses returns at least one")

        async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> Any:
            raise HostRefused("no Unix sockets")

        async def sleep(self, seconds: float) -> None:
            await self.inner.sleep(seconds)

    transport = httpx.AsyncHTTPTransport(trust_env=False)
    # httpx takes no network backend, its connection pool (httpcore's) does. Should a later
    # httpx keep its pool elsewhere, setting it here would change nothing and connections would
    # go by name again: refuse to make a client rather than make an unpinned one.
    if not isinstance(getattr(transport, "_pool", None), httpcore.AsyncConnectionPool):
        raise RuntimeError(
            f"httpx {httpx.__version__} keeps no httpcore pool where this guard puts its own: "
            "its connections could not be pinned to checked addresses"
        )
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=verify or httpx.create_ssl_context(trust_env=False),
        network_backend=Pinned(),
        max_connections=max_connections,
    )
    return transport


def guarded_client(
    policy: HostPolicy,
    *,
    timeout: float,
    max_bytes: int = MAX_ANSWER_BYTES,
    base_url: str = "",
    headers: Mapping[str, str] | None = None,
    verify: ssl.SSLContext | None = None,
    max_connections: int = 10,
) -> httpx.AsyncClient:
    """An httpx client that reaches only what ``policy`` allows, at the addresses it checked,
    follows no redirect (a 30x could lead anywhere) and reads at most ``max_bytes`` of an
    answer (``ResponseTooLarge``: one announced larger is refused unread, one that streams past
    it is cut off there)."""
    import httpx

    return httpx.AsyncClient(
        base_url=base_url,
        headers=headers,
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        trust_env=False,
        transport=_bounded(pinned_transport(policy, verify, max_connections), max_bytes),
    )


def _bounded(inner: httpx.AsyncBaseTransport, limit: int) -> httpx.AsyncBaseTransport:
    import httpx

    class Counted(httpx.AsyncByteStream):
        def __init__(self, stream: Any) -> None:
            self.stream = stream
            self.read = 0

        async def __aiter__(self) -> AsyncIterator[bytes]:
            async for chunk in self.stream:
                self.read += len(chunk)
                if self.read > limit:
                    raise ResponseTooLarge(f"the answer passed {limit} bytes: too large")
                yield chunk

        async def aclose(self) -> None:
            await self.stream.aclose()

    class Bounded(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            response = await inner.handle_async_request(request)
            size = response.headers.get("content-length", "")
            if size.isdigit() and int(size) > limit:
                await response.aclose()
                raise ResponseTooLarge(f"the answer is {size} bytes: too large (at most {limit})")
            response.stream = Counted(response.stream)
            return response

        async def aclose(self) -> None:
            await inner.aclose()

    return Bounded()
