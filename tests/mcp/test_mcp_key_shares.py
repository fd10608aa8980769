"""mq9-mcp's clients spend idempotency keys out of shares of their own, and its own task
timelines spend none (#106 items 1 and 7). mq9-mcp speaks to a ``--credentials`` broker as one
identity whose keys the broker bounds (``--max-keys-per-sender``, shrunk here to 30 for 10,000).
Two clients reach it over HTTP with the one bearer token, from two addresses (two clients, as
``owners.client_identity`` tells them apart): mallory sends keyed messages past her share and is
refused in words naming her own count only; bob's keyed send_message is answered, and his tool
call run as a task has its timeline written (its result read through ``tasks/result``).

Before #106 mallory's 30 keyed sends filled the identity's bound: bob's keyed send was refused
("no room for another idempotency key"), and the task's keyed timeline writes with it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx2 as httpx
import pytest

from mq9_mcp import owners
from mq9_platform.client.key_shares import KeyShares
from mq9_platform.operations.catalog import ToolPolicy
from testbed.support.mcp_support import LEGACY, Peer, http_server
from tests.platform.a2a.key_bounds_support import BoundedBroker

KEYS = 30  # the broker's bound on mq9-mcp's identity
SHARE = 5  # each client's (--keys-per-client)
TOKEN = "t" * 32


@contextlib.asynccontextmanager
async def client_from(address: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client connecting from ``address`` (a loopback address of its own)."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(
        transport=transport, headers=headers, timeout=httpx.Timeout(20, read=60)
    ) as http:
        yield http


class Request:
    """What ``ClientPolicies`` reads of an HTTP request: its scope and headers."""

    def __init__(self, worker: str, peer: str = "127.0.0.1") -> None:
        self.headers = {owners.WORKER_HEADER: worker}
        self.scope = {"type": "http", "client": (peer, 5000), "headers": []}


def test_a_clients_worker_names_share_its_keys_and_each_tool_costs_what_it_stores():
    """Over HTTP a client gets 900 keys; over stdio the one client all the clients' part. Made-up
    worker names share their client's; call_agent stores two keys, send_message one; a call
    without a key costs nothing, and the same key again nothing more."""
    assert owners.ClientPolicies(ToolPolicy()).key_shares.share == 9000
    policies = owners.ClientPolicies(ToolPolicy(), workers_from_header=True)
    assert policies.key_shares.share == owners.KEYS_PER_CLIENT == 900
    policies.key_shares = KeyShares(3, total=100)
    mallory, other_name = Request("mallory"), Request("mallory-2")
    keyed = {"agent": "summarizer", "task": "t", "idempotency_key": "k"}
    assert policies.spend_keys(mallory, "call_agent", keyed) is None
    assert policies.spend_keys(mallory, "call_agent", keyed) is None  # resent: the same keys
    assert policies.spend_keys(mallory, "send_message", {"mail_address": "b"}) is None
    send = {"mail_address": "b", "idempotency_key": "k"}
    assert policies.spend_keys(other_name, "send_message", send) is None
    refused = policies.spend_keys(other_name, "send_message", {**send, "idempotency_key": "k2"})
    assert refused is not None and "you hold 3 of your 3 keys at this server" in refused
    assert policies.spend_keys(Request("bob", peer="10.0.0.9"), "send_message", send) is None


@pytest.mark.slow  # a dev broker process and an mq9-mcp process
async def test_a_client_filling_its_share_leaves_anothers_keyed_send_and_tasks_answered(tmp_path):
    broker = BoundedBroker(tmp_path, "mcp", keys_each=KEYS)
    try:
        options = ("--keys-per-client", str(SHARE), "--identity-keys", str(KEYS))
        with http_server(
            "--server", broker.url, "--auth-token", TOKEN, *options,
            MQ9_CREDENTIAL=broker.credentials["mcp"],
        ) as url:  # fmt: skip
            async with client_from("127.0.0.1") as one, client_from("127.0.0.2") as two:
                mallory = await Peer(one, url, LEGACY, "mallory").open()
                bob = await Peer(two, url, LEGACY, "bob").open()
                box = (await mallory.data("create_mailbox"))["mail_address"]
                said = []
                for n in range(KEYS):  # as many as fill the identity's bound
                    answer = await mallory.call(
                        "send_message", mail_address=box, payload=f"m{n}", idempotency_key=f"k{n}"
                    )
                    if answer["result"].get("isError"):
                        said.append(answer["result"]["content"][0]["text"])
                assert len(said) == KEYS - SHARE
                assert f"you hold {SHARE} of your {SHARE} keys at this server" in said[-1]
                assert str(KEYS) not in said[-1] and "27" not in said[-1]  # item 7

                inbox = (await bob.data("create_mailbox"))["mail_address"]
                sent = await bob.data(
                    "send_message", mail_address=inbox, payload="bob's", idempotency_key="k0"
                )
                assert sent["sent"] is True
                # a tool call run as a task: its timeline (header, events) is written
                answer = await bob.call("fetch_messages", task=True, mail_address=inbox,
                                        max_wait_ms=1000)  # fmt: skip
                task_id = answer["result"]["task"]["taskId"]
                result = (await bob.rpc("tasks/result", taskId=task_id))["result"]
                [message] = result["structuredContent"]["messages"]
                assert message["payload"] == "bob's"
    finally:
        broker.stop()
