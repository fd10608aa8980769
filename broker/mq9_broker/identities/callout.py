"""Logins to an enforcing dev broker: nats-server's auth callout, answered by the broker.

nats-server (config mode, no operator) sends each login that is not one of its own
``auth_users`` to ``$SYS.REQ.USER.AUTH`` as a signed request; the broker checks the user name
and password against its credentials (credentials.py) and answers with a user JWT, signed by an
issuer key made at start, that puts the agent in the AGENTS account with the permissions of
the wire contract: publish ``$mq9.U.<id>.>`` and ``$mq9.AI.>`` (a plain request gets the
broker's refusal in words, not a publish violation that nats-py turns into a timeout),
subscribe ``_INBOX.<id>.>`` only. A refused login is nats' "Authorization Violation" at the
client; the reason is in the broker's log. Each login is named after its credential's
generation (``login_name``: the id and a digest of the secret's hash), so that the
connections of a secret revoked or issued anew are told apart from those of the new one.

The broker answers on connections that log in here too, as users of its own whose passwords
are derived from the issuer's seed (so that any broker of a cluster checks them), and whose
permissions are their only power: ``SERVE_USER`` hears the agents' requests
(``$mq9.U.*.>``) and publishes only to inboxes and wake announcements (``$mq9.WAKE.>``);
``ANSWERS_USER`` hears plain requests and publishes only to inboxes. Whatever reply subject
an agent names, nats-server refuses them the state stream, the buckets, the lock and
JetStream's API: the broker's own user (``BROKER_USER``), which keeps the state, never
publishes an answer.

The system account's user (``SYS_USER``) lists and kicks the connections of a credential's
old generations, page after page, on every server of a cluster (``Kicker``).

A broker that starts its nats-server makes the issuer key and its own NATS passwords afresh
at each start and writes the server's config itself. Servers the operator runs (``--nats``)
are configured once: ``mq9-dev-broker credentials setup DIR`` writes the issuer seed and the
passwords to ``DIR/mq9-callout.json`` (0600) and prints the config block for every server of
the cluster (``Issuer.server_config``); each broker started with ``--credentials DIR`` then
logs in and answers logins with them (``Issuer.load``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import nats.errors
from nats.aio.client import Client as NatsConnection
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from mq9_wire import protocol as p
from mq9_wire.nats_floor.guard import flush_in_order

from ..nats_servers.processes import server_urls
from .store import ID_PATTERN, BaseIdentityStore, CredentialError

log = logging.getLogger("mq9_broker.identities.ownership")

ACCOUNT = "AGENTS"
BROKER_USER = "mq9-broker"
SYS_USER = "mq9-sys"
# The broker's users for its answers: they log in through the callout, which lets them
# publish only to inboxes (and announcements); never a credential's name (check_id)
ANSWERS_USER = "mq9-answers"  # plain requests' refusals (``answers_permissions``)
SERVE_USER = "mq9-serve"  # the agents' requests and their answers (``serve_permissions``)
ARRIVALS = "$mq9.WAKE.>"  # what serve.py announces with --announce
AUTH_SUBJECT = "$SYS.REQ.USER.AUTH"
# A user JWT's life: a connection whose kick was missed is closed by the server at its end
# (to the second), and the login, answered again, checks the credential afresh
LOGIN_SECONDS = 3600
SETUP_FILE = "mq9-callout.json"  # what ``credentials setup DIR`` writes: the issuer's seed
LOGIN_QUEUE = "mq9-logins"  # the brokers of one cluster answer each login once between them
KICK_WAIT = 2.0  # seconds the servers of a cluster have to list a revoked agent's connections
KICK_PAGE = 1024  # connections a server lists at once (nats-server's own default page)
KICKS_AT_ONCE = 64  # KICK requests under way at once
# A login checked just before a revocation was learned registers its connection a moment
# later: the listing goes on this long after the revocation before its empty answer counts
KICK_SETTLE = 0.5
KICK_GIVE_UP = 30.0  # seconds: then the old connections left end with their login (LOGIN_SECONDS)


def _nkeys() -> Any:
    try:
        import nkeys  # type: ignore[import-untyped]  # no types shipped
    except ImportError:
        raise RuntimeError(
            "--credentials signs logins with nkeys: install mq9-broker with [credentials] after "
            "its name, as you installed it (in a clone: pip install -e ./wire -e "
            "'./broker[credentials]')"
        ) from None
    return nkeys


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims_of(token: str) -> dict[str, Any]:
    """A JWT's claims, unchecked: the callout request comes from nats-server on the broker's
    own connection, on a subject no agent may publish to."""
    payload = token.split(".")[1]
    padded = payload + "=" * (-len(payload) % 4)
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(padded))
    return claims


@dataclass
class Issuer:
    """The account nkey that signs login answers, and the broker's own NATS passwords: made
    afresh at each start of a broker that starts its nats-server (every login is answered by
    that process), kept in a setup file for servers the operator configures (``save``,
    ``load``)."""

    key: Any = field(default_factory=lambda: _nkeys().from_seed(bytearray(_seed())))
    broker_password: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    sys_password: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    @property
    def public_key(self) -> str:
        return str(self.key.public_key.decode())

    @property
    def answers_password(self) -> str:
        return self.password_of(ANSWERS_USER)

    @property
    def serve_password(self) -> str:
        return self.password_of(SERVE_USER)

    def password_of(self, user: str) -> str:
        """The password of one of the broker's callout users (``ANSWERS_USER``,
        ``SERVE_USER``): derived from the seed, so that every broker sharing the issuer (a
        cluster's, from its setup file) checks another's login."""
        mac = hmac.new(bytes(self.key.seed), user.encode(), hashlib.sha256)
        return _b64(mac.digest())

    def sign(self, claims: dict[str, Any]) -> str:
        claims = {
            **claims,
            "iat": int(time.time()),
            "iss": self.public_key,
            "jti": base64.b32encode(os.urandom(20)).decode().rstrip("="),
        }
        head = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
        body = _b64(json.dumps(claims).encode())
        signature = _b64(self.key.sign(f"{head}.{body}".encode()))
        return f"{head}.{body}.{signature}"

    def save(self, path: Path) -> None:
        """Write the seed and the passwords to ``path``, a new file readable by its owner
        only."""
        kept = {
            "issuer_seed": bytes(self.key.seed).decode(),
            "broker_password": self.broker_password,
            "sys_password": self.sys_password,
        }
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            json.dump(kept, out)
            out.write("\n")

    @classmethod
    def load(cls, path: Path) -> Issuer:
        """The issuer ``save`` wrote to ``path``."""
        try:
            kept = json.loads(path.read_text())
            return cls(
                key=_nkeys().from_seed(bytearray(kept["issuer_seed"].encode())),
                broker_password=str(kept["broker_password"]),
                sys_password=str(kept["sys_password"]),
            )
        except FileNotFoundError:
            raise CredentialError(
                f"no {path.name} in {path.parent}: run 'mq9-dev-broker credentials setup "
                f"{path.parent}' first, and add the config it prints to every nats-server"
            ) from None
        except Exception as exc:  # unreadable, not JSON, no seed (nkeys' own errors too)
            # never the file's text: it holds the seed
            raise CredentialError(f"{path} is not a setup file: {type(exc).__name__}") from None

    def server_config(self, *, jetstream: bool = False) -> str:
        """The nats-server config that sends logins to the broker (passwords are random
        URL-safe text, quoted all the same); ``jetstream``: enabled for the broker's account,
        where its state is kept (agents, in that account too, may publish only their
        requests)."""
        broker = _users(BROKER_USER, self.broker_password)
        if jetstream:
            broker = broker.replace("{ ", "{ jetstream: enabled, ", 1)
        return (
            "accounts {\n"
            f"  {ACCOUNT}: {broker}\n"
            f"  SYS: {_users(SYS_USER, self.sys_password)}\n"
            "}\n"
            "system_account: SYS\n"
            "authorization { auth_callout { "
            f"issuer: {self.public_key}, auth_users: [{BROKER_USER}, {SYS_USER}], "
            f"account: {ACCOUNT} }} }}\n"
        )


def broker_urls(url: str, issuer: Issuer) -> list[str]:
    """The servers of ``url`` (comma-separated) as URLs that log in as the broker's user: for
    the parts that take only URLs (the logins' answering, the ``credentials`` and ``state``
    commands on a cluster)."""
    urls = []
    for one in server_urls(url):
        where = urlsplit(one if "://" in one else "nats://" + one)
        host = where.netloc.rpartition("@")[2]
        urls.append(f"{where.scheme}://{BROKER_USER}:{issuer.broker_password}@{host}")
    return urls


def _users(user: str, password: str) -> str:
    return f'{{ users: [{{user: {user}, password: "{password}"}}] }}'


def _seed() -> bytes:
    nkeys = _nkeys()
    return bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_ACCOUNT))


def permissions(principal: str) -> dict[str, Any]:
    return {
        "pub": {"allow": [f"$mq9.U.{principal}.>", "$mq9.AI.>"]},
        "sub": {"allow": [f"_INBOX.{principal}.>"]},
    }


def answers_permissions() -> dict[str, Any]:
    """``ANSWERS_USER``'s: it hears plain requests and answers only to inboxes (no JetStream
    API, no bucket, no state stream, no lock, whatever reply a request names)."""
    return {"pub": {"allow": ["_INBOX.>"]}, "sub": {"allow": ["$mq9.AI.>"]}}


def serve_permissions() -> dict[str, Any]:
    """``SERVE_USER``'s: it hears the agents' requests and publishes their answers, to
    inboxes only, and the wake announcements (no JetStream API, no bucket, no state stream,
    no lock, whatever reply a request names)."""
    requests = p.subjects.PRINCIPAL_PREFIX + "*.>"
    return {"pub": {"allow": ["_INBOX.>", ARRIVALS]}, "sub": {"allow": [requests]}}


# The broker's callout users: what each may do
BROKER_USERS = {ANSWERS_USER: answers_permissions, SERVE_USER: serve_permissions}


def login_name(principal: str, sha256: str) -> str:
    """The name nats-server knows a login by (CONNZ's ``user``): the principal and its
    credential's generation, a digest of the secret's hash (never the hash itself)."""
    generation = hashlib.sha256(f"mq9-login\n{sha256}".encode()).hexdigest()[:16]
    return f"{principal}.{generation}"


class LoginService:
    """Answers nats-server's login requests on ``connection`` (one of the broker user's own,
    so that no request the engine answers holds a login up)."""

    def __init__(
        self, store: BaseIdentityStore, issuer: Issuer, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.issuer = issuer
        self.clock = clock
        self.subscription: Subscription | None = None

    async def start(self, connection: NatsConnection, queue: str | None = None) -> None:
        """Answer on ``connection``; ``queue``: a queue group shared with other brokers."""
        self.connection = connection
        self.subscription = await connection.subscribe(
            AUTH_SUBJECT, queue=queue or "", cb=self._on_login
        )
        await flush_in_order(connection)

    async def stop(self) -> None:
        if self.subscription is not None:
            await self.subscription.unsubscribe()
            self.subscription = None

    async def _on_login(self, msg: Msg) -> None:
        try:
            request = claims_of(msg.data.decode())["nats"]
            user_nkey, server_id = request["user_nkey"], request["server_id"]["id"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            log.warning("unreadable login request from nats-server: %s", type(exc).__name__)
            return
        # off the loop: the store may ask its place (a credential issued a moment ago)
        answer = await asyncio.to_thread(
            self.answer, request.get("connect_opts") or {}, user_nkey, server_id
        )
        try:
            await self.connection.publish(msg.reply, answer.encode())
        except Exception as exc:  # the server gave up on this login meanwhile
            log.warning("could not answer a login: %s", exc)

    def answer(self, options: dict[str, Any], user_nkey: str, server_id: str) -> str:
        """The signed authorization answer to one login (its user JWT, or its error)."""
        principal, secret = options.get("user"), options.get("pass")
        response: dict[str, Any] = {
            "sub": user_nkey,
            "aud": server_id,
            "nats": {"type": "authorization_response", "version": 2},
        }
        user: dict[str, Any] = {"sub": user_nkey, "aud": ACCOUNT}
        if isinstance(principal, str) and principal in BROKER_USERS:
            if isinstance(secret, str) and hmac.compare_digest(
                secret.encode(), self.issuer.password_of(principal).encode()
            ):
                # the broker's own: no end (nothing revokes it), its permissions its only power
                user.update(name=principal, nats=BROKER_USERS[principal]())
            else:
                response["nats"]["error"] = f"wrong password for the broker's user {principal}"
        elif not isinstance(principal, str) or not ID_PATTERN.fullmatch(principal):
            # never the secret, nor text the agent chose beyond a bounded name
            response["nats"]["error"] = "no mq9 credential given (user name and password)"
        elif (
            not isinstance(secret, str)
            or (sha256 := self.store.verified(principal, secret)) is None
        ):
            response["nats"]["error"] = f"unknown or revoked mq9 credential {principal!r}"
        else:
            self.store.seen(principal)
            user.update(
                name=login_name(principal, sha256),
                exp=int(self.clock()) + LOGIN_SECONDS,
                nats=permissions(principal),
            )
        if "error" not in response["nats"]:
            user["nats"].update(type="user", version=2)
            response["nats"]["jwt"] = self.issuer.sign(user)
            return self.issuer.sign(response)
        log.info("login refused: %s", response["nats"]["error"])
        return self.issuer.sign(response)


class Kicker:
    """Closes the connections of one login name (``login_name``: a credential's generation)
    through the system account (``connection``: the SYS user's). Each round asks every server
    of the cluster for a page of that name's connections (CONNZ by user) and KICKs each on its
    server; the rounds go on until one finds none, so that no page is left unread however
    many connections one credential made."""

    def __init__(self, connection: NatsConnection, clock: Callable[[], float] = time.monotonic):
        self.connection = connection
        self.clock = clock

    async def kick(self, user: str, give_up: float = KICK_GIVE_UP) -> int:
        """How many connections of ``user`` were closed; returns once a listing begun
        ``KICK_SETTLE`` after the call found none (or after ``give_up`` seconds: logged)."""
        began = self.clock()
        closed: set[tuple[str, int]] = set()
        while True:
            asked = self.clock()
            found = await self._connections_of(user)
            if found:  # one kicked a moment ago may still be listed: kicked again, harmless
                closed.update(await self._close(user, found))
            elif asked >= began + KICK_SETTLE:
                return len(closed)
            if self.clock() >= began + give_up:
                log.warning(
                    "gave up closing %s's connections after %g s (%d closed); those left end "
                    "with their login, within %d s",
                    user,
                    give_up,
                    len(closed),
                    LOGIN_SECONDS,
                )
                return len(closed)
            if not found:
                await asyncio.sleep(KICK_SETTLE / 5)

    async def _close(self, user: str, found: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """The connections of ``found`` whose server took the KICK."""
        gate = asyncio.Semaphore(KICKS_AT_ONCE)

        async def one(server: str, cid: int) -> bool:
            async with gate:
                try:
                    await self.connection.request(
                        f"$SYS.REQ.SERVER.{server}.KICK",
                        json.dumps({"cid": cid}).encode(),
                        timeout=KICK_WAIT,
                    )
                    return True
                except nats.errors.Error as exc:
                    log.warning("could not close %s's connection %s: %s", user, cid, exc)
                    return False

        done = await asyncio.gather(*(one(server, cid) for server, cid in found))
        return [where for where, kicked in zip(found, done, strict=True) if kicked]

    async def _connections_of(self, user: str) -> list[tuple[str, int]]:
        """(server id, connection id) of a page of ``user``'s connections on each server: the
        answers of every server known to the connection, or those that came within
        ``KICK_WAIT`` (one that does not answer: its connections end with their login)."""
        answers: asyncio.Queue[Msg] = asyncio.Queue()
        inbox = self.connection.new_inbox()
        servers = len({(uri.hostname, uri.port) for uri in self.connection.servers}) or 1
        found: list[tuple[str, int]] = []
        try:
            subscription = await self.connection.subscribe(inbox, cb=answers.put)
            await self.connection.publish(
                "$SYS.REQ.SERVER.PING.CONNZ",
                json.dumps({"user": user, "limit": KICK_PAGE}).encode(),
                inbox,
            )
        except nats.errors.Error as exc:
            log.warning("could not list %s's connections to close them: %s", user, exc)
            return found
        deadline = asyncio.get_running_loop().time() + KICK_WAIT
        try:
            for _ in range(servers):
                left = deadline - asyncio.get_running_loop().time()
                answer = json.loads((await asyncio.wait_for(answers.get(), max(0.0, left))).data)
                server = answer["server"]["id"]
                found += [(server, c["cid"]) for c in answer["data"].get("connections") or []]
        except TimeoutError:
            pass  # a server that did not answer: the login's end closes those (LOGIN_SECONDS)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("unreadable list of %s's connections: %s", user, exc)
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        return found
