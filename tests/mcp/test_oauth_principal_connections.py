"""The principals' broker connections (issue #112 item 3, its gaps): at most ``limit`` open,
the least recently used idle one closed for a new principal, one in use never; every one closed
when the server stops, within the bound, however slow a broker is to let one go. Real
connections to an enforcing dev broker, each principal logged in with its own credential."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from mcp.server.auth.middleware.auth_context import AuthenticatedUser
from mcp.server.auth.provider import AccessToken

from mq9_mcp.http import principals as module
from mq9_mcp.http.principal_files import file_name
from mq9_mcp.http.principals import ActingConnection, PrincipalConnections, acting_for
from mq9_mcp.http.tokens_file import ISSUER as TOKENS_FILE_ISSUER
from mq9_platform.client.connection import Mq9Connection
from mq9_platform.operations.catalog import OperationError
from testbed.support.credentials_support import EnforcingBroker
from testbed.support.waiting import until

pytestmark = pytest.mark.slow  # a dev broker per test

NAMES = ("alice", "bob", "carol")


class Request:
    """What the SDK's bearer auth leaves on a request: the checked token's user (a tokens
    file's principal: ``<name>.cred`` maps it)."""

    def __init__(self, subject: str) -> None:
        token = AccessToken(token="t", client_id=subject, scopes=[], subject=subject,
                            claims={"iss": TOKENS_FILE_ISSUER})  # fmt: skip
        self.scope = {"user": AuthenticatedUser(token)}


class Counted(Mq9Connection):
    """A real connection that counts its closes (and, ``hang``: never finishes one)."""

    name = ""
    closed: list[str]
    hang = False

    async def aclose(self) -> None:
        self.closed.append(self.name)
        await super().aclose()
        if self.hang:
            await asyncio.Event().wait()  # a broker that never lets go


@pytest.fixture
def enforcing(tmp_path):
    broker = EnforcingBroker(tmp_path / "data", *NAMES, "mcp")
    yield broker
    broker.stop()


def mapping(tmp_path: Path, broker: EnforcingBroker, closed: list[str], **options: Any):
    folder = tmp_path / "principals"
    folder.mkdir()
    for name in NAMES:
        (folder / f"{name}.cred").write_text(broker.credentials[name] + "\n")

    def make(credential: str) -> Mq9Connection:
        made = Counted(broker.address(credential), request_timeout=5)
        made.name, made.closed = credential.split(":")[0], closed
        return made

    shared = Mq9Connection(broker.address(broker.credentials["mcp"]), request_timeout=5)
    return PrincipalConnections(folder, make, shared, **options)


async def whoami(acting: ActingConnection, name: str) -> None:
    """One broker access acting for ``name``: a mailbox made (its own, the broker says)."""
    token = acting_for(Request(name))
    try:
        await acting.run(lambda client: client.mailbox_create())
    finally:
        module.stop_acting(token)


async def test_principal_connections_keep_a_bound_closing_the_least_recent_idle(
    tmp_path, enforcing
):
    closed: list[str] = []
    principals = mapping(tmp_path, enforcing, closed, limit=2)
    acting = ActingConnection(principals.shared)
    acting.principals = principals
    try:
        await whoami(acting, "alice")
        await whoami(acting, "bob")
        await whoami(acting, "alice")  # bob is now the least recently used
        await whoami(acting, "carol")  # closes bob's
        assert principals.open == 2
        await until(lambda: closed == ["bob"], timeout=10, what="bob's connection closed")
        async with principals.using(Request("alice")), principals.using(Request("carol")):
            with pytest.raises(OperationError, match="each in use: try later"):
                principals.connection_for(Request("bob"))  # none idle to close
        await whoami(acting, "bob")  # both idle again: opens bob's, closes alice's
        assert principals.open == 2
        await until(lambda: closed == ["bob", "alice"], timeout=10, what="alice's closed")
    finally:
        await acting.aclose()
    assert principals.open == 0 and sorted(closed[2:]) == ["bob", "carol"]  # at the end


async def test_principal_connections_close_within_the_bound_however_slow(
    tmp_path, enforcing, monkeypatch
):
    monkeypatch.setattr(module, "CLOSE_SECONDS", 0.5)
    monkeypatch.setattr(Counted, "hang", True)
    closed: list[str] = []
    principals = mapping(tmp_path, enforcing, closed)
    acting = ActingConnection(principals.shared)
    acting.principals = principals
    for name in NAMES:
        await whoami(acting, name)
    await asyncio.wait_for(acting.aclose(), 30)  # each close hangs: the bound ends them
    assert sorted(closed) == sorted(NAMES) and principals.open == 0


class IdpRequest:
    """A request of an identity provider's user ``subject`` signing in through ``client``."""

    def __init__(self, subject: str, client: str, issuer: str = "https://idp.example") -> None:
        token = AccessToken(token="t", client_id=client, scopes=[], subject=subject,
                            claims={"iss": issuer})  # fmt: skip
        self.scope = {"user": AuthenticatedUser(token)}


async def test_the_connection_table_is_keyed_by_the_whole_principal(tmp_path, enforcing):
    """Issue #116: the table was keyed by ``sub``: once the tokens file's alice had her
    connection, an IdP user named alice was handed it (her broker identity) whatever file
    named hers."""
    principals = mapping(tmp_path, enforcing, [])
    idp_alice = IdpRequest("alice", "web")
    (principals.folder / file_name("https://idp.example", "alice", "web")).write_text(
        enforcing.credentials["carol"] + "\n"
    )
    try:
        mine = principals.connection_for(Request("alice"))
        theirs = principals.connection_for(idp_alice)
        assert theirs is not mine and principals.open == 2
        assert principals.connection_for(Request("alice")) is mine
        with pytest.raises(OperationError, match="no broker credential for you"):
            principals.connection_for(IdpRequest("alice", "desktop"))  # another client
        with pytest.raises(OperationError, match="no broker credential for you"):
            principals.connection_for(IdpRequest("alice", "web", "https://other.example"))
    finally:
        await principals.aclose()
