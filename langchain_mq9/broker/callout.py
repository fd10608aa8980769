"""Logins to an enforcing dev broker: nats-server's auth callout, answered by the broker.

nats-server (config mode, no operator) sends each login that is not one of its own
``auth_users`` to ``$SYS.REQ.USER.AUTH`` as a signed request; the broker checks the user name
and password against its credentials (credentials.py) and answers with a user JWT, signed by an
issuer key made at start, that puts the agent in the AGENTS account with the permissions of
the wire contract: publish ``$mq9.U.<id>.>`` and ``$mq9.AI.>`` (a plain request gets the
broker's refusal in words, not a publish violation that nats-py turns into a timeout),
subscribe ``_INBOX.<id>.>`` only. A refused login is nats' "Authorization Violation" at the
client; the reason is in the broker's log.

The system account's user (``SYS_USER``) lists and kicks a revoked agent's connections, on
every server of a cluster.

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

from ..client.nats_guard import flush_in_order
from .credentials import ID_PATTERN, BaseIdentityStore, CredentialError
from .nats_process import server_urls

log = logging.getLogger("langchain_mq9.broker.identities")

ACCOUNT = "AGENTS"
BROKER_USER = "mq9-broker"
SYS_USER = "mq9-sys"
AUTH_SUBJECT = "$SYS.REQ.USER.AUTH"
# A user JWT's life: a connection whose kick was missed is closed by the server at its end
# (measured: to the second), and the login, answered again, checks the credential afresh
LOGIN_SECONDS = 3600
SETUP_FILE = "mq9-callout.json"  # what ``credentials setup DIR`` writes: the issuer's seed
LOGIN_QUEUE = "mq9-logins"  # the brokers of one cluster answer each login once between them
KICK_WAIT = 2.0  # seconds the servers of a cluster have to list a revoked agent's connections


def _nkeys() -> Any:
    try:
        import nkeys  # type: ignore[import-untyped]  # no types shipped
    except ImportError:
        raise RuntimeError(
            "--credentials signs logins with nkeys: pip install 'langchain-mq9[credentials]'"
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
    the parts that take only URLs (the JetStream store, the leader lock)."""
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
        if not isinstance(principal, str) or not ID_PATTERN.fullmatch(principal):
            # never the secret, nor text the agent chose beyond a bounded name
            response["nats"]["error"] = "no mq9 credential given (user name and password)"
        elif not isinstance(secret, str) or not self.store.verify(principal, secret):
            response["nats"]["error"] = f"unknown or revoked mq9 credential {principal!r}"
        else:
            self.store.seen(principal)
            response["nats"]["jwt"] = self.issuer.sign(
                {
                    "sub": user_nkey,
                    "aud": ACCOUNT,
                    "name": principal,
                    "exp": int(self.clock()) + LOGIN_SECONDS,
                    "nats": {"type": "user", "version": 2, **permissions(principal)},
                }
            )
            return self.issuer.sign(response)
        log.info("login refused: %s", response["nats"]["error"])
        return self.issuer.sign(response)


class Kicker:
    """Closes a principal's live connections through the system account (``connection``:
    the SYS user's): CONNZ by user, answered by every server of the cluster, then KICK each
    connection on its server."""

    def __init__(self, connection: NatsConnection) -> None:
        self.connection = connection

    async def kick(self, principal: str) -> int:
        """How many connections were closed."""
        closed = 0
        for server, cid in await self._connections_of(principal):
            try:
                await self.connection.request(
                    f"$SYS.REQ.SERVER.{server}.KICK", json.dumps({"cid": cid}).encode(), timeout=2
                )
                closed += 1
            except nats.errors.Error as exc:
                log.warning("could not close %s's connection %s: %s", principal, cid, exc)
        return closed

    async def _connections_of(self, principal: str) -> list[tuple[str, int]]:
        """(server id, connection id) of each of ``principal``'s connections: the answers of
        every server known to the connection, or those that came within ``KICK_WAIT``."""
        answers: asyncio.Queue[Msg] = asyncio.Queue()
        inbox = self.connection.new_inbox()
        servers = len({(uri.hostname, uri.port) for uri in self.connection.servers}) or 1
        found: list[tuple[str, int]] = []
        try:
            subscription = await self.connection.subscribe(inbox, cb=answers.put)
            await self.connection.publish(
                "$SYS.REQ.SERVER.PING.CONNZ", json.dumps({"user": principal}).encode(), inbox
            )
        except nats.errors.Error as exc:
            log.warning("could not list %s's connections to close them: %s", principal, exc)
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
            log.warning("unreadable list of %s's connections: %s", principal, exc)
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        return found
