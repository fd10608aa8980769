"""Push notifications through the gateway (#62, #63): a real a2a-sdk client sets a push config
for its task while the mq9 agent is offline, and a webhook receiver on loopback (allow-listed)
gets the task's states, signed, once the agent starts. Another tenant neither sees nor sets
the task's configs; a URL inside the network the operator did not allow is refused; a gateway
without push says so, and so do its cards."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time

import pytest
from a2a.types.a2a_pb2 import (
    DeleteTaskPushNotificationConfigRequest,
    GetTaskPushNotificationConfigRequest,
    ListTaskPushNotificationConfigsRequest,
    TaskPushNotificationConfig,
    TaskState,
)
from a2a.utils.errors import A2AError

from mq9_platform._http.tokens_file import digest_line
from mq9_platform.a2a import mail as w
from mq9_platform.a2a.gateway.push import GatewayPush
from mq9_platform.wake import Destinations
from testbed.ports import unclaimed_port
from testbed.support.a2a_support import text_graph
from tests.integration.a2a.test_gateway_cli import start
from tests.langchain.a2a.test_gateway import (
    ALICE,
    BOB,
    a2a_client,
    gateway,
    request,
    served,
    until_stopped,
)
from tests.platform.a2a.push_support import Receiver, fetch_jwks

TOKEN = "alice-push-" + "5" * 16


@contextlib.asynccontextmanager
async def pushing_gateway(client):
    push = GatewayPush(Destinations(hosts=["127.0.0.1/32"]))
    try:
        async with gateway(client, push=push) as url:
            yield url
    finally:
        await push.close()


@pytest.mark.slow  # over a second on a quiet machine (#89)
async def test_an_offline_agents_result_reaches_the_client_by_push(client):
    with Receiver() as receiver:
        async with (
            pushing_gateway(client) as url,
            a2a_client(url, ALICE) as (alice, card),
            a2a_client(url, BOB) as (bob, _card),
        ):
            assert card.capabilities.push_notifications
            receiver.keys = await fetch_jwks(url)
            task = [e async for e in alice.send_message(request("hello"))][-1].task
            assert task.status.state == TaskState.TASK_STATE_SUBMITTED  # the agent is offline
            made = await alice.create_task_push_notification_config(
                TaskPushNotificationConfig(task_id=task.id, url=receiver.url, token=TOKEN)
            )
            assert made.id and made.task_id == task.id and made.url == receiver.url
            got = await alice.get_task_push_notification_config(
                GetTaskPushNotificationConfigRequest(task_id=task.id, id=made.id)
            )
            assert got.token == TOKEN

            # SSRF: the cloud metadata address, a private network: the operator allowed neither
            for inside in ("http://169.254.169.254/latest/meta-data", "http://10.1.2.3/hook"):
                with pytest.raises(A2AError, match="refused"):
                    await alice.create_task_push_notification_config(
                        TaskPushNotificationConfig(task_id=task.id, url=inside)
                    )
            # the second tenant: Alice's task is "not found", whatever it asks
            with pytest.raises(A2AError, match="not found"):
                await bob.list_task_push_notification_configs(
                    ListTaskPushNotificationConfigsRequest(task_id=task.id)
                )
            with pytest.raises(A2AError, match="not found"):
                await bob.create_task_push_notification_config(
                    TaskPushNotificationConfig(task_id=task.id, url=receiver.url, token="bob-" * 5)
                )
            with pytest.raises(A2AError, match="not found"):
                await bob.delete_task_push_notification_config(
                    DeleteTaskPushNotificationConfigRequest(task_id=task.id, id=made.id)
                )
            # Bob's own task shows none of Alice's configs
            bobs = [e async for e in bob.send_message(request("bob's"))][-1].task
            listed = await bob.list_task_push_notification_configs(
                ListTaskPushNotificationConfigsRequest(task_id=bobs.id)
            )
            assert list(listed.configs) == []
            listed = await alice.list_task_push_notification_configs(
                ListTaskPushNotificationConfigsRequest(task_id=task.id)
            )
            assert [c.id for c in listed.configs] == [made.id]
            assert receiver.requests == []  # nothing happened yet: nothing pushed

            async with served(client, text_graph(str.upper)):
                pushed = await receiver.until(TOKEN, w.COMPLETED)
                await until_stopped(bob, bobs.id)
            assert {t["id"] for t in pushed} == {task.id}  # Alice's task only, never Bob's
            assert pushed[-1]["artifacts"][0]["parts"][0]["text"] == "HELLO"
            assert all("mq9" not in (t.get("metadata") or {}) for t in pushed)
            # a config made after the task ended gets its final state, once
            late = "bob-push-" + "3" * 16
            await bob.create_task_push_notification_config(
                TaskPushNotificationConfig(task_id=bobs.id, url=receiver.url, token=late)
            )
            bob_pushed = await receiver.until(late, w.COMPLETED)
            assert [t["id"] for t in bob_pushed] == [bobs.id]
            bodies = [json.loads(body) for body, _ in receiver.requests]
            assert all(set(b) == {"task"} for b in bodies)
            assert len(receiver.tasks(TOKEN)) + len(bob_pushed) == len(bodies)


async def test_a_gateway_without_push_says_so(client):
    async with gateway(client) as url, a2a_client(url, ALICE) as (alice, card):
        assert not card.capabilities.push_notifications
        task = [e async for e in alice.send_message(request("hi"))][-1].task
        with pytest.raises(A2AError, match="not enabled"):
            await alice.create_task_push_notification_config(
                TaskPushNotificationConfig(task_id=task.id, url="http://127.0.0.1:9/x")
            )


@pytest.mark.slow
async def test_the_gateway_process_pushes_with_allow_push_host(nats_broker, tmp_path):
    tokens = tmp_path / "tokens.json"
    tokens.write_text(digest_line("alice", ALICE) + "\n")
    port = unclaimed_port()
    process = start(
        [
            "--server", nats_broker.url, "--agent", "agent.echo", "--listen", f"127.0.0.1:{port}",
            "--tokens-file", str(tokens), "--allow-push-host", "127.0.0.1/32",
        ]
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/a2a/agent.echo"
    try:
        deadline = time.monotonic() + 60  # a hang guard: the process imports a2a-sdk
        while True:
            try:
                async with a2a_client(url, ALICE) as (alice, card):
                    break
            except Exception:
                assert process.poll() is None, process.communicate()[1].decode()
                assert time.monotonic() < deadline, "the gateway never served its card"
                await asyncio.sleep(0.2)
        assert card.capabilities.push_notifications
        token = secrets.token_hex(16)
        with Receiver(await fetch_jwks(url)) as receiver:
            async with a2a_client(url, ALICE) as (alice, _card):
                task = [e async for e in alice.send_message(request("by push"))][-1].task
                await alice.create_task_push_notification_config(
                    TaskPushNotificationConfig(task_id=task.id, url=receiver.url, token=token)
                )
                with pytest.raises(A2AError, match="refused"):
                    await alice.create_task_push_notification_config(
                        TaskPushNotificationConfig(task_id=task.id, url="http://[::1]:9/")
                    )
                async with nats_broker.client() as client, served(client, text_graph(str.upper)):
                    pushed = await receiver.until(token, w.COMPLETED)
        assert pushed[-1]["artifacts"][0]["parts"][0]["text"] == "BY PUSH"
    finally:
        process.terminate()
        process.wait(15)
