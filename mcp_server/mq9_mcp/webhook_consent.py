"""The bounds on webhook verification handshakes and the memory of who consented (``webhooks.py``
makes the handshakes): ``Verifications`` counts the verification POSTs of the last minute, by
client and by address, and refuses one past a bound; ``Consents`` remembers the (principal, URL)s
whose receiver echoed a challenge, so each is asked once a day.

A verification is a POST a client has the server make at a host of its choosing, so it is bounded
by the address it goes to: the addresses the SSRF guard checked, each as ``address_text``
writes it (the canonical form the guard's allow-list and the waker's ceilings share), never the
URL's spelling (``127.1``, ``0x7f.1``, ``2130706433``, a trailing dot and a DNS name resolving
there are one address). Of an address's verifications one client takes at most a share, and a
client that had none there in the window gets one whoever filled the rest, so no number
of clients denies another. Both stores are capped (per client and in all), since each key is a
client's data.
"""

from __future__ import annotations

import hashlib
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from typing import Any

from mcp.shared.exceptions import MCPError

from .events import RESOURCE_EXHAUSTED_CODE, TOO_MANY, UNAVAILABLE, event_error
from .owners import client_of

# A (principal, URL) whose receiver echoed a challenge needs none again for this long: a day,
# the longest TTL a subscription is granted (``webhooks.MAX_TTL_MS``).
VERIFIED_SECONDS = 24 * 60 * 60.0
# Those remembered: per client, past which its oldest is forgotten, and in all, past which the
# client remembered most often forgets its oldest (forgetting costs only a new handshake).
VERIFIED_PER_CLIENT = 256
VERIFIED_MAX = 8192
# At most this many verification POSTs to one address in ``VERIFY_WINDOW`` seconds, whoever asks
# (the SEP: rate-limited per destination host; an address, as the SSRF guard checked it, so
# that no spelling of it is a host of its own): a failed one makes no subscription, so nothing
# else would bound how often a client has the server POST at a host.
VERIFY_PER_ADDRESS = 10
# Of those, one client's (``owners.client_of``): one client filling its share leaves the rest
# of the address's to the others.
VERIFY_CLIENT_SHARE = 5
# ... and what every client gets at an address whatever the others took: a client that
# asked there fewer times than this in the window is verified even past the address's bound, so
# no number of clients filling it denies another (two at their shares filled all 10, a third was
# refused every minute); the address sees at most its bound plus this for each further client.
VERIFY_EACH = 1
# One client's verification POSTs in the window, to any addresses; and the (POST, address)
# records the window holds in all, the server's (refused, "unavailable", only when that many
# clients each fill their own).
VERIFY_PER_CLIENT = 30
VERIFY_RECORDS = 4096
VERIFY_WINDOW = 60.0


def _less(counts: Counter[Any], key: Any) -> None:
    counts[key] -= 1
    if counts[key] <= 0:
        del counts[key]  # a Counter keeps its zeros: the keys gone would be kept for good


