"""What one person makes, another cannot read, by default (issue #116): through one mq9-mcp
over HTTP with a tokens file, on one broker identity, bob neither reads, takes, acks nor deletes
in alice's mailbox, by any method (tools, resources, Events, completions, tasks), while he
still sends to it and both read what the operator shares (``--shared-mailboxes``). Who created
a mailbox is kept at the broker: two replicas on one broker, and a server started again, keep
alice's. Before, bob's ``query_messages alice.inbox`` answered alice's mail, and so did
``resources/read``, ``events/poll`` and ``resources/subscribe``. On a real nats-server with a
broker engine served from this test process; real HTTP clients, each with its token."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2 as httpx
import pytest

from testbed.support.mcp_support import LEGACY, MODERN, Peer, http_server, served_engine

pytestmark = pytest.mark.slow  # mq9-mcp processes on a nats-server

ALICE, BOB = "alice-" + "a" * 40, "bob-" + "b" * 40
BOX = "mq9://mailbox/"
SECRET = "whsec_" + "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMzQ="  # the client's, per SEP
REFUSED = "belongs to another agent"


def tokens_file(folder: Path) -> str:
    people = (("alice", ALICE), ("bob", BOB))
    lines = [f"{name}: {hashlib.sha256(token.encode()).hexdigest()}\n" for name, token in people]
    path = folder / "tokens"
    path.write_text("".join(lines))
    return str(path)


@contextlib.asynccontextmanager
async def as_peer(url: str, token: str, era: str = LEGACY) -> AsyncIterator[Peer]:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(20, read=60)) as http:
        yield await Peer(http, url, era, "w").open()


def tool_error(answer: dict) -> str:
    result = answer["result"]
    assert result.get("isError"), answer
    return str(result["content"][0]["text"])


def error_of(answer: dict) -> str:
    assert "error" in answer, answer
    return str(answer["error"]["message"])


async def test_bob_cannot_read_alices_mailbox_by_any_method(nats_server, tmp_path):
    tokens = tokens_file(tmp_path)
    args = ("--server", nats_server.url, "--tokens-file", tokens, "--shared-mailboxes", "team",
            "--webhook-hosts", "127.0.0.1")  # fmt: skip
    async with served_engine(nats_server.url):
        with http_server(*args) as one, http_server(*args) as other:
            async with as_peer(one, ALICE) as alice, as_peer(other, BOB) as bob:
                await alice.data("create_mailbox", name="payroll.inbox")
                await alice.data("create_mailbox", name="team.board")
                # sending stays open: bob writes to alice's address, through another replica
                sent = await bob.data("send_message", mail_address="payroll.inbox",
                                      payload="salary alice 9000")  # fmt: skip
                box = {"mail_address": "payroll.inbox"}
                for tool, more in (("query_messages", {}), ("fetch_messages", {"max_wait_ms": 0}),
                                   ("fetch_messages", {"group_name": "g", "max_wait_ms": 0}),
                                   ("ack_messages", {"msg_id": sent["msg_id"]}),
                                   ("delete_message", {"msg_id": sent["msg_id"]}),
                                   ("wake_rule", {})):  # fmt: skip
                    assert REFUSED in tool_error(await bob.call(tool, **box, **more)), tool
                uri = BOX + "payroll.inbox"
                assert REFUSED in error_of(await bob.rpc("resources/read", uri=uri))
                assert REFUSED in error_of(await bob.rpc("resources/subscribe", uri=uri))
                done = await bob.rpc("completion/complete", argument={"name": "mail_address",
                                     "value": "pay"}, ref={"type": "ref/resource",
                                     "uri": BOX + "{mail_address}"})  # fmt: skip
                assert done["result"]["completion"]["values"] == []
                # what the operator shares, both read
                await bob.data("send_message", mail_address="team.board", payload="lunch at 1")
                board = await bob.data("query_messages", mail_address="team.board")
                assert [m["payload"] for m in board["messages"]] == ["lunch at 1"]
            async with as_peer(other, BOB, MODERN) as bob:
                arrived = {"name": "mailbox.message_arrived", "arguments": box}
                polled = await bob.rpc("events/poll", **arrived, cursor="0")
                assert polled["error"]["data"] == {"reason": "forbidden"}, polled
                assert REFUSED in error_of(polled)
                hook = {"mode": "webhook", "url": "http://127.0.0.1:9/hook", "secret": SECRET}
                subscribed = await bob.rpc("events/subscribe", **arrived, delivery=hook)
                assert subscribed["error"]["data"] == {"reason": "forbidden"}, subscribed
                listen = {"resourceSubscriptions": [BOX + "payroll.inbox"]}
                listened = await bob.rpc("subscriptions/listen", notifications=listen)
                assert REFUSED in error_of(listened)
            # alice, through the replica she did not create it on, reads and takes her mail;
            # what she holds unacked bob cannot ack for her
            async with as_peer(other, ALICE) as alice, as_peer(one, BOB) as bob:
                read = await alice.rpc("resources/read", uri=BOX + "payroll.inbox")
                assert "salary alice 9000" in read["result"]["contents"][0]["text"]
                fetched = await alice.data("fetch_messages", mail_address="payroll.inbox",
                                           max_wait_ms=0)  # fmt: skip
                [message] = fetched["messages"]
                refused = await bob.call("ack_messages", mail_address="payroll.inbox",
                                         msg_id=message["msg_id"])  # fmt: skip
                assert REFUSED in tool_error(refused)
                acked = await alice.data("ack_messages", mail_address="payroll.inbox",
                                         msg_id=message["msg_id"])  # fmt: skip
                assert acked["confirmed"] == [message["msg_id"]]


async def test_alice_keeps_her_mailbox_and_tasks_across_a_restart(nats_server, tmp_path):
    tokens = tokens_file(tmp_path)
    args = ("--server", nats_server.url, "--tokens-file", tokens)
    async with served_engine(nats_server.url):
        with http_server(*args) as url:
            async with as_peer(url, ALICE) as alice:
                await alice.data("create_mailbox", name="alice.notes")
                await alice.data("send_message", mail_address="alice.notes", payload="hunter2")
                answer = await alice.call("fetch_messages", task=True,
                                          mail_address="alice.notes", max_wait_ms=0)  # fmt: skip
                task = answer["result"]["task"]["taskId"]
                assert "result" in await alice.rpc("tasks/result", taskId=task)
        with http_server(*args) as url:  # started again: nothing of alice's in its memory
            async with as_peer(url, ALICE) as alice, as_peer(url, BOB) as bob:
                assert REFUSED in tool_error(
                    await bob.call("query_messages", mail_address="alice.notes")
                )
                # a task answers bob as one that never existed, and its timeline is alice's
                assert "error" in await bob.rpc("tasks/get", taskId=task)
                assert "error" in await bob.rpc("tasks/result", taskId=task)
                timeline = f"mq9mcp.task.{task}"
                stolen = await bob.call("query_messages", mail_address=timeline)
                assert REFUSED in tool_error(stolen)
                assert (await alice.data("query_messages", mail_address=timeline))["messages"]
                kept = await alice.data("query_messages", mail_address="alice.notes")
                assert [m["payload"] for m in kept["messages"]] == ["hunter2"]
                # mq9-mcp's own records are nobody's to forge or read through the tools
                forged = await bob.call("create_mailbox", name="mq9mcp.owner.x")
                assert "mq9-mcp's own records" in tool_error(forged)


async def test_one_static_token_shares_every_mailbox_as_before(nats_server):
    """The one --auth-token names no principal: whoever holds it reads what others made."""
    args = ("--server", nats_server.url, "--auth-token", ALICE)
    async with served_engine(nats_server.url):
        with http_server(*args) as url:
            async with as_peer(url, ALICE) as first, as_peer(url, ALICE) as second:
                await first.data("create_mailbox", name="common.box")
                await first.data("send_message", mail_address="common.box", payload="hi")
                read = await second.data("query_messages", mail_address="common.box")
                assert [m["payload"] for m in read["messages"]] == ["hi"]
