"""mq9-mcp as an OAuth 2.1 resource server (the MCP authorization spec; issue #112): who a
bearer token names, checked as the spec says, for the MCP SDK's bearer middleware
(``TokenVerifier``). Nothing is accepted without a check:

* a JWT access token (RFC 9068) is verified by PyJWT with the authorization server's keys
  (``PyJWKClient``: fetched from its JWKS, cached with a bound, a key with an unknown ``kid``
  fetched again at most once a cooldown, so rotated keys are picked up and forged ``kid``\\ s
  cannot make this server hammer the AS): signature, ``typ``, algorithm allow-list, issuer,
  audience (this server's canonical URL, RFC 8707), expiry and not-before;
* an opaque token is asked about at the AS's introspection endpoint (RFC 7662), its answer
  held to the same issuer and audience.

What a principal may do is the token's scopes, read through one table (``SCOPE_TOOLS``).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import jwt
from mcp.server.auth.provider import AccessToken

log = logging.getLogger("mcp_server")

DEFAULT_ALGORITHMS = ("RS256", "PS256", "ES256", "EdDSA")
# RFC 9068's typ; Entra ID and some Auth0 tenants send "JWT" (``--oauth-jwt-typ``)
JWT_TYP = "at+jwt"
# A clock skew forgiven on exp/nbf/iat
LEEWAY_S = 30
# How many opaque tokens' introspection answers are remembered, and for how long at most
INTROSPECTED_MAX = 1024
INTROSPECTED_S = 60.0


@dataclass
class AuthorizationServer:
    """What this server trusts: the AS's issuer, and this server's canonical URL (the
    audience its tokens must name). ``jwks_uri`` and ``introspection`` default to the AS's
    metadata (RFC 8414, else OpenID discovery), fetched on first use."""

    issuer: str
    resource: str
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    jwt_typ: str = JWT_TYP
    jwks_uri: str | None = None
    jwks_cooldown: float = 30.0
    introspection: str | None = None
    client_id: str | None = None  # this server's own credentials at the introspection endpoint
    client_secret: str | None = None
    _metadata: dict[str, Any] | None = field(default=None, repr=False)

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            self._metadata = await discover(self.issuer)
        return self._metadata

    def audiences(self) -> list[str]:
        """The canonical URL, with and without a trailing slash (RFC 8707 compares URLs)."""
        bare = self.resource.rstrip("/")
        return [bare, bare + "/"]


async def discover(issuer: str) -> dict[str, Any]:
    """The AS's metadata: RFC 8414's well-known path (path-inserted), else OpenID's. Its
    ``issuer`` must be the one configured (RFC 8414 section 3.3)."""
    base, _, path = issuer.rstrip("/").partition("://")[2].partition("/")
    scheme = issuer.partition("://")[0]
    tail = f"/{path}" if path else ""
    urls = [
        f"{scheme}://{base}/.well-known/oauth-authorization-server{tail}",
        f"{issuer.rstrip('/')}/.well-known/openid-configuration",
    ]
    async with httpx.AsyncClient(timeout=10) as http:
        for url in urls:
            answer = await http.get(url)
            if answer.status_code == 200:
                metadata: dict[str, Any] = answer.json()
                if metadata.get("issuer") != issuer:
                    raise ValueError(f"{url} names issuer {metadata.get('issuer')!r}, not {issuer}")
                return metadata
    raise ValueError(f"the authorization server {issuer} publishes no metadata at {urls}")


class JwtAccessTokens:
    """RFC 9068 JWT access tokens, verified with the AS's JWKS (PyJWT)."""

    def __init__(self, server: AuthorizationServer) -> None:
        self.server = server
        self._keys: jwt.PyJWKClient | None = None

    async def keys(self) -> jwt.PyJWKClient:
        if self._keys is None:
            uri = self.server.jwks_uri or (await self.server.metadata())["jwks_uri"]
            self._keys = jwt.PyJWKClient(
                uri, cache_keys=True, max_cached_keys=16, lifespan=300,
                timeout=10, cooldown_duration=self.server.jwks_cooldown,
            )  # fmt: skip
        return self._keys

    async def verify(self, token: str) -> AccessToken | None:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return None
        alg = header.get("alg")
        if alg not in self.server.algorithms:  # "none" and HS* never are: no key fetched
            log.info("refused a JWT signed with %r (allowed: %s)", alg, self.server.algorithms)
            return None
        if str(header.get("typ", "")).lower() not in (
            self.server.jwt_typ,
            f"application/{self.server.jwt_typ}",
        ):
            log.info(
                "refused a JWT of typ %r (not an access token: %s)",
                header.get("typ"),
                self.server.jwt_typ,
            )
            return None
        try:
            keys = await self.keys()
        except (httpx.HTTPError, ValueError, KeyError) as exc:  # the AS unreachable or odd
            log.warning("cannot find the JWKS of %s: %s", self.server.issuer, exc)
            return None
        try:  # PyJWKClient fetches over urllib: off the event loop
            key = await anyio.to_thread.run_sync(keys.get_signing_key_from_jwt, token)
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=list(self.server.algorithms),
                audience=self.server.audiences(), issuer=self.server.issuer, leeway=LEEWAY_S,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )  # fmt: skip
        except (jwt.PyJWTError, jwt.PyJWKClientError) as exc:
            log.info("refused a JWT access token: %s", exc)
            return None
        return access_token(token, claims, self.server.resource)


