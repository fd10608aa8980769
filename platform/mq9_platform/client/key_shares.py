"""``KeyShares``: the idempotency keys each caller of a carrier sent within the broker's window,
each caller bounded by a share of its own.

A carrier (the A2A gateway, mq9-mcp) speaks to the broker as ONE identity for all its callers,
and the broker bounds the keys it holds per identity (``--max-keys-per-sender``, 10,000 kept
600 s each): without a ledger, one caller's keyed sends fill the identity's bound and every
other caller's keyed send is refused. The ledger refuses a caller past its own ``share``, in
words that name only its own count, and keeps all callers' keys together below ``total``, which
the carrier sizes below the identity's bound: nothing its callers do reaches the broker's
refusal, and one caller's flood denies only that caller.

A key is counted once per caller, mailbox and key while its window lasts: the same key sent
again is the broker's duplicate (the first SEND's answer), no new key. Times are seconds of the
injected clock; a key is kept a little past the broker's window (``SLACK``), as the broker's
window starts when it stores the SEND, after the ledger counted it.

The ledger is one process's, from its start: three replicas of a carrier behind one
credential, or one restarted within the window, each began with a share of its own. So each
keyed send also names its caller and the caller's share to the broker (``CallerKeys.naming``:
``mq9-key-caller``, ``mq9-key-share``), and a broker vouching for the carrier (``--credentials``)
counts the key against that share in the step that keeps it: one share per caller, however
many replicas and starts carry it. The ledger stays the first word (a refusal naming the
caller's own count, the all-or-none of a call's two keys); the broker's is the bound.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from mq9_wire.protocol.messages import HEADER_KEY_CALLER, HEADER_KEY_SHARE

# The broker's defaults (mq9-dev-broker --max-keys-per-sender, its idempotency window): what a
# carrier's identity may hold, and for how long a key is held.
IDENTITY_KEYS = 10_000
KEY_WINDOW = 600
# The callers' keys in all, as a part of the identity's bound: a tenth is left for the
# carrier's own keyed sends and for keys the broker still holds a moment after the ledger's
# window ended.
CALLERS_PART = 0.9
SLACK = 5.0  # seconds a key is kept past its window (see the module's docstring)

Name = tuple[str, str]  # a key as the broker holds it: the mailbox, the key
Part = tuple[str, int]  # a part of the total some callers hold together: its name, its most


def callers_total(identity_keys: int = IDENTITY_KEYS) -> int:
    """The keys a carrier's callers may hold in all under an identity bounded at
    ``identity_keys``: below it (``CALLERS_PART``), at least 1."""
    return max(1, int(identity_keys * CALLERS_PART))


class KeysRefused(Exception):
    """A caller past its share of keys (or every caller's keys at the carrier's bound): what
    it is told, in one line that names its own count and nothing of anyone else's."""


