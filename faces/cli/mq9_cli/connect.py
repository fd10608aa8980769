"""Where ``mq9`` connects and how it logs in (as ``mq9-mcp`` takes them: options, then the
environment), and what each failure means as an exit code."""

from __future__ import annotations

import contextlib
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from mq9_platform.client.auth import HOW_TO_LOG_IN, read_credential_file
from mq9_platform.client.client import Mq9Client
from mq9_wire.nats_floor.redaction import redact
from mq9_wire.protocol.errors import (
    ClusterUnavailable,
    InvalidAddress,
    MailboxNotFound,
    Mq9Error,
    NotAllowed,
    NotConnected,
    RequestTimeout,
    StorageMissing,
    StoreUnavailable,
    Unavailable,
)

DEFAULT_SERVER = "nats://localhost:4222"
# A broker that is not there (or refuses the login) is said after these: three tries over a
# third of a second (mq9-mcp's, 0.5 s apart, took nearly two), so a person is told within a
# second of typing it
RECONNECT_ATTEMPTS = 2
RECONNECT_DELAY = 0.15
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
# the broker (or its store: no quorum, a leader election) is not there or did not answer in
# time: a retry may work
UNREACHABLE = 4
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
        _without_websockets(self.server)
        options: dict[str, Any] = dict(self.options)
        if not self.server.startswith("memory://"):  # a NATS connection's name
            options["name"] = name
            # mq9-mcp's short retries: nats-py's first connect goes through its
            # reconnect schedule, 5 tries 2 s apart by default, so "nothing listening" or a
            # refused login took 5.5 s to say; a person waits about a second, and a console's
            # next request dials again after a broker's outage
            options.update(reconnect_attempts=RECONNECT_ATTEMPTS, reconnect_delay=RECONNECT_DELAY)
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


def _without_websockets(server: str) -> None:
    """nats-py, as it is first imported, imports aiohttp, which it needs for ws:// and wss://
    servers only: most of what a command spent before its first dial. On nats:// and tls://
    servers it is imported without (nats-py then refuses only a ws:// dial, which this command
    never makes: its servers are given once); anything else may still import aiohttp."""
    if "nats.aio.transport" in sys.modules or "aiohttp" in sys.modules:
        return
    if any(url.strip().lower().startswith(("ws://", "wss://")) for url in server.split(",")):
        return
    sys.modules["aiohttp"] = None  # type: ignore[assignment]  # `import aiohttp` fails here
    try:
        import nats.aio.transport  # noqa: F401
    finally:
        del sys.modules["aiohttp"]


def failure(
    exc: BaseException, *, operation: str | None = None, mailbox: str | None = None
) -> Failure:
    """The one line and exit code of an error ``operation`` (a catalog operation's name) on
    ``mailbox`` raised, in a person's words: the broker's words and the CLI's own next step
    (``mq9 discover``), never the catalog's hints, which are a model's (they name its tools)."""
    if isinstance(exc, Failure):
        return exc
    if isinstance(exc, Mq9Error):  # the client's own (a broker not there): said at once
        return _said(exc, operation, mailbox)
    # (imported here: only a connected command raises them; app.py says why)
    from mq9_platform.a2a.caller import CallError, CallNotFound
    from mq9_platform.operations.errors import OperationError

    cause: BaseException | None = exc
    while isinstance(cause, OperationError) and cause.__cause__ is not None:
        cause = cause.__cause__
    if isinstance(cause, Mq9Error):
        return _said(cause, operation, mailbox)
    text = for_a_person(shown(str(exc)))
    if isinstance(exc, CallError) or isinstance(cause, CallError):
        lost = isinstance(exc, CallNotFound) or isinstance(cause, CallNotFound)
        return Failure(text, NOT_FOUND if lost else FAILED)
    if isinstance(exc, (OperationError, ValueError)):
        return Failure(text, FAILED)
    return Failure(f"{type(exc).__name__}: {text}", FAILED)


def _said(exc: Mq9Error, operation: str | None, mailbox: str | None) -> Failure:
    text = shown(exc.message)
    # a cluster, or the bundled broker's store (the wire's StoreUnavailable), unable for
    # now: it may pass unchanged later, an outage, not a refusal
    if isinstance(exc, ClusterUnavailable):
        return Failure(_outage(exc, text, operation, mailbox), UNREACHABLE)
    code = _code(exc)
    if code == UNREACHABLE:  # the client's own words say what is down (connect, timeout ...)
        return Failure(_retry(text, exc, operation, mailbox), UNREACHABLE)
    if isinstance(exc, (MailboxNotFound, InvalidAddress)):
        if operation == "send_message":
            text += (
                " — find the recipient's mailbox with `mq9 discover WHAT-IT-DOES` or "
                "`mq9 agents` (an agent's mailbox is made when it registers)"
            )
        elif isinstance(exc, MailboxNotFound):
            text += " — check the address: `mq9 agents` shows each agent's mailbox"
    return Failure(text, code)


