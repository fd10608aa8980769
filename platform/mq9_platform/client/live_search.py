"""Search answers checked against the registry's listing, on a broker whose agent search trails
its registry: RobustMQ's vector-search build (docs/discovery.md, "Search trails the registry").

RobustMQ writes its search index in tasks of their own after REGISTER and UNREGISTER answer
(meta-service ``raft/route/mq9.rs:63-87,97-106``): a new card is missing from search for a
while, an unregistered one is still found for a while, and one whose delete ran before its
insert (the delete takes no write lock: search-engine ``agent.rs:118,149-153``) is found for
good. mq9 has no read of one agent: the listing (DISCOVER without a query) is the only
authoritative answer, so a hit counts only if a listing names it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Protocol

from mq9_wire import protocol as p

# How long a listing read to check search answers is reused (Mq9Client.listing_ttl).
LISTING_TTL = 1.0
# How long after this client registers a card a search that misses it says it may not be
# indexed yet (RobustMQ's own tests wait 5 s after REGISTER before they search).
INDEXING_GRACE = 5.0
# What RobustMQ's NATS INFO says in "go" (common/network-server/src/protocol/nats.rs:112):
# how a client knows the broker's search may lag. nats-server (the bundled broker) says "go1…".
ROBUSTMQ_GO = "robustmq-rust"

Hit = dict[str, Any]  # a DISCOVER item (JSON): every one has a string name (Mq9Client checks)


class Read(Protocol):
    """DISCOVER's items: ``read(query, limit, page)``; an empty query lists the registry."""

    def __call__(
        self, query: dict[str, str | None], limit: int | None = ..., page: int | None = ...
    ) -> Awaitable[list[Hit]]: ...


def is_robustmq(server_info: object) -> bool:
    """Whether a NATS server's INFO is RobustMQ's."""
    return isinstance(server_info, dict) and server_info.get("go") == ROBUSTMQ_GO


@dataclass(frozen=True)
class Listing:
    """The registry as one listing read it, at ``at`` (the event loop's time)."""

    at: float
    info_of: dict[str, Any]  # name -> agent_info
    infos: frozenset[str]

    @classmethod
    def of(cls, at: float, items: list[Hit]) -> Listing:
        info_of = {item["name"]: item.get("agent_info") for item in items}
        return cls(at, info_of, frozenset(i for i in info_of.values() if isinstance(i, str)))

    def holds(self, hit: Hit) -> bool:
        """Whether a search hit names a registered agent: by name, or by its card (a hit is
        named by the card, which a ``{name, payload}`` registration may name otherwise)."""
        return hit.get("name") in self.info_of or hit.get("agent_info") in self.infos

    def current(self, hit: Hit) -> Hit:
        """The hit with the card the registry holds now (the index may hold an older one)."""
        info = self.info_of.get(hit["name"])
        return hit if not isinstance(info, str) else {**hit, "agent_info": info}


class LiveSearch:
    """What one client checks search answers with: the listing it read last (reused ``ttl``
    seconds; its own REGISTER and UNREGISTER drop it), and the cards it registered that no
    search has shown yet."""

    def __init__(self, read: Read) -> None:
        self._read = read
        self.ttl = LISTING_TTL
        self._listed: Listing | None = None
        self._registered_at: dict[str, float] = {}

    def changed(self, *, registered: str | None = None, unregistered: str | None = None) -> None:
        """This client changed the registry: its next search reads a new listing."""
        self._listed = None
        if registered is not None:
            self._registered_at[registered] = _now()
        if unregistered is not None:
            self._registered_at.pop(unregistered, None)

    def listed(self, items: list[Hit], at: float) -> None:
        """A listing this client read anyway: the next searches check against it."""
        self._listed = Listing.of(at, items)

    async def page(
        self, query: dict[str, str | None], limit: int, page: int, started: float
    ) -> tuple[list[Hit], list[str]]:
        """The page of the search's live hits, and the names of the hits the registry no
        longer has. The hits are read from the top, as many more as ghosts were seen, until
        the page is full of live ones or the hits run out."""
        wanted = page * limit
        if wanted > p.MAX_DISCOVER_LIMIT:  # too deep to read from the top: the broker's page
            return await self._split(await self._read(query, limit, page), started)
        asked = wanted
        while True:
            items = await self._read(query, asked, 1)
            live, gone = await self._split(items, started)
            if len(live) >= wanted or len(items) < asked or asked == p.MAX_DISCOVER_LIMIT:
                return live[wanted - limit : wanted], gone
            asked = min(wanted + len(gone), p.MAX_DISCOVER_LIMIT)

    def not_indexed_yet(self, hits: list[Hit]) -> tuple[str, ...]:
        """The cards this client registered in the last INDEXING_GRACE seconds that ``hits``
        do not show (once shown, a card is indexed: forgotten)."""
        now, shown = _now(), {hit.get("name") for hit in hits}
        for name, at in list(self._registered_at.items()):
            if name in shown or now - at > INDEXING_GRACE:
                del self._registered_at[name]
        return tuple(self._registered_at)

    async def _split(self, items: list[Hit], started: float) -> tuple[list[Hit], list[str]]:
        """(the hits the registry lists, with its card; the names of the others). A listing
        held from before this search that misses a hit is read again: the hit may be new."""
        listed = await self._listing(started - self.ttl)
        if listed.at < started and not all(listed.holds(item) for item in items):
            listed = await self._listing(started)
        live = [listed.current(item) for item in items if listed.holds(item)]
        return live, [item["name"] for item in items if not listed.holds(item)]

    async def _listing(self, not_before: float) -> Listing:
        """The registry's listing, read again unless the one held was read since ``not_before``."""
        held = self._listed
        if held is None or held.at < not_before:
            at = _now()
            held = self._listed = Listing.of(at, await self._read({}))
        return held


def _now() -> float:
    return asyncio.get_running_loop().time()
