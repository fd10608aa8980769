"""Scopes gate every MCP method, not only ``tools/call`` (issue #116), against a real
authorization server on loopback (oidc-provider, tests/mcp/oauth/) and mq9-mcp over HTTP with
``--tool-prefix mq9_``. Before, a token with ``mq9:send`` alone, or with no mq9 scope at all,
was refused ``query_messages`` but read the same mailbox, payload and all, through
``resources/read``, ``events/poll``, ``resources/subscribe``; ``tools/list`` offered every tool
whatever the scopes; and under a tool prefix every tool needed ``mq9:admin``."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2 as httpx
import pytest

from mq9_mcp.events import ARRIVED
from testbed.ports import unclaimed_port
from testbed.support.mcp_support import LEGACY, Peer, http_server
from tests.mcp.oauth.support import AuthorizationServer, client, running

pytestmark = pytest.mark.slow  # an authorization server and an mq9-mcp process

PREFIX = "mq9_"
CLIENTS = [client("alice"), client("sender", scope="mq9:send"), client("reader", scope="mq9:read")]
SECRET = "salary alice 9000"
TEAM_TOKEN = "team-" + "t" * 40  # a tokens file's line: every scope, as before


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[AuthorizationServer, str]]:
    port = unclaimed_port()
    resource = f"http://127.0.0.1:{port}/mcp"
    tokens = tmp_path_factory.mktemp("team") / "tokens"
    tokens.write_text(f"team: {hashlib.sha256(TEAM_TOKEN.encode()).hexdigest()}\n")
    with running(resource, CLIENTS) as authority, http_server(
        "--server", "memory://", "--oauth-issuer", authority.url, "--resource-url", resource,
        "--tool-prefix", PREFIX, "--tokens-file", str(tokens), port=port,
    ) as url:  # fmt: skip
        yield authority, url


@contextlib.asynccontextmanager
async def as_client(url: str, token: str) -> AsyncIterator[Peer]:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(20, read=30)) as http:
        yield await Peer(http, url, LEGACY, "w").open()


def token_of(authority: AuthorizationServer, name: str, scope: str) -> str:
    return authority.token(name, f"{name}-secret", scope)


def no_mq9_scope(authority: AuthorizationServer) -> str:
    """A token the AS signed for this server with no mq9 scope at all (as an IdP issues one
    for ``openid profile``)."""
    return authority.forge(sub="nobody", client_id="nobody", scope="openid profile")


async def answer(peer: Peer, method: str, **params: Any) -> httpx.Response:
    message = {"jsonrpc": "2.0", "id": 41, "method": method, "params": params}
    return await peer.http.post(peer.url, json=message, headers=peer.headers())


def reading(box: str) -> dict[str, dict[str, Any]]:
    """A request of each method that reads ``box`` (or what it holds), and its params."""
    uri = f"mq9://mailbox/{box}"
    events = {"name": ARRIVED, "arguments": {"mail_address": box}, "cursor": "0"}
    return {
        "resources/read": {"uri": uri},
        "resources/subscribe": {"uri": uri},
        "resources/unsubscribe": {"uri": uri},
        "events/poll": events,
        "events/stream": events,
        "events/subscribe": {**events, "delivery": {"mode": "webhook", "url": "http://x/"}},
        "events/unsubscribe": {**events, "delivery": {"url": "http://x/"}},
        "completion/complete": {"ref": {"type": "ref/resource", "uri": "mq9://mailbox/{mail_address}"},
                                "argument": {"name": "mail_address", "value": ""}},
        "prompts/get": {"name": "handle_inbox", "arguments": {"mail_address": box}},
    }  # fmt: skip


async def test_a_token_without_mq9_read_reads_no_mailbox_by_any_method(served):
    authority, url = served
    async with as_client(url, token_of(authority, "alice", "mq9:admin")) as alice:
        box = (await alice.data(PREFIX + "create_mailbox"))["mail_address"]
        await alice.data(PREFIX + "send_message", mail_address=box, payload=SECRET)
    for token in (token_of(authority, "sender", "mq9:send"), no_mq9_scope(authority)):
        async with as_client(url, token) as stranger:
            assert "result" in await stranger.rpc("ping")
            for method, params in reading(box).items():
                refused = await answer(stranger, method, **params)
                assert refused.status_code == 403, (method, refused.text)
                assert 'scope="mq9:read"' in refused.headers["www-authenticate"], method
                body = refused.json()
                assert body["id"] == 41 and body["error"]["data"]["scope"] == "mq9:read", method
                assert SECRET not in refused.text
    # the same requests by alice with mq9:read alone pass the scope check (what they then
    # answer is the owners' to say): the refusals were for the scope
    async with as_client(url, token_of(authority, "alice", "mq9:read")) as reader:
        for method in ("resources/read", "events/poll", "completion/complete", "prompts/get"):
            passed = await answer(reader, method, **reading(box)[method])
            assert passed.status_code == 200, (method, passed.text)
            assert "insufficient_scope" not in passed.text, method


async def test_tools_list_offers_only_what_the_tokens_scopes_may_call(served):
    authority, url = served

    async def listed(token: str, method: str = "tools/list", key: str = "tools") -> set[str]:
        async with as_client(url, token) as peer:
            return {item["name"] for item in (await peer.rpc(method))["result"][key]}

    reader = await listed(token_of(authority, "reader", "mq9:read"))
    assert PREFIX + "query_messages" in reader and PREFIX + "send_message" not in reader
    assert PREFIX + "agent_register" not in reader
    sender = await listed(token_of(authority, "sender", "mq9:send"))
    assert sender == {PREFIX + t for t in ("create_mailbox", "send_message", "delete_message")}
    assert await listed(no_mq9_scope(authority)) == set()
    everything = await listed(token_of(authority, "alice", "mq9:admin"))
    assert everything > reader | sender and PREFIX + "agent_register" in everything
    assert await listed(TEAM_TOKEN) == everything  # a tokens file's holder: every scope
    assert (
        await listed(token_of(authority, "sender", "mq9:send"), "prompts/list", "prompts") == set()
    )
    assert await listed(token_of(authority, "reader", "mq9:read"), "prompts/list", "prompts") == {
        "handle_inbox"
    }  # fmt: skip
    templates = await listed(
        no_mq9_scope(authority), "resources/templates/list", "resourceTemplates"
    )
    assert templates == set()
    assert await listed(no_mq9_scope(authority), "events/list", "events") == set()


async def test_a_prefixed_tool_needs_its_operations_scope_not_admin(served):
    authority, url = served
    async with as_client(url, token_of(authority, "sender", "mq9:send")) as sender:
        box = (await sender.data(PREFIX + "create_mailbox"))["mail_address"]
        assert (await sender.data(PREFIX + "send_message", mail_address=box, payload="p"))["sent"]
        refused = await answer(sender, "tools/call", name=PREFIX + "query_messages",
                               arguments={"mail_address": box})  # fmt: skip
    assert refused.status_code == 403 and refused.json()["error"]["data"]["scope"] == "mq9:read"


async def test_a_task_needs_the_scope_of_the_tool_it_runs(served):
    """The same principal (alice), a second token with mq9:send alone: her check_call task's
    result is a read, refused; the task is not listed to that token either."""
    authority, url = served
    async with as_client(url, token_of(authority, "alice", "mq9:admin")) as alice:
        task = (await alice.call(PREFIX + "check_call", task=True, task_id="no-such-call",
                                 wait_seconds=1))["result"]["task"]["taskId"]  # fmt: skip
    async with as_client(url, token_of(authority, "alice", "mq9:send")) as narrowed:
        for method in ("tasks/get", "tasks/result", "tasks/cancel"):
            refused = await answer(narrowed, method, taskId=task)
            assert refused.status_code == 403, (method, refused.text)
            assert refused.json()["error"]["data"]["scope"] == "mq9:read"
        assert (await narrowed.rpc("tasks/list"))["result"]["tasks"] == []
    async with as_client(url, token_of(authority, "alice", "mq9:read")) as alice_reads:
        assert "result" in await alice_reads.rpc("tasks/result", taskId=task)
        listed = (await alice_reads.rpc("tasks/list"))["result"]["tasks"]
        assert task in {t["taskId"] for t in listed}
