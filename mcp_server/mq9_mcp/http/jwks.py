"""The authorization server's signing keys as this resource server knows them: the JWKS it
read last, and when. A key absent from the latest set read is refused, so retiring a stolen key
at the authorization server locks its holder out once the set is read again; and it is read
again, in the background, before it is ``max_age`` old (a retired key works at most that long,
while the authorization server answers).

No check ever waits on a fetch for a key it knows: a stale set is refreshed in the background,
one fetch at a time, each cut off after ``deadline``. A token naming a key not in the set may
start a fetch (and wait on it, at most ``deadline``) once per ``cooldown``; during the cooldown,
or after a failed fetch (which starts the cooldown too), it is refused at once, so made-up key
ids cannot make this server hammer the authorization server nor queue behind a hung one.
Everything runs on the event loop: no worker thread is held."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import jwt

log = logging.getLogger("mq9_mcp")

# The documented bound (docs/mcp.md): a key removed from the JWKS stops working within it
MAX_AGE_S = 300.0
# How long one fetch of the JWKS may take, all of it: connecting, waiting, reading
DEADLINE_S = 5.0
# At most one fetch for an unknown key id this often (--oauth-jwks-cooldown)
COOLDOWN_S = 30.0


class UnknownKey(LookupError):
    """The token names a key the latest JWKS read does not hold (its words: why)."""


class JwksCache:
    """The key set ``fetch`` reads (an async callable returning the JWKS document), by key id.
    ``clock`` is monotonic seconds (injected by tests); ``refresh_in_background`` off leaves
    re-reads to ``refresh_if_due`` (tests drive it with their clock)."""

    def __init__(
        self,
        fetch: Callable[[], Awaitable[object]],
        *,
        max_age: float = MAX_AGE_S,
        cooldown: float = COOLDOWN_S,
        deadline: float = DEADLINE_S,
        clock: Callable[[], float] = time.monotonic,
        refresh_in_background: bool = True,
    ) -> None:
        self.fetch = fetch
        self.max_age, self.cooldown, self.deadline = max_age, cooldown, deadline
        self.clock = clock
        self.background = refresh_in_background
        self.keys: dict[str | None, jwt.PyJWK] | None = None
        self.read_at: float | None = None  # the last successful read
        self.tried_at: float | None = None  # the last fetch started, whatever came of it
        self.failed = False  # the last fetch failed
        self.fetches = 0
        self._fetch: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None

    async def key(self, kid: str | None) -> jwt.PyJWK:
        """The key ``kid`` names in the latest set read; ``UnknownKey`` if none does."""
        self._keep_fresh()
        known = (self.keys or {}).get(kid)
        named = repr(kid[:64] if kid else kid)
        if known is not None:
            return known  # never waits: a stale set is being read again meanwhile
        if self._fetch is None and self._cooling():
            why = "the last read failed" if self.failed else "the JWKS was read moments ago"
            raise UnknownKey(f"the key {named} is not in the issuer's JWKS ({why})")
        await self._wait(self._start())
        known = (self.keys or {}).get(kid)
        if known is None:
            raise UnknownKey(f"the key {named} is not in the issuer's JWKS")
        return known

    async def read(self) -> None:
        """Read the set now (at start); raises what failed, in words."""
        await self._start()
        if self.failed or self.keys is None:
            raise ValueError(self._last_error)

    async def refresh_if_due(self) -> None:
        """Read the set again if it is due (older than the bound less a deadline, or a failed
        read's cooldown is over), and wait for that read."""
        if self._fetch is None and self._due():
            await self._start()

    def _due(self) -> bool:
        if self.failed or self.read_at is None:
            return not self._cooling()
        return self.clock() - self.read_at >= self.max_age - self.deadline

    def _cooling(self) -> bool:
        return self.tried_at is not None and self.clock() - self.tried_at < self.cooldown

    def _keep_fresh(self) -> None:
        """Start the background re-reader on the serving loop, once (again if it ended)."""
        if not self.background:
            return
        if self._keeper is None or self._keeper.done():
            self._keeper = asyncio.get_running_loop().create_task(self._keeper_loop())

    async def _keeper_loop(self) -> None:
        while True:
            if self._fetch is None and self._due():
                await self._start()
            await anyio.sleep(max(self._next_due_in(), 1.0))

    def _next_due_in(self) -> float:
        now = self.clock()
        if self.failed or self.read_at is None:
            return (self.tried_at or now) + self.cooldown - now
        return self.read_at + self.max_age - self.deadline - now

    def _start(self) -> asyncio.Task[None]:
        """The fetch in flight, or a new one: one at a time."""
        if self._fetch is None:
            self.tried_at = self.clock()
            self._fetch = asyncio.get_running_loop().create_task(self._read())
        return self._fetch

    async def _wait(self, fetch: asyncio.Task[None]) -> None:
        await asyncio.shield(fetch)  # a caller going away leaves the fetch to finish

    _last_error = "the JWKS was never read"

    async def _read(self) -> None:
        try:
            with anyio.fail_after(self.deadline):
                keys = parse(await self.fetch())
        except Exception as exc:  # whatever the fetch met (a bad URL too): said, and cooled down
            self.failed = True
            self._last_error = f"reading the JWKS failed: {exc or type(exc).__name__}"
            log.warning("%s; unknown key ids are refused for %gs", self._last_error, self.cooldown)
        else:
            gone = sorted(str(k) for k in set(self.keys or {}) - set(keys))
            if gone:
                log.info("the issuer's JWKS no longer holds the keys %s: refused from now", gone)
            self.keys, self.read_at, self.failed = keys, self.clock(), False
        finally:
            self.fetches += 1
            self._fetch = None


def parse(document: Any) -> dict[str | None, jwt.PyJWK]:
    """The signing keys of a JWKS document, by key id (keys PyJWT cannot use are skipped)."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("the JWKS is not a JSON object with a 'keys' list")
    keys: dict[str | None, jwt.PyJWK] = {}
    for data in document["keys"]:
        if not isinstance(data, dict) or data.get("use", "sig") != "sig":
            continue
        try:
            key = jwt.PyJWK(data)
        except (jwt.PyJWKError, jwt.InvalidKeyError):
            continue
        keys[key.key_id] = key
    return keys