class Verifications:
    """The verification POSTs of the last ``VERIFY_WINDOW`` seconds, by the client that asked
    each and the addresses it could go to (``address_text``): what bounds them, per address,
    per client's share of an address, per client, and in all (``VERIFY_*``). Kept no longer than
    the window, so never more than ``VERIFY_RECORDS`` (POST, address) pairs. Each client gets
    ``VERIFY_EACH`` at an address whoever filled its bound."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.sent: deque[tuple[float, str, tuple[str, ...]]] = deque()  # oldest first
        self.by_address: Counter[str] = Counter()
        self.by_client: Counter[str] = Counter()
        self.by_share: Counter[tuple[str, str]] = Counter()  # (client, address)
        self.records = 0

    def __len__(self) -> int:
        """The (POST, address) records held."""
        self._prune(self.clock())
        return self.records

    def _prune(self, now: float) -> None:
        while self.sent and self.sent[0][0] <= now - VERIFY_WINDOW:
            _, client, addresses = self.sent.popleft()
            _less(self.by_client, client)
            for address in addresses:
                _less(self.by_address, address)
                _less(self.by_share, (client, address))
            self.records -= len(addresses)

    def take(self, client: str, addresses: tuple[str, ...]) -> None:
        """Count a verification POST of ``client``'s to ``addresses``, or refuse it
        (``ResourceExhausted``, saying whose bound is full) and count nothing."""
        now = self.clock()
        self._prune(now)
        if self.by_client[client] >= VERIFY_PER_CLIENT:
            raise _too_many(
                f"this client had {VERIFY_PER_CLIENT} receivers asked to confirm webhooks in "
                f"the last {VERIFY_WINDOW:g} s",
                VERIFY_PER_CLIENT,
            )
        for address in addresses:
            mine = self.by_share[(client, address)]
            if mine >= VERIFY_CLIENT_SHARE:
                raise _too_many(
                    f"this client had receivers at {address} asked to confirm webhooks "
                    f"{VERIFY_CLIENT_SHARE} times in the last {VERIFY_WINDOW:g} s (a client's "
                    f"share of an address's {VERIFY_PER_ADDRESS})",
                    VERIFY_CLIENT_SHARE,
                )
            # the address's bound, once this client had its VERIFY_EACH there
            if self.by_address[address] >= VERIFY_PER_ADDRESS and mine >= VERIFY_EACH:
                raise _too_many(
                    f"receivers at {address} were asked to confirm webhooks "
                    f"{VERIFY_PER_ADDRESS} times in the last {VERIFY_WINDOW:g} s, whoever asked",
                    VERIFY_PER_ADDRESS,
                )
        if self.records + len(addresses) > VERIFY_RECORDS:
            raise event_error(
                RESOURCE_EXHAUSTED_CODE,
                UNAVAILABLE,
                f"this server asked receivers to confirm webhooks {VERIFY_RECORDS} times in "
                f"the last {VERIFY_WINDOW:g} s: try again in a minute",
                limit="server_verifications",
                max=VERIFY_RECORDS,
            )
        self.sent.append((now, client, addresses))
        self.by_client[client] += 1
        for address in addresses:
            self.by_address[address] += 1
            self.by_share[(client, address)] += 1
        self.records += len(addresses)


def _too_many(said: str, most: int) -> MCPError:
    return event_error(
        RESOURCE_EXHAUSTED_CODE,
        TOO_MANY,
        f"{said}: try again later",
        limit="verifications",
        max=most,
    )


class Consents:
    """The (principal, URL)s whose receiver echoed a challenge, each for ``VERIFIED_SECONDS``:
    at most ``VERIFIED_PER_CLIENT`` of a client's and ``VERIFIED_MAX`` in all, the URL kept as a
    digest (its length is the client's). Full, the client adding forgets its own oldest, or
    the client remembered most often its oldest: a client forgotten is asked again, no more."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.until: OrderedDict[tuple[str, str], float] = OrderedDict()  # oldest first
        self.held: Counter[str] = Counter()  # by client

    def __len__(self) -> int:
        self._prune()
        return len(self.until)

    def __contains__(self, key: tuple[str, str]) -> bool:
        self._prune()
        return self._key(*key) in self.until

    @staticmethod
    def _key(owner: str, url: str) -> tuple[str, str]:
        return owner, hashlib.sha256(url.encode()).hexdigest()

    def _prune(self) -> None:
        now = self.clock()
        while self.until and next(iter(self.until.values())) <= now:
            self._forget(next(iter(self.until)))

    def _forget(self, key: tuple[str, str]) -> None:
        del self.until[key]
        _less(self.held, client_of(key[0]))

    def add(self, owner: str, url: str) -> None:
        self._prune()
        key, client = self._key(owner, url), client_of(owner)
        if key in self.until:
            self._forget(key)
        if self.held[client] >= VERIFIED_PER_CLIENT:
            self._forget(next(k for k in self.until if client_of(k[0]) == client))
        elif len(self.until) >= VERIFIED_MAX:
            most = self.held.most_common(1)[0][0]
            self._forget(next(k for k in self.until if client_of(k[0]) == most))
        self.until[key] = self.clock() + VERIFIED_SECONDS
        self.held[client] += 1
