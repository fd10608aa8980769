"""Logins to an enforcing dev broker: nats-server's auth callout, answered by the broker.

nats-server (config mode, no operator) sends each login that is not one of its own
``auth_users`` to ``$SYS.REQ.USER.AUTH`` as a signed request; the broker checks the user name
and password against its credentials (credentials.py) and answers with a user JWT, signed by an
issuer key made at start, that puts the agent in the AGENTS account with the permissions of
the wire contract: publish ``$mq9.U.<id>.>`` and ``$mq9.AI.>`` (a plain request gets the
broker's refusal in words, not a publish violation that nats-py turns into a timeout),
subscribe ``_INBOX.<id>.>`` only. A refused login is nats' "Authorization Violation" at the
client; the reason is in the broker's log.

The system account's user (``SYS_USER``) lists and kicks a revoked agent's connections.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import nats.errors
from nats.aio.client import Client as NatsConnection
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from .credentials import ID_PATTERN, IdentityStore

log = logging.getLogger("langchain_mq9.broker.identities")

ACCOUNT = "AGENTS"
BROKER_USER = "mq9-broker"
SYS_USER = "mq9-sys"
AUTH_SUBJECT = "$SYS.REQ.USER.AUTH"
# A user JWT's life: a connection whose kick was missed is closed by the server at its end
# (measured: to the second), and the login, answered again, checks the credential afresh
LOGIN_SECONDS = 3600


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
    afresh at each start (nothing to keep: every login is answered by this process)."""

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

    def server_config(self) -> str:
        """The nats-server config that sends logins to the broker (passwords are random
        URL-safe text, quoted all the same)."""
        return (
            "accounts {\n"
            f"  {ACCOUNT}: {_users(BROKER_USER, self.broker_password)}\n"
            f"  SYS: {_users(SYS_USER, self.sys_password)}\n"
            "}\n"
            "system_account: SYS\n"
            "authorization { auth_callout { "
            f"issuer: {self.public_key}, auth_users: [{BROKER_USER}, {SYS_USER}], "
            f"account: {ACCOUNT} }} }}\n"
        )


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
        self, store: IdentityStore, issuer: Issuer, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.issuer = issuer
        self.clock = clock
        self.subscription: Subscription | None = None

    async def start(self, connection: NatsConnection) -> None:
        self.connection = connection
        self.subscription = await connection.subscribe(AUTH_SUBJECT, cb=self._on_login)
        await connection.flush()

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
        answer = self.answer(request.get("connect_opts") or {}, user_nkey, server_id)
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
    the SYS user's): CONNZ by user on every server, then KICK each connection on its server."""

    def __init__(self, connection: NatsConnection) -> None:
        self.connection = connection

    async def kick(self, principal: str) -> int:
        """How many connections were closed."""
        try:
            answer = await self.connection.request(
                "$SYS.REQ.SERVER.PING.CONNZ", json.dumps({"user": principal}).encode(), timeout=2
            )
            found = json.loads(answer.data)
            server = found["server"]["id"]
            cids = [c["cid"] for c in found["data"].get("connections") or []]
        except (nats.errors.Error, ValueError, KeyError, TypeError) as exc:
            log.warning("could not list %s's connections to close them: %s", principal, exc)
            return 0
        closed = 0
        for cid in cids:
            try:
                await self.connection.request(
                    f"$SYS.REQ.SERVER.{server}.KICK", json.dumps({"cid": cid}).encode(), timeout=2
                )
                closed += 1
            except nats.errors.Error as exc:
                log.warning("could not close %s's connection %s: %s", principal, cid, exc)
        return closed
