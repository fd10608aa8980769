"""Opaque access tokens, asked about at the authorization server's introspection endpoint
(RFC 7662) with this server's own client credentials. Tokens the server knows itself (a tokens
file's, the static one) are checked before and never reach it (``resource_server``).

Bounded, so strangers with made-up tokens cannot run up the authorization server's bill nor
queue everyone behind it: an active answer is remembered until the token's expiry or
``KNOWN_S``; a refusal is remembered ``REFUSED_S`` (the same made-up token asks nothing
again); at most ``AT_ONCE`` calls are in flight and ``PER_SECOND`` start each second (past
either, a token is refused at once, not queued); each call is cut off after ``DEADLINE_S``.

An answer must be active, of our issuer, for our audience, within its time, and an access token
presented as a bearer: its ``token_type`` absent (RFC 7662 makes it optional) or naming an
access token, and not bound to a key (``cnf``: DPoP or mTLS wants a proof a bearer lacks). A
refresh token is refused whatever its audience."""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import httpx
from mcp.server.auth.provider import AccessToken

from .refusals import refused

if TYPE_CHECKING:
    from .issuer import AuthorizationServer

log = logging.getLogger("mq9_mcp")

KNOWN_MAX, KNOWN_S = 1024, 60.0
REFUSED_MAX, REFUSED_S = 4096, 30.0
AT_ONCE, PER_SECOND = 8, 20
DEADLINE_S = 5.0
T = TypeVar("T")

# ``token_type`` values that name an access token usable as a bearer (case aside)
ACCESS_TYPES = {"bearer", "access_token", "urn:ietf:params:oauth:token-type:access_token"}


class Introspected:
    """The SDK's ``TokenVerifier`` of opaque tokens (``verify``), as the module says."""

    def __init__(
        self,
        server: AuthorizationServer,
        to_token: Callable[[str, dict[str, Any]], AccessToken],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.server = server
        self.to_token = to_token
        self.clock = clock
        self.calls = 0  # introspection requests sent
        self._known: OrderedDict[str, tuple[float, AccessToken]] = OrderedDict()
        self._refused: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._in_flight = 0
        self._second, self._this_second = 0, 0

    async def verify(self, token: str) -> AccessToken | None:
        if not self.server.client_id:
            refused("an opaque token, and this server introspects none (--oauth-client-id)")
            return None
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = self.clock()
        known = self._known.get(digest)
        if known is not None and known[0] > now:
            return known[1]
        self._known.pop(digest, None)
        remembered = self._refused.get(digest)
        if remembered is not None and remembered[0] > now:
            refused(remembered[1])
            return None
        self._refused.pop(digest, None)
        busy = self._busy(now)
        if busy:
            refused(busy)  # not remembered: the token was not asked about
            return None
        self._in_flight += 1
        try:
            claims = await self._ask(token)
        finally:
            self._in_flight -= 1
        if claims is None:
            return None  # the endpoint failed: said, not remembered
        why = self._why_not(claims)
        if why is not None:
            self._remember(self._refused, digest, (self.clock() + REFUSED_S, why), REFUSED_MAX)
            refused(why)
            return None
        checked = self.to_token(token, claims)
        until = min(float(claims["exp"]), self.clock() + KNOWN_S)
        self._remember(self._known, digest, (until, checked), KNOWN_MAX)
        return checked

    def _busy(self, now: float) -> str | None:
        """Why no call may start now, if none may (counting the one about to)."""
        if self._in_flight >= AT_ONCE:
            return f"the introspection endpoint already has {AT_ONCE} questions in flight"
        if int(now) != self._second:
            self._second, self._this_second = int(now), 0
        if self._this_second >= PER_SECOND:
            return f"more than {PER_SECOND} opaque tokens to introspect this second"
        self._this_second += 1
        return None

    async def _ask(self, token: str) -> dict[str, Any] | None:
        try:
            url = self.server.introspection or (await self.server.metadata()).get(
                "introspection_endpoint"
            )
        except (httpx.HTTPError, ValueError) as exc:
            refused(f"the introspection endpoint of {self.server.issuer} is unknown: {exc}")
            return None
        if not url:
            refused(f"{self.server.issuer} publishes no introspection endpoint")
            return None
        auth = (self.server.client_id or "", self.server.client_secret or "")
        self.calls += 1
        try:
            with anyio.fail_after(DEADLINE_S):
                async with httpx.AsyncClient(timeout=DEADLINE_S) as http:
                    answer = await http.post(url, data={"token": token}, auth=auth)
            if answer.status_code != 200:
                raise ValueError(f"answered {answer.status_code}")
            claims = answer.json()
            if not isinstance(claims, dict):
                raise ValueError("answered no JSON object")
        except (TimeoutError, httpx.HTTPError, ValueError) as exc:
            log.warning("introspection at %s failed: %s", url, exc or type(exc).__name__)
            refused("the authorization server did not answer about the token")
            return None
        return claims

    def _why_not(self, claims: dict[str, Any]) -> str | None:
        """Why an answer does not make an access token for us, or None."""
        if claims.get("active") is not True:
            return "the authorization server says the token is not active"
        if claims.get("iss") != self.server.issuer:
            return f"the bearer token is from another issuer than {self.server.issuer}"
        kind = claims.get("token_type")
        if kind is not None and str(kind).lower() not in ACCESS_TYPES:
            return f"the bearer token is a {str(kind)[:40]!r}, not an access token"
        if claims.get("cnf") is not None:
            return "the bearer token is bound to a key (cnf), so not usable as a bearer"
        audience = claims.get("aud")
        named = [audience] if isinstance(audience, str) else list(audience or [])
        if not set(named) & set(self.server.audiences()):
            return f"the bearer token is for another audience, not {self.server.resource}"
        now = self.clock()
        exp, nbf = claims.get("exp"), claims.get("nbf")
        if not isinstance(exp, int | float):
            return "the bearer token has no expiry"
        if exp + self.server.leeway < now:
            return "the bearer token has expired"
        if isinstance(nbf, int | float) and nbf - self.server.leeway > now:
            return "the bearer token is not valid yet"
        return None

    @staticmethod
    def _remember(table: OrderedDict[str, T], key: str, value: T, most: int) -> None:
        table[key] = value
        table.move_to_end(key)
        while len(table) > most:
            table.popitem(last=False)
