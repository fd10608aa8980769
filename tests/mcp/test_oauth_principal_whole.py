"""A principal is its issuer, subject and client at the broker too, and a refused caller spends
nothing (issue #116, "A principal is its issuer, subject and client everywhere" and "A refused
caller spends nothing").

mq9-mcp serves a tokens file (alice) and a real authorization server (oidc-provider on loopback,
tests/mcp/oauth/) in front of a broker that enforces credentials, with ``--principal-credentials``.
Before, the credential file was picked by ``sub`` alone: an IdP user who signed in as ``alice``
acted as the tokens file's alice, a user who signed in as ``mq9-service`` as that client
(client credentials), and a ``sub`` such as ``auth0|u-77`` could never be mapped. And keys were
counted before the principal was refused: strangers refused "no broker credential for you"
filled the server's keys, and alice's keyed send was refused.

The IdP's users' tokens are signed with the authorization server's own key (``forge``): what it
would issue to a user of that ``sub`` signing in through that client.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx2 as httpx
import pytest

from mq9_mcp.cli import build_parser
from mq9_mcp.http.principal_files import file_name
from testbed.ports import unclaimed_port
from testbed.support.credentials_support import EnforcingBroker
from testbed.support.mcp_support import LEGACY, Peer, http_server
from tests.mcp.oauth.support import AuthorizationServer, client, running

pytestmark = pytest.mark.slow  # an authorization server, a dev broker and an mq9-mcp process

ALICE = "alice-" + "a" * 40  # the tokens file's alice
SERVICE = "mq9-service"  # a client of the authorization server (client credentials)
SHARE, IDENTITY_KEYS = 2, 4  # --keys-per-client; --identity-keys: the callers' total is 3


def printed(*words: str) -> str:
    """``mq9-mcp --principal-file``'s answer, as an operator runs it (its parser, in process)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(["--principal-file", *words])
    assert stopped.value.code == 0
    return out.getvalue().strip()


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[AuthorizationServer, str, Path]]:
    data = tmp_path_factory.mktemp("whole")
    broker = EnforcingBroker(data / "broker", "alice", "bob", "service", "mcp")
    port = unclaimed_port()
    resource = f"http://127.0.0.1:{port}/mcp"
    tokens = data / "tokens"
    tokens.write_text(f"alice: {hashlib.sha256(ALICE.encode()).hexdigest()}\n")
    folder = data / "principals"
    folder.mkdir()
    (folder / "alice.cred").write_text(broker.credentials["alice"] + "\n")
    try:
        with running(resource, [client(SERVICE)]) as authority:
            # the client-credentials client maps by its whole principal, client and all
            service = printed(authority.url, SERVICE, SERVICE)
            assert service == file_name(authority.url, SERVICE, SERVICE)
            (folder / service).write_text(broker.credentials["service"] + "\n")
            with http_server(
                "--server", broker.url, "--tokens-file", str(tokens),
                "--oauth-issuer", authority.url, "--resource-url", resource,
                "--principal-credentials", str(folder), "--keys-per-client", str(SHARE),
                "--identity-keys", str(IDENTITY_KEYS), port=port,
                MQ9_CREDENTIAL=broker.credentials["mcp"],
            ) as url:  # fmt: skip
                yield authority, url, folder
    finally:
        broker.stop()


@contextlib.asynccontextmanager
async def as_client(url: str, token: str) -> AsyncIterator[Peer]:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(20, read=60)) as http:
        yield await Peer(http, url, LEGACY, "w").open()


def user(authority: AuthorizationServer, subject: str, client_id: str = "web") -> str:
    """A token the authorization server issues to its user ``subject`` through ``client_id``."""
    return authority.forge(sub=subject, client_id=client_id, jti=f"{subject} {client_id}")


def text_of(answer: dict) -> str:
    return str(answer["result"]["content"][0]["text"])


async def test_an_idp_user_named_alice_is_not_the_tokens_files_alice(served):
    authority, url, _ = served
    async with as_client(url, ALICE) as alice:  # the tokens file's alice keeps her credential
        made = await alice.data("create_mailbox", name="alice.private")
        assert made["mail_address"] == "alice.private"
    async with as_client(url, user(authority, "alice")) as other:
        refused = await other.call("create_mailbox", name="alice.other")
        assert refused["result"]["isError"]
        text = text_of(refused)
        assert "no broker credential for you ('alice' of" in text, text
        assert "alice.cred maps only the tokens file's principal of that name" in text
        assert file_name(authority.url, "alice", "web") in text  # the file that would be hers


async def test_a_user_named_like_a_client_is_not_that_client(served):
    authority, url, _ = served
    service = authority.token(SERVICE, f"{SERVICE}-secret", "mq9:admin")
    async with as_client(url, service) as client_itself:
        assert "mail_address" in await client_itself.data("create_mailbox", name="service.box")
    async with as_client(url, user(authority, SERVICE)) as namesake:
        refused = await namesake.call("create_mailbox", name="service.other")
        assert refused["result"]["isError"]
        assert "no broker credential for you ('mq9-service' of" in text_of(refused)


async def test_an_idps_own_subject_forms_map_by_the_file_named_for_them(served):
    authority, url, folder = served
    # every client of the account: the file named by issuer and subject
    (folder / file_name(authority.url, "auth0|u-77")).write_text(
        (folder / file_name(authority.url, SERVICE, SERVICE)).read_text()
    )
    for through in ("web", "desktop"):
        async with as_client(url, user(authority, "auth0|u-77", through)) as them:
            assert "mail_address" in await them.data("create_mailbox")
    # one client of that account alone: the file named by the whole principal
    (folder / file_name(authority.url, "google-oauth2|1234", "web")).write_text(
        (folder / file_name(authority.url, SERVICE, SERVICE)).read_text()
    )
    async with as_client(url, user(authority, "google-oauth2|1234")) as web:
        assert "mail_address" in await web.data("create_mailbox")
    async with as_client(url, user(authority, "google-oauth2|1234", "other")) as other:
        assert "no broker credential for you" in text_of(await other.call("create_mailbox"))


def test_the_file_name_command_says_what_to_do_with_too_few_words(capsys):
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(["--principal-file", "https://idp.example"])
    assert stopped.value.code == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.endswith("--principal-file takes ISSUER SUBJECT [CLIENT]")


async def test_path_tricks_in_a_subject_reach_no_file(served):
    authority, url, _ = served
    for subject in ("../principals/alice", "alice/../alice", "/etc/passwd", "alice.cred"):
        async with as_client(url, user(authority, subject)) as trick:
            refused = await trick.call("create_mailbox")
            assert "no broker credential for you" in text_of(refused)


async def test_strangers_refused_their_principal_spend_no_keys(served):
    """Strangers (any client of the authorization server, none with a credential here) make
    keyed sends: each is refused for its principal and holds no key, so the server's keys
    stay for those it carries (alice's keyed sends are answered)."""
    authority, url, _ = served
    for n in range(3):
        async with as_client(url, user(authority, f"stranger-{n}", f"registered-{n}")) as them:
            for k in range(SHARE + 1):
                answer = await them.call(
                    "send_message", mail_address="alice.private", payload="x",
                    idempotency_key=f"k{k}",
                )  # fmt: skip
                assert "no broker credential for you" in text_of(answer), text_of(answer)
    async with as_client(url, ALICE) as alice:
        for k in range(SHARE):
            sent = await alice.data(
                "send_message", mail_address="alice.private", payload="mine",
                idempotency_key=f"alice-{k}",
            )  # fmt: skip
            assert sent["sent"] is True
