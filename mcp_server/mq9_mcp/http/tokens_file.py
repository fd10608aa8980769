"""A principal per person without an identity provider: ``--tokens-file FILE``
holds one ``name: sha256-of-token`` line each (``#`` comments and blank lines ignored), read
again whenever the file changes, so adding or removing a person needs no restart. The file
holds digests only: a leaked file names no token.

    alice: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08

A token and its line: ``python -c 'import hashlib,secrets; t=secrets.token_urlsafe(32);
print(t); print("alice:", hashlib.sha256(t.encode()).hexdigest())'`` (docs/mcp.md).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from pathlib import Path

from mcp.server.auth.provider import AccessToken

from mq9_platform._http.tokens_file import read_digests

from .refusals import forget
from .scopes import ALL_SCOPES

log = logging.getLogger("mq9_mcp")

# The issuer a tokens file's principals are told apart by (``principal_components``)
ISSUER = "mq9-mcp:tokens-file"
# What ``TokensFile`` saw of a file that is not there
_GONE = (-1, -1, -1)


def read_tokens(path: Path) -> dict[str, str]:
    """The digests of ``path`` by name; ValueError in one line naming a bad line."""
    return read_digests(str(path), path.read_text(encoding="utf-8"))


class TokensFile:
    """The SDK's ``TokenVerifier`` of ``--tokens-file``: a token whose sha256 is a line's is
    that line's person, with every scope."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int, int] | None = None
        self._digests: dict[str, str] = {}
        self._load()  # at start: a bad file stops the program, in one line

    def _load(self) -> None:
        stat = os.stat(self.path)
        seen = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if seen == self._seen:
            return
        digests = {digest: name for name, digest in read_tokens(self.path).items()}
        self._seen, self._digests = seen, digests
        log.info("tokens file %s: %d principals", self.path, len(digests))

    def reload(self) -> None:
        """Read the file again if it changed. A file deleted (or moved away) refuses everyone,
        as an emptied one does: removing the file must not keep the last people in. A file
        broken meanwhile keeps the last good one (a half-written edit locks nobody out)."""
        try:
            self._load()
        except FileNotFoundError:
            if self._seen != _GONE:
                log.warning("tokens file %s is gone: every token of it is refused until it is "
                            "back", self.path)  # fmt: skip
            self._seen, self._digests = _GONE, {}
        except (OSError, ValueError) as exc:
            log.warning("tokens file not reloaded, the last one read stays: %s", exc)

    async def verify_token(self, token: str) -> AccessToken | None:
        self.reload()
        given = hashlib.sha256(token.strip().encode()).hexdigest()
        # compared with each, in constant time: which line matched is not timed out
        name = None
        for digest, holder in self._digests.items():
            if hmac.compare_digest(digest, given):
                name = holder
        if name is None:
            return None
        return AccessToken(
            token=token.strip(), client_id=name, scopes=list(ALL_SCOPES), subject=name,
            claims={"iss": ISSUER},
        )  # fmt: skip


class AnyOf:
    """Several ``TokenVerifier``\\ s, in order: the first that accepts a token names its
    principal (``resource_server`` puts the local ones first, so a token this server knows is
    never sent to the authorization server). Each check starts with no refusal said."""

    def __init__(self, *verifiers: object) -> None:
        self.verifiers = verifiers

    async def verify_token(self, token: str) -> AccessToken | None:
        forget()
        for verifier in self.verifiers:
            checked: AccessToken | None = await verifier.verify_token(token)  # type: ignore[attr-defined]
            if checked is not None:
                return checked
        return None