def _outage(
    exc: ClusterUnavailable, text: str, operation: str | None, mailbox: str | None
) -> str:
    """A cluster that cannot answer for now: what is down, the broker's words, and that a
    retry may work."""
    words = text.partition(" — ")[0]  # (the client's own hint after it is a model's)
    if not isinstance(exc, StoreUnavailable):
        down = (
            "the mq9 cluster could not reach a part of itself (a node, a shard or the meta "
            "leader is down or changing)"
        )
    else:
        down = (
            "the broker's JetStream store cannot answer for now (its servers have no quorum, "
            "a leader is being elected, or one is slow to answer)"
        )
    if isinstance(exc, StorageMissing):  # lasting where two CREATEs crossed
        return (
            f"RobustMQ holds no storage for this mailbox: {words}; if it lasts, two CREATEs "
            "of its name crossed and it is lost for good: use another name (docs/protocol.md "
            "§5.1)"
        )
    if exc.stored:  # written, then answered with an error
        return f"{down}: {words}; the message was stored: do not send it again"
    line = f"{down}: {words}; a retry may work in a moment"
    return line + _send_note(operation, mailbox, unsure=not exc.stored_nothing)


def _retry(text: str, exc: Mq9Error, operation: str | None, mailbox: str | None) -> str:
    if isinstance(exc, NotConnected):
        return text
    # only a request that went out and got no answer may have been carried out: one refused
    # a connection (ConnectFailed, ConnectionLost, NoBroker) was never sent
    unsure = isinstance(exc, RequestTimeout)
    return f"{text}; a retry may work once it answers" + _send_note(operation, mailbox, unsure)


def _send_note(operation: str | None, mailbox: str | None, unsure: bool) -> str:
    """A SEND whose answer never came may have been stored: say how to check first."""
    if operation != "send_message" or not unsure:
        return ""
    where = mailbox or "MAILBOX"
    return (
        f" (the message may or may not be stored: `mq9 query {where}` shows it before you "
        "send it again)"
    )


# The catalog's tools, as a person types them: a text of the catalog's that names one (a
# CallError's "list_calls shows yours") names the command instead.
COMMANDS = {
    "agent_discover": "mq9 discover",
    "agent_register": "mq9 register",
    "agent_unregister": "mq9 unregister",
    "send_message": "mq9 send",
    "fetch_messages": "mq9 fetch",
    "ack_messages": "mq9 ack",
    "query_messages": "mq9 query",
    "delete_message": "mq9 delete",
    "list_calls": "mq9 calls list",
    "check_call": "mq9 calls show",
    "answer_call": "mq9 calls answer",
    "cancel_call": "mq9 calls cancel",
}
_TOOL = re.compile(r"\b(" + "|".join(COMMANDS) + r")\b(?:\([^)]*\))?")
# What the catalog tells a model to do next, with nothing in it for a person
_FOR_A_MODEL = (
    re.compile(r"^Invalid arguments: (?P<said>.*)\. Fix them and call the tool again\.$", re.S),
    re.compile(r"^\w+ could not be done: (?P<said>.*)\. Try other arguments, or tell the user\.$",
               re.S),
)


def for_a_person(text: str) -> str:
    """A catalog text without its words to a model, each tool it names as its command."""
    for pattern in _FOR_A_MODEL:
        found = pattern.match(text)
        if found:
            text = found["said"]
            break
    return _TOOL.sub(lambda found: f"`{COMMANDS[found[1]]}`", text)


def shown(text: str) -> str:
    """``text`` with its URLs' secrets hidden, but for the client's hint on how to log in: its
    example URL holds no secret (``nats://<id>:<secret>@host:port``), and redacted it read
    ``nats://<***@host:port``."""
    return redact(text).replace(redact(HOW_TO_LOG_IN), HOW_TO_LOG_IN)


def _code(exc: Mq9Error) -> int:
    if isinstance(exc, MailboxNotFound):
        return NOT_FOUND
    if isinstance(exc, Unavailable):
        return UNREACHABLE
    # a refused login is NotAllowed (the client's transport raises it), whatever its words say
    if isinstance(exc, NotAllowed):
        return REFUSED_LOGIN
    return FAILED
