"""Who may use the console: a person who gave its token (or the broker's password, token or
mq9 credential it logs in with), held by a session cookie (HttpOnly, SameSite=Strict), or a
program sending ``Authorization: Bearer <token>``. Each session has its own CSRF token, which
every form that changes something carries; a POST from another origin is refused whatever it
carries."""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

COOKIE = "mq9_console"
SESSION_SECONDS = 12 * 3600
MAX_SESSIONS = 256  # the oldest is forgotten past this: a script logging in in a loop


@dataclass
class Session:
    csrf: str
    expires: float
    notice: str | None = None  # what the last write did, shown once on the next page
    who: str = "a session"  # for the log of writes: how it was opened, and from where


class Gate:
    """The console's token and the other secrets that open it, and the sessions opened."""

    def __init__(
        self, token: str, other_secrets: list[str], clock: Callable[[], float] = time.time
    ) -> None:
        if not token:
            raise ValueError("the console needs a token")
        self._secrets = [s.encode() for s in [token, *other_secrets] if s]
        self._token = token.encode()
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self.clock = clock

    def opens(self, given: str) -> bool:
        """Whether ``given`` is one of the secrets, compared in constant time (each is)."""
        return self.opened_by(given) is not None

    def opened_by(self, given: str) -> str | None:
        """Which secret ``given`` is (the console's token, or the broker login), None if none;
        every secret is compared, each in constant time."""
        candidate = given.encode()
        found = None
        for index, secret in enumerate(self._secrets):
            if hmac.compare_digest(candidate, secret) and found is None:
                found = "the console token" if index == 0 else "the broker login"
        return found

    def bearer(self, header: str | None) -> bool:
        scheme, _, value = (header or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.encode(), self._token)

    def open_session(self, who: str = "a session") -> tuple[str, Session]:
        sid = secrets.token_urlsafe(32)
        session = Session(secrets.token_urlsafe(32), self.clock() + SESSION_SECONDS, who=who)
        self._sessions[sid] = session
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return sid, session

    def session(self, sid: str | None) -> Session | None:
        session = self._sessions.get(sid or "")
        if session is None:
            return None
        if session.expires < self.clock():
            del self._sessions[sid or ""]
            return None
        return session

    def close(self, sid: str | None) -> None:
        self._sessions.pop(sid or "", None)


def csrf_ok(session: Session | None, given: str) -> bool:
    return session is not None and hmac.compare_digest(given.encode(), session.csrf.encode())


def cookie_header(sid: str, *, secure: bool) -> str:
    flags = "; Secure" if secure else ""
    return f"{COOKIE}={sid}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECONDS}{flags}"


def same_origin(
    origin: str | None, host: str | None, scheme: str, public: tuple[str, ...] = ()
) -> bool:
    """A POST's Origin (when the browser sends one) names this console: as the Host it was
    asked by, or one of its ``public`` origins (its address behind a reverse proxy that
    rewrites Host: the proxy asks for 127.0.0.1:8780, the browser says https://mq9.example)."""
    if origin is None:
        return True
    return origin == f"{scheme}://{host}" or origin.rstrip("/") in public
