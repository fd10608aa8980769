"""Each principal acting at the broker as itself (issue #112 item 3): mq9-mcp serves alice and
bob (a tokens file, one address) in front of a broker that enforces credentials
(``mq9-dev-broker --credentials``), with ``--principal-credentials`` naming an mq9 credential
for each; the broker's own rule (a mailbox only its owner reads) then holds between them.
Before, both acted as mq9-mcp's one identity: bob fetched alice's mail."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator

import httpx2 as httpx
import pytest

from testbed.support.credentials_support import EnforcingBroker
from testbed.support.mcp_support import LEGACY, Peer, http_server

pytestmark = pytest.mark.slow  # a dev broker and an mq9-mcp process per test

ALICE, BOB, CAROL = "alice-" + "a" * 40, "bob-" + "b" * 40, "carol-" + "c" * 40


@pytest.fixture
def enforcing(tmp_path):
    broker = EnforcingBroker(tmp_path / "data", "alice", "bob", "mcp")
    yield broker
    broker.stop()


def setup(tmp_path, enforcing: EnforcingBroker) -> tuple[str, str]:
    tokens = tmp_path / "tokens"
    tokens.write_text("".join(
        f"{name}: {hashlib.sha256(token.encode()).hexdigest()}\n"
        for name, token in (("alice", ALICE), ("bob", BOB), ("carol", CAROL))
    ))  # fmt: skip
    folder = tmp_path / "principals"
    folder.mkdir()
    for name in ("alice", "bob"):  # carol has none
        (folder / f"{name}.cred").write_text(enforcing.credentials[name] + "\n")
    return str(tokens), str(folder)


@contextlib.asynccontextmanager
async def as_client(url: str, token: str) -> AsyncIterator[Peer]:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(20, read=60)) as http:
        yield await Peer(http, url, LEGACY, "w").open()


def text_of(answer: dict) -> str:
    return str(answer["result"]["content"][0]["text"])


async def test_principal_acts_at_the_broker_as_itself(tmp_path, enforcing):
    tokens, folder = setup(tmp_path, enforcing)
    with http_server(
        "--server", enforcing.url, "--tokens-file", tokens, "--principal-credentials", folder,
        MQ9_CREDENTIAL=enforcing.credentials["mcp"],
    ) as url:  # fmt: skip
        async with as_client(url, ALICE) as alice, as_client(url, BOB) as bob:
            box = (await alice.data("create_mailbox", name="alice.inbox"))["mail_address"]
            await bob.data("send_message", mail_address=box, payload="for alice")  # SEND: anyone
            fetched = await alice.data("fetch_messages", mail_address=box)
            assert [m["payload"] for m in fetched["messages"]] == ["for alice"]
            stolen = await bob.call("fetch_messages", mail_address=box)
            assert stolen["result"]["isError"]
            assert "belongs to another agent" in text_of(stolen)
        async with as_client(url, CAROL) as carol:  # no credential: refused in one line
            refused = await carol.call("create_mailbox")
            assert refused["result"]["isError"]
            assert "no broker credential for you ('carol')" in text_of(refused)


async def test_principal_without_a_credential_may_share_the_servers_identity(tmp_path, enforcing):
    tokens, folder = setup(tmp_path, enforcing)
    with http_server(
        "--server", enforcing.url, "--tokens-file", tokens, "--principal-credentials", folder,
        "--unmapped-principals", "shared", MQ9_CREDENTIAL=enforcing.credentials["mcp"],
    ) as url:  # fmt: skip
        async with as_client(url, CAROL) as carol:
            box = (await carol.data("create_mailbox", name="mcp.shared"))["mail_address"]
            assert box == "mcp.shared"  # the server's identity's name space
