"""mq9-mcp's bounds hold per client (peer address and credentials), not only per worker name
(#61 item 6): ``Mq9-Worker`` names cost nothing to make up, so one peer inventing them stays
inside its own slice of remembered owners, tasks and listen streams, and a client the server
never saw (another loopback address: 127.0.0.2) always gets its own. Both attacks run against
the real HTTP server; the rules themselves are checked on the stores with owners named."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx2 as httpx
import pytest
from mcp import types

from mq9_mcp import owners, tasks, watch
from mq9_platform.operations.catalog import OperationError, ToolPolicy
from testbed.support.mcp_support import ACCEPT, EXTENSION, MODERN, Peer, http_server

NEWCOMER = "127.0.0.2"  # a loopback address of its own: another peer to the server


@contextlib.asynccontextmanager
async def peer_at(address: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client whose connections come from ``address`` (None: the default)."""
    transport = httpx.AsyncHTTPTransport(local_address=address) if address else None
    timeout = httpx.Timeout(20, read=60)
    async with httpx.AsyncClient(transport=transport, timeout=timeout) as http:
        yield http


@pytest.mark.slow
async def test_one_peers_made_up_workers_never_lock_out_a_client_never_seen():
    with http_server("--server", "memory://") as url:
        async with peer_at() as mallorys, peer_at(NEWCOMER) as alices:
            mallory = Peer(mallorys, url, MODERN, "made-up-0")
            for n in range(owners.MAX_WORKERS):  # each worker name holds a mailbox it created
                answer = await mallory.rpc("tools/call", worker=f"made-up-{n}",
                                           name="create_mailbox", arguments={})  # fmt: skip
                assert not answer["result"].get("isError"), answer
            # her next made-up name finds the server full of her own: refused
            refused = await mallory.rpc("tools/call", worker=f"made-up-{owners.MAX_WORKERS}",
                                        name="create_mailbox", arguments={})  # fmt: skip
            assert refused["result"]["isError"], refused
            assert "reuse a worker name" in refused["result"]["content"][0]["text"]

            alice = Peer(alices, url, MODERN, "alice")  # from another address, never seen
            inbox = (await alice.data("create_mailbox"))["mail_address"]
            await alice.data("send_message", mail_address=inbox, payload="job")
            [message] = (await alice.data("fetch_messages", mail_address=inbox))["messages"]
            acked = await alice.data("ack_messages", mail_address=inbox, msg_id=message["msg_id"])
            assert acked["confirmed"] == [message["msg_id"]]
            # and a second client never seen, with other credentials, gets its own slice too
            bob = Peer(alices, url, MODERN, "bob")
            answer = await alices.post(
                url,
                json=_request("tools/call", name="create_mailbox", arguments={}),
                headers={**bob.headers(), "mcp-method": "tools/call", "mcp-name": "create_mailbox",
                         "authorization": "Bearer bob's"},
            )  # fmt: skip
            assert not _answer(answer)["result"].get("isError"), answer.text


@contextlib.asynccontextmanager
async def listening(
    http: httpx.AsyncClient, url: str, worker: str, uri: str
) -> AsyncIterator[dict[str, Any]]:
    """A 2026-07-28 ``subscriptions/listen`` stream held open as ``worker``: yields its first
    message (the acknowledgement), or the JSON-RPC error that refused it."""
    request = _request("subscriptions/listen", notifications={"resourceSubscriptions": [uri]})
    headers = {**ACCEPT, "mcp-protocol-version": MODERN, "mq9-worker": worker,
               "mcp-method": "subscriptions/listen"}  # fmt: skip
    async with http.stream("POST", url, json=request, headers=headers) as response:
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            yield json.loads(await response.aread())
            return
        async with asyncio.timeout(20):
            async for line in response.aiter_lines():
                if line.startswith("data:") and line[5:].strip():
                    yield json.loads(line[5:])
                    return


def _request(method: str, **params: Any) -> dict[str, Any]:
    params["_meta"] = {
        types.PROTOCOL_VERSION_META_KEY: MODERN,
        types.CLIENT_INFO_META_KEY: {"name": "raw", "version": "1"},
        types.CLIENT_CAPABILITIES_META_KEY: {"extensions": {EXTENSION: {}}},
    }
    return {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}


