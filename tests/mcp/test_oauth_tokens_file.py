"""A principal per person without an identity provider (issue #112): ``--tokens-file`` lines
``name: sha256-of-token``, read again when the file changes; and the principal a checked token
names, as ``owners.client_identity`` tells clients apart. Before #112 two people on one
address with the one static token were one client: one set of tasks, one key share."""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2 as httpx
import pytest
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken

from mq9_mcp import owners
from mq9_mcp.http.auth import PRINCIPAL
from mq9_mcp.http.scopes import ADMIN, SCOPE_TOOLS, may_call, scope_for
from mq9_mcp.http.tokens_file import TokensFile, read_tokens
from mq9_platform.operations.catalog import OPERATIONS
from testbed.ports import unclaimed_port
from testbed.support.mcp_support import LEGACY, ROOT, Peer, http_server, server_env
from tests.mcp.oauth.support import running

ALICE, BOB, CAROL = "alice-" + "a" * 40, "bob-" + "b" * 40, "carol-" + "c" * 40


def line(name: str, token: str) -> str:
    return f"{name}: {hashlib.sha256(token.encode()).hexdigest()}\n"


@contextlib.asynccontextmanager
async def as_client(url: str, token: str) -> AsyncIterator[Peer]:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(20, read=60)) as http:
        yield await Peer(http, url, LEGACY, "w").open()


async def status_with(url: str, token: str) -> int:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http:
        answer = await http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    return answer.status_code


@pytest.mark.slow  # an mq9-mcp process
async def test_tokens_file_gives_each_person_a_principal_of_their_own(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("# the team\n" + line("alice", ALICE) + line("bob", BOB))
    with http_server("--server", "memory://", "--tokens-file", str(tokens)) as url:
        async with as_client(url, ALICE) as alice, as_client(url, BOB) as bob:
            box = (await alice.data("create_mailbox"))["mail_address"]
            task = (await alice.call("fetch_messages", task=True, mail_address=box,
                                     max_wait_ms=500))["result"]["task"]["taskId"]  # fmt: skip
            assert "error" in await bob.rpc("tasks/get", taskId=task)
            assert "error" not in await alice.rpc("tasks/get", taskId=task)
        assert await status_with(url, CAROL) == 401


@pytest.mark.slow  # an mq9-mcp process
async def test_tokens_file_is_read_again_when_it_changes(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text(line("alice", ALICE))
    with http_server("--server", "memory://", "--tokens-file", str(tokens)) as url:
        assert await status_with(url, CAROL) == 401
        tokens.write_text(line("alice", ALICE) + line("carol", CAROL))
        assert await status_with(url, CAROL) != 401  # read again on the next request
        tokens.write_text(line("carol", CAROL))  # alice removed
        assert await status_with(url, ALICE) == 401
        tokens.write_text("carol: not-a-digest\n")  # broken meanwhile: the last good one stays
        assert await status_with(url, CAROL) != 401


@pytest.mark.slow  # an mq9-mcp process
def test_tokens_file_with_a_bad_line_stops_the_server_in_one_line(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text(line("alice", ALICE) + "bob secret-in-the-clear\n")
    done = subprocess.run(
        [sys.executable, "-m", "mq9_mcp", "--transport", "http", "--server", "memory://",
         "--tokens-file", str(tokens)],
        cwd=ROOT, env=server_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert f"--tokens-file: {tokens}:2: expected 'name: sha256-hex-of-token'" in last


def test_tokens_file_names_twice_and_digests_only(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text(line("alice", ALICE) + line("alice", BOB))
    with pytest.raises(ValueError, match="'alice' is named twice"):
        read_tokens(tokens)
    tokens.write_text(line("alice", ALICE))
    assert read_tokens(tokens) == {"alice": hashlib.sha256(ALICE.encode()).hexdigest()}


async def test_tokens_file_principal_holds_every_scope(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text(line("alice", ALICE))
    checked = await TokensFile(Path(tokens)).verify_token(f" {ALICE} ")
    assert checked is not None and checked.subject == "alice" and ADMIN in checked.scopes
    assert await TokensFile(Path(tokens)).verify_token(BOB) is None


def test_oauth_scope_table_names_every_tool_once():
    """Each catalog tool needs one scope; the read-only ones mq9:read; mq9:admin calls all."""
    named = [tool for tools in SCOPE_TOOLS.values() for tool in tools]
    assert len(named) == len(set(named))
    for name, operation in OPERATIONS.items():
        if operation.read_only:
            assert scope_for(name) == "mq9:read", name
        assert may_call([ADMIN], name)
    assert not may_call(["mq9:read"], "send_message") and may_call(["mq9:send"], "send_message")
    assert scope_for("agent_register") == ADMIN


def scope_of(token: AccessToken | None, peer: str = "127.0.0.1") -> dict:
    scope: dict = {"type": "http", "client": (peer, 5000), "headers": []}
    if token is not None:
        scope["user"] = AuthenticatedUser(token)
    return scope


def test_principal_is_issuer_subject_and_client_wherever_it_connects_from():
    def token(subject: str, issuer: str = "https://as", client: str = "app") -> AccessToken:
        return AccessToken(token="t", client_id=client, scopes=[], subject=subject,
                           claims={"iss": issuer})  # fmt: skip

    alice = owners.client_identity(scope_of(token("alice")))
    assert alice == owners.client_identity(scope_of(token("alice"), peer="10.0.0.9"))
    assert alice.startswith("principal ")
    others = [token("bob"), token("alice", issuer="https://other"), token("alice", client="x")]
    assert all(owners.client_identity(scope_of(t)) != alice for t in others)
    assert owners.client_of(f"{alice} worker") == alice


def test_principal_of_the_static_token_is_still_told_apart_by_address():
    shared = AccessToken(token="t", client_id=PRINCIPAL, scopes=[])
    one = owners.client_identity(scope_of(shared))
    assert one == owners.client_identity(scope_of(None))  # as before #112: the address
    assert one != owners.client_identity(scope_of(shared, peer="127.0.0.2"))


@pytest.mark.slow  # an mq9-mcp process and an authorization server
async def test_oauth_with_the_authorization_server_gone_refuses_tokens_and_serves_on(tmp_path):
    """The AS stopped once mq9-mcp runs (it must answer at start, #117): a JWT naming a key
    not read yet is refused 401 (not a 500), a tokens file's person still works."""
    tokens = tmp_path / "tokens"
    tokens.write_text(line("alice", ALICE))
    port = unclaimed_port()
    resource = f"http://127.0.0.1:{port}/mcp"
    with running(resource, []) as authority, http_server(
        "--server", "memory://", "--oauth-issuer", authority.url, "--resource-url", resource,
        "--oauth-jwks-cooldown", "0", "--tokens-file", str(tokens), port=port,
    ) as url:  # fmt: skip
        authority.stop()
        assert await status_with(url, authority.forge(headers={"kid": "k9"})) == 401
        async with as_client(url, ALICE) as alice:
            assert "mail_address" in await alice.data("create_mailbox")


@pytest.mark.slow  # an mq9-mcp process
def test_oauth_algorithm_none_is_refused_at_start():
    done = subprocess.run(
        [sys.executable, "-m", "mq9_mcp", "--transport", "http", "--server", "memory://",
         "--oauth-issuer", "http://127.0.0.1:1", "--oauth-algorithms", "RS256,none"],
        cwd=ROOT, env=server_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--oauth-algorithms: 'none' is never accepted" in done.stderr.strip().splitlines()[-1]
