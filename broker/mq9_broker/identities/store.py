"""Per-agent credentials and the ownership records of an enforcing broker (docs/security.md):
``BaseIdentityStore`` is what the broker and the ``credentials`` command ask of them;
``IdentityStore`` keeps them in one SQLite file beside the broker's data
(``mq9-identities.sqlite3``), ``kv_store.KvIdentityStore`` in a JetStream key-value bucket.

A credential is ``<id>:<secret>``: the id (``[A-Za-z0-9_-]{1,64}``) is the NATS user name and
the principal; the secret is 32 random bytes, base64url. Only the secret's SHA-256 is stored (a
random 256-bit secret needs no slow hash), and no secret is ever logged. Ownership records are
key -> principal pairs that never change once written, each kept before the answer that made
it (a write that fails raises ``CredentialError``). The SQLite file is written by the
``credentials`` command while a broker reads it: the broker notices a change by SQLite's
``PRAGMA data_version``, looked at most ``LOOK_EVERY`` seconds apart.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..storage.in_process.sqlite import data_file

# How stale what active() knows of revocations made by another process may be, in seconds
LOOK_EVERY = 0.01
# A revoked credential issued again waits this long first: every broker has looked since the
# revocation (or had its watch bring it) before the new secret exists, so no request of an old
# connection is checked against a copy from before the revocation once mail for the new one
# can be there
ROTATION_PAUSE = 2 * LOOK_EVERY

FILE_NAME = "mq9-identities.sqlite3"
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
# The broker's own NATS users (callout.py) log in by the server's config, never by a credential
RESERVED_ID_PREFIX = "mq9-"
SECRET_BYTES = 32

_SCHEMA = """
CREATE TABLE IF NOT EXISTS credentials (
    id TEXT PRIMARY KEY, sha256 TEXT NOT NULL, label TEXT NOT NULL DEFAULT '',
    created INTEGER NOT NULL, revoked INTEGER, last_seen INTEGER);