def _answer(response: httpx.Response) -> dict[str, Any]:
    if response.headers.get("content-type", "").startswith("application/json"):
        return response.json()
    data = [line[5:] for line in response.text.splitlines() if line.startswith("data:")]
    return json.loads([d for d in data if d.strip()][-1])


@pytest.mark.slow
async def test_one_client_naming_made_up_workers_holds_only_its_own_listen_streams():
    uri = "mq9://mailbox/watched"
    with http_server("--server", "memory://") as url:
        async with (
            peer_at() as mallorys,
            peer_at(NEWCOMER) as alices,
            contextlib.AsyncExitStack() as held,
        ):
            await Peer(mallorys, url, MODERN, "mallory").data("create_mailbox", name="watched")
            opened = refused = 0
            for n in range(watch.MAX_STREAMS // watch.MAX_STREAMS_PER_OWNER):  # 32 names
                for _ in range(watch.MAX_STREAMS_PER_OWNER):  # 8 streams each
                    first = await held.enter_async_context(
                        listening(mallorys, url, f"made-up-{n}", uri)
                    )
                    if "error" in first:
                        assert "listen streams" in first["error"]["message"], first
                        refused += 1
                    else:
                        opened += 1
            assert opened == watch.MAX_STREAMS_PER_OWNER  # her names share her slice
            assert refused == watch.MAX_STREAMS - opened

            async with listening(alices, url, "alice", uri) as first:  # never seen: its own
                assert first.get("method") == "notifications/subscriptions/acknowledged", first


# -- the rules, on the stores themselves -------------------------------------------------------


class Request:
    """What ``ClientPolicies`` reads of an HTTP request: its scope and headers."""

    def __init__(self, worker: str, peer: str = "127.0.0.1") -> None:
        self.headers = {owners.WORKER_HEADER: worker}
        self.scope = {"type": "http", "client": (peer, 5000), "headers": []}


def test_a_client_holding_fewer_takes_the_least_recently_used_owner_of_the_one_holding_most(
    monkeypatch,
):
    monkeypatch.setattr(owners, "MAX_WORKERS", 4)
    policies = owners.ClientPolicies(ToolPolicy(), workers_from_header=True)
    made_up = [policies.of(Request(f"made-up-{n}")) for n in range(4)]
    for policy in made_up:
        policy.created.add("work")  # every one holds work
    with pytest.raises(OperationError, match="reuse a worker name"):
        policies.of(Request("made-up-4"))  # the client holding the most: refused
    alice = policies.of(Request("alice", peer="10.0.0.2"))  # takes made-up-0's place
    alice.created.add("alice.box")
    assert policies.of(Request("made-up-1")) is made_up[1]
    bob = policies.of(Request("bob", peer="10.0.0.3"))  # takes made-up-2's: her least used
    bob.created.add("bob.box")
    # two of mallory's against one each: carol, a third newcomer, still takes one of hers
    carol = policies.of(Request("carol", peer="10.0.0.4"))
    carol.created.add("carol.box")
    for name, peer in (("alice", "10.0.0.2"), ("bob", "10.0.0.3"), ("carol", "10.0.0.4")):
        assert policies.of(Request(name, peer=peer)).created  # never given up
    # now each holds one: a fifth client is refused rather than anyone's work dropped
    with pytest.raises(OperationError, match="4 clients"):
        policies.of(Request("dave", peer="10.0.0.5"))


def test_an_owner_is_counted_in_its_clients_slice():
    assert owners.client_of("127.0.0.1 3f2a worker-7") == "127.0.0.1 3f2a"
    assert owners.client_of("::1 3f2a ") == "::1 3f2a"
    assert owners.client_of("") == ""  # stdio: the one client


async def test_made_up_worker_names_share_their_clients_slice_of_tasks(monkeypatch):
    monkeypatch.setattr(tasks, "MAX_TASKS_PER_OWNER", 3)
    store = tasks.TaskStore(lambda ctx: ctx)
    release = asyncio.Event()

    async def waiting(_ask: object) -> types.CallToolResult:
        await release.wait()
        return types.CallToolResult(content=[])

    started = [await store.start(f"1.2.3.4 d made-up-{n}", waiting, None) for n in range(5)]
    assert [task is not None for task in started] == [True, True, True, False, False]
    assert await store.start("5.6.7.8 d alice", waiting, None) is not None  # another client's own
    release.set()
