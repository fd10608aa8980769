"""mq9-mcp over HTTP as an OAuth 2.1 resource server (issue #112), against a real authorization
server on loopback (panva's oidc-provider, tests/mcp/oauth/): its Protected Resource Metadata,
its 401/403 answers, JWT access tokens checked with the AS's keys, opaque ones by
introspection, scopes per tool, and each principal the owner of what it makes, wherever it
connects from. Every client here connects from 127.0.0.1 with the same worker name: before
#112 they were one client (``owners.client_identity``: address and credential digest... and
no token but the one static token was accepted at all)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Iterator

import httpx2 as httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from testbed.ports import unclaimed_port
from testbed.support.mcp_support import LEGACY, Peer, http_server
from tests.mcp.oauth.support import AuthorizationServer, client, running

pytestmark = pytest.mark.slow  # an authorization server and an mq9-mcp process each

SHARE = 3  # --keys-per-client
CLIENTS = [client("alice"), client("bob"), client("reader", scope="mq9:read"),
           client("opaque-carol"), client("mq9-mcp", grant_types=[])]  # fmt: skip


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[AuthorizationServer, str]]:
    port = unclaimed_port()
    resource = f"http://127.0.0.1:{port}/mcp"
    with running(resource, CLIENTS) as authority, http_server(
        "--server", "memory://", "--oauth-issuer", authority.url, "--resource-url", resource,
        "--oauth-client-id", "mq9-mcp", "--keys-per-client", str(SHARE), port=port,
        MQ9_MCP_OAUTH_CLIENT_SECRET="mq9-mcp-secret",
    ) as url:  # fmt: skip
        yield authority, url


@contextlib.asynccontextmanager
async def as_client(url: str, token: str, worker: str = "w") -> AsyncIterator[Peer]:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(20, read=60)) as http:
        yield await Peer(http, url, LEGACY, worker).open()


def token_of(authority: AuthorizationServer, name: str, scope: str = "mq9:admin") -> str:
    return authority.token(name, f"{name}-secret", scope)


async def test_oauth_protected_resource_metadata_at_both_well_known_paths(served):
    authority, url = served
    origin = url.removesuffix("/mcp")
    async with httpx.AsyncClient() as http:
        for path in ("/.well-known/oauth-protected-resource/mcp",
                     "/.well-known/oauth-protected-resource"):  # fmt: skip
            metadata = (await http.get(origin + path)).json()
            assert metadata["resource"] == url
            assert metadata["authorization_servers"] == [authority.url]
            assert set(metadata["scopes_supported"]) >= {"mq9:read", "mq9:send", "mq9:admin"}


async def test_oauth_401_names_the_resource_metadata(served):
    _, url = served
    async with httpx.AsyncClient() as http:
        answer = await http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert answer.status_code == 401
    challenge = answer.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    metadata = url.replace("/mcp", "/.well-known/oauth-protected-resource/mcp")
    assert f'resource_metadata="{metadata}"' in challenge
    assert "OAuth access token from" in answer.json()["error"]["message"]


async def test_oauth_jwt_from_the_authorization_server_calls_tools(served):
    authority, url = served
    async with as_client(url, token_of(authority, "alice")) as alice:
        box = (await alice.data("create_mailbox"))["mail_address"]
        assert (await alice.data("send_message", mail_address=box, payload="hi"))["sent"]


async def test_oauth_opaque_token_checked_by_introspection(served):
    authority, url = served
    async with as_client(url, token_of(authority, "opaque-carol")) as carol:
        assert "mail_address" in await carol.data("create_mailbox")
    for token in ("not-a-token-the-as-issued", token_of(authority, "opaque-carol") + "x"):
        assert await status_with(url, token) == 401


async def status_with(url: str, token: str) -> int:
    """The HTTP status of a ping carrying ``token``."""
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http:
        answer = await http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    return answer.status_code


def hs256_with_public_key(authority: AuthorizationServer) -> str:
    """The algorithm-confusion forgery: HS256 keyed with the AS's public key (PEM), written out
    by hand (PyJWT refuses to make it)."""
    public = authority.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "at+jwt", "kid": authority.jwk["kid"]}
    claims = jwt.decode(authority.forge(), options={"verify_signature": False})
    signed = b".".join(b64(json.dumps(part).encode()) for part in (header, claims))
    return (signed + b"." + b64(hmac.new(public, signed, hashlib.sha256).digest())).decode()


def b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


FORGED = {
    "expired": lambda a: a.forge(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200),
    "not_yet_valid": lambda a: a.forge(nbf=int(time.time()) + 3600),
    "wrong_issuer": lambda a: a.forge(iss="http://127.0.0.1:1/other"),
    "other_audience_forged": lambda a: a.forge(aud="http://127.0.0.1:1/mcp"),
    "forged_signature": lambda a: a.forge(key=_other_key()),
    "alg_none": lambda a: a.forge(key=None, algorithm="none"),
    "hs256_public_key": lambda a: hs256_with_public_key(a),
    "id_token_typ": lambda a: a.forge(headers={"typ": "JWT"}),
    "no_subject": lambda a: a.forge(sub=None),
    "other_audience_from_the_as": lambda a: a.token(
        "alice", "alice-secret", "mq9:read", resource="http://127.0.0.1:1/other"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(FORGED))
async def test_oauth_refuses_a_token(served, case):
    authority, url = served
    token = FORGED[case](authority)
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http:
        answer = await http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert answer.status_code == 401, (case, answer.text)
    assert "resource_metadata=" in answer.headers["www-authenticate"]
    # the same token, rightly made, is let through: the refusal was for the reason named
    assert await status_with(url, authority.forge()) != 401


async def test_oauth_a_tool_beyond_the_tokens_scope_is_403_naming_the_scope(served):
    authority, url = served
    async with as_client(url, token_of(authority, "reader", "mq9:read")) as reader:
        assert "agents" in await reader.data("agent_discover", query="")
        message = {"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                   "params": {"name": "send_message",
                              "arguments": {"mail_address": "x", "payload": "p"}}}  # fmt: skip
        answer = await reader.http.post(url, json=message, headers=reader.headers())
    assert answer.status_code == 403
    challenge = answer.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge and 'scope="mq9:send"' in challenge
    refusal = answer.json()  # answered as the call it refuses: its id, so a client matches it
    assert refusal["id"] == 9 and refusal["error"]["data"]["scope"] == "mq9:send", refusal


async def test_principal_cannot_see_another_principals_tasks_from_one_address(served):
    authority, url = served
    async with (
        as_client(url, token_of(authority, "alice")) as alice,
        as_client(url, token_of(authority, "bob")) as bob,
    ):
        box = (await alice.data("create_mailbox"))["mail_address"]
        await alice.data("send_message", mail_address=box, payload="alice's")
        task = (await alice.call("fetch_messages", task=True, mail_address=box,
                                 max_wait_ms=1000))["result"]["task"]["taskId"]  # fmt: skip
        assert "error" in await bob.rpc("tasks/get", taskId=task)
        assert (await bob.rpc("tasks/list"))["result"]["tasks"] == []
        assert "error" in await bob.rpc("tasks/result", taskId=task)
        result = (await alice.rpc("tasks/result", taskId=task))["result"]
        assert result["structuredContent"]["messages"][0]["payload"] == "alice's"


async def test_principals_on_one_address_hold_separate_key_shares(served):
    authority, url = served
    async with (
        as_client(url, token_of(authority, "alice")) as alice,
        as_client(url, token_of(authority, "bob")) as bob,
    ):
        box = (await alice.data("create_mailbox"))["mail_address"]
        refused = []
        for n in range(SHARE + 1):
            answer = await alice.call("send_message", mail_address=box, payload=f"m{n}",
                                      idempotency_key=f"alice-{n}")  # fmt: skip
            if answer["result"].get("isError"):
                refused.append(answer["result"]["content"][0]["text"])
        assert len(refused) == 1 and f"{SHARE} of your {SHARE} keys" in refused[0]
        inbox = (await bob.data("create_mailbox"))["mail_address"]
        sent = await bob.data("send_message", mail_address=inbox, payload="b", idempotency_key="b")
        assert sent["sent"] is True


async def test_oauth_rotated_signing_key_is_picked_up():
    port = unclaimed_port()
    resource = f"http://127.0.0.1:{port}/mcp"
    with running(resource, CLIENTS) as authority, http_server(
        "--server", "memory://", "--oauth-issuer", authority.url, "--resource-url", resource,
        "--oauth-jwks-cooldown", "0", port=port,
    ) as url:  # fmt: skip
        async with as_client(url, token_of(authority, "alice")) as alice:
            assert "agents" in await alice.data("agent_discover", query="")
        authority.rotate("k2")  # a new key id mq9-mcp has not seen: fetched again
        async with as_client(url, token_of(authority, "alice")) as alice:
            assert "agents" in await alice.data("agent_discover", query="")
        stranger = authority.forge(headers={"kid": "k3"})  # no such key at the AS
        assert await status_with(url, stranger) == 401


async def test_principal_keeps_its_tasks_across_a_new_token(served):
    """A refreshed token is another string but the same principal: what the first token's
    requests made is still its own (before #112 the owner was a digest of the token)."""
    authority, url = served
    first, second = token_of(authority, "alice"), token_of(authority, "alice")
    assert first != second
    async with as_client(url, first) as alice:
        box = (await alice.data("create_mailbox"))["mail_address"]
        task = (await alice.call("fetch_messages", task=True, mail_address=box,
                                 max_wait_ms=500))["result"]["task"]["taskId"]  # fmt: skip
    async with as_client(url, second) as alice_again:
        assert "error" not in await alice_again.rpc("tasks/get", taskId=task)
        listed = (await alice_again.rpc("tasks/list"))["result"]["tasks"]
        assert task in {t["taskId"] for t in listed}
