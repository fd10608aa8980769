"""Where ``mq9`` connects and how it logs in (as ``mq9-mcp`` takes them: options, then the
environment), and what each failure means as an exit code."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from langchain_mq9._nats.redaction import redact
from langchain_mq9.a2a.caller import CallError
from langchain_mq9.client.auth import HOW_TO_LOG_IN, read_credential_file
from langchain_mq9.client.client import Mq9Client
from langchain_mq9.operations.errors import OperationError
from langchain_mq9.protocol.errors import MailboxNotFound, Mq9Error, NotAllowed, Unavailable

DEFAULT_SERVER = "nats://localhost:4222"
SERVER_ENV = ("MQ9_SERVER", "NATS_URL")
# Each credential option falls back to these environment variables, the first one set wins
# (mq9-mcp's); MQ9_CREDENTIAL and MQ9_CREDENTIAL_FILE the client reads itself.
CREDENTIAL_ENV = {
    "user": ("MQ9_USER", "NATS_USER"),
    "password": ("MQ9_PASSWORD", "NATS_PASSWORD"),
    "token": ("MQ9_TOKEN", "NATS_TOKEN"),
    "creds": ("MQ9_CREDS", "NATS_CREDS"),
}

# Exit codes: what a script can branch on.
OK = 0
FAILED = 1  # the broker refused the request, or a call is in no state to take it
USAGE = 2  # a wrong option or argument (Click's own code too)
NOT_FOUND = 3  # no such mailbox, message, agent or call
UNREACHABLE = 4  # the broker is not there, or did not answer in time
REFUSED_LOGIN = 5  # the broker refused the credentials, or this identity may not do that


class Failure(Exception):
    """A failure said in one line, with the exit code it means."""

    def __init__(self, message: str, code: int = FAILED) -> None:
        super().__init__(message)
        self.code = code


def _env(names: tuple[str, ...]) -> str | None:
    return next((os.environ[n] for n in names if os.environ.get(n)), None)


@dataclass(frozen=True)
class Target:
    """An mq9 server and the login to it."""

    server: str
    options: dict[str, Any] = field(default_factory=dict, repr=False)
    request_timeout: float = 5.0

    @classmethod
    def from_options(
        cls,
        server: str | None,
        *,
        credential_file: str | None = None,
        request_timeout: float = 5.0,
        **given: str | None,
    ) -> Target:
        options: dict[str, Any] = {
            name: given.get(name) or _env(names) for name, names in CREDENTIAL_ENV.items()
        }
        if credential_file:
            try:
                options["credential"] = ":".join(read_credential_file(credential_file))
            except Mq9Error as exc:
                raise Failure(f"--credential-file: {exc.message}", USAGE) from None
        url = server or _env(SERVER_ENV) or DEFAULT_SERVER
        kept: dict[str, Any] = {k: v for k, v in options.items() if v}
        return cls(url, kept, request_timeout)

    @property
    def shown(self) -> str:
        return redact(self.server)

    def client(self, name: str = "mq9") -> Mq9Client:
        options: dict[str, Any] = dict(self.options)
        if not self.server.startswith("memory://"):  # a NATS connection's name
            options["name"] = name
        try:
            return Mq9Client(self.server, request_timeout=self.request_timeout, **options)
        except (Mq9Error, ValueError, TypeError) as exc:
            raise Failure(f"--server: {redact(str(exc))}", USAGE) from None

    def login_secrets(self) -> list[str]:
        """What a person may enter the console with besides its token: the broker's
        password, token or mq9 credential this console logs in with, however it was given
        (an option, ``$MQ9_CREDENTIAL``, ``$MQ9_CREDENTIAL_FILE``, or the URL's
        ``nats://id:secret@host``, which a person may enter as ``id:secret`` or the secret)."""
        secrets = [self.options.get("password"), self.options.get("token")]
        secrets.append(self.options.get("credential"))
        secrets.append(os.environ.get("MQ9_CREDENTIAL"))
        path = os.environ.get("MQ9_CREDENTIAL_FILE")
        if path and not self.options.get("credential"):
            with contextlib.suppress(Mq9Error):
                secrets.append(":".join(read_credential_file(path)))
        for url in self.server.split(","):
            parts = urlsplit(url.strip())
            if parts.password:  # the user info a client logs in with (RobustMQ's or ours)
                user, secret = unquote(parts.username or ""), unquote(parts.password)
                secrets += [f"{user}:{secret}", secret]
            elif parts.username:  # nats://token@host
                secrets.append(unquote(parts.username))
        return list(dict.fromkeys(s.strip() for s in secrets if s and s.strip()))


def failure(exc: BaseException) -> Failure:
    """The one line and exit code of an error an operation raised."""
    if isinstance(exc, Failure):
        return exc
    cause: BaseException | None = exc
    while isinstance(cause, OperationError) and cause.__cause__ is not None:
        cause = cause.__cause__
    text = shown(str(exc))
    if isinstance(cause, Mq9Error):
        return Failure(text, _code(cause))
    if isinstance(exc, CallError) or isinstance(cause, CallError):
        lost = "no call with task id" in text or "is no task id" in text
        return Failure(text, NOT_FOUND if lost else FAILED)
    if isinstance(exc, (OperationError, ValueError)):
        return Failure(text, FAILED)
    return Failure(f"{type(exc).__name__}: {text}", FAILED)


def shown(text: str) -> str:
    """``text`` with its URLs' secrets hidden, but for the client's hint on how to log in: its
    example URL holds no secret (``nats://<id>:<secret>@host:port``), and redacted it read
    ``nats://<***@host:port`` (#78)."""
    return redact(text).replace(redact(HOW_TO_LOG_IN), HOW_TO_LOG_IN)


def _code(exc: Mq9Error) -> int:
    if isinstance(exc, MailboxNotFound):
        return NOT_FOUND
    if isinstance(exc, Unavailable):
        return REFUSED_LOGIN if "refused the credentials" in exc.message else UNREACHABLE
    if isinstance(exc, NotAllowed):
        return REFUSED_LOGIN
    return FAILED
