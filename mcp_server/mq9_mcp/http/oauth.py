"""mq9-mcp as an OAuth 2.1 resource server (the MCP authorization spec): who a bearer token
names, checked as the spec says, for the MCP SDK's bearer middleware (``TokenVerifier``).
Nothing is accepted without a check:

* a JWT access token (RFC 9068) is verified by PyJWT with the authorization server's keys as
  this server read them last (``jwks.JwksCache``: a retired key is refused once the set is read
  again, within ``jwks.MAX_AGE_S``; no check of a known key waits on a fetch): signature,
  ``typ``, algorithm allow-list, issuer, audience (this server's canonical URL, RFC 8707),
  expiry and not-before;
* an opaque token is asked about at the AS's introspection endpoint (RFC 7662,
  ``introspection.Introspected``, bounded), its answer held to the same issuer and audience.

A refusal says why (``refusals``). ``check_at_start`` reads the issuer's metadata, its JWKS
and its introspection endpoint before anything is served, so a misconfiguration is one line.
What a principal may do is the token's scopes, read through one table (``SCOPE_TOOLS``).
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
import jwt
from mcp.server.auth.provider import AccessToken

from .introspection import Introspected
from .issuer import LEEWAY_S, AuthorizationServer
from .jwks import DEADLINE_S, JwksCache, UnknownKey
from .refusals import refused

log = logging.getLogger("mq9_mcp")

# PyJWT's refusals, in the words a 401 gives (the most specific first)
_WHY = (
    (jwt.ExpiredSignatureError, "the bearer token has expired"),
    (jwt.ImmatureSignatureError, "the bearer token is not valid yet"),
    (jwt.InvalidAudienceError, "the bearer token is for another audience than this server"),
    (jwt.InvalidIssuerError, "the bearer token is from another issuer"),
    (jwt.InvalidSignatureError, "the bearer token's signature does not verify"),
    (jwt.MissingRequiredClaimError, "the bearer token lacks a required claim"),
)


def _why(exc: jwt.PyJWTError) -> str:
    for kind, words in _WHY:
        if isinstance(exc, kind):
            return f"{words} ({exc})" if kind is jwt.MissingRequiredClaimError else words
    return "the bearer token is not a well-formed JWT"


class JwtAccessTokens:
    """RFC 9068 JWT access tokens, verified with the AS's JWKS (``JwksCache``, PyJWT)."""

    def __init__(self, server: AuthorizationServer, keys: JwksCache | None = None) -> None:
        self.server = server
        self.keys = keys or JwksCache(
            server.read_jwks, max_age=server.jwks_max_age, cooldown=server.jwks_cooldown,
            deadline=min(DEADLINE_S, server.jwks_max_age / 2),
        )  # fmt: skip

    async def verify(self, token: str) -> AccessToken | None:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            refused("the bearer token is not a well-formed JWT")
            return None
        alg = header.get("alg")
        if alg not in self.server.algorithms:  # "none" and HS* never are: no key fetched
            refused(f"the bearer token is signed with {str(alg)[:20]!r}, not an allowed algorithm")
            return None
        if str(header.get("typ", "")).lower() not in (
            self.server.jwt_typ,
            f"application/{self.server.jwt_typ}",
        ):
            refused(f"the bearer token's typ is not {self.server.jwt_typ} (not an access token)")
            return None
        kid = header.get("kid")
        try:
            key = await self.keys.key(kid if isinstance(kid, str) else None)
            claims: dict[str, Any] = jwt.decode(
                token, key.key, algorithms=list(self.server.algorithms),
                audience=self.server.audiences(), issuer=self.server.issuer,
                leeway=self.server.leeway, options={"require": ["exp", "iss", "aud", "sub"]},
            )  # fmt: skip
        except UnknownKey as exc:
            refused(f"the bearer token is signed with a key the issuer does not publish: {exc}")
            return None
        except jwt.PyJWTError as exc:
            refused(_why(exc))
            return None
        return access_token(token, claims, self.server.resource, self.server.leeway)


def access_token(
    token: str, claims: dict[str, Any], resource: str, leeway: float = LEEWAY_S
) -> AccessToken:
    """The SDK's ``AccessToken`` of checked claims: the principal is issuer, subject and client
    (``principal_components``). ``expires_at`` carries the leeway: the SDK's bearer middleware
    refuses past it, so the skew forgiven is the same there as in the check."""
    scope = claims.get("scope", claims.get("scp", ""))
    scopes = scope.split() if isinstance(scope, str) else [str(s) for s in scope]
    client = claims.get("client_id") or claims.get("azp") or claims.get("cid") or ""
    exp = claims.get("exp")
    return AccessToken(
        token=token, client_id=str(client), scopes=scopes,
        expires_at=int(exp + leeway) if isinstance(exp, int | float) else None,
        resource=resource, subject=str(claims.get("sub") or client),
        claims={"iss": claims.get("iss")},
    )  # fmt: skip


class ResourceTokens:
    """The SDK's ``TokenVerifier`` of an OAuth resource server: a token shaped as a JWT goes
    to ``JwtAccessTokens``, any other to introspection."""

    def __init__(self, server: AuthorizationServer) -> None:
        self.server = server
        self.jwts = JwtAccessTokens(server)
        self.opaque = Introspected(server, self._introspected)

    def _introspected(self, token: str, claims: dict[str, Any]) -> AccessToken:
        return access_token(token, claims, self.server.resource, self.server.leeway)

    async def verify_token(self, token: str) -> AccessToken | None:
        given = token.strip()
        if given.count(".") == 2:
            return await self.jwts.verify(given)
        return await self.opaque.verify(given)

    async def check_at_start(self) -> None:
        """Read the issuer's metadata (its ``issuer`` exactly the one configured), its JWKS,
        and, with introspection credentials, ask its introspection endpoint about a token that
        is none: each must answer. Raises ValueError (or an HTTP error) in words."""
        try:
            await self.server.metadata()
            await self.jwts.keys.read()
            if self.server.client_id:
                await self._introspection_answers()
        except httpx.HTTPError as exc:
            why = str(exc) or type(exc).__name__
            raise ValueError(f"{self.server.issuer} did not answer: {why}") from exc

    async def _introspection_answers(self) -> None:
        url = self.server.introspection or (await self.server.metadata()).get(
            "introspection_endpoint"
        )
        if not url:
            raise ValueError(f"{self.server.issuer} publishes no introspection_endpoint")
        auth = (self.server.client_id or "", self.server.client_secret or "")
        async with httpx.AsyncClient(timeout=DEADLINE_S) as http:
            answer = await http.post(url, data={"token": "mq9-mcp-start-check"}, auth=auth)
        if answer.status_code != 200:
            raise ValueError(
                f"its introspection endpoint {url} answered {answer.status_code} to this "
                f"server's credentials (--oauth-client-id {self.server.client_id})"
            )
