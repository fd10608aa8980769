"""mq9-mcp keeps each client's idempotency keys its own (#113): it speaks to a ``--credentials``
broker as one identity, and the broker holds a key per identity and mailbox, so a key passed on
as the client gave it was every client's. Two clients as docs/mcp.md counts them (the one bearer
token from two peer addresses, ``owners.client_identity``), each the official MCP client over
streamable HTTP against a real mq9-mcp and a real dev broker.

Before #113 bob read alice's message through her key: his guesses of "alice bids N" under her
``bid-7`` were refused but the right one, answered with her msg_id; and bob's ``bid-8`` taken
first refused alice's own ``bid-8``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx2 as httpx
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from mq9_mcp import owners
from mq9_platform.client.scoped_keys import caller_key
from mq9_platform.operations.catalog import ToolPolicy
from testbed.support.mcp_support import REQUEST_TIMEOUT, fails, http_server, ok
from tests.platform.a2a.key_bounds_support import BoundedBroker

TOKEN = "k" * 32
ALICE, BOB = "127.0.0.1", "127.0.0.2"  # two loopback addresses: two clients of one token


@contextlib.asynccontextmanager
async def client_at(url: str, address: str) -> AsyncIterator[ClientSession]:
    """The official MCP client, its connections from ``address``, with the bearer token."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        httpx.AsyncClient(transport=transport, headers=headers, timeout=REQUEST_TIMEOUT) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write, read_timeout_seconds=REQUEST_TIMEOUT) as session,
    ):
        await session.initialize()
        yield session


class Request:
    """What ``ClientPolicies`` reads of an HTTP request: its scope and headers."""

    def __init__(self, worker: str, peer: str) -> None:
        self.headers = {owners.WORKER_HEADER: worker}
        self.scope = {"type": "http", "client": (peer, 5000), "headers": []}


def test_every_keyed_tool_sends_the_clients_own_key_and_stdio_its_key_as_given():
    """send_message, call_agent and answer_call: one client's key is one key whatever its
    worker name, another client's same key another; a call without a key or a tool that
    stores none is left as it came; over stdio (no request) the key goes as given."""
    policies = owners.ClientPolicies(ToolPolicy(), workers_from_header=True)
    alice, alice_too, bob = Request("w1", ALICE), Request("w2", ALICE), Request("w1", BOB)
    for tool in owners.KEYS_A_CALL:
        keyed = {"idempotency_key": "bid-7", "task_id": "t"}
        alices = policies.client_keys(alice, tool, keyed)
        assert alices is not None and alices["idempotency_key"] != "bid-7"
        assert alices == policies.client_keys(alice_too, tool, keyed)
        assert alices != policies.client_keys(bob, tool, keyed)
        assert keyed["idempotency_key"] == "bid-7"  # the call's own arguments untouched
    unkeyed = {"mail_address": "a", "idempotency_key": ""}
    assert policies.client_keys(alice, "send_message", unkeyed) is unkeyed
    other = {"mail_address": "a", "idempotency_key": "k"}
    assert policies.client_keys(alice, "fetch_messages", other) is other
    stdio = owners.ClientPolicies(ToolPolicy())
    assert stdio.client_keys(None, "send_message", other) == other
    assert caller_key("", "k") == "k" and len(caller_key("c", "é" * 64)) == 32


@pytest.mark.slow  # a dev broker process and an mq9-mcp process
async def test_another_client_can_neither_read_nor_take_a_clients_key(tmp_path):
    broker = BoundedBroker(tmp_path, "mcp", keys_each=1000)
    try:
        with http_server(
            "--server", broker.url, "--auth-token", TOKEN, MQ9_CREDENTIAL=broker.credentials["mcp"]
        ) as url:
            async with client_at(url, ALICE) as alice, client_at(url, BOB) as bob:
                box = (await ok(alice, "create_mailbox"))["mail_address"]
                bid = {"mail_address": box, "idempotency_key": "bid-7"}
                hers = (await ok(alice, "send_message", payload="alice bids 7", **bid))["msg_id"]

                # bob guesses her bid under her key: his first guess is a message of his own,
                # the others his own key reused; none is answered with her msg_id
                answers = [
                    await bob.call_tool("send_message", {**bid, "payload": f"alice bids {n}"})
                    for n in range(1, 8)
                ]
                [first, *others] = answers
                assert not first.is_error and first.structured_content is not None
                assert first.structured_content["msg_id"] != hers
                assert all(a.is_error for a in others), [a.structured_content for a in others]

                # bob takes bid-8 first: alice's own bid-8 is hers, stored
                await ok(bob, "send_message", mail_address=box, payload="bob bids 8",
                         idempotency_key="bid-8")  # fmt: skip
                await ok(alice, "send_message", mail_address=box, payload="alice bids 8",
                         idempotency_key="bid-8")  # fmt: skip

                # alice's key sent again, from a new session of hers: the same message once
                async with client_at(url, ALICE) as alice_again:
                    again = await ok(alice_again, "send_message", payload="alice bids 7", **bid)
                    assert again["msg_id"] == hers
                    said = await fails(alice_again, "send_message", payload="alice bids 9", **bid)
                    assert "was used for another SEND" in said, said

                fetched = await ok(alice, "fetch_messages", mail_address=box)
                payloads = [m["payload"] for m in fetched["messages"]]
                assert sorted(payloads) == sorted(
                    ["alice bids 7", "alice bids 1", "bob bids 8", "alice bids 8"]
                ), payloads
    finally:
        broker.stop()
