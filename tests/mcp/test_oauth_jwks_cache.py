"""Issue #116: the resource server's JWKS cache (``jwks.JwksCache``) with an injected clock and
fetches the test holds or fails at will: a key absent from the latest set read is refused, the
set is read again before the bound, a known key never waits on a fetch, one fetch at a time,
and unknown key ids during a cooldown or after a failed fetch are refused at once."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from mq9_mcp.http.jwks import JwksCache, UnknownKey


def jwk(kid: str) -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())), "kid": kid}


K1, K2 = jwk("k1"), jwk("k2")


class Issuer:
    """The JWKS an authorization server answers, counted; ``hang`` holds each fetch until
    released, ``fail`` makes it fail."""

    def __init__(self, *keys: dict[str, Any]) -> None:
        self.keys = list(keys)
        self.fetches = 0
        self.hang: asyncio.Event | None = None
        self.fail = False

    async def __call__(self) -> dict[str, Any]:
        self.fetches += 1
        if self.hang is not None:
            await self.hang.wait()
        if self.fail:
            raise ValueError("the issuer is down")
        return {"keys": list(self.keys)}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def settle() -> None:
    """Let the tasks started run up to where they wait."""
    for _ in range(10):
        await asyncio.sleep(0)


def cache(issuer: Issuer, clock: Clock, **bounds: float) -> JwksCache:
    return JwksCache(issuer, clock=clock, refresh_in_background=False,
                     **{"max_age": 300, "cooldown": 30, "deadline": 5, **bounds})  # fmt: skip


async def test_a_key_gone_from_the_latest_read_is_refused():
    issuer, clock = Issuer(K1), Clock()
    keys = cache(issuer, clock)
    await keys.read()
    assert (await keys.key("k1")).key_id == "k1"
    issuer.keys = [K2]  # k1 retired
    clock.now += 100
    await keys.refresh_if_due()
    assert issuer.fetches == 1  # not due yet: a known key is answered from the set
    clock.now += 196  # the bound less a deadline: due
    await keys.refresh_if_due()
    assert issuer.fetches == 2
    with pytest.raises(UnknownKey):
        await keys.key("k1")
    assert (await keys.key("k2")).key_id == "k2"


async def test_a_known_key_never_waits_on_a_fetch():
    issuer, clock = Issuer(K1), Clock()
    keys = cache(issuer, clock, cooldown=0)
    await keys.read()
    issuer.hang = asyncio.Event()
    stranger = asyncio.create_task(keys.key("made-up"))  # starts a fetch that hangs
    await settle()
    assert issuer.fetches == 2 and not stranger.done()
    assert (await keys.key("k1")).key_id == "k1"  # answered while the fetch hangs
    others = [asyncio.create_task(keys.key(f"made-up-{n}")) for n in range(20)]
    await settle()
    assert issuer.fetches == 2  # one fetch at a time: the others wait on it
    issuer.hang.set()
    for waiting in (stranger, *others):
        with pytest.raises(UnknownKey):
            await waiting


async def test_a_hung_fetch_ends_at_its_deadline_and_starts_the_cooldown():
    issuer, clock = Issuer(K1), Clock()
    keys = cache(issuer, clock, deadline=0.2)
    await keys.read()
    clock.now += 31
    issuer.hang = asyncio.Event()  # never set: the authorization server hangs
    with pytest.raises(UnknownKey):
        await keys.key("k2")
    assert keys.failed and issuer.fetches == 2
    with pytest.raises(UnknownKey, match="the last read failed"):
        await keys.key("k3")  # at once, no fetch
    assert issuer.fetches == 2
    assert (await keys.key("k1")).key_id == "k1"  # the last set read stays


async def test_unknown_key_ids_fetch_at_most_once_a_cooldown():
    issuer, clock = Issuer(K1), Clock()
    keys = cache(issuer, clock)
    await keys.read()
    for n in range(50):
        with pytest.raises(UnknownKey, match="read moments ago"):
            await keys.key(f"made-up-{n}")
    assert issuer.fetches == 1
    clock.now += 30
    issuer.keys = [K1, K2]  # a rotation: the new key is fetched once the cooldown is over
    assert (await keys.key("k2")).key_id == "k2"
    assert issuer.fetches == 2


async def test_a_failed_read_is_retried_after_the_cooldown():
    issuer, clock = Issuer(K1), Clock()
    keys = cache(issuer, clock)
    issuer.fail = True
    with pytest.raises(ValueError, match="the issuer is down"):
        await keys.read()
    issuer.fail = False
    await keys.refresh_if_due()
    assert issuer.fetches == 1  # cooling down
    clock.now += 30
    await keys.refresh_if_due()
    assert (await keys.key("k1")).key_id == "k1"
