"""Each principal at the broker as itself on every surface (issue #112 item 3, its gaps): with
``--principal-credentials``, a watch, an MCP Events poll, a resource read and a task go over the
principal's own broker connection, as tool calls do, so the broker's rule (a mailbox only its
owner reads) holds between the people of one mq9-mcp there too. Before, those went as mq9-mcp's
own identity: alice could not watch or poll her own mailbox (the broker refused the server's
identity), and nothing told alice's reads from bob's."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx2 as httpx
import pytest

from testbed.support.credentials_support import EnforcingBroker
from testbed.support.mcp_support import LEGACY, MODERN, Peer, http_server
from tests.mcp.test_oauth_principal_credentials import ALICE, BOB, setup

pytestmark = pytest.mark.slow  # a dev broker and an mq9-mcp process per test

BOX = "mq9://mailbox/"


@pytest.fixture
def enforcing(tmp_path):
    broker = EnforcingBroker(tmp_path / "data", "alice", "bob", "mcp")
    yield broker
    broker.stop()


@contextlib.asynccontextmanager
async def peers(url: str, era: str) -> AsyncIterator[tuple[Peer, Peer]]:
    """alice and bob, each with their token, on one address."""
    timeout = httpx.Timeout(20, read=60)
    async with (
        httpx.AsyncClient(headers={"Authorization": f"Bearer {ALICE}"}, timeout=timeout) as a,
        httpx.AsyncClient(headers={"Authorization": f"Bearer {BOB}"}, timeout=timeout) as b,
    ):
        yield await Peer(a, url, era, "w").open(), await Peer(b, url, era, "w").open()


def refusal(answer: dict) -> str:
    assert "error" in answer, answer
    return str(answer["error"]["message"])


async def test_principal_watches_and_reads_only_their_own_mailbox(tmp_path, enforcing):
    tokens, folder = setup(tmp_path, enforcing)
    with http_server(
        "--server", enforcing.url, "--tokens-file", tokens, "--principal-credentials", folder,
        MQ9_CREDENTIAL=enforcing.credentials["mcp"],
    ) as url:  # fmt: skip
        async with peers(url, LEGACY) as (alice, bob):
            box = (await alice.data("create_mailbox", name="alice.watched"))["mail_address"]
            await bob.data("send_message", mail_address=box, payload="for alice")
            uri = BOX + box
            # a watch looks at the mailbox as its subscriber's principal: alice's own
            assert "result" in await alice.rpc("resources/subscribe", uri=uri)
            assert "belongs to another agent" in refusal(
                await bob.rpc("resources/subscribe", uri=uri)
            )
            read = await alice.rpc("resources/read", uri=uri)
            assert "for alice" in read["result"]["contents"][0]["text"]
            assert "belongs to another agent" in refusal(await bob.rpc("resources/read", uri=uri))


async def test_principal_polls_events_only_of_their_own_mailbox(tmp_path, enforcing):
    tokens, folder = setup(tmp_path, enforcing)
    with http_server(
        "--server", enforcing.url, "--tokens-file", tokens, "--principal-credentials", folder,
        MQ9_CREDENTIAL=enforcing.credentials["mcp"],
    ) as url:  # fmt: skip
        async with peers(url, MODERN) as (alice, bob):
            box = (await alice.data("create_mailbox", name="alice.events"))["mail_address"]
            sub = {"name": "mailbox.message_arrived", "arguments": {"mail_address": box}}
            assert (await alice.rpc("events/poll", **sub))["result"]["cursor"] == "0"
            refused = await bob.rpc("events/poll", **sub, cursor="0")
            assert refused["error"]["data"] == {"reason": "forbidden"}, refused
            assert "belongs to another agent" in refusal(refused)


async def test_principal_task_runs_without_the_servers_own_identity(tmp_path, enforcing):
    """The server has no broker credential of its own: a task (its timeline kept in the mail
    store) still runs, as alice, end to end; before, its timeline went as the server."""
    tokens, folder = setup(tmp_path, enforcing)
    with http_server(
        "--server", enforcing.url, "--tokens-file", tokens, "--principal-credentials", folder,
    ) as url:  # fmt: skip
        async with peers(url, LEGACY) as (alice, bob):
            box = (await alice.data("create_mailbox", name="alice.tasks"))["mail_address"]
            await alice.data("send_message", mail_address=box, payload="in a task")
            answer = await alice.call("fetch_messages", task=True, mail_address=box)
            task_id = answer["result"]["task"]["taskId"]
            got = await alice.rpc("tasks/get", taskId=task_id)
            assert "result" in got, got
            result = (await alice.rpc("tasks/result", taskId=task_id))["result"]
            [message] = result["structuredContent"]["messages"]
            assert message["payload"] == "in a task"
            # its timeline is alice's mailbox, as the broker sees it: she reads it, bob cannot
            timeline = f"mq9mcp.task.{task_id}"
            kept = await alice.data("query_messages", mail_address=timeline)
            assert kept["messages"], kept
            stolen = await bob.call("query_messages", mail_address=timeline)
            assert "belongs to another agent" in stolen["result"]["content"][0]["text"]