CREATE TABLE IF NOT EXISTS mailbox_owners (mailbox TEXT PRIMARY KEY, principal TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS agent_owners (name TEXT PRIMARY KEY, principal TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS send_grants (
    mailbox TEXT NOT NULL, principal TEXT NOT NULL, PRIMARY KEY (mailbox, principal));
CREATE TABLE IF NOT EXISTS agent_holds (name TEXT PRIMARY KEY, principal TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS agent_holds_by ON agent_holds (principal);
"""


class CredentialError(Exception):
    """A credential command that cannot be done, in words for the operator."""


class OwnedByAnother(CredentialError):
    """A record refused: the name is recorded as another agent's."""

    def __init__(self) -> None:
        super().__init__("it is recorded as another agent's")


class ShareFull(CredentialError):
    """A registration refused: its agent holds ``most`` registrations already, its
    share of the registry (``--max-agents-per-sender``). (A refusal, as ``OwnedByAnother``:
    nothing failed.)"""

    def __init__(self, most: int) -> None:
        super().__init__(f"the agent holds its {most} registrations")
        self.most = most


@dataclass(frozen=True)
class Credential:
    """What ``list`` shows of one credential: never its secret."""

    id: str
    label: str
    created: int
    revoked: int | None
    last_seen: int | None


def identities_file(data: str | Path) -> Path:
    """The identities file beside the broker data that ``--data PATH`` names."""
    return data_file(data).with_name(FILE_NAME)


def new_secret() -> str:
    return base64.urlsafe_b64encode(os.urandom(SECRET_BYTES)).rstrip(b"=").decode()


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_id(credential_id: str) -> None:
    if not ID_PATTERN.fullmatch(credential_id):
        raise CredentialError(
            f"invalid credential name {credential_id[:80]!r}: 1 to 64 letters, digits, '_' or "
            "'-' (it is the NATS user name the agent logs in with)"
        )
    if credential_id.startswith(RESERVED_ID_PREFIX):
        raise CredentialError(
            f"credential names starting {RESERVED_ID_PREFIX!r} are the broker's own NATS users: "
            "pick another name"
        )


class BaseIdentityStore(ABC):
    """The credentials an enforcing broker checks and the ownership records it keeps, as one
    process sees them: ``verified`` (a login), ``active`` (every request) and ``closing``
    (the kicks) read a copy of the credentials in memory that each store keeps current its
    own way. ``clock``: Unix seconds (injected in tests)."""

    where: str  # the place, for messages

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        # id -> (sha256 of the secret, revoked): what a login and every request check
        self._credentials: dict[str, tuple[str, bool]] = {}
        # (id, sha256) of the secrets revoked or replaced whose live connections are to be
        # closed (``closing``); the id acts again once ``closed`` says they are
        self._closing: set[tuple[str, str]] = set()

    def _learn(self, credentials: dict[str, tuple[str, bool]]) -> None:
        """Take ``credentials`` (some ids, or all) as they are now. A secret that was good
        and is now revoked, or replaced (revoked and issued again between two looks), waits
        in ``closing``: its connections could otherwise act as the new secret's."""
        with self._lock:
            before = self._credentials
            for cid, (sha256, revoked) in credentials.items():
                old = before.get(cid)
                if old is not None and not old[1] and (revoked or sha256 != old[0]):
                    self._closing.add((cid, old[0]))
                if revoked and (old is None or sha256 != old[0]):
                    self._closing.add((cid, sha256))  # logged in before this process knew it
            self._credentials = {**before, **credentials}

    def known_ids(self) -> list[str]:
        """Every credential id this process knows, revoked ones too (one issued again keeps
        what it owned): the names a broker derives per-owner reserved names from."""
        self._look()
        with self._lock:
            return list(self._credentials)

    def closing(self) -> set[tuple[str, str]]:
        """The (id, sha256) of the secrets revoked or replaced whose live connections are
        still to be closed."""
        with self._lock:
            return set(self._closing)

    def closed(self, credential_id: str, sha256: str) -> None:
        """Those connections are closed: ``credential_id`` acts again if it is current."""
        with self._lock:
            self._closing.discard((credential_id, sha256))

    def verified(self, credential_id: str, secret: str) -> str | None:
        """The hash of ``credential_id``'s secret when ``secret`` is it and it is not
        revoked, else None."""
        known = self._current(credential_id)
        if known is None or known[1] or not hmac.compare_digest(known[0], _hash(secret)):
            return None
        return known[0]

    def verify(self, credential_id: str, secret: str) -> bool:
        """Whether ``secret`` is ``credential_id``'s and it is not revoked."""
        return self.verified(credential_id, secret) is not None

    def active(self, credential_id: str) -> bool:
        """Whether ``credential_id`` may act (asked on every request: never waits on the
        store's place): issued, not revoked, and no connection of a secret it had before
        left open."""
        self._look()
        known = self._credentials.get(credential_id)
        if known is None or known[1]:
            return False
        return not (self._closing and any(cid == credential_id for cid, _ in self._closing))

    def renewing(self, credential_id: str) -> bool:
        """Whether ``credential_id`` is current but waits for its old connections to close."""
        known = self._credentials.get(credential_id)
        return known is not None and not known[1] and not self.active(credential_id)

    @abstractmethod
    def _look(self) -> None:
        """Bring the copy in memory up to date where that takes asking (kept cheap)."""

    @abstractmethod
    def refresh(self) -> None:
        """Bring the copy in memory up to date now."""

    @abstractmethod
    def _current(self, credential_id: str) -> tuple[str, bool] | None:
        """``credential_id``'s hash and revocation as its place holds them now."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def seen(self, credential_id: str) -> None:
        """Note a login (``list`` shows it)."""

    @abstractmethod
    def issue(self, credential_id: str, label: str = "") -> str:
        """A new credential's secret (shown once, kept only as its SHA-256). A revoked id may
        be issued again: it keeps what it owned."""

    @abstractmethod
    def revoke(self, credential_id: str) -> None:
        """Refuse the credential from its next request and login (a running broker closes its
        connections)."""

    @abstractmethod
    def listing(self) -> list[Credential]: ...

    @abstractmethod
    def owners(self) -> tuple[dict[str, str], dict[str, str], dict[str, set[str]]]:
        """Every record: mailbox -> owner, agent name -> registrant, mailbox -> granted."""

    @abstractmethod
    async def own_mailbox(self, mailbox: str, principal: str) -> None:
        """Record ``mailbox`` as ``principal``'s; returns once kept (``CredentialError``: not
        kept, or the record names another principal already)."""

    @abstractmethod
    async def own_agent(self, name: str, principal: str) -> None: ...

    @abstractmethod
    async def grant_send(self, mailbox: str, principal: str) -> None: ...

    # The registrations an agent holds now, each name once, counted against its share:
    # taken as a REGISTER of a name it does not hold is answered, given back by its
    # UNREGISTER. Apart from the owner records (a name stays its first registrant's for good)

    # A hold has a version, renewed by each REGISTER of its name: an UNREGISTER gives
    # back the version it read before its registration was removed, so a REGISTER through
    # another broker landing meanwhile keeps its hold (its count then errs high, never low)

    @abstractmethod
    async def hold_agent(self, name: str, principal: str, most: int) -> bool:
        """``principal`` holds a registration of ``name`` from now on, decided by the store in
        one step: True when taken now, False when it held it already (its version renewed);
        ``ShareFull`` when it holds ``most`` others, ``OwnedByAnother`` when another agent
        holds ``name``."""

    @abstractmethod
    async def held_agent(self, name: str, principal: str) -> int | None:
        """The version of ``principal``'s hold of ``name``; None when it holds none."""

    @abstractmethod
    async def release_agent(self, name: str, principal: str, version: int | None = None) -> None:
        """``principal`` holds ``name`` no longer (one another holds is left as it is); with
        ``version``, only while its hold is still that version."""

    # Several brokers on one store (a cluster's) each keep a copy of the records: what
    # another broker recorded since is read on a miss, and followed. A store one broker
    # uses alone has every record in its copy already.

    async def owner(self, kind: str, name: str) -> str | None:
        """Who ``name`` (``kind``: "mailbox" or "agent") is recorded as, read now."""
        return None

    async def grantees(self, mailbox: str) -> set[str]:
        """Who may SEND to ``mailbox`` by a grant, read now."""
        return set()

    async def disown_mailbox(self, mailbox: str, principal: str) -> None:  # noqa: B027
        """Remove the record of ``mailbox`` as ``principal``'s (a claim whose CREATE was
        refused); one naming another is left as it is."""

    async def note_base(self, kind: str, digest: str, mailbox: str) -> None:  # noqa: B027
        """Keep that names derived by ``digest`` (``kind``: "lease", a group's lease of
        ``mailbox``; "digest", ``mailbox``'s own digest: its task store, wake rules, long
        dead letters) come from ``mailbox``, for brokers that do not know it yet."""

    async def base_of(self, kind: str, digest: str) -> str | None:
        """The mailbox ``note_base`` kept for ``digest``, read now; None when none."""
        return None

    def follow_owners(self, learn: Callable[[str, dict[str, str]], None]) -> None:  # noqa: B027
        """Call ``learn(kind, record)`` with each record made from now on (by any broker),
        from a thread of the store's."""


class IdentityStore(BaseIdentityStore):
    """The identities file, open for one process. ``monotonic`` schedules ``active``'s looks
    (a test injects one)."""

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(clock)
        self.path = Path(path)
        self.where = str(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists()
        try:
            # A CLI write and a broker read may meet: wait for the other's commit (WAL keeps
            # readers and the one writer apart, so the wait is a commit's length)
            self._db = sqlite3.connect(
                str(self.path), timeout=5, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise CredentialError(f"cannot use {self.path} for credentials: {exc}") from None
        if new:
            os.chmod(self.path, 0o600)  # hashes only, but nobody else's business
        self._version = -1
        self.monotonic = monotonic
        self._next_look = 0.0  # when active() next reads data_version
        self.refresh()

    def close(self) -> None:
        self._db.close()

    # -- what the broker reads ---------------------------------------------------------------

    def refresh(self) -> None:
        """Read the credentials again if another process changed the file (a cheap check);
        the secrets revoked or replaced meanwhile wait in ``closing``."""
        with self._lock:
            version = self._db.execute("PRAGMA data_version").fetchone()[0]
            if version == self._version:
                return
            self._version = version
            rows = self._db.execute("SELECT id, sha256, revoked FROM credentials").fetchall()
        self._learn({row[0]: (row[1], row[2] is not None) for row in rows})

    def _current(self, credential_id: str) -> tuple[str, bool] | None:
        self.refresh()
        return self._credentials.get(credential_id)

    def _look(self) -> None:
        """Refresh when the last look is ``LOOK_EVERY`` old: a revocation made by another
        process counts from the first request after that (reading data_version on every
        request cost 8% of a SEND, 3 runs)."""
        now = self.monotonic()
        if now >= self._next_look:
            self._next_look = now + LOOK_EVERY
            self.refresh()

    def seen(self, credential_id: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE credentials SET last_seen = ? WHERE id = ?",
                (int(self.clock()), credential_id),
            )

    # -- what the operator does --------------------------------------------------------------

    def issue(self, credential_id: str, label: str = "") -> str:
        check_id(credential_id)
        secret = new_secret()
        with self._lock:
            row = self._db.execute(
                "SELECT revoked FROM credentials WHERE id = ?", (credential_id,)
            ).fetchone()
            if row is not None and row[0] is None:
                raise CredentialError(
                    f"credential {credential_id!r} exists and is not revoked: revoke it first "
                    "to issue a new secret"
                )
            if row is not None:
                time.sleep(ROTATION_PAUSE)
            self._db.execute(
                "INSERT OR REPLACE INTO credentials (id, sha256, label, created) "
                "VALUES (?, ?, ?, ?)",
                (credential_id, _hash(secret), label, int(self.clock())),
            )
            self._version, self._next_look = (
                -1,
                0.0,
            )  # our own commit does not move data_version: read again
        return secret

    def revoke(self, credential_id: str) -> None:
        with self._lock:
            changed = self._db.execute(
                "UPDATE credentials SET revoked = ? WHERE id = ? AND revoked IS NULL",
                (int(self.clock()), credential_id),
            ).rowcount
            if not changed:
                known = self._db.execute(
                    "SELECT 1 FROM credentials WHERE id = ?", (credential_id,)
                ).fetchone()
                if known is None:
                    raise CredentialError(f"no credential {credential_id!r} in {self.path}")
                # revoked already: nothing more to do
            self._version, self._next_look = -1, 0.0

    def listing(self) -> list[Credential]:
        rows = self._db.execute(
            "SELECT id, label, created, revoked, last_seen FROM credentials ORDER BY id"
        ).fetchall()
        return [Credential(*row) for row in rows]

    # -- ownership records (identities.py decides; this keeps) -------------------------------

    def owners(self) -> tuple[dict[str, str], dict[str, str], dict[str, set[str]]]:
        with self._lock:
            mailboxes = dict(self._db.execute("SELECT mailbox, principal FROM mailbox_owners"))
            agents = dict(self._db.execute("SELECT name, principal FROM agent_owners"))
            grants: dict[str, set[str]] = {}
            for mailbox, principal in self._db.execute("SELECT * FROM send_grants"):
                grants.setdefault(mailbox, set()).add(principal)
        return mailboxes, agents, grants

    # A local commit is short: made on the loop, no thread hop

    async def own_mailbox(self, mailbox: str, principal: str) -> None:
        self._own("mailbox_owners", "mailbox", mailbox, principal)

    async def own_agent(self, name: str, principal: str) -> None:
        self._own("agent_owners", "name", name, principal)

    async def grant_send(self, mailbox: str, principal: str) -> None:
        self._own("send_grants", "mailbox", mailbox, principal)

    async def hold_agent(self, name: str, principal: str, most: int) -> bool:
        # one statement, so one step however many REGISTERs come at once: the row goes in
        # only while the principal's rows are fewer than ``most``
        try:
            with self._lock:
                taken = self._db.execute(
                    "INSERT OR IGNORE INTO agent_holds (name, principal) SELECT ?, ? WHERE "
                    "(SELECT count(*) FROM agent_holds WHERE principal = ?) < ?",
                    (name, principal, principal, most),
                ).rowcount
                if not taken:  # (held already: its version, the rowid, renewed)
                    self._db.execute(
                        "UPDATE agent_holds SET rowid = (SELECT max(rowid) + 1 FROM "
                        "agent_holds) WHERE name = ? AND principal = ?",
                        (name, principal),
                    )
                row = self._db.execute(
                    "SELECT principal FROM agent_holds WHERE name = ?", (name,)
                ).fetchone()
        except sqlite3.Error as exc:
            raise CredentialError(f"cannot record a registration in {self.path}: {exc}") from None
        if row is None:
            raise ShareFull(most)
        if row[0] != principal:
            raise OwnedByAnother
        return bool(taken)

    async def held_agent(self, name: str, principal: str) -> int | None:
        try:
            with self._lock:
                row = self._db.execute(
                    "SELECT rowid FROM agent_holds WHERE name = ? AND principal = ?",
                    (name, principal),
                ).fetchone()
        except sqlite3.Error as exc:
            raise CredentialError(f"cannot read a registration in {self.path}: {exc}") from None
        return None if row is None else int(row[0])

    async def release_agent(self, name: str, principal: str, version: int | None = None) -> None:
        try:
            with self._lock:
                self._db.execute(
                    "DELETE FROM agent_holds WHERE name = ? AND principal = ? "
                    "AND (? IS NULL OR rowid = ?)",
                    (name, principal, version, version),
                )
        except sqlite3.Error as exc:
            raise CredentialError(f"cannot release a registration in {self.path}: {exc}") from None

    def _own(self, table: str, column: str, key: str, principal: str) -> None:
        """Insert the record unless there; one there naming another principal is refused."""
        try:
            with self._lock:
                self._db.execute(f"INSERT OR IGNORE INTO {table} VALUES (?, ?)", (key, principal))
                held = self._db.execute(
                    f"SELECT 1 FROM {table} WHERE {column} = ? AND principal = ?", (key, principal)
                ).fetchone()
        except sqlite3.Error as exc:
            raise CredentialError(f"cannot record an owner in {self.path}: {exc}") from None
        if held is None:
            raise OwnedByAnother
