"""The resource server's edge: its Protected Resource Metadata (RFC 9728, the
MCP SDK's own route, at ``/.well-known/oauth-protected-resource`` and the path-suffixed form),
served without a token (every request's scope is checked by ``scope_check.ScopeCheck``). Its
options: ``add_oauth_flags``."""

from __future__ import annotations

import argparse
import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

from mcp.server.auth.handlers.metadata import ProtectedResourceMetadataHandler
from mcp.server.auth.provider import TokenVerifier
from mcp.server.auth.routes import build_resource_metadata_url, cors_middleware
from mcp.shared.auth import ProtectedResourceMetadata
from pydantic import AnyHttpUrl
from starlette.types import ASGIApp, Receive, Scope, Send

from .auth import BearerToken
from .issuer import DEFAULT_ALGORITHMS, JWT_TYP, AuthorizationServer
from .jwks import COOLDOWN_S, MAX_AGE_S
from .oauth import ResourceTokens
from .principals import add_principal_flags
from .scopes import ALL_SCOPES
from .tokens_file import AnyOf, TokensFile

WELL_KNOWN = "/.well-known/oauth-protected-resource"


@dataclass
class ResourceServer:
    """How HTTP requests authenticate: a verifier of every kind of token configured, and,
    with an authorization server, this server's canonical URL and its metadata."""

    verifier: TokenVerifier
    resource: str | None = None
    issuer: str | None = None

    @property
    def metadata_url(self) -> str | None:
        if self.issuer is None or self.resource is None:
            return None
        return str(build_resource_metadata_url(AnyHttpUrl(self.resource)))

    def hint(self) -> str:
        if self.issuer is None:
            return "your own token (the server's --tokens-file or --auth-token)"
        return (
            f"an OAuth access token from {self.issuer} for {self.resource} "
            f"(see {self.metadata_url})"
        )

    def protect(self, app: ASGIApp, guarded: ASGIApp) -> ASGIApp:
        """``guarded`` (``app`` behind the bearer auth), with the metadata routes beside it."""
        if self.issuer is None or self.resource is None:
            return guarded
        # the SDK's own model and handler; strings, not AnyHttpUrl: the model keeps a
        # path-less issuer as the AS spells it (RFC 8414's exact comparison), no slash added
        metadata = ProtectedResourceMetadata.model_validate({
            "resource": self.resource, "authorization_servers": [self.issuer],
            "scopes_supported": ALL_SCOPES, "resource_name": "mq9-mcp",
        })  # fmt: skip
        handler = ProtectedResourceMetadataHandler(metadata)
        return _WellKnown(cors_middleware(handler.handle, ["GET", "OPTIONS"]), guarded)


class _WellKnown:
    """``/.well-known/oauth-protected-resource`` and its path-suffixed forms go to the SDK's
    metadata handler, unauthenticated (RFC 9728 section 3); the rest to ``guarded``."""

    def __init__(self, metadata: ASGIApp, guarded: ASGIApp) -> None:
        self.metadata = metadata
        self.guarded = guarded

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path == WELL_KNOWN or path.startswith(WELL_KNOWN + "/"):
            await self.metadata(scope, receive, send)
        else:
            await self.guarded(scope, receive, send)