def access_token(token: str, claims: dict[str, Any], resource: str) -> AccessToken:
    """The SDK's ``AccessToken`` of checked claims: the principal is issuer, subject and client
    (``principal_components``)."""
    scope = claims.get("scope", claims.get("scp", ""))
    scopes = scope.split() if isinstance(scope, str) else [str(s) for s in scope]
    client = claims.get("client_id") or claims.get("azp") or claims.get("cid") or ""
    return AccessToken(
        token=token, client_id=str(client), scopes=scopes, expires_at=claims.get("exp"),
        resource=resource, subject=str(claims.get("sub") or client),
        claims={"iss": claims.get("iss")},
    )  # fmt: skip


class Introspected:
    """Opaque access tokens, asked about at the AS's introspection endpoint (RFC 7662) with
    this server's own client credentials; an active answer is remembered until the token's
    expiry or ``INTROSPECTED_S``, whichever is sooner, ``INTROSPECTED_MAX`` answers at most."""

    def __init__(self, server: AuthorizationServer, clock: Any = time.time) -> None:
        self.server = server
        self.clock = clock
        self._known: OrderedDict[str, tuple[float, AccessToken]] = OrderedDict()

    async def verify(self, token: str) -> AccessToken | None:
        known = self._known.get(token)
        if known is not None and known[0] > self.clock():
            return known[1]
        self._known.pop(token, None)
        if not self.server.client_id:
            return None  # no credentials to introspect with: an opaque token is refused
        try:
            url = self.server.introspection or (await self.server.metadata()).get(
                "introspection_endpoint"
            )
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("cannot find the introspection endpoint of %s: %s", self.server.issuer, exc)
            return None
        if not url:
            return None
        auth = (self.server.client_id, self.server.client_secret or "")
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                answer = await http.post(url, data={"token": token}, auth=auth)
            claims = answer.json() if answer.status_code == 200 else {}
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("introspection at %s failed: %s", url, exc)
            return None
        if not self._holds(claims):
            return None
        checked = access_token(token, claims, self.server.resource)
        until = min(float(claims["exp"]), self.clock() + INTROSPECTED_S)
        self._known[token] = (until, checked)
        while len(self._known) > INTROSPECTED_MAX:
            self._known.popitem(last=False)
        return checked

    def _holds(self, claims: dict[str, Any]) -> bool:
        """Active, of our issuer, for our audience, not expired, not before its time."""
        if claims.get("active") is not True or claims.get("iss") != self.server.issuer:
            return False
        audience = claims.get("aud")
        named = [audience] if isinstance(audience, str) else list(audience or [])
        if not set(named) & set(self.server.audiences()):
            log.info("refused an introspected token for %r", audience)
            return False
        now = self.clock()
        exp, nbf = claims.get("exp"), claims.get("nbf")
        if not isinstance(exp, int | float) or exp + LEEWAY_S < now:
            return False
        return not (isinstance(nbf, int | float) and nbf - LEEWAY_S > now)


class ResourceTokens:
    """The SDK's ``TokenVerifier`` of an OAuth resource server: a token shaped as a JWT goes
    to ``JwtAccessTokens``, any other to introspection."""

    def __init__(self, server: AuthorizationServer) -> None:
        self.server = server
        self.jwts = JwtAccessTokens(server)
        self.opaque = Introspected(server)

    async def verify_token(self, token: str) -> AccessToken | None:
        given = token.strip()
        if given.count(".") == 2:
            return await self.jwts.verify(given)
        return await self.opaque.verify(given)