class KeyShares:
    """Each caller's keys, held ``window`` seconds: at most ``share`` a caller, ``total`` in
    all. ``where`` names the carrier in a refusal ("gateway", "server")."""

    def __init__(
        self,
        share: int,
        *,
        total: int | None = None,
        window: float = KEY_WINDOW,
        where: str = "server",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if share < 1 or (total is not None and total < 1) or not window > 0:
            raise ValueError("a share and a total of keys are 1 or more, a window above 0 s")
        self.share = share
        self.total = callers_total() if total is None else total
        self.window = window
        self.where = where
        self.clock = clock
        self.refused = 0  # keyed sends refused (a metric)
        # every caller's keys in the order counted, which is the order their windows end, and
        # the part of the total each counts in ("": none)
        self._kept: OrderedDict[tuple[str, Name], tuple[float, str]] = OrderedDict()
        self._per_caller: dict[str, int] = {}
        self._per_part: dict[str, int] = {}

    def held(self, caller: str) -> int:
        """How many keys ``caller`` holds now."""
        self._expire()
        return self._per_caller.get(caller, 0)

    def __len__(self) -> int:
        self._expire()
        return len(self._kept)

    def in_part(self, part: str) -> int:
        """How many keys the callers counted in ``part`` hold now, together."""
        self._expire()
        return self._per_part.get(part, 0)

    def spend(self, caller: str, names: Iterable[Name], *, part: Part | None = None) -> None:
        """Count ``names`` (mailbox, key) as ``caller``'s; those it holds already cost nothing.
        ``KeysRefused`` (nothing counted) when they would pass its share or the total, or, for
        a caller counted in ``part`` (its name, its most), that part's most: callers who cost
        nothing to make hold at most a part together, so their flood refuses only them."""
        self._expire()
        new = list(dict.fromkeys(n for n in names if (caller, n) not in self._kept))
        if not new:
            return
        held = self._per_caller.get(caller, 0)
        if held + len(new) > self.share:
            self.refused += 1
            raise KeysRefused(
                f"no room for another idempotency key: you hold {held} of your {self.share} "
                f"keys at this {self.where} (each kept {self.window:g} s): send it without a "
                "key, resend under a key you used, or wait for older keys' windows to end"
            )
        if part is not None and self._per_part.get(part[0], 0) + len(new) > part[1]:
            self.refused += 1
            raise KeysRefused(
                f"no room for another idempotency key: the keys this {self.where} keeps for "
                f"{part[0]} are all in use now (you hold {held} of your {self.share}): send "
                "it without a key, or later"
            )
        if len(self._kept) + len(new) > self.total:
            self.refused += 1
            raise KeysRefused(
                f"no room for another idempotency key: this {self.where}'s keys for its "
                f"callers are all in use now (you hold {held} of your {self.share}): send it "
                "without a key, or later"
            )
        until = (self.clock() + self.window + SLACK, part[0] if part else "")
        for name in new:
            self._kept[(caller, name)] = until
        self._per_caller[caller] = held + len(new)
        if part is not None:
            self._per_part[part[0]] = self._per_part.get(part[0], 0) + len(new)

    def _expire(self) -> None:
        now, kept = self.clock(), self._kept
        while kept:
            (caller, _name), (until, part) = next(iter(kept.items()))
            if until > now:
                return
            del kept[(caller, _name)]
            _count_down(self._per_caller, caller)
            if part:
                _count_down(self._per_part, part)


def _count_down(counts: dict[str, int], name: str) -> None:
    """One fewer for ``name``; none left: forgotten (the tables hold only who holds keys)."""
    left = counts[name] - 1
    if left:
        counts[name] = left
    else:
        del counts[name]


class CallerKeys:
    """A client whose keyed sends are one caller's (``KeyShares.spend``): each ``send`` with
    an ``idempotency_key`` is counted against the caller's share first (``KeysRefused``
    past it); everything else is the client's own. The gateway hands each tenant's calls
    one, so whatever sends a key for the tenant (its task's record, its request) counts."""

    def __init__(self, client: Any, shares: KeyShares, caller: str) -> None:
        self._client = client
        self._shares = shares
        self._caller = caller

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def send(
        self, mail_address: str, payload: Any, *, idempotency_key: str | None = None, **options: Any
    ) -> int:
        if idempotency_key is not None and self._keeps_keys(mail_address):
            self._shares.spend(self._caller, [(mail_address, idempotency_key)])
            # and the broker counts it against the caller's share too, in the step
            # that keeps it: this ledger is one process's and one start's, the broker's is
            # every replica's and every start's
            options["headers"] = {**(options.get("headers") or {}), **self.naming()}
        sent: int = await self._client.send(
            mail_address, payload, idempotency_key=idempotency_key, **options
        )
        return sent

    def naming(self) -> dict[str, str]:
        """The headers naming a keyed SEND's caller and its share to the broker
        (``mq9-key-caller``, ``mq9-key-share``): a broker vouching for the carrier counts
        the key against that share, whichever replica or start of the carrier sent it."""
        return {HEADER_KEY_CALLER: self._caller, HEADER_KEY_SHARE: str(self._shares.share)}

    def spend_keys(self, names: Iterable[Name]) -> None:
        """Count several keys at once, all or none (``KeysRefused``): what one call sends
        under keys (an A2A call's record and its request) is refused whole, never half sent."""
        self._shares.spend(self._caller, [n for n in names if self._keeps_keys(n[0])])

    def _keeps_keys(self, mail_address: str) -> bool:
        """Whether the broker may hold the key (RobustMQ keeps none: nothing to count)."""
        return _keeps_keys(self._client, mail_address)


class NamingKeys:
    """A client whose keyed sends name their caller and its share to the broker (``naming``),
    for a carrier that counted the keys in its ledger already (mq9-mcp counts a tool call's
    keys all at once, before it runs): its replicas and its starts after one another are
    then bounded by the broker at one share a caller, as ``CallerKeys`` bounds the
    gateway's. Everything else is the client's own."""

    def __init__(self, client: Any, caller: str, share: int) -> None:
        self._client = client
        self._naming = {HEADER_KEY_CALLER: caller, HEADER_KEY_SHARE: str(share)}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def send(
        self, mail_address: str, payload: Any, *, idempotency_key: str | None = None, **options: Any
    ) -> int:
        if idempotency_key is not None and _keeps_keys(self._client, mail_address):
            options["headers"] = {**(options.get("headers") or {}), **self._naming}
        sent: int = await self._client.send(
            mail_address, payload, idempotency_key=idempotency_key, **options
        )
        return sent


def _keeps_keys(client: Any, mail_address: str) -> bool:
    """Whether the broker may hold the key (RobustMQ keeps none, and would store a naming
    header with the message: nothing to name)."""
    recognised = getattr(client, "keys_recognised_for", None)
    return not callable(recognised) or recognised(mail_address) is not False


class KeySharesCollector:
    """A Prometheus collector of a ledger (the metrics extra): ``<prefix>_idempotency_keys``,
    the keys its callers hold now in all, and ``<prefix>_idempotency_keys_refused_total``,
    the keyed sends it refused (no label names a caller)."""

    def __init__(self, shares: KeyShares, prefix: str) -> None:
        self.shares = shares
        self.prefix = prefix

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        yield GaugeMetricFamily(
            f"{self.prefix}_idempotency_keys",
            "idempotency keys this server's callers hold now, in all",
            value=len(self.shares),
        )
        yield CounterMetricFamily(
            f"{self.prefix}_idempotency_keys_refused",
            "keyed sends refused because their caller held its share of keys",
            value=self.shares.refused,
        )
