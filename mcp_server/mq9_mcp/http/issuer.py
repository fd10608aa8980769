"""The authorization server mq9-mcp trusts: its issuer, this server's canonical URL (the
audience), and the AS's metadata (RFC 8414, else OpenID discovery), compared to the issuer
exactly. Apart from the token checks, which both read it (``oauth``, ``introspection``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from .jwks import COOLDOWN_S, DEADLINE_S, MAX_AGE_S

DEFAULT_ALGORITHMS = ("RS256", "PS256", "ES256", "EdDSA")
# RFC 9068's typ; Entra ID and some Auth0 tenants send "JWT" (``--oauth-jwt-typ``)
JWT_TYP = "at+jwt"
# A clock skew forgiven on exp/nbf/iat (docs/mcp.md: "30 s of clock skew")
LEEWAY_S = 30


@dataclass
class AuthorizationServer:
    """What this server trusts: the AS's issuer, and this server's canonical URL (the
    audience its tokens must name). ``jwks_uri`` and ``introspection`` default to the AS's
    metadata (RFC 8414, else OpenID discovery), read at start (``check_at_start``)."""

    issuer: str
    resource: str
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    jwt_typ: str = JWT_TYP
    jwks_uri: str | None = None
    jwks_cooldown: float = COOLDOWN_S
    jwks_max_age: float = MAX_AGE_S
    introspection: str | None = None
    client_id: str | None = None  # this server's own credentials at the introspection endpoint
    client_secret: str | None = None
    leeway: float = LEEWAY_S
    _metadata: dict[str, Any] | None = field(default=None, repr=False)

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            self._metadata = await discover(self.issuer)
        return self._metadata

    async def jwks(self) -> str:
        """The JWKS URL: as configured, else the metadata's."""
        if self.jwks_uri:
            return self.jwks_uri
        uri = (await self.metadata()).get("jwks_uri")
        if not isinstance(uri, str) or not uri:
            raise ValueError(f"{self.issuer}'s metadata names no jwks_uri")
        return uri

    async def read_jwks(self) -> object:
        """The JWKS document, as its URL answers now."""
        async with httpx.AsyncClient(timeout=DEADLINE_S) as http:
            answer = await http.get(await self.jwks())
        answer.raise_for_status()
        return answer.json()

    def audiences(self) -> list[str]:
        """The canonical URL, with and without a trailing slash (RFC 8707 compares URLs)."""
        bare = self.resource.rstrip("/")
        return [bare, bare + "/"]


async def discover(issuer: str) -> dict[str, Any]:
    """The AS's metadata: RFC 8414's well-known path (path-inserted), else OpenID's. Its
    ``issuer`` must be the one configured, exactly (RFC 8414 section 3.3): a trailing slash
    that differs is another issuer, whose tokens would all be refused."""
    base, _, path = issuer.rstrip("/").partition("://")[2].partition("/")
    scheme = issuer.partition("://")[0]
    tail = f"/{path}" if path else ""
    urls = [
        f"{scheme}://{base}/.well-known/oauth-authorization-server{tail}",
        f"{issuer.rstrip('/')}/.well-known/openid-configuration",
    ]
    async with httpx.AsyncClient(timeout=DEADLINE_S) as http:
        for url in urls:
            answer = await http.get(url)
            if answer.status_code == 200:
                metadata: dict[str, Any] = answer.json()
                if metadata.get("issuer") != issuer:
                    raise ValueError(
                        f"{url} names the issuer {metadata.get('issuer')!r}, not {issuer!r} "
                        "(they must be equal to the character)"
                    )
                return metadata
    raise ValueError(f"the authorization server {issuer} publishes no metadata at {urls}")
