"""An enforcing dev broker (``mq9-dev-broker --credentials``) and agents holding credentials,
for the credentials tests. Every wait is bounded; what is started here is stopped by its owner.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import nats
from nats.aio.client import Client as NatsConnection
from nats.aio.msg import Msg

from mq9_broker.identities.store import LOOK_EVERY, IdentityStore, identities_file
from mq9_wire import protocol as p
from testbed.support.devbroker_helpers import DevBroker

REQUEST_TIMEOUT = 10.0


def issue(data: Path, *names: str) -> dict[str, str]:
    """Credentials ``name:secret`` for ``names``, written where a broker on ``data`` reads."""
    store = IdentityStore(identities_file(data))
    try:
        return {name: f"{name}:{store.issue(name)}" for name in names}
    finally:
        store.close()


def revoke(data: Path, name: str) -> None:
    """Revoke as ``mq9-dev-broker credentials revoke`` does (another process than the broker),
    returning once a running broker's next request looks (it looks LOOK_EVERY apart)."""
    store = IdentityStore(identities_file(data))
    try:
        store.revoke(name)
    finally:
        store.close()
    time.sleep(2 * LOOK_EVERY)


class AgentLogins:
    """Agents logging in at ``url`` with ``credentials`` (name -> ``name:secret``)."""

    def __init__(self, url: str, credentials: dict[str, str]) -> None:
        self.url = url
        self.credentials = credentials

    def address(self, credential: str) -> str:
        return self.url.replace("nats://", f"nats://{credential}@", 1)

    async def agent(self, name: str, **options: Any) -> NatsConnection:
        """A raw nats-py connection logged in as ``name``, its inbox its own."""
        return await nats.connect(
            self.address(self.credentials[name]),
            inbox_prefix=f"_INBOX.{name}".encode(),
            allow_reconnect=False,
            **options,
        )


class EnforcingBroker(AgentLogins):
    """``mq9-dev-broker --credentials --data <data>`` on a free port."""

    def __init__(self, data: Path, *names: str) -> None:
        self.data = data
        credentials = issue(data, *names)
        self.process = DevBroker("--credentials", "--data", str(data), "--port", "0")
        assert self.process.url is not None
        super().__init__(self.process.url, credentials)

    def stop(self) -> None:
        self.process.stop()

    def kill(self) -> None:
        self.process.kill()


def as_principal(principal: str, subject: str) -> str:
    """The subject a credentialed agent sends ``subject`` on (``$mq9.U.<id>.AI.…``)."""
    assert subject.startswith("$mq9.")
    return f"$mq9.U.{principal}.{subject[len('$mq9.') :]}"


async def ask(
    connection: NatsConnection,
    principal: str,
    subject: str,
    body: bytes | dict[str, Any] = b"",
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One mq9 request sent as ``principal`` (the prefixed form); the decoded answer."""
    if isinstance(body, dict):
        body = p.encode(body)
    answer: Msg = await connection.request(
        as_principal(principal, subject), body, REQUEST_TIMEOUT, headers=headers
    )
    reply: dict[str, Any] = json.loads(answer.data)
    return reply


async def ok(connection: NatsConnection, principal: str, subject: str, body: Any = b"", **kw: Any):
    reply = await ask(connection, principal, subject, body, **kw)
    assert reply["error"] == "", reply
    return reply


def on_close() -> tuple[asyncio.Event, Any]:
    """An event set once a nats-py connection is closed, and the ``closed_cb`` that sets it."""
    closed = asyncio.Event()

    async def set_it() -> None:
        closed.set()

    return closed, set_it


async def raw_login(url: str, credential: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """One connection logged in at ``url`` with ``credential`` (``name:secret``) by hand: CONNECT,
    then PING until its PONG (a refused login gets nats' -ERR instead). A fraction of a nats-py
    client's cost, for the tests that hold a thousand connections of one credential."""
    where = urlsplit(url)
    reader, writer = await asyncio.open_connection(where.hostname, where.port)
    try:
        await reader.readline()  # the server's INFO
        user, _, secret = credential.partition(":")
        connect = {"user": user, "pass": secret, "verbose": False, "protocol": 1}
        writer.write(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
        await writer.drain()
        answer = await reader.readline()
        if answer != b"PONG\r\n":
            raise ConnectionError(f"login refused: {answer!r}")
    except BaseException:
        writer.close()
        raise
    return reader, writer


async def until_closed(reader: asyncio.StreamReader) -> None:
    """Until the server closes the connection (what it sends meanwhile is read and dropped)."""
    while await reader.read(4096):
        pass
