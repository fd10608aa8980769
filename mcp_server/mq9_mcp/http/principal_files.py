"""Which credential file of ``--principal-credentials DIR`` a principal acts at the broker with.

A principal is its issuer, subject and client together: an IdP's ``sub`` is unique only at that
IdP (``alice`` there is not the tokens file's ``alice``), a client-credentials client's subject
is its client id (a user may sign in under the same word), and one IdP account signing in
through several clients is several principals. So the files are named so that no two
principals can meet at one unless the operator puts it there:

- a tokens file's principal (the operator named it): ``<name>.cred``, as before. Its names are
  at most 64 characters (``tokens_file``), so none is ever one of the names below.
- any other principal: ``p-<digest>.cred``, the SHA-256 of its issuer, subject and client
  (``file_names``: that principal alone); else ``p-<digest>.cred`` of its issuer and subject
  (every client that account signs in through, where the operator chooses so). ``mq9-mcp
  --principal-file ISSUER SUBJECT [CLIENT]`` prints the name; a refusal names it too.

A file named for a tokens file's principal never serves an IdP's user of that name: such a
user is refused, told the file name that is theirs. Any ``sub`` maps (``auth0|u-77``,
``google-oauth2|1234``): the file name is a digest, never the subject, so no path trick reaches
outside DIR.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from typing import Any

from mcp.server.auth.provider import AccessToken, principal_components

from .tokens_file import ISSUER as TOKENS_FILE_ISSUER

# A tokens file's principal's name as a file name (tokens_file's own rule, 64 at most)
_TOKENS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_PREFIX = "p-"

Principal = tuple[str | None, str | None, str]  # issuer, subject, client


def principal_of_request(request: Any) -> Principal | None:
    """The issuer, subject and client of the token the SDK's bearer auth checked for
    ``request``; None without one naming anyone (stdio, the one static ``--auth-token``)."""
    scope = getattr(request, "scope", None) or {}
    token = getattr(scope.get("user"), "access_token", None)
    if not isinstance(token, AccessToken) or token.subject is None:
        return None
    client, issuer, subject = principal_components(token)
    return issuer, subject, client


def key_of(principal: Principal) -> str:
    """One string naming the whole principal (the connection table's key)."""
    return json.dumps(list(principal))


def _digest(*parts: str | None) -> str:
    return hashlib.sha256(json.dumps(list(parts)).encode()).hexdigest()


def tokens_file_name(subject: str | None) -> str | None:
    """The file a tokens file's principal named ``subject`` acts with (None: no such name)."""
    return f"{subject}.cred" if subject and _TOKENS_NAME.fullmatch(subject) else None


def file_names(principal: Principal) -> list[str]:
    """The credential file names that map ``principal``, the first found serving: a tokens
    file's principal's ``<name>.cred``; any other's ``p-<digest>.cred`` of the whole
    principal, then of its issuer and subject (all its clients)."""
    issuer, subject, client = principal
    if issuer == TOKENS_FILE_ISSUER:
        legacy = tokens_file_name(subject)
        return [legacy] if legacy else []
    if issuer is None or subject is None:
        return []
    return [file_name(issuer, subject, client), file_name(issuer, subject)]


def file_name(issuer: str, subject: str, client: str | None = None) -> str:
    """The name of the file mapping that IdP principal: with ``client``, through that client
    alone; without, through every client of the account (``--principal-file``)."""
    if client is not None:
        return f"{_PREFIX}{_digest(issuer, subject, client)}.cred"
    return f"{_PREFIX}{_digest(issuer, subject)}.cred"


def shown(principal: Principal) -> str:
    """The principal in a log line or a refusal: its subject, and where it is not a tokens
    file's, its issuer and client."""
    issuer, subject, client = principal
    if issuer == TOKENS_FILE_ISSUER:
        return repr(subject)
    return f"{subject!r} of {issuer or 'no issuer'} through client {client!r}"


class PrintFileName(argparse.Action):
    """``--principal-file ISSUER SUBJECT [CLIENT]``: print the credential file name that maps
    that principal (with CLIENT: that client alone; without: every client of the account)
    and stop."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        if not 2 <= len(values) <= 3:
            parser.error("--principal-file takes ISSUER SUBJECT [CLIENT]")
        print(file_name(*values))
        parser.exit(0)
