"""How a NATS client logs in: the credential it is given (options, the URL, the environment),
the principal an enforcing broker knows it by, and the words for a refused login.

An mq9 credential is ``<id>:<secret>``: the id is the NATS user name, the secret its password
(``mq9-dev-broker credentials issue NAME`` makes one; docs/security.md). A client given one
logs in with it and takes its replies on ``_INBOX.<id>.``; it sends on ``$mq9.U.<id>.`` only once
the broker has said it must (``transport.py``): RobustMQ has logins too, and plain subjects.

Its own file (not the protocol's): it reads the environment and nats-py's errors, and the
protocol uses only the standard library (tests/project/test_layout.py).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from mq9_wire.protocol.errors import InvalidArgument

CREDENTIAL_ENV = "MQ9_CREDENTIAL"  # <id>:<secret>
CREDENTIAL_FILE_ENV = "MQ9_CREDENTIAL_FILE"  # a file holding that one line
# A principal: a credential's id, one NATS subject token (docs/security.md)
PRINCIPAL = re.compile(r"[A-Za-z0-9_-]{1,64}")
# The longest credential file read: one line of an id and a 43-character secret, with room
MAX_CREDENTIAL_FILE = 4096

HOW_TO_LOG_IN = (
    f"give this agent its own credential (<id>:<secret>, from `mq9-dev-broker credentials "
    f"issue NAME`): {CREDENTIAL_ENV}=<id>:<secret>, {CREDENTIAL_FILE_ENV}=<a file holding it>, "
    "or nats://<id>:<secret>@host:port"
)


@dataclass(frozen=True)
class Login:
    """What a NATS connection logs in with beyond its URLs: ``user`` and ``password`` (None:
    the URL's, or none), the ``principal`` (a credential's id, else None) and ``source`` (where
    the credential came from, for messages). The password never shows in its repr."""

    user: str | None = None
    password: str | None = field(default=None, repr=False)
    principal: str | None = None
    source: str = ""

    @property
    def inbox_prefix(self) -> str | None:
        """nats-py's ``inbox_prefix``: an enforcing broker answers only ``_INBOX.<id>.``."""
        return f"_INBOX.{self.principal}" if self.principal else None


def parse_credential(text: str, source: str) -> tuple[str, str]:
    """``<id>:<secret>`` as (id, secret); an error names ``source``, never the text."""
    credential_id, colon, secret = text.strip().partition(":")
    if not colon or not secret or not PRINCIPAL.fullmatch(credential_id):
        raise InvalidArgument(
            f"{source} is not an mq9 credential: it must be <id>:<secret> (the id 1 to 64 "
            "letters, digits, '_' or '-'), as `mq9-dev-broker credentials issue NAME` prints it"
        )
    if any(c.isspace() for c in secret):
        raise InvalidArgument(f"{source} is not an mq9 credential: its secret holds a space")
    return credential_id, secret


def read_credential_file(path: str, source: str | None = None) -> tuple[str, str]:
    """The credential held by the file ``path`` (its one line)."""
    source = source or f"the credential file {path}"
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read(MAX_CREDENTIAL_FILE + 1)
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise InvalidArgument(f"cannot read {source}: {reason}") from None
    if len(text) > MAX_CREDENTIAL_FILE or len(text.strip().splitlines()) != 1:
        raise InvalidArgument(f"{source} must hold one line, <id>:<secret>")
    return parse_credential(text, source)


def from_environment(environ: Mapping[str, str]) -> Login | None:
    """The credential ``MQ9_CREDENTIAL`` or ``MQ9_CREDENTIAL_FILE`` gives, if one is set."""
    text, path = environ.get(CREDENTIAL_ENV), environ.get(CREDENTIAL_FILE_ENV)
    if text and path:
        raise InvalidArgument(
            f"both {CREDENTIAL_ENV} and {CREDENTIAL_FILE_ENV} are set: set one of them"
        )
    if text:
        user, secret = parse_credential(text, CREDENTIAL_ENV)
        return Login(user, secret, user, CREDENTIAL_ENV)
    if path:
        source = f"{CREDENTIAL_FILE_ENV} ({path})"
        user, secret = read_credential_file(path, source)
        return Login(user, secret, user, source)
    return None


def login_for(
    servers: list[str],
    *,
    user: str | None,
    password: str | None,
    token: str | None,
    creds: str | None,
    credential: str | None,
    environ: Mapping[str, str] = os.environ,
) -> Login:
    """How to log in: ``credential`` (``<id>:<secret>``), else what the options or the URLs
    give, else the environment's credential. The principal is the user name of a user and
    password (nats-py sends the options' before a URL's) when it is a valid id."""
    in_urls = [(u.username, u.password) for u in map(urlsplit, servers) if u.username]
    if credential is not None:
        if user or password or token or creds or in_urls:
            raise InvalidArgument(
                "credential= is the whole login: give no user, password, token or creds, and "
                "no user in the URL, with it"
            )
        user, secret = parse_credential(credential, "credential=")
        return Login(user, secret, user, "credential=")
    if user and password:
        return Login(user, password, user if PRINCIPAL.fullmatch(user) else None, "user=")
    if user or password or token or creds or in_urls:
        names = {name for name, secret in in_urls if secret is not None}
        if len(names) > 1:
            raise InvalidArgument(
                "the server URLs log in as different users: give the login once, as "
                "user=/password= or credential="
            )
        name = next(iter(names), None)
        valid = name is not None and not (user or token or creds) and PRINCIPAL.fullmatch(name)
        return Login(user, password, name if valid else None, "the URL" if in_urls else "")
    return from_environment(environ) or Login()


def refused_credentials(exc: BaseException) -> bool:
    """Whether a nats-py error says the server refused the credentials: its AuthorizationError,
    or (while connecting) a plain error quoting the server's -ERR 'Authorization Violation'."""
    from nats.errors import AuthorizationError  # nats-py loads only when a NATS URL is used

    return isinstance(exc, AuthorizationError) or "authorization" in str(exc).lower()


def refused_login(where: str, login: Login) -> str:
    """What a client says when the server at ``where`` refused its login (nats-py's
    authorization violation: the server says no more, whatever the reason)."""
    if login.principal:
        what = (
            f"the credential {login.principal!r} (from {login.source}) is not valid there, or "
            "was revoked (a revoked credential is refused too: ask the broker's operator for a "
            "new one)"
        )
    elif login.source or login.user:
        what = "check the user and password, token or creds file given"
    else:
        what = "no credentials were given, and this broker wants a login"
    return (
        f"the broker at {where} refused the credentials (authorization violation): {what}. "
        f"On an mq9 broker with per-agent credentials, {HOW_TO_LOG_IN}"
    )