def add_oauth_flags(parser: argparse.ArgumentParser) -> None:
    """The resource server's options (docs/mcp-oauth.md)."""
    group = parser.add_argument_group("OAuth resource server (--transport http; the oauth extra)")
    add = group.add_argument
    add(
        "--oauth-issuer",
        metavar="URL",
        help="serve as an OAuth 2.1 resource server trusting this authorization server's "
        "tokens (its issuer URL; its metadata, JWKS and introspection endpoint are "
        "discovered)",
    )
    add(
        "--resource-url",
        metavar="URL",
        help="this server's canonical URL as clients reach it, the audience its tokens must "
        "name (RFC 8707; default http://HOST:PORT/mcp)",
    )
    add(
        "--oauth-algorithms",
        metavar="ALGS",
        default=",".join(DEFAULT_ALGORITHMS),
        help="JWT signature algorithms accepted, comma-separated: RS256,PS256,ES256,EdDSA unless "
        "given; none is never accepted",
    )
    add(
        "--oauth-jwt-typ",
        metavar="TYP",
        default=JWT_TYP,
        help="the JWT 'typ' an access token must have (default at+jwt, RFC 9068; 'jwt' "
        "for an AS that sends no at+jwt)",
    )
    add(
        "--oauth-jwks-cooldown",
        metavar="SECONDS",
        type=float,
        default=COOLDOWN_S,
        help="at most one JWKS fetch this often for an unknown key id, and none this long "
        f"after a failed one (default {COOLDOWN_S:g} s)",
    )
    add(
        "--oauth-jwks-max-age",
        metavar="SECONDS",
        type=float,
        default=MAX_AGE_S,
        help="read the issuer's JWKS again before it is this old: a key it no longer lists "
        f"is refused from then on (default {MAX_AGE_S:g} s)",
    )
    add(
        "--oauth-client-id",
        metavar="ID",
        help="this server's client id at the introspection endpoint, for opaque tokens (its "
        "secret: $MQ9_MCP_OAUTH_CLIENT_SECRET)",
    )
    add(
        "--tokens-file",
        metavar="FILE",
        type=Path,
        help="'name: sha256-of-token' lines, one principal each, read again when it changes",
    )
    add_principal_flags(group)


def resource_server(
    args: argparse.Namespace, parser: argparse.ArgumentParser, auth_token: str | None
) -> ResourceServer | None:
    """The verifier the options name (None: the static token alone, or nothing). The tokens
    this server knows itself (a tokens file's, the static one) are checked first, so they never
    travel to the authorization server. With ``--oauth-issuer``, the issuer is asked at once
    (``check_at_start``): a misconfiguration stops the program in one line, before serving."""
    local: list[object] = []
    if args.tokens_file:
        try:
            local.append(TokensFile(args.tokens_file))
        except (OSError, ValueError) as exc:
            parser.error(f"--tokens-file: {exc}")
    if not args.oauth_issuer:
        if not local:
            return None
        return ResourceServer(AnyOf(*local, *_static(auth_token)))
    host = f"[{args.host}]" if ":" in args.host else args.host
    resource = args.resource_url or f"http://{host}:{args.port}/mcp"
    server = AuthorizationServer(
        issuer=args.oauth_issuer, resource=resource,
        algorithms=tuple(a.strip() for a in args.oauth_algorithms.split(",") if a.strip()),
        jwt_typ=args.oauth_jwt_typ.lower(), jwks_cooldown=args.oauth_jwks_cooldown,
        jwks_max_age=args.oauth_jwks_max_age,
        client_id=args.oauth_client_id,
        client_secret=os.environ.get("MQ9_MCP_OAUTH_CLIENT_SECRET"),
    )  # fmt: skip
    if "none" in (a.lower() for a in server.algorithms):
        parser.error("--oauth-algorithms: 'none' is never accepted")
    if not 0 < server.jwks_max_age < float("inf") or not 0 <= server.jwks_cooldown < float("inf"):
        parser.error("--oauth-jwks-max-age and --oauth-jwks-cooldown take seconds (max age > 0)")
    tokens = ResourceTokens(server)
    try:
        asyncio.run(tokens.check_at_start())
    except ValueError as exc:
        parser.exit(1, f"mq9-mcp: --oauth-issuer {server.issuer}: {exc}\n")
    verifier = AnyOf(*local, *_static(auth_token), tokens)
    return ResourceServer(verifier, resource=server.resource, issuer=server.issuer)


def _static(auth_token: str | None) -> list[object]:
    return [BearerToken(auth_token)] if auth_token else []
